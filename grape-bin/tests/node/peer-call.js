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
const { request, subscribe } = require('./peer-common')

const link = new Link({ grape })
link.start()

async function main () {
  const [http, httpGzip, ws, sub] = await Promise.all([
    request(Http, link, `${prefix}:rust_http`, { hello: 'from node' }, {}),
    request(Http, link, `${prefix}:rust_http`, { hello: 'gzip from node', pad: 'z'.repeat(2000) }, { compress: true }),
    request(Ws, link, `${prefix}:rust_ws`, { hello: 'from node over ws' }, {}),
    subscribe(Ws, link, `${prefix}:rust_pub`, 3)
  ])
  console.log(JSON.stringify({ http, http_gzip: httpGzip, ws, sub }))
  process.exit(0)
}

main()
