'use strict'
// Usage: node tls-call.js GRAPE_URL PREFIX PEM_DIR
// Calls the Rust side of tls_interop.rs with TLS on, through the real Node packages, and
// prints one JSON line {"https": R, "wss": R, "sub": S}: R is {"ok": true, "data": reply}
// or {"ok": false, "err": message} for a request with `secure` to PREFIX:rust_https and
// PREFIX:rust_wss; S is the first three messages a PeerSub got over WSS from
// PREFIX:rust_wss_pub (see tls-common.js), or its error. Lookups retry for 10 s.
require('./loopback')
const [grape, prefix, dir] = process.argv.slice(2)
if (!dir) {
  console.error('usage: node tls-call.js GRAPE_URL PREFIX PEM_DIR')
  process.exit(2)
}
const Link = require('grenache-nodejs-link')
const Http = require('grenache-nodejs-http')
const Ws = require('grenache-nodejs-ws')
const { readSecure, secureTransportSub } = require('./tls-common')
const { request, subscribe } = require('./peer-common')

const secure = readSecure(dir)
const link = new Link({ grape })
link.start()

async function main () {
  secureTransportSub(secure)
  const [https, wss, sub] = await Promise.all([
    request(Http, link, `${prefix}:rust_https`, { hello: 'from node over https' }, {}, { secure }),
    request(Ws, link, `${prefix}:rust_wss`, { hello: 'from node over wss' }, {}, { secure }),
    subscribe(Ws, link, `${prefix}:rust_wss_pub`, 3)
  ])
  console.log(JSON.stringify({ https, wss, sub }))
  process.exit(0)
}

main()
