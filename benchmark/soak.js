'use strict'
// npm run soak: mixed traffic for a long time across several channels and
// processes, with every process's descriptor count and RSS sampled each
// second, then the growth after warm-up reported as a slope. Targets: no
// descriptor growth at all, and RSS growth under 5 MiB after warm-up.
//
//   node --expose-gc benchmark/soak.js [--seconds 600] [--warmup 60] [--json FILE]
//
// Traffic: four workers echo what this process sends them (framed stream,
// seqpacket and datagram channels, and a raw seqpacket one), messages of 0
// bytes to 1 MiB with 0 to 4 descriptors of several kinds (files, socket
// pairs, TCP listeners, UDP sockets), moved or kept, and closed here by
// close(), closeAll() or after conversion to a Node object. Meanwhile the
// workers connect to a listener here again and again, and this process runs
// the error paths: messages over maxFds, and receives aborted by a signal.
//
// Samples are taken at a pause each second, when no message is in flight, so
// a descriptor count that is not the same every second is a leak, not noise.
const dgram = require('node:dgram')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { parseArgs } = require('node:util')

const { closeAll, listen, socketPair, spawnWithChannel } = require('..')

const { values: args } = parseArgs({
  options: { seconds: { type: 'string' }, warmup: { type: 'string' }, json: { type: 'string' } },
})
const SECONDS = Number(args.seconds ?? process.env.SOAK_SECONDS ?? 600)
const WARMUP = Number(args.warmup ?? Math.min(60, Math.floor(SECONDS / 5)))
const RSS_TARGET_MIB = 5

if (typeof global.gc !== 'function') {
  console.error('run with node --expose-gc (npm run soak does)')
  process.exit(2)
}

// ---------------------------------------------------------------------------
// Pausing every loop at a quiet point

let pause = null // { resume: Promise, release: () => void } while pausing
let parked = 0

async function checkpoint() {
  while (pause) {
    parked += 1
    await pause.resume
    parked -= 1
  }
}

// ---------------------------------------------------------------------------
// Descriptors to send, of several kinds

async function makeDescriptor(kind) {
  switch (kind) {
    case 'file':
      return { fd: fs.openSync(__filename, 'r'), move: true }
    case 'pair': {
      const [a, b] = socketPair()
      return { fd: a.fd, after: () => (a.close(), b.close()) }
    }
    case 'tcp': {
      const server = net.createServer()
      await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
      return { fd: server, move: true }
    }
    case 'udp': {
      const socket = dgram.createSocket('udp4')
      await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve))
      return { fd: socket, move: true }
    }
    default:
      throw new Error(kind)
  }
}

function kindFor(n) {
  if (n % 97 === 0) return 'tcp'
  if (n % 89 === 0) return 'udp'
  return n % 3 === 0 ? 'pair' : 'file'
}

/** Disposes of what came back, by one of the ways a user would. */
async function dispose(received, n) {
  if (n % 5 === 0) return closeAll(received)
  for (const r of received) {
    if (r.kind === 'tcp-listener') await new Promise((resolve) => r.toServer().close(resolve))
    else if (r.kind === 'udp') await new Promise((resolve) => r.toDgram().close(resolve))
    else if (r.kind === 'unix-stream' && n % 7 === 0) r.toSocket().destroy()
    else r.close()
  }
}

// ---------------------------------------------------------------------------
// Traffic

/** The n-th message's bytes; at least one, as an empty raw seqpacket record reads as end of stream. */
function payload(n, max) {
  const size = n % 401 === 0 ? Math.min(max, 1024 * 1024) : n % 37 === 0 ? Math.min(max, 64 * 1024) : 1 + ((n * 7919) % Math.min(max, 2048))
  const data = Buffer.alloc(size, n & 0xff)
  if (size >= 4) data.writeUInt32LE(n >>> 0, 0)
  return data
}

const counts = { messages: 0, descriptors: 0, bytes: 0, connections: 0, refused: 0, aborted: 0 }
/** What each loop is doing, for SOAK_DEBUG=1. */
const doing = {}

