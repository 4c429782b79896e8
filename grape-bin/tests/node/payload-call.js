'use strict'
// Usage: node payload-call.js GRAPE_URL PREFIX TEXTS_FILE
// Sends every text of TEXTS_FILE (written by payload-gen.js) through the Rust echo servers
// and checks what comes back, then listens to the Rust publishers:
//   PREFIX:rust_http  grenache-nodejs-http PeerRPCClient (every third request gzipped)
//   PREFIX:rust_ws    grenache-nodejs-ws PeerRPCClient
//   PREFIX:rust_zmq   a zeromq DEALER sending [rid, key, text] and reading the raw reply
//   PREFIX:rust_ws_pub, PREFIX:rust_zmq_pub  a PeerSub and a zeromq SUB
// A text is sent as the value JSON.parse makes of it; the reply must be the same text
// (JSON.stringify of the result, or the raw frame over ZeroMQ, byte for byte). A text with
// a lone surrogate must be refused with ERR_PAYLOAD_LONE_SURROGATE. The payload
// {"fail": "boom"} must come back as an error: "boom" over HTTP and WS (as Node's own
// servers send it), "ERR_boom" in the second frame over ZeroMQ (an original
// grenache-nodejs-zmq client only sees errors that start with ERR_). A subscriber must see
// every text at least once and nothing else.
// Prints one JSON line {"http": R, "ws": R, "zmq": R, "errors": E, "ws_sub": S, "zmq_sub": S}
// with R = {"ok": n, "refused": n, "bad": [up to 5 problems]}, S = {"seen": n, "bad": [...]}.
require('./loopback')
const fs = require('fs')
const zmq = require('zeromq')
const Http = require('grenache-nodejs-http')
const Ws = require('grenache-nodejs-ws')
const { ERR_FRAME, uuid, log, startLink, lookupRetry, sendQueue, within, exitSoon } = require('./zmq-common')

const [grape, prefix, textsFile] = process.argv.slice(2)
if (!grape || !prefix || !textsFile) {
  console.error('usage: node payload-call.js GRAPE_URL PREFIX TEXTS_FILE')
  process.exit(2)
}
const cases = JSON.parse(fs.readFileSync(textsFile, 'utf8'))
const known = new Set(cases.map((c) => c.text))
const LONE_ERR = 'ERR_PAYLOAD_LONE_SURROGATE'
const BATCH = 25

const link = startLink(grape)

function tally () {
  return { ok: 0, refused: 0, bad: [] }
}
function problem (r, what) {
  if (r.bad.length < 5) r.bad.push(what)
  else r.more = (r.more || 0) + 1
}

// Checks one answer: `err` an Error message or null, `text` what came back as text.
function judge (r, c, err, text) {
  if (c.lone) {
    if (err && err.includes(LONE_ERR)) r.refused++
    else problem(r, `lone ${JSON.stringify(c.text)}: got ${err ? `error ${err}` : text}`)
  } else if (err) {
    problem(r, `${JSON.stringify(c.text)}: error ${err}`)
  } else if (text !== c.text) {
    problem(r, `sent ${c.text} got ${text}`)
  } else {
    r.ok++
  }
}

function peerClient (Grenache) {
  const peer = new Grenache.PeerRPCClient(link, {})
  peer.init()
  return peer
}

function request (peer, name, payload, opts) {
  return new Promise((resolve) => {
    peer.request(name, payload, { timeout: 5000, ...opts }, (err, data) => resolve([err ? err.message : null, data]))
  })
}

async function viaPeer (Grenache, name) {
  const r = tally()
  await lookupRetry(link, name)
  const peer = peerClient(Grenache)
  for (let at = 0; at < cases.length; at += BATCH) {
    await Promise.all(cases.slice(at, at + BATCH).map(async (c, k) => {
      const compress = Grenache === Http && (at + k) % 3 === 0
      const [err, data] = await request(peer, name, JSON.parse(c.text), { compress })
      judge(r, c, err, err ? null : JSON.stringify(data))
    }))
  }
  const [err] = await request(peer, name, { fail: 'boom' }, {})
  r.error = err
  peer.stop()
  return r
}

