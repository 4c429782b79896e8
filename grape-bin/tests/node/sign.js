'use strict'
// BEP-44 mutable-item signing with Node's own ed25519, shared by the scripts.
// CLI: node sign.js SEED_HEX SEQ V [SALT] -> {"k": hex, "sig": hex, "target": hex}
const crypto = require('crypto')

// PKCS#8 DER prefix of an Ed25519 private key whose 32-byte seed follows.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')

function keyFromSeed (seed) {
  const privateKey = crypto.createPrivateKey({
    key: Buffer.concat([PKCS8_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8'
  })
  const spki = crypto.createPublicKey(privateKey).export({ format: 'der', type: 'spki' })
  return { privateKey, k: spki.subarray(spki.length - 32) }
}

function bstr (b) {
  return Buffer.concat([Buffer.from(`${b.length}:`), b])
}

// The BEP-44 signature buffer: the bencoded dict {salt?, seq, v} without its outer `d`..`e`.
// `v` is stored as a byte string, as the Grape does with a JSON string `v`.
function sigData (seq, v, salt) {
  const parts = []
  if (salt && salt.length) parts.push(bstr(Buffer.from('salt')), bstr(salt))
  parts.push(bstr(Buffer.from('seq')), Buffer.from(`i${seq}e`))
  parts.push(bstr(Buffer.from('v')), bstr(v))
  return Buffer.concat(parts)
}

function signItem (seed, seq, v, salt) {
  const { privateKey, k } = keyFromSeed(seed)
  const saltBuf = salt ? Buffer.from(salt) : Buffer.alloc(0)
  const sig = crypto.sign(null, sigData(seq, Buffer.from(v), saltBuf), privateKey)
  const target = crypto.createHash('sha1').update(Buffer.concat([k, saltBuf])).digest()
  return { k: k.toString('hex'), sig: sig.toString('hex'), target: target.toString('hex') }
}

function immutableTarget (v) {
  return crypto.createHash('sha1').update(bstr(Buffer.from(v))).digest('hex')
}

module.exports = { signItem, immutableTarget }

if (require.main === module) {
  const [seedHex, seq, v, salt] = process.argv.slice(2)
  const seed = Buffer.from(seedHex || '', 'hex')
  if (seed.length !== 32 || seq === undefined || v === undefined) {
    console.error('usage: node sign.js SEED_HEX(32 bytes) SEQ V [SALT]')
    process.exit(2)
  }
  console.log(JSON.stringify(signItem(seed, Number(seq), v, salt)))
}
