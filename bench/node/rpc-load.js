'use strict'
// The Node side of the RPC benchmark: a grenache-nodejs-http (or -ws) client keeping
// CONCURRENCY requests in flight to SERVICE for WARMUP + MEASURE ms, each carrying a
// string payload of BYTES bytes. Prints {"measuring":true} when the measured window
// opens, {"measured":true} when it closes, then one JSON line
// {ok, errors, rps, p50_us, p99_us} over that window, and exits.
// Usage: node rpc-load.js GRAPE_URL SERVICE http|ws CONCURRENCY BYTES WARMUP_MS MEASURE_MS
// (PEM_DIR set: TLS, see tls.js)
require('./loopback')
const [grape, service, kind, conc, bytes, warmup, measure] = process.argv.slice(2)
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require(kind === 'ws' ? 'grenache-nodejs-ws' : 'grenache-nodejs-http')

const link = new Link({ grape })
link.start()
const peer = new PeerRPCClient(link, { secure: require('./tls').secureFromEnv() })
peer.init()

const payload = 'x'.repeat(Number(bytes))
const latencies = []
let ok = 0
let errors = 0
let firstError = null
let start = 0
let measureFrom = 0
let end = 0

function one () {
  const sent = process.hrtime.bigint()
  const sentAt = Date.now()
  if (sentAt >= end) return done()
  peer.request(service, payload, { timeout: 10000 }, (err, data) => {
    const counted = sentAt >= measureFrom
    if (counted) {
      if (err || typeof data !== 'string' || data.length !== payload.length) {
        errors++
        if (!firstError) firstError = err ? err.message : 'bad reply'
      } else {
        ok++
        latencies.push(Number((process.hrtime.bigint() - sent) / 1000n))
      }
    }
    setImmediate(one)
  })
}

let running = 0
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

// One request first, so the lookup is cached before the clock starts.
peer.request(service, payload, { timeout: 10000 }, (err) => {
  if (err) {
    console.log(JSON.stringify({ ok: 0, errors: 1, first_error: err.message, rps: 0 }))
    process.exit(0)
  }
  start = Date.now()
  measureFrom = start + Number(warmup)
  end = measureFrom + Number(measure)
  setTimeout(() => console.log(JSON.stringify({ measuring: true })), Number(warmup))
  setTimeout(measured, Number(warmup) + Number(measure))
  running = Number(conc)
  for (let i = 0; i < running; i++) one()
})