async function echoLoop(worker, done) {
  let n = 0
  while (!done.value) {
    await checkpoint()
    // A batch is sent while its echoes are received: a side that only sends
    // while its peer's echoes fill its own queue would wait forever.
    const batch = Array.from({ length: 1 + (n % 4) }, (_, i) => ({ n: n + i, data: payload(n + i, worker.maxBytes), fds: (n + i) % 5 }))
    n += batch.length
    const sending = (async () => {
      for (const m of batch) {
        const made = []
        for (let k = 0; k < m.fds; k++) made.push(await makeDescriptor(kindFor(m.n + k)))
        doing[worker.name] = `send ${m.n}: ${m.data.length} bytes, ${m.fds} fds`
        await worker.channel.send({ data: m.data, fds: made.map(({ fd, move }) => (move ? { fd, move } : fd)) })
        for (const d of made) d.after?.()
      }
    })()
    const receiving = (async () => {
      for (const expected of batch) {
        doing[worker.name] = `recv ${expected.n}: ${expected.data.length} bytes, ${expected.fds} fds`
        const message = await worker.channel.recv({ maxFds: 8, maxBytes: 2 * 1024 * 1024 })
        if (!message.data.equals(expected.data) || message.fds.length !== expected.fds) {
          throw new Error(`${worker.name}: message ${expected.n} came back changed (${message.data.length} bytes, ${message.fds.length} fds; expected ${expected.data.length}, ${expected.fds})`)
        }
        counts.messages += 1
        counts.descriptors += expected.fds
        counts.bytes += expected.data.length
        await dispose(message.fds, expected.n)
      }
    })()
    await Promise.all([sending, receiving])
  }
}

