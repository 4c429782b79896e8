'use strict'
// Usage: node zmq-call.js GRAPE_URL RPC_SERVICE PUB_CHANNEL
// Calls a peer speaking the ZeroMQ wire format of docs/zeromq-wire.md, through the real
// libzmq (zeromq npm):
//   1. looks RPC_SERVICE up (retrying for up to 10 s) and connects a DEALER to the first peer;
//   2. sends {"hello": "from node"} and checks the reply is an object whose "echo" equals it;
//   3. sends {"fail": true} and expects an error reply [rid, message, "ERR"];
//   4. sends 50 requests at once and counts the replies (matched by rid) that echo their payload;
//   5. looks PUB_CHANNEL up, connects a SUB, subscribes to everything and takes 3 messages
//      (one frame each, JSON).
// Prints one JSON line {"reply": R, "error": E, "concurrent_ok": N, "messages": [M, M, M]}:
// R the result of step 2, E the error message of step 3 (or null), M the parsed messages.
// If a check fails or anything times out (15 s in all) it adds "fail": [reasons] and exits 1.
// With ZMQ_CURVE_SERVER_KEY (and the client key pair) set, both sockets are CURVE clients
// (zmq-common.js: curve.client()).
const util = require('util')
const zmq = require('zeromq')
const { ERR_FRAME, uuid, log, startLink, lookupRetry, sendQueue, within, exitSoon, curve } = require('./zmq-common')

const [grape, service, channel] = process.argv.slice(2)
if (!grape || !service || !channel) {
  console.error('usage: node zmq-call.js GRAPE_URL RPC_SERVICE PUB_CHANNEL')
  process.exit(2)
}

const REQUEST_MS = 5000
const deadline = Date.now() + 15000
const left = () => Math.max(0, deadline - Date.now())
const step = (what, promise) => within(left(), what, promise)

const out = { reply: null, error: null, concurrent_ok: 0, messages: [] }
const problems = []
const check = (ok, why) => { if (!ok) problems.push(why) }

const link = startLink(grape)
let dealer = null
let sub = null
const pending = new Map() // rid -> { resolve, reject, timer }

// The reply frames after the rid: [result JSON] -> {result}, [message, "ERR"] -> {error};
// throws on anything else.
function decode (frames) {
  if (frames.length === 2 && frames[1] === ERR_FRAME) return { error: frames[0] }
  if (frames.length === 1) {
    try {
      return { result: JSON.parse(frames[0]) }
    } catch (err) {
      throw new Error(`reply is not JSON: ${JSON.stringify(frames[0])}`)
    }
  }
  throw new Error(`reply of ${frames.length + 1} frames: ${JSON.stringify(frames)}`)
}

async function receiveReplies () {
  for await (const raw of dealer) {
    const [rid, ...frames] = raw.map((f) => f.toString('utf8'))
    const waiter = pending.get(rid)
    if (!waiter) {
      log(`reply for unknown rid ${rid}`)
      continue
    }
    pending.delete(rid)
    clearTimeout(waiter.timer)
    try {
      waiter.resolve(decode(frames))
    } catch (err) {
      waiter.reject(err)
    }
  }
}

// Sends [rid, service, JSON payload] and resolves with the decoded reply.
function request (send, payload) {
  const rid = uuid()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      pending.delete(rid)
      reject(new Error(`no reply within ${REQUEST_MS} ms`))
    }, REQUEST_MS)
    pending.set(rid, { resolve, reject, timer })
    send([rid, service, JSON.stringify(payload)]).catch((err) => {
      pending.delete(rid)
      clearTimeout(timer)
      reject(err)
    })
  })
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

async function rpc () {
  const peers = await step(`lookup ${service}`, lookupRetry(link, service, Math.min(10000, left())))
  log(`${service} at ${peers.join(', ')}`)
  dealer = new zmq.Dealer({ routingId: uuid(), linger: 0, ...curve.client() })
  dealer.connect(`tcp://${peers[0]}`)
  receiveReplies().catch((err) => log(`receive: ${err.message}`))
  const send = sendQueue(dealer)

  const hello = { hello: 'from node' }
  const first = await step('hello request', request(send, hello))
  if ('result' in first) {
    out.reply = first.result
    check(isObject(first.result) && util.isDeepStrictEqual(first.result.echo, hello),
      `reply does not echo ${JSON.stringify(hello)}`)
  } else {
    check(false, `hello got the error ${JSON.stringify(first.error)}`)
  }

  const failed = await step('fail request', request(send, { fail: true }))
  if ('error' in failed) out.error = failed.error
  else check(false, `{"fail": true} got the result ${JSON.stringify(failed.result)}`)

  const payloads = Array.from({ length: 50 }, (_, i) => ({ i, hello: 'concurrent' }))
  const replies = await step('50 concurrent requests',
    Promise.allSettled(payloads.map((p) => request(send, p))))
  replies.forEach((r, i) => {
    if (r.status === 'fulfilled' && isObject(r.value.result) &&
        util.isDeepStrictEqual(r.value.result.echo, payloads[i])) {
      out.concurrent_ok++
    } else {
      log(`concurrent #${i}: ${r.status === 'rejected' ? r.reason.message : JSON.stringify(r.value)}`)
    }
  })
  check(out.concurrent_ok === 50, `${out.concurrent_ok} of 50 concurrent requests echoed`)
}

async function subscribe () {
  const peers = await step(`lookup ${channel}`, lookupRetry(link, channel, Math.min(10000, left())))
  log(`${channel} at ${peers.join(', ')}`)
  sub = new zmq.Subscriber({ linger: 0, ...curve.client() })
  sub.connect(`tcp://${peers[0]}`)
  sub.subscribe()
  while (out.messages.length < 3) {
    const frames = await step('3 published messages', sub.receive())
    if (frames.length !== 1) throw new Error(`a published message of ${frames.length} frames`)
    const text = frames[0].toString('utf8')
    try {
      out.messages.push(JSON.parse(text))
    } catch (err) {
      throw new Error(`a published message is not JSON: ${JSON.stringify(text)}`)
    }
  }
}

async function main () {
  try {
    await rpc()
    await subscribe()
  } catch (err) {
    problems.push(err.message)
  }
  for (const waiter of pending.values()) clearTimeout(waiter.timer)
  link.stop()
  if (dealer) dealer.close()
  if (sub) sub.close()
  if (problems.length) {
    for (const p of problems) log(`FAIL: ${p}`)
    out.fail = problems
  }
  console.log(JSON.stringify(out))
  exitSoon(problems.length ? 1 : 0)
}

main()
