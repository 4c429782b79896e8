'use strict'
// What stream-serve.js and stream-call.js share: the test body and how both sides sum it.

// The body both directions send: SIZE bytes, byte i being i % 251, in chunks of CHUNK.
const SIZE = 1 << 20
const CHUNK = 64 * 1024

function chunks () {
  const out = []
  for (let at = 0; at < SIZE; at += CHUNK) {
    const chunk = Buffer.alloc(Math.min(CHUNK, SIZE - at))
    for (let i = 0; i < chunk.length; i++) chunk[i] = (at + i) % 251
    out.push(chunk)
  }
  return out
}

// A running digest of bytes: length and sum = sum * 31 + byte, modulo 2^32.
function digest () {
  let len = 0
  let sum = 0
  return {
    add (chunk) {
      for (const b of chunk) sum = (Math.imul(sum, 31) + b) >>> 0
      len += chunk.length
    },
    value () { return { len, sum } }
  }
}

module.exports = { SIZE, chunks, digest }
