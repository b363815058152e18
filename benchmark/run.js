'use strict'
// npm run bench: fdpass against the raw C baseline and every alternative a
// Node user has, two processes per measurement, all in one run and in
// alternation so drift on the machine hits every system alike.
//
//   node benchmark/run.js [--seconds S] [--rounds R] [--json FILE] [--svg FILE]
//
// Throughput is descriptors per second, one way, the receiver closing each;
// ping-pong sends one descriptor and waits for a one-byte answer. Ratios are
// to the C baseline measured in the same run. Needs cc and python3.
const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { limits } = require('..')
const { renderChart } = require('./chart')

const args = parseArgs(process.argv.slice(2))
const SECONDS = Number(args.seconds ?? 1)
const ROUNDS = Number(args.rounds ?? 3)
const FDS_PER_MSG = [1, 64, 253]

function parseArgs(argv) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) throw new Error(`unexpected argument ${argv[i]}`)
    out[argv[i].slice(2)] = argv[i + 1]
    i++
  }
  return out
}

function compileBaseline() {
  const out = path.join(os.tmpdir(), `fdpass-bench-c-${process.pid}`)
  execFileSync('cc', ['-O2', '-o', out, path.join(__dirname, 'systems', 'fdbench.c')], { stdio: 'inherit' })
  return out
}

function hasUsocket() {
  try {
    require.resolve('usocket')
    require('usocket')
    return true
  } catch {
    return false
  }
}

/** Every system, with how to run one measurement and what it can carry. */
function systems(cBinary) {
  const node = (name) => (mode, perMsg) => [process.execPath, [path.join(__dirname, 'systems', 'node.js'), name, mode, String(SECONDS), String(perMsg)]]
  const list = [
    { name: 'C (sendmsg/recvmsg)', id: 'c', maxFds: 253, command: (mode, perMsg) => [cBinary, [mode, String(SECONDS), String(perMsg)]] },
    { name: 'fdpass framed stream', id: 'fdpass-framed-stream', maxFds: 253, command: node('fdpass:framed:stream') },
    { name: 'fdpass raw stream', id: 'fdpass-raw-stream', maxFds: 253, command: node('fdpass:raw:stream') },
  ]
  if (limits.hasSeqpacket) {
    list.push(
      { name: 'fdpass framed seqpacket', id: 'fdpass-framed-seqpacket', maxFds: 253, command: node('fdpass:framed:seqpacket') },
      { name: 'fdpass raw seqpacket', id: 'fdpass-raw-seqpacket', maxFds: 253, command: node('fdpass:raw:seqpacket') },
    )
  }
  list.push(
    { name: 'Python send_fds', id: 'python', maxFds: 253, command: (mode, perMsg) => ['python3', [path.join(__dirname, 'systems', 'fdbench.py'), mode, String(SECONDS), String(perMsg)]] },
    { name: 'Node IPC (subprocess.send)', id: 'node-ipc', maxFds: 1, command: node('node-ipc') },
  )
  if (hasUsocket()) list.push({ name: 'usocket', id: 'usocket', maxFds: 64, command: node('usocket') })
  // Not a descriptor passer: the round trip any Node code pays for a wait on the loop.
  list.push({ name: 'Node net.Socket, no fds (loop floor)', id: 'node-net', maxFds: 1, pingpongOnly: true, command: node('node-net') })
  return list
}

