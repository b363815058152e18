'use strict'
// One generation of an HTTP service that restarts without dropping a request.
// It takes its listening socket over from the generation before it (or, on a
// first start, binds it, or takes it from systemd socket activation), serves,
// and offers the socket to the generation after it. Run by supervisor.js;
// alone:
//
//   HANDOFF_SOCKET=/tmp/app.handoff PORT=8080 node examples/zero-downtime/server.js
//
// Environment: HANDOFF_SOCKET (control socket path, required), PORT and HOST
// (first start only), GENERATION (shown in responses), READY_TIMEOUT_MS and
// DRAIN_TIMEOUT_MS. Started with an IPC channel, it reports { type: 'serving' },
// { type: 'failed' } (a successor failed; this one still serves) and
// { type: 'drained' } to its parent.
const http = require('node:http')

const { listenFds } = require('../../activation')
const { offerListeners, takeListeners } = require('../../handoff')

const controlPath = process.env.HANDOFF_SOCKET
const generation = Number(process.env.GENERATION ?? 1)
const drainTimeout = Number(process.env.DRAIN_TIMEOUT_MS ?? 30_000)
const readyTimeout = Number(process.env.READY_TIMEOUT_MS ?? 60_000)
const log = (text) => console.log(`[generation ${generation}, pid ${process.pid}] ${text}`)
/** Tells the parent (if it gave an IPC channel); resolves once the message is out. */
const report = (message) =>
  new Promise((resolve) => (process.send ? process.send({ ...message, generation, pid: process.pid }, resolve) : resolve()))

async function main() {
  if (!controlPath) throw new Error('set HANDOFF_SOCKET to the control socket path')
  // Initialise fully first (configuration, connection pools, caches): a
  // generation that fails here never touches the running one.
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ generation, pid: process.pid, url: req.url }))
  })

  const takeover = await takeListeners({ path: controlPath, names: ['http'] })
  if (takeover) {
    await listening(server, () => takeover.get('http').listen(server))
    const { confirmed } = await takeover.ready()
    log(`took over from pid ${takeover.predecessor.pid}${confirmed ? '' : ', which was already gone'}`)
  } else {
    const activated = listenFds().get('http')?.[0]
    if (activated) await listening(server, () => activated.listen(server))
    else await listening(server, () => server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1'))
    log(`listening on ${JSON.stringify(server.address())}${activated ? ' (socket activation)' : ''}`)
  }

  const offer = await offerListeners({ path: controlPath, listeners: { http: server }, readyTimeout, drainTimeout })
  offer.on('failed', (err) => {
    log(`a successor failed (${err.code}): ${err.message}; still serving`)
    report({ type: 'failed', code: err.code })
  })
  offer.on('handedOver', ({ successor }) => log(`handed over to pid ${successor.pid}; draining`))
  report({ type: 'serving', address: server.address() })

  const drained = await offer.finished
  log(`drained in ${drained.drainMs.toFixed(0)} ms${drained.drained ? '' : `; ${drained.remaining} connections cut at the timeout`}`)
  await report({ type: 'drained', report: drained })
  process.exit(0)
}

/** Starts listening with `start` and waits until the server is. */
function listening(server, start) {
  return new Promise((resolve, reject) => {
    server.once('listening', resolve).once('error', reject)
    start()
  })
}

main().catch((err) => {
  log(`failed: ${err.stack ?? err}`)
  process.exit(1)
})
