'use strict'
// Usage: node rpc-server.js GRAPE_URL SERVICE PORT [http|ws]
// Serves SERVICE on 127.0.0.1:PORT through grenache-nodejs-http (or -ws), announcing it every
// second through the Grape; answers each request with {echo, from: "node", transport}.
// Prints one JSON line {"ready": true, ...} after the first announce is accepted.
require('./loopback')
const [grape, service, port, kind = 'http'] = process.argv.slice(2)
const Link = require('grenache-nodejs-link')
const { PeerRPCServer } = require(kind === 'ws' ? 'grenache-nodejs-ws' : 'grenache-nodejs-http')

const link = new Link({ grape })
link.start()
const peer = new PeerRPCServer(link, { timeout: 300000 })
peer.init()
const srv = peer.transport('server')
srv.listen(Number(port))
srv.on('request', (rid, key, payload, handler) => {
  handler.reply(null, { echo: payload, from: 'node', transport: kind })
})
let announced = false
link.startAnnouncing(service, srv.port, { interval: 1000 }, (err) => {
  if (err) {
    console.log(JSON.stringify({ ready: false, err: err.message }))
    return
  }
  if (!announced) {
    announced = true
    console.log(JSON.stringify({ ready: true, service, port: srv.port, transport: kind }))
  }
})
