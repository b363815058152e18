'use strict'
// A soak worker (see soak.js): echoes every message on its inherited channel,
// descriptors moved back (so they are closed here once sent), and meanwhile
// connects to the parent's listener again and again, as short-lived clients do.
const fs = require('node:fs')

const { connect, inheritedChannel } = require('..')

const [framing, listenPath] = process.argv.slice(2)

/** Control messages from soak.js, which it sends only while no echo is in flight. */
const PAUSE = 'soak:pause'
const RESUME = 'soak:resume'

async function echo(channel, churning) {
  try {
    for await (const message of channel) {
      const control = message.fds.length === 0 && message.data.length <= RESUME.length ? message.data.toString() : ''
      if (control === PAUSE) {
        // Finish the connection in progress and start no other, then say so.
        churning.stopped = true
        await churning.running
        global.gc() // sampled at the pause, like the main process
        await channel.send({ data: 'soak:paused' })
      } else if (control === RESUME) {
        churning.stopped = false
        churning.running = churn(churning)
      } else {
        await channel.send({ data: message.data, fds: message.fds, move: true })
      }
    }
  } catch (err) {
    if (err.code !== 'ERR_FDPASS_CLOSED') throw err
  }
}

async function churn(churning) {
  if (!listenPath) return
  while (!churning.stopped) {
    const client = await connect(listenPath)
    const file = fs.openSync(__filename, 'r')
    await client.send({ data: 'hello', fds: [file], move: true })
    await client.recv({ maxFds: 0 })
    client.close()
  }
}

async function main() {
  const channel = inheritedChannel({ framing })
  const churning = { stopped: false, running: Promise.resolve() }
  churning.running = churn(churning)
  await echo(channel, churning)
  churning.stopped = true
  await churning.running
}

// A datagram channel never reports its peer gone: stdin closing does.
process.stdin.on('end', () => process.exit(0)).resume()

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
