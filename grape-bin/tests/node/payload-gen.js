'use strict'
// Usage: node payload-gen.js SEED COUNT OUT_FILE
// Writes COUNT JSON texts as Node's JSON.stringify writes them, from random values drawn
// with SEED (the same seed gives the same texts): objects with keys in any order
// (digit-only keys too, which JavaScript moves first), strings with control characters,
// quotes, accents, emoji, U+2028 and sometimes a lone UTF-16 surrogate, and numbers from
// tiny to huge (5e-324, 1e+21, 1.7976931348623157e+308, 2**53 + 2, random doubles).
// OUT_FILE gets a JSON array of {"text": T, "lone": B}: B says whether T holds a lone
// surrogate, which our peers refuse (docs/payload-rules.md).
const fs = require('fs')

const [seedArg, countArg, outFile] = process.argv.slice(2)
const seed = Number(seedArg)
const count = Number(countArg)
if (!Number.isInteger(seed) || !Number.isInteger(count) || count < 1 || !outFile) {
  console.error('usage: node payload-gen.js SEED COUNT OUT_FILE')
  process.exit(2)
}

// mulberry32: small, seedable, good enough to spread cases.
let state = seed >>> 0
function random () {
  state = (state + 0x6d2b79f5) >>> 0
  let t = state
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const int = (n) => Math.floor(random() * n)
const pick = (items) => items[int(items.length)]

const LONE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

const PIECES = [
  'a', 'Z', ' ', '0', '"', '\\', '/', '\n', '\t', '\u0000', '\u0001', '\u001f', '\u007f',
  'é', 'ß', '✓', '中', '\u2028', '\u2029', '\ufeff', '😀', '𝄞', 'x'.repeat(40)
]
const SURROGATES = ['\ud800', '\udbff', '\udc00', '\udfff', '\ud83d']
const KEYS = ['a', 'b', 'z', 'B', 'é', '10', '9', '0', '-1', '1.5', '', 'key', 'Z', '😀', 'n', 'v']

function string (allowLone) {
  let s = ''
  const n = int(8)
  for (let i = 0; i < n; i++) {
    s += allowLone && int(6) === 0 ? pick(SURROGATES) : pick(PIECES)
  }
  return s
}

function number () {
  switch (int(9)) {
    case 0: return pick([0, -0, 1, -1, 1e21, 1e-7, 1e-6, 5e-324, Number.MAX_VALUE, 2 ** 53 + 2, 0.1 + 0.2, 1e20])
    case 1: return int(1000) - 500
    case 2: return (random() - 0.5) * 10 ** (int(60) - 30)
    case 3: return Math.round(random() * 2 ** 64)
    case 4: {
      // Any finite double, from random bits.
      const view = new DataView(new ArrayBuffer(8))
      view.setUint32(0, int(2 ** 32))
      view.setUint32(4, int(2 ** 32))
      const d = view.getFloat64(0)
      return Number.isFinite(d) ? d : 1.5
    }
    case 5: return random()
    case 6: return -int(2 ** 31)
    case 7: return Number((random() * 1000).toFixed(int(6)))
    default: return int(2 ** 53)
  }
}

function value (depth, allowLone) {
  // Mostly arrays and objects at the top, leaves deeper down.
  const kind = depth === 0 ? 3 + int(3) : int(depth > 3 ? 4 : 6)
  switch (kind) {
    case 0: return pick([null, true, false])
    case 1:
    case 2: return number()
    case 3: return string(allowLone)
    case 4: {
      const n = int(5)
      const out = []
      for (let i = 0; i < n; i++) out.push(value(depth + 1, allowLone))
      return out
    }
    default: {
      const n = int(6)
      const out = {}
      for (let i = 0; i < n; i++) {
        const key = int(4) === 0 ? string(allowLone) : pick(KEYS)
        if (key === '__proto__') continue
        out[key] = value(depth + 1, allowLone)
      }
      return out
    }
  }
}

const cases = []
// The issue's own examples first.
cases.push({ z: 1, a: 2, m: 3, B: 4, é: 5, 10: 6, 9: 7 })
cases.push({ s: '\ud800 x' })
while (cases.length < count) cases.push(value(0, int(4) === 0))
const out = cases.slice(0, count).map((v) => {
  const text = JSON.stringify(v)
  return { text, lone: LONE.test(collectStrings(JSON.parse(text))) }
})

// Every string and key of a value, joined by NUL (which cannot pair with a surrogate).
function collectStrings (v) {
  if (typeof v === 'string') return v
  if (Array.isArray(v)) return v.map(collectStrings).join('\u0000')
  if (v && typeof v === 'object') {
    return Object.entries(v).map(([k, x]) => k + '\u0000' + collectStrings(x)).join('\u0000')
  }
  return ''
}

fs.writeFileSync(outFile, JSON.stringify(out))
console.log(JSON.stringify({ written: out.length, lone: out.filter((c) => c.lone).length }))
