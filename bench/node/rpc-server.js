'use strict'
// The Node side of the RPC benchmark: a grenache-nodejs-http (or -ws) server that answers
// every request with its own payload, announced through a Grape.
// Usage: node rpc-server.js GRAPE_URL SERVICE http|ws PORT   (PEM_DIR set: TLS, see tls.js)
// (a port of 0 is not picked by the OS here: the transport would announce 0)
// Prints one line {"ready":true,"port":N} once the Grape has accepted the announce.
require('./loopback')
const [grape, service, kind, port] = process.argv.slice(2)
const Link = require('grenache-nodejs-link')
const { PeerRPCServer } = require(kind === 'ws' ? 'grenache-nodejs-ws' : 'grenache-nodejs-http')

const link = new Link({ grape })
link.start()
const peer = new PeerRPCServer(link, { timeout: 300000, secure: require('./tls').secureFromEnv() })
peer.init()
const transport = peer.transport('server')
transport.listen(Number(port))
transport.on('request', (rid, key, payload, handler) => handler.reply(null, payload))

let said = false
link.startAnnouncing(service, transport.port, { interval: 1000 }, (err) => {
  if (said) return
  said = true
  console.log(JSON.stringify(err ? { ready: false, err: err.message } : { ready: true, port: transport.port }))
})
