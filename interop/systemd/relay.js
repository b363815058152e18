'use strict'
// Started by systemd-socket-activate (or systemd itself): takes the sockets
// it was handed and passes each on, by name, to the fdpass process listening
// at the path given as the first argument, over a framed channel. Used by
// __test__/interop.spec.ts.
//
//   systemd-socket-activate -l 127.0.0.1:8080 --fdname=web node relay.js /run/relay.sock

const { connect } = require('../../index')
const { listenFds } = require('../../activation')

// A relay whose receiver never answers must not wait forever.
setTimeout(() => {
  process.stderr.write('relay: gave up after 60 s\n')
  process.exit(3)
}, 60_000).unref()

async function main() {
  const [path] = process.argv.slice(2)
  if (!path) throw new Error('usage: relay.js <fdpass socket path>')
  const named = listenFds()
  const channel = await connect(path)
  try {
    for (const [name, fds] of named) {
      await channel.send({ data: name, fds, move: true })
    }
    // The receiver's answer says it has them: only then may this process go.
    const { data } = await channel.recv()
    process.stdout.write(`${JSON.stringify({ relayed: [...named.keys()], answer: data.toString() })}\n`)
  } finally {
    channel.close()
  }
}

main().catch((err) => {
  process.stderr.write(`relay: ${err.stack}\n`)
  process.exitCode = 1
})
