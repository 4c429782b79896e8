'use strict'
// The Node side of the ZeroMQ RPC benchmark, as client: looks SERVICE up once through
// GRAPE_URL, connects one zeromq (libzmq 4.3.5) DEALER to the first peer and keeps
// CONCURRENCY requests [rid, SERVICE, payload] in flight for WARMUP + MEASURE ms, each
// payload a JSON string of BYTES bytes, replies matched by rid (docs/zeromq-wire.md).
// Prints {"measuring":true} when the measured window opens, {"measured":true} when it
// closes, then one JSON line
// {ok, errors, rps, p50_us, p99_us} over that window, and exits.
// Usage: node zmq-bench-load.js GRAPE_URL SERVICE CONCURRENCY BYTES WARMUP_MS MEASURE_MS
require('./loopback')
const crypto = require('crypto')
const zmq = require('zeromq')
const Link = require('grenache-nodejs-link')

const [grape, service, conc, bytes, warmup, measure] = process.argv.slice(2)
// ZMQ_CURVE_SERVER_KEY (Z85) set: a CURVE client trusting that server key, with the key pair
// ZMQ_CURVE_CLIENT_PUBLIC / ZMQ_CURVE_CLIENT_SECRET (grape-bench --tls).
const curve = process.env.ZMQ_CURVE_SERVER_KEY
  ? {
      curveServerKey: process.env.ZMQ_CURVE_SERVER_KEY,
      curvePublicKey: process.env.ZMQ_CURVE_CLIENT_PUBLIC,
      curveSecretKey: process.env.ZMQ_CURVE_CLIENT_SECRET
    }
  : {}

const payload = 'x'.repeat(Number(bytes))
const body = JSON.stringify(payload)
const latencies = []
const pending = new Map() // rid -> [hrtime sent, Date.now() sent]
let ok = 0
let errors = 0
let firstError = null
let measureFrom = Infinity
let end = Infinity
let running = 0
let dealer = null
let onFirst = null

let tail = Promise.resolve()
function send (frames) {
  tail = tail.then(() => dealer.send(frames)).catch((err) => {
    errors++
    if (!firstError) firstError = `send: ${err.message}`
  })
}

function one () {
  const sentAt = Date.now()
  if (sentAt >= end) return done()
  const rid = crypto.randomUUID()
  pending.set(rid, [process.hrtime.bigint(), sentAt])
  send([rid, service, body])
}

function settle (rid, good, why) {
  const p = pending.get(rid)
  if (!p) return
  pending.delete(rid)
  if (onFirst) return onFirst(good ? null : new Error(why))
  if (p[1] >= measureFrom) {
    if (good) {
      ok++
      latencies.push(Number((process.hrtime.bigint() - p[0]) / 1000n))
    } else {
      errors++
      if (!firstError) firstError = why
    }
  }
  setImmediate(one)
}

async function receive () {
  for await (const [rid, result, err] of dealer) {
    const key = rid.toString('utf8')
    if (err !== undefined) {
      settle(key, false, result.toString('utf8'))
      continue
    }
    let value
    try {
      value = JSON.parse(result.toString('utf8'))
    } catch (e) {
      settle(key, false, 'reply is not JSON')
      continue
    }
    const good = typeof value === 'string' && value.length === payload.length
    settle(key, good, good ? null : 'bad reply')
  }
}

// The measured window is over; said once, before the result (the last reply can come
// before this timer fires).
let saidMeasured = false
function measured () {
  if (saidMeasured) return
  saidMeasured = true
  console.log(JSON.stringify({ measured: true }))
}

function done () {
  if (--running > 0) return
  measured()
  latencies.sort((a, b) => a - b)
  const pct = (p) => latencies.length ? latencies[Math.min(latencies.length, Math.ceil(p / 100 * latencies.length)) - 1] : null
  console.log(JSON.stringify({
    ok, errors, first_error: firstError, rps: ok / (Number(measure) / 1000), p50_us: pct(50), p99_us: pct(99)
  }))
  process.exit(0)
}

function fail (message) {
  console.log(JSON.stringify({ ok: 0, errors: 1, first_error: message, rps: 0 }))
  process.exit(0)
}

const link = new Link({ grape })
link.start()
link.lookup(service, { retry: 3 }, (err, peers) => {
  if (err || !peers || !peers.length) return fail(`lookup: ${err ? err.message : 'no peers'}`)
  dealer = new zmq.Dealer({ routingId: crypto.randomUUID(), linger: 0, sendHighWaterMark: 100000, receiveHighWaterMark: 100000, ...curve })
  dealer.connect(`tcp://${peers[0]}`)
  receive().catch((e) => fail(`receive: ${e.message}`))
  // One request first, so the connection is up before the clock starts.
  onFirst = (e) => {
    onFirst = null
    if (e) return fail(e.message)
    measureFrom = Date.now() + Number(warmup)
    end = measureFrom + Number(measure)
    setTimeout(() => console.log(JSON.stringify({ measuring: true })), Number(warmup))
    setTimeout(measured, Number(warmup) + Number(measure))
    running = Number(conc)
    for (let i = 0; i < running; i++) one()
  }
  const timer = setTimeout(() => fail('first request: no reply within 10 s'), 10000)
  const first = onFirst
  onFirst = (e) => { clearTimeout(timer); first(e) }
  one()
})
