'use strict'
// Usage: node stream-serve.js GRAPE_URL PREFIX PORT
// Node's side of stream_interop.rs: a grenache-nodejs-http PeerRPCServer with
// `disableBuffered` that takes request streams on its 'stream' event, announced as
// PREFIX:node_stream. It reads each body to its end and replies through the handler with
// {from: "node", rid, key, action, args, len, sum} (see stream-common.js for len and sum);
// `rid` and `key` are the `_gr` header's. Prints {"ready": true} once announced; runs
// until killed.
require('./loopback')
const [grape, prefix, port] = process.argv.slice(2)
if (!port) {
  console.error('usage: node stream-serve.js GRAPE_URL PREFIX PORT')
  process.exit(2)
}
const Link = require('grenache-nodejs-link')
const Http = require('grenache-nodejs-http')
const { announcer } = require('./peer-common')
const { digest } = require('./stream-common')

const link = new Link({ grape })
link.start()

const peer = new Http.PeerRPCServer(link, { timeout: 300000, disableBuffered: true })
peer.init()
const srv = peer.transport('server')
srv.listen(Number(port))
srv.on('stream', (req, rep, meta, handler) => {
  const [rid, key] = meta.infoHeaders || []
  const seen = digest()
  req.on('data', (chunk) => seen.add(chunk))
  req.on('end', () => {
    handler.reply(rid, null, {
      from: 'node', rid, key, action: meta.action, args: meta.args, ...seen.value()
    })
  })
})
const name = `${prefix}:node_stream`
link.startAnnouncing(name, Number(port), { interval: 1000 }, announcer(1)(name))
