'use strict'
// Keeps every server this process opens on 127.0.0.1. The grenache transports call
// `listen(port)` with no host, which would bind all interfaces; the tests must not.
const net = require('net')

const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    if (args.length === 1 || typeof args[1] === 'function') {
      args.splice(1, 0, '127.0.0.1')
    } else if (args[1] === undefined || args[1] === null || typeof args[1] === 'number') {
      if (typeof args[1] === 'number') args.splice(1, 0, '127.0.0.1')
      else args[1] = '127.0.0.1'
    }
  } else if (args[0] && typeof args[0] === 'object' && !args[0].path && !args[0].host) {
    args[0] = { ...args[0], host: '127.0.0.1' }
  }
  return listen.apply(this, args)
}
