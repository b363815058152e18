'use strict'
// 10,000 receives pending on 10,000 channels in one process, against 10:
// threads, RSS, and fs.promises.readFile latency while they wait. The other
// ends live in a second process, so each side holds one descriptor per
// channel (RLIMIT_NOFILE may be as low as 20,000 and cannot be raised).
// Prints {"threads10","threads10k","rssIdleMiB","rss10kMiB","readFileIdleUs","readFileDuringUs"}.
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const { readFile } = require('node:fs/promises')
const os = require('node:os')
const path = require('node:path')

const fdpass = require('../..')

const CHANNELS = Number(process.argv[2] ?? 10000)
const READS = 500

function threads() {
  const line = fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('Threads:'))
  return Number(line.split(/\s+/)[1])
}

const rssMiB = () => process.memoryUsage().rss / 2 ** 20

async function readFileLatencyUs() {
  const times = []
  for (let i = 0; i < READS; i++) {
    const t0 = process.hrtime.bigint()
    await readFile(__filename)
    times.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  times.sort((a, b) => a - b)
  return times[Math.floor(times.length / 2)]
}

/** `count` channels, each with a receive pending; the peers are another process. */
async function pending(count) {
  const socketPath = path.join(os.tmpdir(), `fdpass-bench-pending-${process.pid}-${count}.sock`)
  fs.rmSync(socketPath, { force: true })
  const server = fdpass.listen({ path: socketPath, backlog: 4096 })
  const peers = spawn(process.execPath, [__filename, '--peers', socketPath, String(count)], { stdio: ['pipe', 'inherit', 'inherit'] })
  const channels = []
  for await (const channel of server) {
    channels.push(channel)
    if (channels.length === count) break
  }
  server.close()
  const receives = channels.map((c) => c.recv().catch(() => null))
  await new Promise((resolve) => setImmediate(resolve))
  return {
    done: async () => {
      for (const c of channels) c.close()
      await Promise.all(receives)
      peers.stdin.end()
      await new Promise((resolve) => peers.once('exit', resolve))
    },
  }
}

/** The other ends: connects `count` times and holds them until stdin closes. */
async function peers(socketPath, count) {
  const held = []
  for (let i = 0; i < count; i++) held.push(await fdpass.connect(socketPath))
  process.stdin.resume()
  process.stdin.on('end', () => {
    for (const c of held) c.close()
  })
}

async function main() {
  await readFileLatencyUs() // warm up the pool and the file cache
  const idle = await pending(1)
  global.gc?.()
  const rssIdleMiB = rssMiB()
  await idle.done()
  const ten = await pending(10)
  const threads10 = threads()
  const readFileBeforeUs = await readFileLatencyUs()
  await ten.done()
  const many = await pending(CHANNELS)
  global.gc?.()
  const threads10k = threads()
  const rss10kMiB = rssMiB()
  const readFileDuringUs = await readFileLatencyUs()
  await many.done()
  // Thread-pool latency drifts on a busy machine: the idle figure is the mean
  // of one taken before and one after.
  const readFileAfterUs = await readFileLatencyUs()
  const result = {
    channels: CHANNELS,
    threads10,
    threads10k,
    rssIdleMiB,
    rss10kMiB,
    readFileIdleUs: (readFileBeforeUs + readFileAfterUs) / 2,
    readFileDuringUs,
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

if (process.argv[2] === '--peers') peers(process.argv[3], Number(process.argv[4]))
else main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
