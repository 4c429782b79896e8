'use strict'
// TLS for the RPC benchmark scripts: when PEM_DIR is set, the `secure` option that
// grenache-nodejs-http and -ws take on servers and clients ({key, cert, ca}: one
// certificate that every side shows, and the CA that signed it); else undefined.
const fs = require('fs')
const path = require('path')

function secureFromEnv () {
  const dir = process.env.PEM_DIR
  if (!dir) return undefined
  return {
    key: fs.readFileSync(path.join(dir, 'node-key.pem')),
    cert: fs.readFileSync(path.join(dir, 'node.pem')),
    ca: fs.readFileSync(path.join(dir, 'ca.pem')),
    requestCert: true,
    rejectUnauthorized: true,
    // grenache-nodejs-ws's secure server insists on one: admit whom the CA vouched for.
    verifyClient: (info) => info.req.socket.authorized === true
  }
}

module.exports = { secureFromEnv }