/** The error paths, in this process: a message over maxFds, a receive aborted. */
async function errorLoop(done) {
  let n = 0
  while (!done.value) {
    await checkpoint()
    const [a, b] = socketPair({ type: n % 2 ? 'seqpacket' : 'stream' })
    await a.send({ data: 'too many', fds: [0, 1, 2, 0, 1] })
    await b.recv({ maxFds: 2 }).then(
      () => {
        throw new Error('a message over maxFds was accepted')
      },
      (err) => {
        if (err.code !== 'ERR_FDPASS_TOO_MANY_FDS') throw err
        counts.refused += 1
      },
    )
    const controller = new AbortController()
    const pending = b.recv({ signal: controller.signal })
    setImmediate(() => controller.abort())
    await pending.then(
      () => {
        throw new Error('an aborted receive got a message')
      },
      (err) => {
        if (err.name !== 'AbortError') throw err
        counts.aborted += 1
      },
    )
    a.close()
    b.close()
    n += 1
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

// ---------------------------------------------------------------------------
// Sampling

function processFds(pid) {
  return fs.readdirSync(`/proc/${pid}/fd`).length
}

function processRssMiB(pid) {
  const line = fs
    .readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'))
  return Number(line.split(/\s+/)[1]) / 1024
}

/** Has each worker finish the connection it is making and start no other. */
async function pauseWorkers(workers) {
  await Promise.all(
    workers.map(async (w) => {
      await w.channel.send({ data: 'soak:pause' })
      const reply = await w.channel.recv({ maxFds: 0 })
      if (reply.data.toString() !== 'soak:paused') throw new Error(`${w.name} did not pause: ${reply.data.toString()}`)
    }),
  )
}

/** Least-squares slope of ys over xs. */
function slope(xs, ys) {
  const n = xs.length
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my)
    den += (xs[i] - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}

async function main() {
  if (process.env.SOAK_DEBUG) setInterval(() => console.error(JSON.stringify({ parked, pausing: Boolean(pause), counts, doing })), 2000).unref()
  const listenPath = path.join(os.tmpdir(), `fdpass-soak-${process.pid}.sock`)
  const server = listen(listenPath)
  let handlers = 0
  const serving = (async () => {
    for await (const channel of server) {
      handlers += 1
      counts.connections += 1
      void (async () => {
        try {
          const hello = await channel.recv({ maxFds: 1 })
          closeAll(hello.fds)
          await channel.send({ data: 'ack' })
          await channel.recv().catch((err) => {
            if (err.code !== 'ERR_FDPASS_CLOSED') throw err
          })
        } finally {
          channel.close()
          handlers -= 1
        }
      })()
    }
  })()

  const workers = [
    { name: 'stream', type: 'stream', framing: 'framed', maxBytes: 2 * 1024 * 1024 },
    { name: 'seqpacket', type: 'seqpacket', framing: 'framed', maxBytes: 2 * 1024 * 1024 },
    { name: 'dgram', type: 'dgram', framing: 'framed', maxBytes: 2 * 1024 * 1024 },
    { name: 'raw-seqpacket', type: 'seqpacket', framing: 'raw', maxBytes: 4096 },
  ].map((w, i) => {
    const { child, channel } = spawnWithChannel(process.execPath, ['--expose-gc', path.join(__dirname, 'soak-worker.js'), w.framing, i < 2 ? listenPath : ''], {
      type: w.type,
      framing: w.framing,
      stdio: ['pipe', 'inherit', 'inherit'],
    })
    return { ...w, child, channel }
  })

  const done = { value: false }
  const loops = [...workers.map((w) => echoLoop(w, done)), errorLoop(done)]
  let failed = null
  for (const loop of loops) loop.catch((err) => (failed ??= err))

  const samples = []
  const started = Date.now()
  const pids = { soak: process.pid, ...Object.fromEntries(workers.map((w) => [w.name, w.child.pid])) }
  while (Date.now() - started < SECONDS * 1000 && !failed) {
    await new Promise((resolve) => setTimeout(resolve, 1000))
    // Pause every loop between messages, then the workers' connections: each
    // finishes the one in progress, and the handlers here see them close.
    let release
    pause = { resume: new Promise((resolve) => (release = resolve)) }
    while (parked < loops.length && !failed) await new Promise((resolve) => setImmediate(resolve))
    await pauseWorkers(workers)
    while (handlers > 0 && !failed) await new Promise((resolve) => setTimeout(resolve, 1))
    global.gc()
    const t = (Date.now() - started) / 1000
    const sample = { t }
    for (const [name, pid] of Object.entries(pids)) sample[name] = { fds: processFds(pid), rssMiB: processRssMiB(pid) }
    samples.push(sample)
    await Promise.all(workers.map((w) => w.channel.send({ data: 'soak:resume' })))
    pause = null
    release()
  }
  done.value = true
  await Promise.allSettled(loops)
  if (!failed) await pauseWorkers(workers)
  for (const w of workers) {
    w.channel.close()
    w.child.stdin.end()
  }
  await Promise.all(workers.map((w) => new Promise((resolve) => (w.child.exitCode !== null ? resolve() : w.child.on('exit', resolve)))))
  server.close()
  await serving.catch(() => undefined)
  if (failed) throw failed

  const settled = samples.filter((s) => s.t >= WARMUP)
  if (settled.length < 2) throw new Error(`too short: ${samples.length} samples, ${settled.length} after a ${WARMUP} s warm-up`)
  const minutes = (settled.at(-1).t - settled[0].t) / 60
  const report = { seconds: SECONDS, warmupSeconds: WARMUP, samples: settled.length, traffic: counts, processes: {} }
  let pass = true
  for (const name of Object.keys(pids)) {
    const ts = settled.map((s) => s.t / 60)
    const fds = settled.map((s) => s[name].fds)
    const rss = settled.map((s) => s[name].rssMiB)
    const rssSlope = slope(ts, rss)
    const entry = {
      fds: { first: fds[0], last: fds.at(-1), min: Math.min(...fds), max: Math.max(...fds), slopePerMinute: slope(ts, fds) },
      rssMiB: { first: rss[0], last: rss.at(-1), slopePerMinute: rssSlope, growthOverRun: rssSlope * minutes },
    }
    entry.pass = entry.fds.min === entry.fds.max && entry.rssMiB.growthOverRun < RSS_TARGET_MIB
    pass &&= entry.pass
    report.processes[name] = entry
  }
  report.pass = pass
  const round = (x) => (typeof x === 'number' && !Number.isInteger(x) ? Math.round(x * 1000) / 1000 : x)
  console.log(JSON.stringify(report, (_, v) => round(v), 2))
  console.log(
    `\n${Object.entries(report.processes)
      .map(([name, p]) => `${name.padEnd(14)} fds ${p.fds.min}..${p.fds.max} (slope ${round(p.fds.slopePerMinute)}/min)  RSS ${round(p.rssMiB.first)} → ${round(p.rssMiB.last)} MiB (fit: ${round(p.rssMiB.growthOverRun)} MiB over ${round(minutes)} min)  ${p.pass ? 'ok' : 'FAIL'}`)
      .join('\n')}`,
  )
  console.log(`${counts.messages} messages, ${counts.descriptors} descriptors, ${(counts.bytes / 2 ** 20).toFixed(0)} MiB echoed; ${counts.connections} connections; ${counts.refused} refused and ${counts.aborted} aborted receives`)
  if (args.json) fs.writeFileSync(args.json, `${JSON.stringify(report, (_, v) => round(v), 2)}\n`)
  if (!pass) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
