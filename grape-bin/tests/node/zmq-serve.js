'use strict'
// Usage: node zmq-serve.js GRAPE_URL RPC_SERVICE ROUTER_PORT PUB_CHANNEL PUB_PORT
// Serves the ZeroMQ wire format of docs/zeromq-wire.md through the real libzmq (zeromq npm),
// on 127.0.0.1 only:
//   RPC_SERVICE  a ROUTER bound on ROUTER_PORT. A request [rid, key, payload] is answered
//                [rid, JSON {"echo": payload, "from": "node", "transport": "zmq"}], or, when
//                payload is an object with "fail": true, with the error [rid, "ERR_NODE_FAILED", "ERR"].
//   PUB_CHANNEL  a PUB bound on PUB_PORT, publishing {"n": k} (k = 0, 1, ...) every 100 ms,
//                one frame each.
// Both names are announced every second through GRAPE_URL. Prints one JSON line
// {"ready": true} once both announces were taken (or {"ready": false, "err": ..} and exits 1
// if binding or announcing fails, or takes over 15 s). Runs until SIGTERM or SIGINT, which
// close every socket and exit 0. With ZMQ_CURVE_SERVER_SECRET set (a Z85 secret key), both
// sockets are CURVE servers (zmq-common.js: curve.server()).
const zmq = require('zeromq')
const { ERR_FRAME, log, port, startLink, sendQueue, exitSoon, curve } = require('./zmq-common')

const [grape, service, routerArg, channel, pubArg] = process.argv.slice(2)
const routerPort = port(routerArg)
const pubPort = port(pubArg)
if (!grape || !service || !routerPort || !channel || !pubPort) {
  console.error('usage: node zmq-serve.js GRAPE_URL RPC_SERVICE ROUTER_PORT PUB_CHANNEL PUB_PORT')
  process.exit(2)
}

const router = new zmq.Router({ linger: 0, ...curve.server() })
const pub = new zmq.Publisher({ linger: 0, ...curve.server() })
const reply = sendQueue(router)
const publish = sendQueue(pub)
let link = null
let ticker = null
let readyTimer = null
let closed = false

function close (code) {
  if (closed) return
  closed = true
  clearInterval(ticker)
  clearTimeout(readyTimer)
  if (link) link.stop()
  router.close()
  pub.close()
  exitSoon(code)
}

function fail (err) {
  if (closed) return
  log(err.message)
  console.log(JSON.stringify({ ready: false, err: err.message }))
  close(1)
}

// [rid, key, payload] -> the reply frames after the identity, or null to drop the request.
function answer (frames) {
  if (frames.length !== 3) {
    log(`dropped a request of ${frames.length} frames (want rid, key, payload)`)
    return null
  }
  const [rid, , body] = frames.map((f) => f.toString('utf8'))
  let payload
  try {
    payload = JSON.parse(body)
  } catch (err) {
    return [rid, 'ERR_REQUEST_PAYLOAD', ERR_FRAME]
  }
  if (payload && typeof payload === 'object' && payload.fail === true) {
    return [rid, 'ERR_NODE_FAILED', ERR_FRAME]
  }
  return [rid, JSON.stringify({ echo: payload, from: 'node', transport: 'zmq' })]
}

async function serve () {
  for await (const [identity, ...frames] of router) {
    const out = answer(frames)
    if (out) reply([identity, ...out]).catch((err) => log(`reply failed: ${err.message}`))
  }
}

async function main () {
  for (const [socket, addr] of [[router, `tcp://127.0.0.1:${routerPort}`], [pub, `tcp://127.0.0.1:${pubPort}`]]) {
    await socket.bind(addr).catch((err) => { throw new Error(`bind ${addr}: ${err.message}`) })
  }
  serve().catch((err) => { if (!closed) fail(err) })

  let n = 0
  ticker = setInterval(() => {
    publish(JSON.stringify({ n: n++ })).catch((err) => log(`publish failed: ${err.message}`))
  }, 100)

  link = startLink(grape)
  readyTimer = setTimeout(() => fail(new Error('announces not taken within 15 s')), 15000)
  let pending = 2
  const announced = (name) => (err) => {
    if (closed) return
    if (err) return fail(new Error(`announce ${name}: ${err.message}`))
    if (--pending === 0) {
      clearTimeout(readyTimer)
      console.log(JSON.stringify({ ready: true }))
    }
  }
  link.startAnnouncing(service, routerPort, { interval: 1000 }, announced(service))
  link.startAnnouncing(channel, pubPort, { interval: 1000 }, announced(channel))
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    log(`${signal}: closing`)
    close(0)
  })
}

main().catch(fail)
