'use strict'
// npm run bench:handoff: the zero-downtime example under steady HTTP load
// while it replaces itself again and again, counting every request that
// failed. Load comes from wrk (Debian: apt-get install wrk; macOS: brew
// install wrk), as fast as it can go, so the rate is the highest this machine
// sustains; it is first measured with the old process alone.
//
//   node benchmark/handoff.js [--handoffs N] [--connections C] [--baseline-seconds S] [--json FILE]
//
// Per mode (keep-alive, and a new connection per request): requests, failed
// requests (non-2xx, read and write errors, timeouts), connection errors, and
// the handoff durations: from SIGHUP until the new generation serves (which
// includes starting Node), and the library's part, from the successor
// connecting to the control socket until the old process stopped accepting.
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .join(' ')
    .split('--')
    .filter(Boolean)
    .map((pair) => pair.trim().split(/\s+/)),
)
const HANDOFFS = Number(args.handoffs ?? 20)
const CONNECTIONS = Number(args.connections ?? 32)
const BASELINE_SECONDS = Number(args['baseline-seconds'] ?? 5)
/** Steady load between handoffs, so each starts with the previous one fully done. */
const SETTLE_MS = 300

const SUPERVISOR = path.join(__dirname, '..', 'examples', 'zero-downtime', 'supervisor.js')
const WRK_REPORT = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"durationUs":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50Us":%d,"p99Us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
`

function requireWrk() {
  if (spawnSync('wrk', ['--version']).error) {
    console.error('bench:handoff needs wrk: apt-get install wrk (Debian), brew install wrk (macOS)')
    process.exit(1)
  }
}

/** The supervisor, with its JSON event lines delivered as they come. */
function startSupervisor() {
  const child = spawn(process.execPath, [SUPERVISOR], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, PORT: '0' } })
  const events = []
  const waiters = []
  let buffered = ''
  child.stdout.on('data', (chunk) => {
    buffered += chunk
    let newline
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline)
      buffered = buffered.slice(newline + 1)
      if (!line.startsWith('{')) continue
      const event = { ...JSON.parse(line), at: performance.now() }
      events.push(event)
      for (const waiter of waiters.slice()) waiter()
    }
  })
  const next = (match) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = events.find(match)
        const failed = events.find((e) => e.event === 'failed' || e.event === 'exited')
        if (!found && !failed) return
        waiters.splice(waiters.indexOf(check), 1)
        if (found) resolve(found)
        else reject(new Error(`the supervisor reported ${JSON.stringify(failed)}`))
      }
      waiters.push(check)
      check()
    })
  return { child, events, next }
}

/** Runs wrk against `port`; `stop()` ends it early (SIGINT makes it report). */
function runWrk(port, seconds, keepAlive) {
  const script = path.join(os.tmpdir(), `fdpass-bench-handoff-${process.pid}.lua`)
  fs.writeFileSync(script, WRK_REPORT)
  const wrkArgs = ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '-s', script, ...(keepAlive ? [] : ['-H', 'Connection: close']), `http://127.0.0.1:${port}/`]
  const child = spawn('wrk', wrkArgs, { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  const result = new Promise((resolve, reject) =>
    child.on('close', () => {
      const line = output.split('\n').find((l) => l.startsWith('{'))
      if (!line) reject(new Error(`wrk reported nothing:\n${output}`))
      else resolve(JSON.parse(line))
    }),
  )
  return { result, stop: () => child.kill('SIGINT') }
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function percentiles(values) {
  const sorted = [...values].sort((a, b) => a - b)
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted.at(-1) }
}

async function measure(keepAlive) {
  const supervisor = startSupervisor()
  try {
    const first = await supervisor.next((e) => e.event === 'serving')
    const port = first.address.port
    const alone = await runWrk(port, BASELINE_SECONDS, keepAlive).result

    const load = runWrk(port, 3600, keepAlive)
    const started = performance.now()
    await delay(SETTLE_MS)
    const replaceMs = []
    const handoffMs = []
    let undrained = 0
    for (let generation = 2; generation <= HANDOFFS + 1; generation++) {
      const signalled = performance.now()
      supervisor.child.kill('SIGHUP')
      const serving = await supervisor.next((e) => e.event === 'serving' && e.generation === generation)
      const drained = await supervisor.next((e) => e.event === 'drained' && e.generation === generation - 1)
      replaceMs.push(serving.at - signalled)
      handoffMs.push(drained.handoffMs)
      if (!drained.drained) undrained += 1
      await delay(SETTLE_MS)
    }
    load.stop()
    const during = await load.result
    const seconds = (performance.now() - started) / 1000
    return {
      mode: keepAlive ? 'keep-alive' : 'connection per request',
      connections: CONNECTIONS,
      alone: { requestsPerSecond: Math.round(alone.requests / (alone.durationUs / 1e6)), failed: alone.read + alone.write + alone.status + alone.timeout, connectErrors: alone.connect },
      handoffs: HANDOFFS,
      seconds: Number(seconds.toFixed(1)),
      requests: during.requests,
      requestsPerSecond: Math.round(during.requests / (during.durationUs / 1e6)),
      failed: during.read + during.write + during.status + during.timeout,
      connectErrors: during.connect,
      readErrors: during.read,
      writeErrors: during.write,
      non2xx: during.status,
      timeouts: during.timeout,
      latencyUs: { p50: during.p50Us, p99: during.p99Us },
      undrained,
      replaceMs: mapValues(percentiles(replaceMs), (v) => Math.round(v)),
      handoffMs: mapValues(percentiles(handoffMs), (v) => Number(v.toFixed(2))),
    }
  } finally {
    supervisor.child.kill('SIGTERM')
    await new Promise((resolve) => supervisor.child.once('exit', resolve))
  }
}

const mapValues = (object, f) => Object.fromEntries(Object.entries(object).map(([k, v]) => [k, f(v)]))

async function main() {
  requireWrk()
  const results = []
  for (const keepAlive of [true, false]) {
    const result = await measure(keepAlive)
    results.push(result)
    console.log(JSON.stringify(result))
  }
  console.log('')
  console.log(`| load (${CONNECTIONS} connections, wrk) | alone: req/s | during ${HANDOFFS} handoffs: requests | req/s | failed | connect errors | resets (read errors) | handoff p50 / p99 / max | SIGHUP → serving p50 / p99 |`)
  console.log('|---|---|---|---|---|---|---|---|---|')
  for (const r of results) {
    console.log(
      `| ${r.mode} | ${r.alone.requestsPerSecond} | ${r.requests} | ${r.requestsPerSecond} | ${r.failed} | ${r.connectErrors} | ${r.readErrors} | ${r.handoffMs.p50} / ${r.handoffMs.p99} / ${r.handoffMs.max} ms | ${r.replaceMs.p50} / ${r.replaceMs.p99} ms |`,
    )
  }
  if (args.json) fs.writeFileSync(args.json, `${JSON.stringify({ date: new Date().toISOString(), cpus: os.cpus().length, node: process.version, results }, null, 2)}\n`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
