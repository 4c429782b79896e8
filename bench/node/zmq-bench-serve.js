'use strict'
// The Node side of the ZeroMQ RPC benchmark, as server: a zeromq (libzmq 4.3.5) ROUTER
// bound on 127.0.0.1:PORT that answers every request [rid, key, payload] with
// [rid, payload] (the payload parsed and serialised again, as the Rust server's echo
// handler does), the frames of docs/zeromq-wire.md. The port is announced as SERVICE
// through GRAPE_URL every second.
// Usage: node zmq-bench-serve.js GRAPE_URL SERVICE PORT
// Prints one line {"ready":true,"port":N} once the Grape has accepted the announce.
require('./loopback')
const zmq = require('zeromq')
const Link = require('grenache-nodejs-link')

const [grape, service, portArg] = process.argv.slice(2)
const port = Number(portArg)

// ZMQ_CURVE_SERVER_SECRET (Z85) set: a CURVE server with that secret key (grape-bench --tls).
const secret = process.env.ZMQ_CURVE_SERVER_SECRET
const curve = secret ? { curveServer: true, curveSecretKey: secret } : {}
const router = new zmq.Router({ linger: 0, sendHighWaterMark: 100000, receiveHighWaterMark: 100000, ...curve })

// A zeromq 6 socket refuses a second send() while one is pending (EBUSY): one at a time.
let tail = Promise.resolve()
function reply (frames) {
  tail = tail.then(() => router.send(frames)).catch((err) => console.error(`reply: ${err.message}`))
}

async function serve () {
  for await (const msg of router) {
    if (msg.length !== 4) continue // [identity, rid, key, payload] only
    const [identity, rid, , body] = msg
    let out
    try {
      out = [identity, rid, JSON.stringify(JSON.parse(body.toString('utf8')))]
    } catch (err) {
      out = [identity, rid, 'ERR_REQUEST_PAYLOAD', 'ERR']
    }
    reply(out)
  }
}

async function main () {
  await router.bind(`tcp://127.0.0.1:${port}`)
  serve().catch((err) => console.error(`serve: ${err.message}`))
  const link = new Link({ grape })
  link.start()
  let said = false
  link.startAnnouncing(service, port, { interval: 1000 }, (err) => {
    if (said) return
    said = true
    console.log(JSON.stringify(err ? { ready: false, err: err.message } : { ready: true, port }))
  })
}

main().catch((err) => {
  console.log(JSON.stringify({ ready: false, err: err.message }))
  process.exit(1)
})
// The bench kills us by pid; a closed stdin (bench gone) ends us too.
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
