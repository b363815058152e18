'use strict'
// 10,000 receives pending on 10,000 channels in one process, against 10:
// threads, RSS, and fs.promises.readFile latency while they wait.
// Prints {"threads10","threads10k","rssIdleMiB","rss10kMiB","readFileIdleUs","readFileDuringUs"}.
const fs = require('node:fs')
const { readFile } = require('node:fs/promises')

const fdpass = require('../..')

const CHANNELS = Number(process.argv[2] ?? 10000)
const READS = 200

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

async function pending(count) {
  const pairs = Array.from({ length: count }, () => fdpass.socketPair())
  const receives = pairs.map(([a]) => a.recv().catch(() => null))
  await new Promise((resolve) => setImmediate(resolve))
  return {
    pairs,
    done: async () => {
      for (const [a, b] of pairs) {
        a.close()
        b.close()
      }
      await Promise.all(receives)
    },
  }
}

async function main() {
  await readFileLatencyUs() // warm up the pool and the file cache
  const idle = await pending(1)
  global.gc?.()
  const rssIdleMiB = rssMiB()
  await idle.done()
  const ten = await pending(10)
  const threads10 = threads()
  const readFileIdleUs = await readFileLatencyUs()
  await ten.done()
  const many = await pending(CHANNELS)
  global.gc?.()
  const result = {
    channels: CHANNELS,
    threads10,
    threads10k: threads(),
    rssIdleMiB,
    rss10kMiB: rssMiB(),
    readFileIdleUs,
    readFileDuringUs: await readFileLatencyUs(),
  }
  await many.done()
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
