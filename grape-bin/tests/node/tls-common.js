'use strict'
// What tls-serve.js and tls-call.js share: the PEM files the Rust test wrote, and WSS for
// grenache-nodejs-ws 1.0.0's PeerPub and PeerSub, which (unlike its RPC transports) take
// no `secure` option: each override below is the package's own method with the plain
// socket swapped for a TLS one, through the same `ws` package.
const fs = require('fs')
const path = require('path')
const https = require('https')
const Ws = require('ws')
const uuid = require('uuid')
const TransportPub = require('grenache-nodejs-ws/lib/TransportPub')
const TransportSub = require('grenache-nodejs-ws/lib/TransportSub')

// { key, cert, ca } as Buffers, from PEM_DIR/{node-key,node,ca}.pem.
function readSecure (dir) {
  return {
    key: fs.readFileSync(path.join(dir, 'node-key.pem')),
    cert: fs.readFileSync(path.join(dir, 'node.pem')),
    ca: fs.readFileSync(path.join(dir, 'ca.pem'))
  }
}

// The subject CN and SHA-256 fingerprint of the peer certificate on a TLS socket.
function peerCert (socket) {
  const cert = socket && socket.getPeerCertificate ? socket.getPeerCertificate() : null
  if (!cert || !cert.fingerprint256) return null
  return { cn: cert.subject && cert.subject.CN, fingerprint256: cert.fingerprint256 }
}

// A PeerPub transport that listens over WSS, asking for and verifying client certificates.
function secureTransportPub (secure) {
  TransportPub.prototype.listen = function (port) {
    this.listening()
    const server = https.createServer({ ...secure, requestCert: true, rejectUnauthorized: true })
    server.listen(port)
    const socket = new Ws.Server({ server })
    socket.on('connection', (ws) => {
      const sid = ws._grc_id = uuid.v4()
      this._sockets.set(sid, ws)
      ws.on('close', () => this._sockets.delete(sid))
    })
    socket.on('close', () => this.unlistening())
    this.socket = socket
    this.port = port
    return this
  }
}

// A PeerSub transport that dials wss:// with a client certificate.
function secureTransportSub (secure) {
  TransportSub.prototype.sub = function () {
    this.connecting()
    const socket = this.socket = new Ws(`wss://${this.conf.dest}/ws`, secure)
    socket.on('message', data => this.emit('message', data))
    socket.on('open', () => {
      this.connected()
      this.emit('connected')
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      this.disconnected()
      this.emit('disconnected')
    })
  }
}

module.exports = { readSecure, peerCert, secureTransportPub, secureTransportSub }
