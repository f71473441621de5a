// The fan-out workload of `net_fanout` through Yjs + y-websocket: one writer doc and N
// subscriber docs, each with its own WebsocketProvider to a y-websocket server. Prints one
// JSON line. Run by the benchmark (scenario net_peer_yjs) with NODE_PATH pointing at the
// packages install.sh installed.
//
//   node yjs-fanout.cjs --url=ws://127.0.0.1:PORT --subscribers=10 --records=10000 \
//        --changes=300000 --tx=100
'use strict'
const Y = require('yjs')
const { WebsocketProvider } = require('y-websocket')
const WebSocket = require('ws')

const SETUP_WAIT_MS = 60000
const RUN_WAIT_MS = 120000

const args = Object.fromEntries(process.argv.slice(2).map(a => {
  const [k, v] = a.replace(/^--/, '').split('=')
  return [k, v]
}))
const url = args.url
const subscribers = Number(args.subscribers || 10)
const records = Number(args.records || 10000)
const changes = Number(args.changes || 300000)
const perTx = Math.max(1, Math.min(Number(args.tx || 100), records))
if (!url) { console.error('usage: --url=ws://host:port [--subscribers= --records= --changes= --tx=]'); process.exit(2) }

const room = `blazedb-bench-${process.pid}-${Date.now()}`
// BroadcastChannel off: providers in one process would otherwise sync directly, not
// through the server.
const connect = doc => new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
const now = () => performance.now()
const until = (cond, limitMs, what) => new Promise((resolve, reject) => {
  const start = now()
  const tick = () => {
    if (cond()) return resolve()
    if (now() - start > limitMs) return reject(new Error(`${what} did not happen within ${limitMs} ms`))
    setTimeout(tick, 2)
  }
  tick()
})

async function main () {
  const setupStart = now()
  const wdoc = new Y.Doc()
  const bugs = wdoc.getMap('bugs')
  const meta = wdoc.getMap('meta')
  // The same shape as the benchmark's records: 5 fields each.
  wdoc.transact(() => {
    for (let i = 0; i < records; i++) {
      const m = new Y.Map()
      m.set('title', `bug number ${i} with a forty-byte title...`.slice(0, 40))
      m.set('status', 'open')
      m.set('priority', i % 5)
      m.set('assignee', `user${i % 100}`)
      m.set('estimate', 1.5)
      bugs.set(`r${i}`, m)
    }
  })
  const wp = connect(wdoc)
  await until(() => wp.synced, SETUP_WAIT_MS, 'the writer syncing')
  const subs = []
  for (let i = 0; i < subscribers; i++) {
    const doc = new Y.Doc()
    subs.push({ doc, provider: connect(doc), done: null })
  }
  await until(() => subs.every(s => s.provider.synced && s.doc.getMap('bugs').size === records),
    SETUP_WAIT_MS, 'every subscriber receiving the records')
  const setupMs = now() - setupStart

  const transactions = Math.ceil(changes / perTx)
  const lastTick = transactions - 1
  for (const s of subs) {
    const m = s.doc.getMap('meta')
    m.observe(() => { if (s.done === null && m.get('last') === lastTick) s.done = now() })
  }
  const start = now()
  let written = 0
  for (let t = 0; t < transactions; t++) {
    const per = Math.min(perTx, changes - written)
    wdoc.transact(() => {
      for (let k = 0; k < per; k++) {
        bugs.get(`r${(written + k) % records}`).set('priority', t + 11)
      }
      meta.set('last', t)
    })
    written += per
  }
  const wroteMs = now() - start
  await until(() => subs.every(s => s.done !== null), RUN_WAIT_MS, 'every subscriber receiving the last transaction')
  const doneMs = subs.map(s => s.done - start)
  const elapsedMs = Math.max(...doneMs)
  const probe = subs[0].doc.getMap('bugs').get(`r${(changes - 1) % records}`).get('priority')
  if (probe !== lastTick + 11) throw new Error(`subscriber 0 holds ${probe}, expected ${lastTick + 11}`)
  console.log(JSON.stringify({
    changes: written,
    transactions,
    records,
    subscribers,
    elapsed_ms: elapsedMs,
    writer_transact_ms: wroteMs,
    setup_ms: setupMs,
    subscriber_done_ms: doneMs,
    node: process.version,
    yjs: require('yjs/package.json').version,
    y_websocket: require('y-websocket/package.json').version
  }))
  for (const s of subs) s.provider.destroy()
  wp.destroy()
  process.exit(0)
}

main().catch(e => { console.error(e && e.stack || String(e)); process.exit(1) })
