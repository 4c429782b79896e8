'use strict'
// Usage: node link-check.js GRAPE_URL NAME_PREFIX PORT
// Drives grenache-nodejs-link 1.0.2 against one Grape: announce, startAnnouncing, lookup,
// immutable and mutable put/get, and the error cases. Prints one JSON line:
// {"steps": {step: {"ok": bool, "result"|"err": ..., "ms": n}}, "expect": {...}}
// and exits 0; the Rust test decides what each step should have given for that Grape.
require('./loopback')
const crypto = require('crypto')
const Link = require('grenache-nodejs-link')
const { signItem, immutableTarget } = require('./sign')

const [grape, prefix, portArg] = process.argv.slice(2)
if (!grape || !prefix || !portArg) {
  console.error('usage: node link-check.js GRAPE_URL NAME_PREFIX PORT')
  process.exit(2)
}
const port = Number(portArg)
const link = new Link({ grape })
link.start()

const steps = {}
function run (name, fn) {
  const t0 = Date.now()
  return new Promise((resolve) => {
    fn((err, result) => {
      steps[name] = err
        ? { ok: false, err: err.message, ms: Date.now() - t0 }
        : { ok: true, result: result === undefined ? null : result, ms: Date.now() - t0 }
      resolve(steps[name])
    })
  })
}

async function main () {
  const service = `${prefix}:svc`
  const announcing = `${prefix}:announcing`
  const v = `immutable ${prefix}`
  const seed = crypto.randomBytes(32)
  const salt = `salt-${prefix}`
  const one = signItem(seed, 1, `mutable one ${prefix}`, salt)
  const two = signItem(seed, 2, `mutable two ${prefix}`, salt)
  const expect = {
    service,
    announcing,
    port,
    immutable_v: v,
    immutable_target: immutableTarget(v),
    k: one.k,
    salt,
    mutable_target: one.target,
    mutable_v1: `mutable one ${prefix}`,
    mutable_v2: `mutable two ${prefix}`
  }

  await run('announce', (cb) => link.announce(service, port, cb))
  await run('start_announcing', (cb) => link.startAnnouncing(announcing, port + 1, { interval: 1000 }, cb))
  await run('lookup', (cb) => link.lookup(service, cb))
  await run('lookup_announcing', (cb) => link.lookup(announcing, cb))
  await run('lookup_unknown', (cb) => link.lookup(`${prefix}:nobody-announced-this`, cb))

  await run('put_immutable', (cb) => link.put({ v }, cb))
  await run('get_immutable', (cb) => link.get(expect.immutable_target, cb))

  const put = (item, seq) => (cb) => link.put({ v: item.v, k: item.k, sig: item.sig, seq, salt }, cb)
  await run('put_mutable_1', put({ ...one, v: expect.mutable_v1 }, 1))
  await run('get_mutable_1', (cb) => link.get({ hash: one.target, salt }, cb))
  await run('put_mutable_2', put({ ...two, v: expect.mutable_v2 }, 2))
  await run('get_mutable_2', (cb) => link.get({ hash: one.target, salt }, cb))
  // Replaying seq 1 after seq 2 must be refused (BEP-44 error 302).
  await run('put_mutable_stale', put({ ...one, v: expect.mutable_v1 }, 1))
  // A signature that does not match v must be refused.
  await run('put_mutable_bad_sig', put({ ...one, v: `forged ${prefix}` }, 3))

  link.stopAnnouncing(announcing, port + 1)
  link.stop()
  console.log(JSON.stringify({ steps, expect }))
  process.exit(0)
}

main().catch((err) => {
  console.log(JSON.stringify({ steps, fatal: err.message }))
  process.exit(1)
})
