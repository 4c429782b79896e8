'use strict'
// Usage: node zmq-mismatch.js HOST:PORT TIMES
// Connects a libzmq DEALER to HOST:PORT TIMES times, one after the other, each time a new
// socket with the security mechanism of the environment (zmq-common.js: curve.client();
// NULL when ZMQ_CURVE_SERVER_KEY is unset), and reports how each handshake ended, as
// libzmq's monitor saw it: the code of a `handshake:error:protocol` event (a server of the
// other mechanism: "ERR_ZMTP_MECHANISM_MISMATCH"), "handshake" when it succeeded,
// "disconnect" when the peer hung up first, or "timeout" after 5 s.
// Prints one JSON line {"outcomes": [O, ...]} and exits 0 (the Rust test judges them).
const zmq = require('zeromq')
const { log, exitSoon, curve } = require('./zmq-common')

const [addr, timesArg] = process.argv.slice(2)
const times = Number(timesArg)
if (!addr || !Number.isInteger(times) || times < 1) {
  console.error('usage: node zmq-mismatch.js HOST:PORT TIMES')
  process.exit(2)
}

const ATTEMPT_MS = 5000

// One connection: resolves with its outcome, then closes the socket.
async function attempt () {
  const dealer = new zmq.Dealer({ linger: 0, ...curve.client() })
  const outcome = new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), ATTEMPT_MS)
    const done = (what) => { clearTimeout(timer); resolve(what) }
    dealer.events.on('handshake:error:protocol', (event) => done(event.error.code))
    dealer.events.on('handshake:error:auth', (event) => done(`auth ${event.error.status}`))
    dealer.events.on('handshake:error:other', (event) => done(`other ${event.error.message}`))
    dealer.events.on('handshake', () => done('handshake'))
    dealer.events.on('disconnect', () => done('disconnect'))
  })
  dealer.connect(`tcp://${addr}`)
  const result = await outcome
  dealer.close()
  return result
}

async function main () {
  const outcomes = []
  for (let i = 0; i < times; i++) outcomes.push(await attempt())
  log(`outcomes: ${outcomes.join(', ')}`)
  console.log(JSON.stringify({ outcomes }))
  exitSoon(0)
}

main().catch((err) => {
  log(err.message)
  console.log(JSON.stringify({ outcomes: [], err: err.message }))
  exitSoon(1)
})
