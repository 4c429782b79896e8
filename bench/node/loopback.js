'use strict'
// Binds every TCP server and UDP socket this process opens to 127.0.0.1: the Grape's DHT
// (k-rpc binds with a port only) and the grenache transports would otherwise listen on
// all interfaces, and a benchmark must stay on loopback.
const net = require('net')
const dgram = require('dgram')

const LOOPBACK = '127.0.0.1'

const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const first = args[0]
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    if (typeof args[1] === 'string') args[1] = LOOPBACK
    else args.splice(1, 0, LOOPBACK)
  } else if (first && typeof first === 'object' && !first.path) {
    args[0] = { ...first, host: LOOPBACK }
  }
  return listen.apply(this, args)
}

const bind = dgram.Socket.prototype.bind
dgram.Socket.prototype.bind = function (...args) {
  const first = args[0]
  if (typeof first === 'number' || first === undefined) {
    if (typeof args[1] === 'string') args[1] = LOOPBACK
    else args.splice(1, 0, LOOPBACK)
  } else if (first && typeof first === 'object') {
    args[0] = { ...first, address: LOOPBACK }
  }
  return bind.apply(this, args)
}
