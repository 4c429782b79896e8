'use strict'
// Usage: node stream-call.js GRAPE_URL PREFIX
// Node's client side of stream_interop.rs: streams the body of stream-common.js to
// PREFIX:rust_stream through grenache-nodejs-http's PeerRPCClient.stream, with the headers
// `_a: upload` and `_ar: {"name": "a.txt"}`, reads the reply frame off the response, and
// prints one JSON line {"ok": true, "rid": RID, "err": E, "data": RESULT} (the frame's three
// parts) or {"ok": false, "err": message}. The lookup retries for 10 s; exits 1 on failure.
require('./loopback')
const [grape, prefix] = process.argv.slice(2)
if (!prefix) {
  console.error('usage: node stream-call.js GRAPE_URL PREFIX')
  process.exit(2)
}
const Link = require('grenache-nodejs-link')
const Http = require('grenache-nodejs-http')
const { chunks } = require('./stream-common')

const link = new Link({ grape })
link.start()
const peer = new Http.PeerRPCClient(link, {})
peer.init()
const deadline = Date.now() + 10000

function attempt () {
  const opts = { timeout: 10000, headers: { _a: 'upload', _ar: { name: 'a.txt' } } }
  const dup = peer.stream(`${prefix}:rust_stream`, opts)
  const reply = []
  dup.on('data', (chunk) => reply.push(chunk))
  dup.on('error', (err) => {
    if (err.message === 'ERR_GRAPE_LOOKUP_EMPTY' && Date.now() < deadline) {
      return setTimeout(attempt, 200)
    }
    done({ ok: false, err: err.message })
  })
  dup.on('end', () => {
    try {
      const [rid, err, data] = JSON.parse(Buffer.concat(reply).toString())
      done({ ok: true, rid, err, data })
    } catch (e) {
      done({ ok: false, err: `reply not JSON: ${Buffer.concat(reply).toString()}` })
    }
  })
  for (const chunk of chunks()) dup.write(chunk)
  dup.end()
}

function done (result) {
  console.log(JSON.stringify(result))
  process.exit(result.ok ? 0 : 1)
}

setTimeout(() => done({ ok: false, err: 'timeout' }), 20000)
attempt()
