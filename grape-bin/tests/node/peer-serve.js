'use strict'
// Usage: node peer-serve.js GRAPE_URL PREFIX HTTP_PORT WS_PORT PUB_PORT
// Serves, through the real Node packages, what a Rust client talks to, on 127.0.0.1:
//   PREFIX:node_http  grenache-nodejs-http PeerRPCServer on HTTP_PORT
//   PREFIX:node_ws    grenache-nodejs-ws PeerRPCServer on WS_PORT
//   PREFIX:node_pub   grenache-nodejs-ws PeerPub on PUB_PORT, publishing {"n": i} every 100 ms
// Both RPC servers answer {echo: payload, key, from: "node", transport}; a payload
// {"fail": MSG} is answered with the error MSG instead. Each name is announced every second.
// Prints one JSON line {"ready": true} once all three announces were taken; runs until killed.
require('./loopback')
const [grape, prefix, httpPort, wsPort, pubPort] = process.argv.slice(2)
if (!grape || !prefix || !pubPort) {
  console.error('usage: node peer-serve.js GRAPE_URL PREFIX HTTP_PORT WS_PORT PUB_PORT')
  process.exit(2)
}
const Link = require('grenache-nodejs-link')
const Http = require('grenache-nodejs-http')
const Ws = require('grenache-nodejs-ws')
const { announcer } = require('./peer-common')

const link = new Link({ grape })
link.start()

const announced = announcer(3)

function rpc (Grenache, transport, port) {
  const peer = new Grenache.PeerRPCServer(link, { timeout: 300000 })
  peer.init()
  const srv = peer.transport('server')
  srv.listen(Number(port))
  srv.on('request', (rid, key, payload, handler) => {
    if (payload && payload.fail) {
      handler.reply(new Error(payload.fail))
      return
    }
    handler.reply(null, { echo: payload, key, from: 'node', transport })
  })
  const name = `${prefix}:node_${transport}`
  link.startAnnouncing(name, Number(port), { interval: 1000 }, announced(name))
}

rpc(Http, 'http', httpPort)
rpc(Ws, 'ws', wsPort)

const pub = new Ws.PeerPub(link, {})
pub.init()
const service = pub.transport('server')
service.listen(Number(pubPort))
const pubName = `${prefix}:node_pub`
link.startAnnouncing(pubName, Number(pubPort), { interval: 1000 }, announced(pubName))
let n = 0
setInterval(() => service.pub(JSON.stringify({ n: n++ })), 100)
