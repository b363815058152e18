'use strict'
// Compares ways fdpass can wait for a socket (docs/WAITING.md): what the addon
// ships (a one-shot uv_poll_t on Node's loop calling JavaScript directly in a
// callback scope) against a bare C uv_poll_t doing the same, and one relaying
// through a threadsafe function as fdpass did before. With FDPASS_TOKIO_ADDON set to the addon
// built at commit 3acca98 (tokio AsyncFd on one reactor thread, the backend
// fdpass had before), that joins the comparison too.
// Two processes; latency is a ping-pong carrying one descriptor out
// and 8 bytes back; throughput is a one-way stream of messages with one
// descriptor each, both ends waiting whenever the socket says EAGAIN.
//
// Usage: node benchmark/wait-backends/run.js [roundTrips=5000] [blocks=4] [streamed=50000]
// Needs the built addon (npm run build), cc and Node's headers.
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const shipped = require('../../binding')
// The backend under test decides which addon makes the sockets.
const addonFor = (backend) => (backend === 'tokio' ? require(process.env.FDPASS_TOKIO_ADDON) : shipped)

const uvpollPath = process.env.FDPASS_UVPOLL ?? path.join(os.tmpdir(), `fdpass-uvpoll-${process.pid}.node`)
process.env.FDPASS_UVPOLL = uvpollPath
const BACKENDS = process.env.FDPASS_BACKENDS?.split(',') ?? ['fdpass', 'uv_poll', 'uv_poll+tsfn', ...(process.env.FDPASS_TOKIO_ADDON ? ['tokio'] : [])]
const READABLE = 1
const WRITABLE = 2
const NO_FDS = new Int32Array(0)

// The native calls each backend's addon takes: the shipped binding, or the one
// at commit 3acca98 (tokio), which held received descriptors in a registry
// object and took no counts. Both receive as { data, fds } here.
const apis = new Map()
function apiOf(backend) {
  if (apis.has(backend)) return apis.get(backend)
  const native = addonFor(backend)
  let api
  if (backend === 'tokio') {
    const registry = new native.FdRegistry()
    api = {
      tryRecv: (channel) => channel.tryRecv(registry, 253, 65536),
      close: (fd) => registry.close(fd),
      send: (channel, data, fds) => channel.send(data, fds),
    }
  } else {
    api = {
      // One message per call, always reading: this measures waiting, not read-ahead.
      tryRecv: (channel) => unpackOne(channel.tryRecv(253, 65536, 1, true)),
      close: (fd) => native.closeHeld(fd),
      send: (channel, data, fds) => channel.send(data, fds, fds.length),
    }
  }
  apis.set(backend, api)
  return api
}

// [messages = 1][fd count][fds...][payload length][payload]
function unpackOne(packed) {
  if (packed === null) return null
  const count = packed.readInt32LE(4)
  const fds = Array.from({ length: count }, (_, i) => packed.readInt32LE(8 + 4 * i))
  return { data: packed.subarray(12 + 4 * count), fds }
}

function buildUvPoll() {
  const include = path.join(path.dirname(process.execPath), '..', 'include', 'node')
  execFileSync('cc', ['-O2', '-shared', '-fPIC', `-I${include}`, '-DNODE_GYP_MODULE_NAME=uvpoll',
    '-o', uvpollPath, path.join(__dirname, 'uvpoll.c')], { stdio: 'inherit' })
}

// { readable(cb), writable(cb) }: cb runs once the socket may be ready.
function waiter(channel, backend) {
  if (backend === 'tokio') {
    return {
      readable: (cb) => channel.waitReadable().then(cb),
      writable: (cb) => channel.waitWritable().then(cb),
    }
  }
  if (backend === 'fdpass') {
    const reactor = shippedReactor()
    const token = wakers.size + 1
    const arm = (events, cb) => {
      wakers.set(token, cb)
      channel.watch(reactor, token, events)
    }
    return { readable: (cb) => arm(READABLE, cb), writable: (cb) => arm(WRITABLE, cb) }
  }
  const uv = require(uvpollPath)
  const watcher = uv.watch(channel.fd, backend === 'uv_poll+tsfn')
  return {
    readable: (cb) => uv.wait(watcher, READABLE, cb),
    writable: (cb) => uv.wait(watcher, WRITABLE, cb),
  }
}

const wakers = new Map()
let reactor
function shippedReactor() {
  reactor ??= new shipped.Reactor((tokenTimesFourPlusReady) => {
    const token = Math.floor(tokenTimesFourPlusReady / 4)
    const cb = wakers.get(token)
    wakers.delete(token)
    cb()
  })
  return reactor
}

function receiver(channel, wait, backend) {
  const api = apiOf(backend)
  return function recv(done) {
    const message = api.tryRecv(channel)
    if (message !== null) return done(message)
    wait.readable(() => recv(done))
  }
}

