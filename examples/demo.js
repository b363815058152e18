'use strict'
// The classic descriptor-passing demo, in two unrelated processes:
// the broker opens a file and a listening TCP socket and passes both over a
// Unix socket; the worker, which opened neither, reads the file and serves an
// HTTP request on the listener it received.
//
//   node examples/demo.js
const { spawn } = require('node:child_process')
const { writeFileSync, rmSync, readFileSync } = require('node:fs')
const { open } = require('node:fs/promises')
const http = require('node:http')
const net = require('node:net')
const { tmpdir } = require('node:os')
const { join } = require('node:path')

const fdpass = require('..')

const log = (who, text) => console.log(`[${who} ${process.pid}] ${text}`)

async function broker() {
  const dir = tmpdir()
  const socketPath = join(dir, `fdpass-demo-${process.pid}.sock`)
  const filePath = join(dir, `fdpass-demo-${process.pid}.txt`)
  writeFileSync(filePath, 'a secret only the broker could open\n')

  const server = fdpass.listen({ path: socketPath, mode: 0o600 })
  log('broker', `listening on ${socketPath}`)
  const worker = spawn(process.execPath, [__filename, 'worker', socketPath], { stdio: 'inherit' })
  const workerExit = new Promise((resolve) => worker.on('exit', resolve))

  const { value: channel } = await server[Symbol.asyncIterator]().next()
  server.close()

  const file = await open(filePath, 'r')
  const listener = net.createServer()
  await new Promise((resolve) => listener.listen(0, '127.0.0.1', resolve))
  const { port } = listener.address()
  log('broker', `opened ${filePath} (fd ${file.fd}) and a TCP listener on 127.0.0.1:${port} (fd ${listener._handle.fd})`)

  // Move both: the broker stops holding them once the worker has them.
  await channel.send({ data: JSON.stringify({ port }), fds: [file, listener], move: true })
  log('broker', 'passed both descriptors over the Unix socket and closed its own copies')

  const ready = await channel.recv({ maxFds: 0 })
  log('broker', `worker says: ${ready.data}`)
  const body = await new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        let text = ''
        res.on('data', (d) => (text += d))
        res.on('end', () => resolve(`${res.statusCode} ${text}`))
      })
      .on('error', reject)
  })
  log('broker', `GET http://127.0.0.1:${port}/ -> ${body.trim()}`)
  await channel.send({ data: 'done' })
  channel.close()
  const code = await workerExit
  rmSync(filePath)
  if (code !== 0) throw new Error(`worker exited with ${code}`)
  log('broker', 'worker finished; demo complete')
}

async function worker(socketPath) {
  const channel = await fdpass.connect(socketPath)
  const message = await channel.recv({ maxFds: 2 })
  const { port } = JSON.parse(message.data.toString())
  const [file, listener] = message.fds
  log('worker', `received ${message.fds.length} descriptors: ${file.kind} (fd ${file.fd}), ${listener.kind} (fd ${listener.fd})`)

  const secret = readFileSync(file.fd, 'utf8').trim()
  file.close()
  log('worker', `read from the received file: "${secret}"`)

  const server = http.createServer((req, res) => {
    res.end(`served by worker ${process.pid} on a listener it never opened; the file said "${secret}"\n`)
  })
  await new Promise((resolve) => listener.listen(server, resolve))
  log('worker', `serving HTTP on the received listener (port ${port})`)
  await channel.send({ data: 'ready' })

  await channel.recv({ maxFds: 0 })
  await new Promise((resolve) => server.close(resolve))
  channel.close()
}

const [role, socketPath] = process.argv.slice(2)
;(role === 'worker' ? worker(socketPath) : broker()).catch((err) => {
  console.error(err)
  process.exit(1)
})
