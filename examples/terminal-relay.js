'use strict'
// Terminal relay, the classic descriptor-passing demo: the client hands its
// standard input to a server process, which reads what is typed there and
// echoes it. The client itself never reads a byte of it.
//
//   node examples/terminal-relay.js                # type lines, then Ctrl-D
//   printf 'one\ntwo\n' | node examples/terminal-relay.js
//
// Works whatever stdin is: a TTY, a pipe, a socket or a file.
const { spawn } = require('node:child_process')
const { tmpdir } = require('node:os')
const { join } = require('node:path')
const readline = require('node:readline')

const fdpass = require('..')

const log = (who, text) => console.log(`[${who} ${process.pid}] ${text}`)

async function client() {
  const socketPath = join(tmpdir(), `fdpass-terminal-relay-${process.pid}.sock`)
  const server = spawn(process.execPath, [__filename, 'server', socketPath], { stdio: ['ignore', 'inherit', 'inherit'] })
  const serverExit = new Promise((resolve) => server.on('exit', resolve))
  const channel = await connectWhenListening(socketPath)
  // Descriptor 0 as a number: the client keeps its own copy but never reads it.
  await channel.send({ data: 'my stdin', fds: [0] })
  log('client', 'handed stdin to the server; type away (Ctrl-D ends)')
  const { data } = await channel.recv({ maxFds: 0 })
  log('client', `server says: ${data}`)
  channel.close()
  process.exitCode = await serverExit
}

async function connectWhenListening(socketPath) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fdpass.connect(socketPath)
    } catch (err) {
      if (err.code !== 'ENOENT' || attempt > 500) throw err
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }
}

async function server(socketPath) {
  const listener = fdpass.listen({ path: socketPath, mode: 0o600 })
  const { value: channel } = await listener[Symbol.asyncIterator]().next()
  listener.close()
  const { fds } = await channel.recv({ maxFds: 1 })
  const [stdin] = fds
  const kind = stdin.kind
  // A socket or fifo is read on the event loop; a TTY or file through fs.
  const input = ['unix-stream', 'tcp', 'fifo'].includes(kind) ? stdin.toSocket() : stdin.toReadStream()
  log('server', `reading the client's stdin (${kind})`)
  let lines = 0
  for await (const line of readline.createInterface({ input, crlfDelay: Infinity })) {
    lines++
    log('server', `you typed: ${line}`)
  }
  await channel.send({ data: `read ${lines} lines from your stdin` })
  channel.close()
}

const [role, socketPath] = process.argv.slice(2)
;(role === 'server' ? server(socketPath) : client()).catch((err) => {
  console.error(err)
  process.exitCode = 1
})
