// Captures what bittorrent-dht 10 sends on loopback (see README.md). Run: node capture.js OUT_DIR
// Capture every datagram bittorrent-dht 10 sends on loopback, one file per message.
const dgram = require('dgram')
const fs = require('fs')
const out = process.argv[2]
const seen = []
const origSend = dgram.Socket.prototype.send
dgram.Socket.prototype.send = function (buf, ...rest) {
  seen.push(Buffer.from(buf))
  return origSend.call(this, buf, ...rest)
}
const DHT = require('bittorrent-dht')
const bencode = require('bencode')

const a = new DHT({ bootstrap: false })
a.listen(0, '127.0.0.1', () => {
  const pa = a.address().port
  const b = new DHT({ bootstrap: ['127.0.0.1:' + pa] })
  b.listen(0, '127.0.0.1', () => {
    b.on('ready', () => {
      const name = Buffer.from('rpc_test').toString('hex')
      b.announce(name, 1337, (err) => {
        if (err) console.error('announce', err)
        b.lookup(name, () => {
          b.put({ v: Buffer.from('hello') }, (err, hash) => {
            if (err) console.error('put', err)
            b.get(hash, { cache: false }, () => {
              b._rpc.query({ host: '127.0.0.1', port: pa }, {
                q: 'announce_peer',
                a: { id: b.nodeId, token: Buffer.from('bad'), info_hash: Buffer.from('x'), port: 1, implied_port: 0 }
              }, () => {
                b._rpc.query({ host: '127.0.0.1', port: pa }, { q: 'ping', a: { id: b.nodeId } }, () => {
                  let i = 0
                  const kinds = new Set()
                  for (const buf of seen) {
                    let m; try { m = bencode.decode(buf) } catch (e) { console.log("BAD", buf.toString("latin1")); continue }
                    const y = m.y.toString()
                    let kind = y === 'q' ? m.q.toString() : y === 'r' ? 'r_' + Object.keys(m.r).sort().join('_') : 'e'
                    if (kinds.has(kind)) continue
                    kinds.add(kind)
                    fs.writeFileSync(`${out}/${String(i++).padStart(2, '0')}-${kind}.bin`, buf)
                  }
                  console.log([...kinds].join('\n'))
                  a.destroy(); b.destroy()
                })
              })
            })
          })
        })
      })
    })
  })
})
