'use strict'
// Usage: node tls-serve.js GRAPE_URL PREFIX PEM_DIR HTTP_PORT WS_PORT PUB_PORT ALLOWED_FP
// Node's side of tls_interop.rs, with TLS on, through the real packages on 127.0.0.1:
//   PREFIX:node_https  grenache-nodejs-http PeerRPCServer, `secure` plus requestCert
//   PREFIX:node_wss    grenache-nodejs-ws PeerRPCServer, `secure` with a verifyClient that
//                      admits only the certificate whose fingerprint256 is ALLOWED_FP
//   PREFIX:node_wss_pub a PeerPub over WSS (see tls-common.js), publishing {"n": i} every 100 ms
// Both RPC servers answer {echo, from: "node", transport, client: {cn, fingerprint256}},
// `client` being the certificate the caller showed. Certificates: PEM_DIR/{node,node-key,ca}.pem.
// Prints {"ready": true} once all three names are announced; runs until killed.
require('./loopback')
const [grape, prefix, dir, httpPort, wsPort, pubPort, allowed] = process.argv.slice(2)
if (!allowed) {
  console.error('usage: node tls-serve.js GRAPE_URL PREFIX PEM_DIR HTTP_PORT WS_PORT PUB_PORT ALLOWED_FP')
  process.exit(2)
}
const Link = require('grenache-nodejs-link')
const Http = require('grenache-nodejs-http')
const Ws = require('grenache-nodejs-ws')
const { readSecure, peerCert, secureTransportPub } = require('./tls-common')
const { announcer } = require('./peer-common')

const secure = readSecure(dir)
const link = new Link({ grape })
link.start()

const announced = announcer(3)

function rpc (Grenache, transport, port, opts) {
  const peer = new Grenache.PeerRPCServer(link, { timeout: 300000, secure: opts })
  peer.init()
  const srv = peer.transport('server')
  srv.listen(Number(port))
  srv.on('request', (rid, key, payload, handler, cert) => {
    const client = cert && cert.fingerprint256
      ? { cn: cert.subject && cert.subject.CN, fingerprint256: cert.fingerprint256 }
      : null
    handler.reply(null, { echo: payload, from: 'node', transport, client })
  })
  const name = `${prefix}:node_${transport}`
  link.startAnnouncing(name, Number(port), { interval: 1000 }, announced(name))
}

rpc(Http, 'https', httpPort, { ...secure, requestCert: true, rejectUnauthorized: true })
rpc(Ws, 'wss', wsPort, {
  ...secure,
  rejectUnauthorized: true,
  verifyClient: (info) => {
    const cert = peerCert(info.req.socket)
    return !!cert && cert.fingerprint256 === allowed
  }
})

secureTransportPub(secure)
const pub = new Ws.PeerPub(link, {})
pub.init()
const service = pub.transport('server')
service.listen(Number(pubPort))
const pubName = `${prefix}:node_wss_pub`
link.startAnnouncing(pubName, Number(pubPort), { interval: 1000 }, announced(pubName))
let n = 0
setInterval(() => service.pub(JSON.stringify({ n: n++ })), 100)