function run(command) {
  const [file, argv] = command
  const r = spawnSync(file, argv, { encoding: 'utf8', maxBuffer: 256 * 2 ** 20, timeout: (SECONDS + 60) * 1000 })
  if (r.status !== 0) throw new Error(`${file} ${argv.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`)
  return JSON.parse(r.stdout.trim().split('\n').pop())
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

function machine() {
  const python = spawnSync('python3', ['--version'], { encoding: 'utf8' }).stdout.trim()
  const cc = spawnSync('cc', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    python,
    cc,
    date: new Date().toISOString(),
    secondsPerMeasurement: SECONDS,
    rounds: ROUNDS,
  }
}

function measureTransfer(list) {
  const workloads = [...FDS_PER_MSG.map((n) => ({ mode: 'throughput', perMsg: n })), { mode: 'pingpong', perMsg: 1 }]
  const samples = new Map() // `${id}|${mode}|${perMsg}` -> results
  for (let round = 0; round < ROUNDS; round++) {
    for (const w of workloads) {
      // Rotate the order every round so no system always runs first or last.
      const eligible = list.filter((s) => w.perMsg <= s.maxFds && (w.mode === 'pingpong' || !s.pingpongOnly))
      const order = eligible.map((_, i) => eligible[(i + round) % eligible.length])
      for (const system of order) {
        const key = `${system.id}|${w.mode}|${w.perMsg}`
        process.stderr.write(`round ${round + 1}/${ROUNDS}: ${system.name}, ${w.mode} ${w.perMsg} fd/msg\n`)
        if (!samples.has(key)) samples.set(key, [])
        samples.get(key).push(run(system.command(w.mode, w.perMsg)))
      }
    }
  }
  const results = []
  for (const system of list) {
    for (const w of workloads) {
      const got = samples.get(`${system.id}|${w.mode}|${w.perMsg}`)
      if (!got) continue
      if (w.mode === 'throughput') {
        results.push({ system: system.name, id: system.id, workload: 'throughput', fdsPerMsg: w.perMsg, fdsPerSec: median(got.map((r) => r.fds / r.seconds)) })
      } else {
        const rtt = got.flatMap((r) => r.rttUs.slice(Math.floor(r.rttUs.length / 20))).sort((a, b) => a - b)
        results.push({ system: system.name, id: system.id, workload: 'pingpong', fdsPerMsg: 1, rttP50Us: percentile(rtt, 0.5), rttP99Us: percentile(rtt, 0.99) })
      }
    }
  }
  return results
}

function measurePending() {
  process.stderr.write('fdpass: 10,000 pending receives\n')
  const r = run([process.execPath, ['--expose-gc', path.join(__dirname, 'workloads', 'pending.js'), '10000']])
  return {
    system: 'fdpass framed stream',
    id: 'fdpass-framed-stream',
    workload: 'pending-10k',
    threads: r.threads10k,
    threadsWith10: r.threads10,
    rssMiB: r.rss10kMiB,
    rssIdleMiB: r.rssIdleMiB,
    readFileIdleUs: r.readFileIdleUs,
    readFileDuringUs: r.readFileDuringUs,
  }
}

function measureMillion() {
  process.stderr.write('fdpass: 1,000,000 descriptors\n')
  const r = run([process.execPath, [path.join(__dirname, 'workloads', 'million.js'), 'send', '1000000']])
  return {
    system: 'fdpass framed stream',
    id: 'fdpass-framed-stream',
    workload: 'million',
    fdsPerMsg: 64,
    fdsPerSec: r.fds / r.seconds,
    fds: r.fds,
    rssMiB: r.rssEndMiB,
    rssWarmMiB: r.rssWarmMiB,
    openFdsBefore: r.fdsBefore,
    openFdsAfter: r.fdsAfter,
  }
}

function fmt(n, digits = 0) {
  return n === undefined ? '' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}

function report(results) {
  const c = (workload, perMsg) => results.find((r) => r.id === 'c' && r.workload === workload && r.fdsPerMsg === perMsg)
  const lines = []
  lines.push('| System | 1 fd/msg (fds/s) | 64 fds/msg | 253 fds/msg | round trip p50 / p99 (µs) |')
  lines.push('|---|---:|---:|---:|---:|')
  const ids = [...new Set(results.filter((r) => r.workload === 'throughput' || r.workload === 'pingpong').map((r) => r.id))]
  for (const id of ids) {
    const row = results.filter((r) => r.id === id)
    const cell = (perMsg) => {
      const r = row.find((x) => x.workload === 'throughput' && x.fdsPerMsg === perMsg)
      if (!r) return 'n/a'
      const base = c('throughput', perMsg)
      return `${fmt(r.fdsPerSec)} (${fmt(r.fdsPerSec / base.fdsPerSec, 2)}×)`
    }
    const pp = row.find((x) => x.workload === 'pingpong')
    const base = c('pingpong', 1)
    const rtt = pp ? `${fmt(pp.rttP50Us, 1)} / ${fmt(pp.rttP99Us, 1)} (${fmt(pp.rttP50Us / base.rttP50Us, 2)}×)` : 'n/a'
    lines.push(`| ${row[0].system} | ${cell(1)} | ${cell(64)} | ${cell(253)} | ${rtt} |`)
  }
  return lines.join('\n')
}

function targets(results) {
  const get = (id, workload, perMsg) => results.find((r) => r.id === id && r.workload === workload && (perMsg === undefined || r.fdsPerMsg === perMsg))
  const ratio = (perMsg) => get('fdpass-framed-stream', 'throughput', perMsg).fdsPerSec / get('c', 'throughput', perMsg).fdsPerSec
  const rtt = get('fdpass-framed-stream', 'pingpong').rttP50Us / get('c', 'pingpong').rttP50Us
  const pending = get('fdpass-framed-stream', 'pending-10k')
  const million = get('fdpass-framed-stream', 'million')
  const check = (ok) => (ok ? 'met' : 'MISSED')
  return [
    `1 fd/msg: ${fmt(ratio(1), 2)}× C (target ≥ 0.6×): ${check(ratio(1) >= 0.6)}`,
    `253 fds/msg: ${fmt(ratio(253), 2)}× C (target ≥ 0.85×): ${check(ratio(253) >= 0.85)}`,
    `round trip p50: ${fmt(rtt, 2)}× C (target ≤ 1.25×): ${check(rtt <= 1.25)}`,
    `10,000 pending receives: ${pending.threads} threads (${pending.threadsWith10} with 10), RSS +${fmt(pending.rssMiB - pending.rssIdleMiB, 1)} MiB over an idle channel (target ≤ 30), readFile ${fmt(pending.readFileDuringUs / pending.readFileIdleUs, 2)}× idle (target ≤ 1.5×): ${check(pending.threads <= pending.threadsWith10 && pending.rssMiB - pending.rssIdleMiB <= 30 && pending.readFileDuringUs <= 1.5 * pending.readFileIdleUs)}`,
    `1,000,000 fds: open descriptors ${million.openFdsBefore} → ${million.openFdsAfter}, RSS +${fmt(million.rssMiB - million.rssWarmMiB, 1)} MiB after warm-up (target < 5): ${check(million.openFdsAfter === million.openFdsBefore && million.rssMiB - million.rssWarmMiB < 5)}`,
  ]
}

function main() {
  const cBinary = compileBaseline()
  try {
    const list = systems(cBinary)
    const results = [...measureTransfer(list), measurePending(), measureMillion()]
    const info = machine()
    console.log(`\nfdpass benchmark: ${info.cpus} × ${info.cpuModel}, ${info.os}, Node ${info.node}, ${info.python}; ${ROUNDS} rounds of ${SECONDS} s, medians (ratio to C)\n`)
    console.log(report(results))
    console.log('')
    for (const line of targets(results)) console.log(`- ${line}`)
    if (!hasUsocket()) console.log('\n(usocket is not installed: it is an optional dev dependency that needs a C++ toolchain)')
    if (args.json) {
      fs.writeFileSync(args.json, `${JSON.stringify({ machine: info, results }, null, 2)}\n`)
      console.log(`\nwrote ${args.json}`)
    }
    if (args.svg) {
      fs.writeFileSync(args.svg, renderChart(results, info))
      console.log(`wrote ${args.svg}`)
    }
  } finally {
    fs.rmSync(cBinary, { force: true })
  }
}

main()
