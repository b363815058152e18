'use strict'
// The Node systems of the benchmark, each as two processes speaking the same
// protocol as fdbench.c: the sender sends messages of one byte ('M') with k
// copies of one descriptor for SECONDS, then 'E'; the receiver closes every
// descriptor it gets and answers 'E' with the count (8 bytes, or a number).
// In ping-pong the receiver answers every message with one byte.
//
//   node node.js SYSTEM throughput SECONDS FDS_PER_MSG -> {"fds":N,"seconds":S}
//   node node.js SYSTEM pingpong SECONDS               -> {"rttUs":[...]}
//
// SYSTEM: fdpass:<framed|raw>:<stream|seqpacket>, node-ipc, usocket, and
// node-net (ping-pong only): one byte each way over a net.Socket on a Unix
// socket, no descriptors: the floor of any round trip through Node's loop.
const { fork, spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const fdpass = require('../..')

const now = () => Number(process.hrtime.bigint()) / 1e9
const M = Buffer.from('M')
const E = Buffer.from('E')
const ACK = Buffer.from('a')

function report(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

function countBuffer(n) {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(n))
  return b
}

// Drives the sender side: `sendOne()` sends a message ('M', k fds) and
// resolves when the system accepted it; `roundTrip()` sends one and resolves
// on the peer's answer; `finish()` sends 'E' and resolves with the count.
async function drive(mode, seconds, perMsg, { sendOne, roundTrip, finish }) {
  const start = now()
  const stop = start + seconds
  if (mode === 'pingpong') {
    const rttUs = []
    do {
      const t0 = process.hrtime.bigint()
      await roundTrip()
      rttUs.push(Number(process.hrtime.bigint() - t0) / 1000)
    } while (now() < stop)
    await finish()
    return { rttUs }
  }
  let sent = 0
  do {
    for (let i = 0; i < 64; i++) await sendOne()
    sent += 64 * perMsg
  } while (now() < stop)
  const received = await finish()
  const elapsed = now() - start
  if (received !== sent) throw new Error(`sent ${sent}, received ${received}`)
  return { fds: received, seconds: elapsed }
}

// ---------------------------------------------------------------------------
// fdpass

async function fdpassSender(variant, mode, seconds, perMsg) {
  const [, framing, type] = variant.split(':')
  const [mine, theirs] = fdpass.socketPair({ type, framing })
  const child = spawn(process.execPath, [__filename, '--receiver', variant, mode], {
    stdio: ['ignore', 'inherit', 'inherit', theirs.fd],
  })
  theirs.close()
  const fd = fs.openSync('/dev/null', 'r')
  const fds = Array.from({ length: perMsg }, () => fd)
  const message = { data: M, fds }
  const result = await drive(mode, seconds, perMsg, {
    sendOne: () => mine.send(message),
    roundTrip: async () => {
      await mine.send(message)
      await mine.recv({ maxFds: 0 })
    },
    finish: async () => {
      await mine.send({ data: E })
      const answer = await mine.recv({ maxFds: 0 })
      return Number(answer.data.readBigUInt64LE(0))
    },
  })
  await new Promise((resolve) => child.once('exit', resolve))
  mine.close()
  fs.closeSync(fd)
  return result
}

async function fdpassReceiver(variant, mode) {
  const [, framing] = variant.split(':')
  const channel = fdpass.Channel.fromFd(3, { framing })
  let received = 0
  for (;;) {
    const { data, fds } = await channel.recv({ maxFds: 253 })
    fdpass.closeAll(fds)
    received += fds.length
    // A raw-mode stream may merge the last messages' bytes with 'E'.
    if (data[data.length - 1] === E[0]) {
      await channel.send({ data: countBuffer(received) })
      break
    }
    if (mode === 'pingpong') await channel.send({ data: ACK })
  }
  channel.close()
}

// ---------------------------------------------------------------------------
// Node's own handle passing: one handle per message, a listening TCP server.

async function nodeIpcSender(mode, seconds, perMsg) {
  if (perMsg !== 1) throw new Error('node-ipc carries one handle per message')
  const child = fork(__filename, ['--receiver', 'node-ipc', mode], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  let answer = null
  child.on('message', (m) => {
    const resolve = answer
    answer = null
    resolve?.(m)
  })
  const next = () => new Promise((resolve) => (answer = resolve))
  // Node's channel has its own flow control: a send completes once written.
  const send = (m, handle) => new Promise((resolve, reject) => child.send(m, handle, (err) => (err ? reject(err) : resolve())))
  const result = await drive(mode, seconds, perMsg, {
    sendOne: () => send('M', server),
    roundTrip: async () => {
      const reply = next()
      await send('M', server)
      await reply
    },
    finish: async () => {
      const reply = next()
      await send('E')
      return reply
    },
  })
  server.close()
  await new Promise((resolve) => child.once('exit', resolve))
  return result
}

function nodeIpcReceiver(mode) {
  let received = 0
  process.on('message', (m, handle) => {
    if (handle) {
      handle.close()
      received++
    }
    if (m === 'E') {
      process.send(received, () => process.disconnect())
    } else if (mode === 'pingpong') process.send('a')
  })
}

// ---------------------------------------------------------------------------
// usocket: at most 64 descriptors per message, and the sender must not run
// ahead of the receiver (it drops descriptors otherwise), so it waits for an
// acknowledgement every WINDOW messages.

const WINDOW = 16

function loadUsocket() {
  try {
    return require('usocket')
  } catch {
    return null
  }
}

async function usocketSender(mode, seconds, perMsg) {
  const usocket = loadUsocket()
  if (!usocket) throw new Error('usocket is not installed (optional dev dependency)')
  if (perMsg > 64) throw new Error('usocket carries at most 64 descriptors per message')
  const socketPath = path.join(os.tmpdir(), `fdpass-bench-usocket-${process.pid}.sock`)
  fs.rmSync(socketPath, { force: true })
  const server = new usocket.UServer()
  await new Promise((resolve) => server.listen(socketPath, resolve))
  const child = spawn(process.execPath, [__filename, '--receiver', 'usocket', mode, socketPath], {
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  const conn = await new Promise((resolve) => server.once('connection', resolve))
  conn.on('error', () => {}) // the receiver's exit ends the connection
  server.close()
  const fd = fs.openSync('/dev/null', 'r')
  const fds = Array.from({ length: perMsg }, () => fd)
  let pending = Buffer.alloc(0)
  let waiter = null
  conn.on('data', (d) => {
    pending = Buffer.concat([pending, d])
    waiter?.()
  })
  const bytes = (n) =>
    new Promise((resolve) => {
      const check = () => {
        if (pending.length < n) return
        waiter = null
        const out = pending.subarray(0, n)
        pending = pending.subarray(n)
        resolve(out)
      }
      waiter = check
      check()
    })
  const write = (options) => new Promise((resolve) => conn.write({ ...options, callback: resolve }))
  let unacked = 0
  const result = await drive(mode, seconds, perMsg, {
    sendOne: async () => {
      await write({ data: M, fds })
      if (++unacked === WINDOW) {
        await bytes(1)
        unacked = 0
      }
    },
    roundTrip: async () => {
      await write({ data: M, fds })
      await bytes(1)
    },
    finish: async () => {
      if (unacked > 0) await bytes(1)
      await write({ data: E })
      return Number((await bytes(8)).readBigUInt64LE(0))
    },
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  conn.pause()
  conn.destroy()
  await exited
  fs.closeSync(fd)
  fs.rmSync(socketPath, { force: true })
  return result
}

function usocketReceiver(mode, socketPath) {
  const usocket = loadUsocket()
  const sock = new usocket.USocket()
  // usocket asserts if the stream is resumed before it is connected.
  sock.connect(socketPath, () => usocketReceive(sock, mode))
  sock.on('error', (err) => {
    console.error(`usocket receiver: ${err.message}`)
    process.exit(1)
  })
}

function usocketReceive(sock, mode) {
  let received = 0
  let messages = 0
  sock.on('fds', (fds) => {
    for (const fd of fds) fs.closeSync(fd)
    received += fds.length
  })
  sock.on('data', (data) => {
    for (const byte of data) {
      if (byte === E[0]) {
        // usocket asserts if its socket is used after it ends; leave at once.
        sock.write(countBuffer(received), () => process.exit(0))
        return
      }
      messages++
      if (mode === 'pingpong' || messages % WINDOW === 0) sock.write(ACK)
    }
  })
}

// ---------------------------------------------------------------------------
// node-net: the event-loop floor. Ping-pong only, no descriptors.

async function nodeNetSender(mode, seconds) {
  if (mode !== 'pingpong') throw new Error('node-net measures round trips only')
  const socketPath = path.join(os.tmpdir(), `fdpass-bench-net-${process.pid}.sock`)
  fs.rmSync(socketPath, { force: true })
  const server = net.createServer()
  await new Promise((resolve) => server.listen(socketPath, resolve))
  const child = spawn(process.execPath, [__filename, '--receiver', 'node-net', mode, socketPath], { stdio: ['ignore', 'inherit', 'inherit'] })
  const conn = await new Promise((resolve) => server.once('connection', resolve))
  server.close()
  let answered = null
  conn.on('data', () => answered?.())
  const roundTrip = () => new Promise((resolve) => ((answered = resolve), conn.write(M)))
  const result = await drive(mode, seconds, 1, { roundTrip, finish: async () => conn.end() })
  await new Promise((resolve) => child.once('exit', resolve))
  fs.rmSync(socketPath, { force: true })
  return result
}

function nodeNetReceiver(socketPath) {
  const sock = net.connect(socketPath)
  sock.on('data', () => sock.write(ACK))
  sock.on('end', () => sock.end())
}

// ---------------------------------------------------------------------------

async function main() {
  const [system, mode, ...rest] = process.argv.slice(2)
  if (system === '--receiver') {
    const [name, receiverMode, extra] = [mode, ...rest]
    if (name.startsWith('fdpass:')) return fdpassReceiver(name, receiverMode)
    if (name === 'node-ipc') return nodeIpcReceiver(receiverMode)
    if (name === 'usocket') return usocketReceiver(receiverMode, extra)
    if (name === 'node-net') return nodeNetReceiver(extra)
    throw new Error(`unknown receiver ${name}`)
  }
  const seconds = Number(rest[0])
  const perMsg = mode === 'pingpong' ? 1 : Number(rest[1])
  let result
  if (system.startsWith('fdpass:')) result = await fdpassSender(system, mode, seconds, perMsg)
  else if (system === 'node-ipc') result = await nodeIpcSender(mode, seconds, perMsg)
  else if (system === 'usocket') result = await usocketSender(mode, seconds, perMsg)
  else if (system === 'node-net') result = await nodeNetSender(mode, seconds)
  else throw new Error(`unknown system ${system}`)
  report(result)
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
