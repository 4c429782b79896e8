'use strict'
// Usage: node rpc-client.js GRAPE_URL SERVICE [http|ws] [PAYLOAD_JSON]
// Looks SERVICE up through the Grape, sends one request and prints one JSON line:
// {"ok": true, "data": reply} or {"ok": false, "err": message}. Exits 0 either way; 2 on bad usage.
require('./loopback')
const [grape, service, kind = 'http', payload = '{"hello":"world"}'] = process.argv.slice(2)
if (!grape || !service) {
  console.error('usage: node rpc-client.js GRAPE_URL SERVICE [http|ws] [PAYLOAD_JSON]')
  process.exit(2)
}
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require(kind === 'ws' ? 'grenache-nodejs-ws' : 'grenache-nodejs-http')

const link = new Link({ grape })
link.start()
const peer = new PeerRPCClient(link, {})
peer.init()
peer.request(service, JSON.parse(payload), { timeout: 5000 }, (err, data) => {
  console.log(JSON.stringify(err ? { ok: false, err: err.message } : { ok: true, data }))
  process.exit(0)
})
