'use strict'
// Usage: node peer-call.js GRAPE_URL PREFIX
// Calls the Rust side through the real Node packages and prints one JSON line:
//   {"http": R, "http_gzip": R, "ws": R, "sub": S}
// where R is {"ok": true, "data": reply} or {"ok": false, "err": message} for a request to
// PREFIX:rust_http (plain, then gzip) and PREFIX:rust_ws, and S is {"ok": true, "data":
// [first three messages as strings]} from a PeerSub on PREFIX:rust_pub, or its error.
// Each part retries its lookup for up to 10 s (the Rust side may still be announcing).
require('./loopback')
const [grape, prefix] = process.argv.slice(2)
if (!grape || !prefix) {
  console.error('usage: node peer-call.js GRAPE_URL PREFIX')
  process.exit(2)
}
const Link = require('grenache-nodejs-link')
const Http = require('grenache-nodejs-http')
const Ws = require('grenache-nodejs-ws')

const link = new Link({ grape })
link.start()

const deadline = Date.now() + 10000
const later = (fn) => setTimeout(fn, 200)

function request (Grenache, name, payload, opts) {
  const peer = new Grenache.PeerRPCClient(link, {})
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

function subscribe (name, count) {
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

async function main () {
  const [http, httpGzip, ws, sub] = await Promise.all([
    request(Http, `${prefix}:rust_http`, { hello: 'from node' }, {}),
    request(Http, `${prefix}:rust_http`, { hello: 'gzip from node', pad: 'z'.repeat(2000) }, { compress: true }),
    request(Ws, `${prefix}:rust_ws`, { hello: 'from node over ws' }, {}),
    subscribe(`${prefix}:rust_pub`, 3)
  ])
  console.log(JSON.stringify({ http, http_gzip: httpGzip, ws, sub }))
  process.exit(0)
}

main()
