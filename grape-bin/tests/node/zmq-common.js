'use strict'
// Shared by zmq-serve.js and zmq-call.js: the ZeroMQ wire format of docs/zeromq-wire.md,
// a Link lookup that retries until a peer appears, and a send queue (a zeromq 6 socket
// rejects a second send() while one is still pending, with EBUSY).
const crypto = require('crypto')
const Link = require('grenache-nodejs-link')

// The third frame of an error reply.
const ERR_FRAME = 'ERR'

const uuid = () => crypto.randomUUID()

const log = (...args) => console.error(`[${process.argv[1].split('/').pop()}]`, ...args)

// A port argument: an integer in 1..65535, or null.
function port (arg) {
  const n = Number(arg)
  return Number.isInteger(n) && n > 0 && n < 65536 ? n : null
}

// A started Link on GRAPE_URL. Lookup results are cached for 100 ms only: the Link caches
// an empty answer like any other for 10 s by default, so a retry would never see a peer
// that announced after the first try.
function startLink (grape) {
  const link = new Link({ grape, lruMaxAgeLookup: 100 })
  link.start()
  return link
}

// Looks NAME up until the Grape knows a peer ("host:port" strings) or WITHIN ms have passed.
function lookupRetry (link, name, within = 10000) {
  const deadline = Date.now() + within
  return new Promise((resolve, reject) => {
    const attempt = () => {
      link.lookup(name, { retry: 1 }, (err, peers) => {
        if (!err && peers.length) return resolve(peers)
        const why = err ? err.message : 'no peers'
        if (Date.now() + 250 > deadline) {
          return reject(new Error(`lookup ${name} found no peer within ${within} ms (${why})`))
        }
        setTimeout(attempt, 250)
      })
    }
    attempt()
  })
}

// Returns send(frames): queues frames for SOCKET, one send() at a time, resolving when sent.
function sendQueue (socket) {
  let tail = Promise.resolve()
  return (frames) => {
    const sent = tail.then(() => socket.send(frames))
    tail = sent.catch(() => {})
    return sent
  }
}

// Rejects with Error(WHAT timed out) if PROMISE has not settled within MS.
function within (ms, what, promise) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// CURVE socket options from the environment (Z85 keys), or {} for the NULL mechanism:
//   server(): ZMQ_CURVE_SERVER_SECRET set -> a CURVE server with that secret key;
//   client(): ZMQ_CURVE_SERVER_KEY set -> a CURVE client trusting that server key, with the
//             key pair ZMQ_CURVE_CLIENT_PUBLIC / ZMQ_CURVE_CLIENT_SECRET.
const curve = {
  server () {
    const secret = process.env.ZMQ_CURVE_SERVER_SECRET
    return secret ? { curveServer: true, curveSecretKey: secret } : {}
  },
  client () {
    const serverKey = process.env.ZMQ_CURVE_SERVER_KEY
    if (!serverKey) return {}
    return {
      curveServerKey: serverKey,
      curvePublicKey: process.env.ZMQ_CURVE_CLIENT_PUBLIC,
      curveSecretKey: process.env.ZMQ_CURVE_CLIENT_SECRET
    }
  }
}

// Forces an exit CODE if something still holds the event loop MS after the work is done;
// the timer itself does not keep the process alive.
function exitSoon (code, ms = 3000) {
  process.exitCode = code
  setTimeout(() => {
    log(`still running ${ms} ms after closing everything; forcing exit`)
    process.exit(code)
  }, ms).unref()
}

module.exports = { ERR_FRAME, uuid, log, port, startLink, lookupRetry, sendQueue, within, exitSoon, curve }
