'use strict'
// Usage: node payload-serve.js GRAPE_URL PREFIX TEXTS_FILE HTTP_PORT WS_PORT ZMQ_PORT WS_PUB_PORT ZMQ_PUB_PORT
// Node's side of payload_interop.rs, for a Rust client to send the texts of TEXTS_FILE
// (written by payload-gen.js) through, on 127.0.0.1:
//   PREFIX:node_http, PREFIX:node_ws  grenache-nodejs-http / -ws PeerRPCServers
//   PREFIX:node_zmq                   a zeromq ROUTER (docs/zeromq-wire.md)
//   PREFIX:node_ws_pub                a grenache-nodejs-ws PeerPub
//   PREFIX:node_zmq_pub               a zeromq PUB
// The RPC servers check that the payload arrived as one of the texts, byte for byte
// (JSON.stringify of it over HTTP and WS, the raw frame over ZeroMQ), and echo it;
// otherwise they answer the error ERR_NOT_AS_SENT: <what arrived>. A payload {"lone": i}
// is answered with the value of text i instead (a text with a lone surrogate, which a
// Rust client cannot send). The publishers publish every text in turn, over and over.
// Prints {"ready": true} once all five names were announced; runs until killed.
require('./loopback')
const fs = require('fs')
const zmq = require('zeromq')
const Http = require('grenache-nodejs-http')
const Ws = require('grenache-nodejs-ws')
const { ERR_FRAME, log, port, startLink, sendQueue } = require('./zmq-common')

const [grape, prefix, textsFile, ...portArgs] = process.argv.slice(2)
const ports = portArgs.map(port)
if (!grape || !prefix || !textsFile || ports.length !== 5 || ports.some((p) => !p)) {
  console.error('usage: node payload-serve.js GRAPE_URL PREFIX TEXTS_FILE HTTP_PORT WS_PORT ZMQ_PORT WS_PUB_PORT ZMQ_PUB_PORT')
  process.exit(2)
}
const [httpPort, wsPort, zmqPort, wsPubPort, zmqPubPort] = ports
const texts = JSON.parse(fs.readFileSync(textsFile, 'utf8')).map((c) => c.text)
const known = new Set(texts)

const link = startLink(grape)
let pending = 5
const announced = (name) => (err) => {
  if (err) {
    console.log(JSON.stringify({ ready: false, name, err: err.message }))
    return
  }
  if (--pending === 0) console.log(JSON.stringify({ ready: true }))
}
const announce = (name, p) => link.startAnnouncing(`${prefix}:${name}`, p, { interval: 1000 }, announced(name))

// The index asked for by {"lone": i}, or -1.
function loneIndex (payload) {
  const keys = payload !== null && typeof payload === 'object' && !Array.isArray(payload) ? Object.keys(payload) : []
  return keys.length === 1 && keys[0] === 'lone' && Number.isInteger(payload.lone) ? payload.lone : -1
}

function rpc (Grenache, name, p) {
  const peer = new Grenache.PeerRPCServer(link, { timeout: 300000 })
  peer.init()
  const srv = peer.transport('server')
  srv.listen(p)
  srv.on('request', (rid, key, payload, handler) => {
    const i = loneIndex(payload)
    if (i >= 0 && i < texts.length) return handler.reply(null, JSON.parse(texts[i]))
    const text = JSON.stringify(payload)
    if (!known.has(text)) return handler.reply(new Error(`ERR_NOT_AS_SENT: ${text}`))
    handler.reply(null, payload)
  })
  announce(name, p)
}

rpc(Http, 'node_http', httpPort)
rpc(Ws, 'node_ws', wsPort)

const router = new zmq.Router({ linger: 0 })
const reply = sendQueue(router)
const zpub = new zmq.Publisher({ linger: 0 })
const zpublish = sendQueue(zpub)

function zmqAnswer (frames) {
  const [rid, , body] = frames.map((f) => f.toString('utf8'))
  let payload = null
  try {
    payload = JSON.parse(body)
  } catch (err) {}
  const i = loneIndex(payload)
  if (i >= 0 && i < texts.length) return [rid, texts[i]]
  if (!known.has(body)) return [rid, `ERR_NOT_AS_SENT: ${body}`, ERR_FRAME]
  return [rid, body]
}

async function serveZmq () {
  for await (const [identity, ...frames] of router) {
    reply([identity, ...zmqAnswer(frames)]).catch((err) => log(`reply failed: ${err.message}`))
  }
}

const wsPub = new Ws.PeerPub(link, {})
wsPub.init()
const wsPubService = wsPub.transport('server')
wsPubService.listen(wsPubPort)
announce('node_ws_pub', wsPubPort)

async function main () {
  await router.bind(`tcp://127.0.0.1:${zmqPort}`)
  await zpub.bind(`tcp://127.0.0.1:${zmqPubPort}`)
  serveZmq().catch((err) => log(`ROUTER: ${err.message}`))
  announce('node_zmq', zmqPort)
  announce('node_zmq_pub', zmqPubPort)
  let n = 0
  setInterval(() => {
    // A few texts per tick, every text in turn.
    for (let k = 0; k < 10; k++) {
      const text = texts[n++ % texts.length]
      wsPubService.pub(text)
      zpublish(text).catch((err) => log(`publish failed: ${err.message}`))
    }
  }, 5)
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    link.stop()
    router.close()
    zpub.close()
    process.exit(0)
  })
}

main().catch((err) => {
  console.log(JSON.stringify({ ready: false, err: err.message }))
  process.exit(1)
})