function child(role, backend) {
  const api = apiOf(backend)
  const channel = addonFor(backend).adoptChannel(3, 'framed')
  const wait = waiter(channel, backend)
  const reply = new Uint8Array(8)
  let received = 0
  // Drains everything ready in one pass, then waits: how the facade behaves.
  const drain = () => {
    for (;;) {
      const message = api.tryRecv(channel)
      if (message === null) return wait.readable(drain)
      for (const fd of message.fds) api.close(fd)
      if (message.data.length === 0) {
        process.send?.(received)
        return process.exit(0)
      }
      received++
      if (role === 'echo' && !api.send(channel, reply, NO_FDS)) throw new Error('reply queued')
    }
  }
  drain()
}

function startChild(role, backend) {
  const [mine, theirs] = addonFor(backend).socketPair('stream', 'framed')
  const peer = spawn(process.execPath, [__filename, `--${role}`, backend], { stdio: ['inherit', 'inherit', 'inherit', theirs.fd, 'ipc'] })
  theirs.close()
  const exited = new Promise((resolve) => peer.on('exit', resolve))
  return { mine, exited, done: () => new Promise((resolve) => peer.once('message', resolve)) }
}

async function latency(backend, roundTrips) {
  const { mine, exited } = startChild('echo', backend)
  const wait = waiter(mine, backend)
  const recv = receiver(mine, wait, backend)
  const passed = new Int32Array([fs.openSync('/dev/null', 'r')])
  const payload = new Uint8Array(8).fill(1)
  const times = []
  await new Promise((resolve) => {
    let started
    const next = () => {
      if (times.length === roundTrips) return resolve()
      started = process.hrtime.bigint()
      if (!apiOf(backend).send(mine, payload, passed)) throw new Error('send queued')
      recv(() => {
        times.push(Number(process.hrtime.bigint() - started) / 1000)
        next()
      })
    }
    next()
  })
  apiOf(backend).send(mine, new Uint8Array(0), NO_FDS)
  await exited
  mine.close()
  fs.closeSync(passed[0])
  return times.slice(Math.floor(roundTrips / 10))
}

async function throughput(backend, count) {
  const { mine, exited, done } = startChild('sink', backend)
  const wait = waiter(mine, backend)
  const passed = new Int32Array([fs.openSync('/dev/null', 'r')])
  const payload = new Uint8Array(64).fill(1)
  const received = done()
  const started = process.hrtime.bigint()
  await new Promise((resolve) => {
    let sent = 0
    const pump = () => {
      while (sent < count) {
        sent++
        if (!apiOf(backend).send(mine, payload, passed)) return wait.writable(flush)
      }
      resolve()
    }
    const flush = () => {
      mine.flush()
      if (mine.hasQueued) return wait.writable(flush)
      pump()
    }
    pump()
  })
  apiOf(backend).send(mine, new Uint8Array(0), NO_FDS)
  const flushEnd = () => new Promise((resolve) => {
    const go = () => {
      mine.flush()
      if (mine.hasQueued) wait.writable(go)
      else resolve()
    }
    go()
  })
  await flushEnd()
  const got = await received
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  await exited
  mine.close()
  fs.closeSync(passed[0])
  if (got !== count) throw new Error(`${backend}: sink got ${got} of ${count}`)
  return count / seconds
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]

async function main() {
  const roundTrips = Number(process.argv[2] ?? 5000)
  const blocks = Number(process.argv[3] ?? 4)
  const streamed = Number(process.argv[4] ?? 50000)
  buildUvPoll()
  const times = Object.fromEntries(BACKENDS.map((b) => [b, []]))
  const rates = Object.fromEntries(BACKENDS.map((b) => [b, []]))
  try {
    for (let i = 0; i < blocks; i++) {
      // Alternate the order so drift on the machine hits every backend alike.
      for (const backend of i % 2 === 0 ? BACKENDS : [...BACKENDS].reverse()) {
        times[backend].push(...await latency(backend, roundTrips))
        rates[backend].push(await throughput(backend, streamed))
      }
    }
  } finally {
    fs.rmSync(uvpollPath, { force: true })
  }
  console.log(`node ${process.version}, ${os.cpus().length} cpus; ${blocks} alternating blocks`)
  console.log(`round trip (1 fd out, 8 bytes back; ${roundTrips} per block) | stream (${streamed} messages of 64 bytes + 1 fd per block)`)
  for (const backend of BACKENDS) {
    const sorted = times[backend].sort((a, b) => a - b)
    const bestRate = Math.max(...rates[backend])
    const medianRate = rates[backend].sort((a, b) => a - b)[Math.floor(blocks / 2)]
    console.log(`${backend.padEnd(13)} p50 ${percentile(sorted, 0.5).toFixed(1)} µs  p99 ${percentile(sorted, 0.99).toFixed(1)} µs | median ${Math.round(medianRate)} msg/s, best ${Math.round(bestRate)} msg/s`)
  }
}

if (process.argv[2] === '--echo') child('echo', process.argv[3])
else if (process.argv[2] === '--sink') child('sink', process.argv[3])
else main()
