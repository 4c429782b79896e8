'use strict'
// What the peer scripts (peer-serve/peer-call, tls-serve/tls-call) share: announcing
// with a ready line, and a request and a subscription that retry their lookup for 10 s
// after start (the other side may still be announcing).
const deadline = Date.now() + 10000
const later = (fn) => setTimeout(fn, 200)

// Callbacks for link.startAnnouncing: prints {"ready": true} once `count` names were taken,
// or {"ready": false, name, err} for a failed one.
function announcer (count) {
  let pending = count
  return (name) => (err) => {
    if (err) {
      console.log(JSON.stringify({ ready: false, name, err: err.message }))
      return
    }
    if (--pending === 0) console.log(JSON.stringify({ ready: true }))
  }
}

// One request through a new PeerRPCClient of `Grenache` (`conf`: its options, `opts`: the
// request's); resolves {"ok": true, "data": reply} or {"ok": false, "err": message}.
function request (Grenache, link, name, payload, opts, conf) {
  const peer = new Grenache.PeerRPCClient(link, conf || {})
  peer.init()
  return new Promise((resolve) => {
    const attempt = () => {
      peer.request(name, payload, { timeout: 5000, ...opts }, (err, data) => {
        if (err && err.message === 'ERR_GRAPE_LOOKUP_EMPTY' && Date.now() < deadline) {
          return later(attempt)
        }
        resolve(err ? { ok: false, err: err.message } : { ok: true, data })
      })
    }
    attempt()
  })
}

// The first `count` messages a PeerSub of grenache-nodejs-ws gets on `name`, as strings:
// {"ok": true, "data": [..]}, or {"ok": false, "err": .., "data": what came} after 12 s.
function subscribe (Ws, link, name, count) {
  return new Promise((resolve) => {
    const msgs = []
    const peer = new Ws.PeerSub(link, {})
    peer.init()
    const timer = setTimeout(() => resolve({ ok: false, err: 'timeout', data: msgs }), 12000)
    peer.on('message', (msg) => {
      msgs.push(msg.toString())
      if (msgs.length === count) {
        clearTimeout(timer)
        resolve({ ok: true, data: msgs })
      }
    })
    peer.on('error', (err) => {
      if (Date.now() < deadline) return later(() => peer.sub(name, { timeout: 5000 }))
      clearTimeout(timer)
      resolve({ ok: false, err: err.message, data: msgs })
    })
    peer.sub(name, { timeout: 5000 })
  })
}

module.exports = { announcer, request, subscribe }
