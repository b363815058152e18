'use strict'
// Privileged port broker. The broker binds a TCP port (in production one
// below 1024, which only it may bind) and hands the listening socket only to
// peers whose uid its policy allows; the worker serves HTTP on it without
// ever binding anything. A peer running as another user is refused before
// any descriptor is exchanged.
//
//   node examples/port-broker.js            (PORT=80 to bind a real one)
//
// Prints what each process does, then one JSON summary line.
const { spawn } = require('node:child_process')
const http = require('node:http')
const net = require('node:net')
const { tmpdir } = require('node:os')
const { join } = require('node:path')

const fdpass = require('..')
const { baselineFds, openFds } = require('./lib/descriptors')

const NOBODY = 65534
const log = (who, text) => console.log(`[${who} ${process.pid}] ${text}`)

async function broker() {
  const socketPath = join(tmpdir(), `fdpass-port-broker-${process.pid}.sock`)
  const allowedUids = new Set([process.getuid()])
  const fdsBefore = await baselineFds()
  const tcp = net.createServer()
  await new Promise((resolve) => tcp.listen(Number(process.env.PORT ?? 0), '127.0.0.1', resolve))
  const { port } = tcp.address()
  log('broker', `bound 127.0.0.1:${port}; hands it to uids ${[...allowedUids].join(', ')}`)

  // World-connectable on purpose: the policy, not the file mode, decides here.
  const server = fdpass.listen({ path: socketPath, mode: 0o666, allow: (peer) => allowedUids.has(peer.uid) })
  const refusals = []
  server.on('refused', (peer) => {
    refusals.push(peer)
    log('broker', `refused pid ${peer?.pid} (uid ${peer?.uid})`)
  })
  const workers = []
  server.on('connection', async (channel) => {
    workers.push(channel)
    log('broker', `pid ${channel.peer.pid} (uid ${channel.peer.uid}) may serve: passing the listener`)
    // Moved: the broker closes its copy once the worker has it, so only the
    // worker accepts.
    await channel.send({ data: String(port), fds: [tcp], move: true })
  })

  const run = (role, options = {}) => {
    const child = spawn(process.execPath, [__filename, role, socketPath], { stdio: ['ignore', 'inherit', 'inherit'], ...options })
    return new Promise((resolve) => child.on('exit', (code) => resolve(code)))
  }
  // The intruder runs as nobody, which only root can arrange.
  const intruder = process.getuid() === 0 ? run('intruder', { uid: NOBODY, gid: NOBODY }) : Promise.resolve(null)
  const intruderExit = await intruder
  const worker = run('worker')
  while (workers.length === 0) await new Promise((resolve) => setTimeout(resolve, 10))
  const ready = await workers[0].recv({ maxFds: 0 })
  log('broker', `worker says: ${ready.data}`)
  const body = await new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let text = ''
      res.on('data', (d) => (text += d))
      res.on('end', () => resolve(text))
    }).on('error', reject)
  })
  log('broker', `GET http://127.0.0.1:${port}/ -> ${body}`)
  workers[0].close()
  const workerExit = await worker
  server.close()
  const summary = {
    port,
    body,
    workerExit,
    intruderExit,
    refusedUids: refusals.map((peer) => peer?.uid),
    fdsBefore,
    fdsAfter: openFds(),
  }
  console.log(JSON.stringify(summary))
}

async function worker(socketPath) {
  const channel = await fdpass.connect(socketPath)
  const { data, fds } = await channel.recv({ maxFds: 1 })
  const [listener] = fds
  const server = http.createServer((req, res) => res.end(`hello from worker ${process.pid}, which never bound port ${data}`))
  await new Promise((resolve) => listener.listen(server, resolve))
  log('worker', `serving HTTP on the passed ${listener.released ? 'listener' : '?'} (port ${data})`)
  await channel.send({ data: 'serving' })
  // The broker closing the channel is the signal to stop.
  await channel.recv().catch(() => {})
  await new Promise((resolve) => server.close(resolve))
  channel.close()
}

async function intruder(socketPath) {
  const channel = await fdpass.connect(socketPath)
  const outcome = await channel.recv().then(
    () => 'got a listener',
    (err) => err.code,
  )
  log('intruder', `as uid ${process.getuid()}: ${outcome}`)
  channel.close()
  process.exitCode = outcome === 'ERR_FDPASS_PEER_REFUSED' ? 0 : 1
}

const [role, socketPath] = process.argv.slice(2)
const main = role === 'worker' ? worker(socketPath) : role === 'intruder' ? intruder(socketPath) : broker()
main.catch((err) => {
  console.error(err)
  process.exitCode = 1
})
