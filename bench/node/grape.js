'use strict'
// A stock Node.js Grape (grenache-grape 1.0.0, built exactly as its bin/grape.js builds
// it) plus one thing for the benchmark: a line "stats" on stdin prints one JSON line with
// the routing-table size, stored peers and resident memory.
//
// Usage: node grape.js --dp <udp> --aph <tcp> --bn <host:port,...> [-b 127.0.0.1]
require('./loopback')
const readline = require('readline')
const Grape = require('grenache-grape/lib/Grape')

function arg (name, fallback) {
  const i = process.argv.indexOf(name)
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback
}

const grape = new Grape({
  host: arg('-b', '127.0.0.1'),
  dht_port: Number(arg('--dp')),
  api_port: Number(arg('--aph')),
  dht_bootstrap: arg('--bn', '').split(',').filter(Boolean)
})

grape.start((err) => {
  if (err) {
    console.error(err)
    process.exit(1)
  }
})

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'stats') return
  const dht = grape.node
  const peers = dht && dht._peers
  process.stdout.write(JSON.stringify({
    nodes: dht ? dht.nodes.count() : null,
    keys: peers && peers._fresh ? peers._fresh.records.size + peers._stale.records.size : null,
    peers: peers ? peers.size : null,
    rss: process.memoryUsage().rss
  }) + '\n')
})
// The bench kills us by pid; a closed stdin (bench gone) ends us too.
process.stdin.on('end', () => process.exit(0))