async function viaZmq (name) {
  const r = tally()
  const peers = await lookupRetry(link, name)
  const dealer = new zmq.Dealer({ routingId: uuid(), linger: 0 })
  dealer.connect(`tcp://${peers[0]}`)
  const send = sendQueue(dealer)
  const waiting = new Map()
  const reading = (async () => {
    for await (const raw of dealer) {
      const [rid, ...frames] = raw.map((f) => f.toString('utf8'))
      const done = waiting.get(rid)
      if (done) {
        waiting.delete(rid)
        done(frames)
      }
    }
  })().catch((err) => log(`DEALER: ${err.message}`))
  const call = (body) => within(5000, 'a ZeroMQ reply', new Promise((resolve, reject) => {
    const rid = uuid()
    waiting.set(rid, resolve)
    send([rid, name, body]).catch(reject)
  }))
  for (let at = 0; at < cases.length; at += BATCH) {
    await Promise.all(cases.slice(at, at + BATCH).map(async (c) => {
      try {
        const frames = await call(c.text)
        const isErr = frames.length === 2 && frames[1] === ERR_FRAME
        judge(r, c, isErr ? frames[0] : null, isErr ? null : frames.join('|'))
      } catch (err) {
        problem(r, `${JSON.stringify(c.text)}: ${err.message}`)
      }
    }))
  }
  // What an original client reads: the second frame only.
  r.error = (await call(JSON.stringify({ fail: 'boom' })))[0]
  dealer.close()
  await reading
  return r
}

// Collects published messages until every text was seen, or 10 s pass.
async function collect (next, r) {
  const seen = new Set()
  const deadline = Date.now() + 10000
  while (seen.size < known.size && Date.now() < deadline) {
    const text = await within(Math.max(1, deadline - Date.now()), 'a message', next()).catch(() => null)
    if (text === null) break
    if (known.has(text)) seen.add(text)
    else problem(r, `not a text sent: ${text}`)
  }
  r.seen = seen.size
  return r
}

async function wsSub (name) {
  const r = { bad: [] }
  await lookupRetry(link, name)
  const peer = new Ws.PeerSub(link, {})
  peer.init()
  const queue = []
  let wake = null
  peer.on('message', (msg) => {
    queue.push(msg.toString())
    if (wake) wake()
  })
  peer.sub(name, { timeout: 5000 })
  const next = () => queue.length
    ? Promise.resolve(queue.shift())
    : new Promise((resolve) => { wake = () => { wake = null; resolve(queue.shift()) } })
  await collect(next, r)
  peer.stop()
  return r
}

async function zmqSub (name) {
  const r = { bad: [] }
  const peers = await lookupRetry(link, name)
  const sub = new zmq.Subscriber({ linger: 0 })
  sub.connect(`tcp://${peers[0]}`)
  sub.subscribe()
  await collect(async () => (await sub.receive()).map((f) => f.toString('utf8')).join('|'), r)
  sub.close()
  return r
}

async function main () {
  const out = {}
  const parts = [
    ['http', () => viaPeer(Http, `${prefix}:rust_http`)],
    ['ws', () => viaPeer(Ws, `${prefix}:rust_ws`)],
    ['zmq', () => viaZmq(`${prefix}:rust_zmq`)],
    ['ws_sub', () => wsSub(`${prefix}:rust_ws_pub`)],
    ['zmq_sub', () => zmqSub(`${prefix}:rust_zmq_pub`)]
  ]
  for (const [name, run] of parts) {
    try {
      out[name] = await run()
    } catch (err) {
      out[name] = { bad: [err.message] }
    }
  }
  link.stop()
  console.log(JSON.stringify(out))
  exitSoon(0)
}

main()
