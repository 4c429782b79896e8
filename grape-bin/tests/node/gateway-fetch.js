'use strict'
// Usage: node gateway-fetch.js GATEWAY_URL RPC_PATH PAYLOAD_JSON SUB_PATH
// Reads grenache-proxy's gateway with nothing but fetch (no Grenache library, no EventSource):
// POSTs PAYLOAD_JSON to RPC_PATH, then GETs SUB_PATH and reads its server-sent events until
// 3 arrived, then aborts. Prints one JSON line:
// {"status": S, "reply": R, "sub_status": S2, "content_type": T, "events": [E, E, E]}
// (each E the parsed `data:` of one event). Exits 1 after 15 s; 2 on bad usage.
const [base, rpcPath, payload, subPath] = process.argv.slice(2)
if (!base || !rpcPath || !payload || !subPath) {
  console.error('usage: node gateway-fetch.js GATEWAY_URL RPC_PATH PAYLOAD_JSON SUB_PATH')
  process.exit(2)
}
setTimeout(() => {
  console.log(JSON.stringify({ fail: 'timed out' }))
  process.exit(1)
}, 15000).unref()

async function main () {
  const res = await fetch(base + rpcPath, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: payload
  })
  const out = { status: res.status, reply: await res.json() }
  const abort = new AbortController()
  const sub = await fetch(base + subPath, { signal: abort.signal })
  out.sub_status = sub.status
  out.content_type = sub.headers.get('content-type')
  out.events = []
  const decoder = new TextDecoder()
  let text = ''
  for await (const chunk of sub.body) {
    text += decoder.decode(chunk, { stream: true })
    let end
    while ((end = text.indexOf('\n\n')) >= 0) {
      const event = text.slice(0, end)
      text = text.slice(end + 2)
      const data = event.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6))
      out.events.push(JSON.parse(data.join('\n')))
    }
    if (out.events.length >= 3) break
  }
  abort.abort()
  console.log(JSON.stringify(out))
  process.exit(0)
}
main().catch((err) => {
  console.log(JSON.stringify({ fail: String(err) }))
  process.exit(1)
})
