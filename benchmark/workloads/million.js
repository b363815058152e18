'use strict'
// 1,000,000 descriptors through one framed stream channel between two
// processes, 64 per message. The receiver samples its RSS and descriptor count
// every 1,000 messages; both must end flat.
// Prints {"fds","seconds","fdsBefore","fdsAfter","rssWarmMiB","rssEndMiB","samples":[[fdsSoFar, rssMiB, openFds]...]}.
const { spawn } = require('node:child_process')
const fs = require('node:fs')

const fdpass = require('../..')

const TOTAL = Number(process.argv[3] ?? 1_000_000)
const PER_MSG = 64
const openFds = () => fs.readdirSync('/proc/self/fd').length
const rssMiB = () => process.memoryUsage().rss / 2 ** 20

async function receiver() {
  const channel = fdpass.Channel.fromFd(3)
  const fdsBefore = openFds()
  const samples = []
  let received = 0
  let messages = 0
  const started = process.hrtime.bigint()
  for (;;) {
    const { data, fds } = await channel.recv({ maxFds: PER_MSG })
    for (const fd of fds) fd.close()
    received += fds.length
    if (data.length === 0) break
    if (++messages % 1000 === 0) {
      // Collected first, so the samples show what is retained, not garbage not yet collected.
      global.gc?.()
      samples.push([received, rssMiB(), openFds()])
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  global.gc?.()
  samples.push([received, rssMiB(), openFds()])
  // Warm-up: the first tenth of the run.
  const warm = samples[Math.max(0, Math.floor(samples.length / 10) - 1)]
  const result = {
    fds: received,
    seconds,
    fdsBefore,
    fdsAfter: openFds(),
    rssWarmMiB: warm[1],
    rssEndMiB: samples[samples.length - 1][1],
    samples,
  }
  await channel.send({ data: JSON.stringify(result) })
  channel.close()
}

async function sender() {
  const [mine, theirs] = fdpass.socketPair()
  const child = spawn(process.execPath, ['--expose-gc', __filename, '--receiver'], { stdio: ['ignore', 'inherit', 'inherit', theirs.fd] })
  theirs.close()
  const fd = fs.openSync('/dev/null', 'r')
  const message = { data: Buffer.from('M'), fds: Array.from({ length: PER_MSG }, () => fd) }
  for (let sent = 0; sent < TOTAL; sent += PER_MSG) await mine.send(message)
  await mine.send({})
  const { data } = await mine.recv({ maxFds: 0 })
  await new Promise((resolve) => child.once('exit', resolve))
  mine.close()
  fs.closeSync(fd)
  process.stdout.write(`${data.toString()}\n`)
}

if (process.argv[2] === '--receiver') receiver()
else sender().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
