import { spawn } from 'node:child_process'
import { lookup } from 'node:dns/promises'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { socketPair, type Channel, type Message } from 'fdpass'

import { fdCount, settledFdCount, threadCount } from './helpers'

import type * as Native from '../binding'

const INDEX = join(__dirname, '..', '..', 'index.js')
// The binding under the facade, for the reactor's own contract. Loaded by path:
// it is not part of the package's public exports.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require(join(__dirname, '..', '..', 'binding.js')) as typeof Native
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Runs `code` in a fresh Node process with `channel`'s peer end as fd 3. */
function childWithChannel(code: string): {
  channel: Channel
  ready: Promise<void>
  exited: Promise<{ code: number | null; stdout: string }>
} {
  const [mine, theirs] = socketPair()
  const child = spawn(process.execPath, ['-e', `const fdpass = require(${JSON.stringify(INDEX)});\n${code}`], {
    stdio: ['ignore', 'pipe', 'inherit', theirs.fd],
  })
  theirs.close()
  let stdout = ''
  let markReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => (markReady = resolve))
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString()
    if (stdout.includes('ready\n')) markReady()
  })
  const exited = new Promise<{ code: number | null; stdout: string }>((resolve) => {
    child.on('close', (code) => resolve({ code, stdout: stdout.replace('ready\n', '') }))
  })
  // A process that fails to exit is killed after a generous grace, so the
  // test fails on its assertion instead of hanging.
  const guard = setTimeout(() => child.kill(), 20_000)
  void exited.then(() => clearTimeout(guard))
  return { channel: mine, ready, exited }
}

async function pendingReceives(count: number): Promise<{ pairs: [Channel, Channel][]; receives: Promise<Message>[] }> {
  const pairs = Array.from({ length: count }, () => socketPair())
  const receives = pairs.map(([a]) => a.recv())
  // Let every receive reach its wait.
  await new Promise((r) => setImmediate(r))
  return { pairs, receives }
}

async function finish(pairs: [Channel, Channel][], receives: Promise<Message>[]): Promise<string[]> {
  await Promise.all(pairs.map(([, b], i) => b.send({ data: String(i) })))
  const got = (await Promise.all(receives)).map((m) => m.data.toString())
  for (const [a, b] of pairs) {
    a.close()
    b.close()
  }
  return got
}

test.serial('1,000 pending receives hold no thread each and starve neither fs nor dns', async (t) => {
  const before = fdCount()
  // Warm up what fs, dns and the reactor start once, so counts compare like with like.
  await readFile(__filename)
  await lookup('localhost')
  const warm = await pendingReceives(10)
  const threadsWithTen = threadCount()
  t.deepEqual(await finish(warm.pairs, warm.receives), Array.from({ length: 10 }, (_, i) => String(i)))

  const { pairs, receives } = await pendingReceives(1000)
  t.is(threadCount(), threadsWithTen, 'threads do not grow with pending receives')
  // Node's libuv pool (4 threads) still serves fs and dns while all of them wait.
  const [file, address] = await Promise.all([readFile(__filename, 'utf8'), lookup('localhost')])
  t.true(file.includes('pending receives'))
  t.truthy(address.address)
  const got = await finish(pairs, receives)
  t.is(got.length, 1000)
  t.is(got[999], '999')
  t.is(await settledFdCount(before), before)
})

test.serial('a channel used in a worker is cleaned up when the worker ends', async (t) => {
  const before = fdCount()
  const index = join(__dirname, '..', '..', 'index.js')
  const code = `
    const { parentPort } = require('node:worker_threads')
    const { socketPair } = require(${JSON.stringify(index)})
    const { openSync, closeSync } = require('node:fs')
    ;(async () => {
      const [a, b] = socketPair()
      const fd = openSync('/dev/null', 'r')
      await a.send({ data: 'in a worker', fds: [fd] })
      closeSync(fd)
      const m = await b.recv()
      // Left open on purpose: a received fd, both channel ends, and a pending receive.
      const more = socketPair()
      more[0].recv().catch(() => {})
      parentPort.postMessage({ data: m.data.toString(), fds: m.fds.length })
    })()`
  const worker = new Worker(code, { eval: true })
  const reply = await new Promise<{ data: string; fds: number }>((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
  })
  t.deepEqual(reply, { data: 'in a worker', fds: 1 })
  t.true(fdCount() > before, 'the worker holds descriptors')
  await worker.terminate()
  t.is(await settledFdCount(before), before, 'everything the worker held was closed')
  // The main thread's own channels still work after the worker's teardown.
  const [a, b] = socketPair()
  await a.send({ data: 'still fine' })
  t.is((await b.recv()).data.toString(), 'still fine')
  a.close()
  b.close()
})

test.serial('a pending receive keeps its process alive until the message comes', async (t) => {
  const before = fdCount()
  const { channel, ready, exited } = childWithChannel(`
    const channel = fdpass.Channel.fromFd(3)
    channel.recv().then((m) => { console.log(m.data.toString()); channel.close() })
    console.log('ready')`)
  // Nothing but the pending receive holds the child's loop open. Once it
  // waits, give a child that wrongly exits time to do so before the message goes out.
  await Promise.race([ready, exited])
  await delay(300)
  await channel.send({ data: 'worth the wait' })
  const result = await exited
  channel.close()
  t.is(result.code, 0)
  t.is(result.stdout.trim(), 'worth the wait')
  t.is(await settledFdCount(before), before)
})

test.serial('an aborted receive, its watch stopped, lets the process exit', async (t) => {
  const before = fdCount()
  const { channel, exited } = childWithChannel(`
    const channel = fdpass.Channel.fromFd(3)
    const abort = new AbortController()
    channel.recv({ signal: abort.signal }).catch((e) => console.log(e.code))
    setTimeout(() => abort.abort(), 50)`)
  const result = await exited
  channel.close()
  t.is(result.code, 0, 'exited by itself, not killed')
  t.is(result.stdout.trim(), 'ABORT_ERR')
  t.is(await settledFdCount(before), before)
})

test.serial('a watch wakes once per arming, never while the socket is idle', async (t) => {
  const before = fdCount()
  const wakes: number[] = []
  const reactor = new native.Reactor((wake: number) => wakes.push(wake))
  const [a, b] = native.socketPair('stream' as Native.SocketType, 'framed' as Native.ChannelMode)
  const until = async (count: number): Promise<void> => {
    while (wakes.length < count) await new Promise((r) => setImmediate(r))
  }
  const READABLE = 1
  const token = 7
  b.watch(reactor, token, READABLE)
  // Many loop turns with nothing to read: a spinning reactor would wake here.
  for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r))
  await delay(50)
  t.deepEqual(wakes, [], 'no wake while idle')

  t.true(a.send(Buffer.from('one'), new Int32Array(0), 0))
  await until(1)
  t.deepEqual(wakes, [token * 4 + READABLE])
  // Answered by stopping, the message still unread: no further wake.
  b.watch(reactor, token, 0)
  await delay(50)
  t.is(wakes.length, 1, 'one wake per arming, though the socket stays readable')

  // Armed again while readable: wakes at once; drained and re-armed: silent.
  b.watch(reactor, token, READABLE)
  await until(2)
  // [messages = 1][fds = 0][length = 3][payload]
  t.is(b.tryRecv(0, 1024, true)?.subarray(12).toString(), 'one')
  t.is(b.tryRecv(0, 1024, true), null)
  b.watch(reactor, token, READABLE)
  await delay(50)
  t.is(wakes.length, 2, 'drained and re-armed: no wake until data comes')
  b.watch(reactor, token, 0)
  a.close()
  b.close()
  t.is(await settledFdCount(before), before)
})

test.serial('a wake runs its promise reactions before the loop goes on, as Node’s own callbacks do', async (t) => {
  const order: string[] = []
  let woken: () => void = () => {}
  const done = new Promise<void>((resolve) => (woken = resolve))
  const reactor = new native.Reactor(() => {
    setImmediate(() => {
      order.push('immediate queued by the wake')
      woken()
    })
    void Promise.resolve().then(() => order.push('reaction queued by the wake'))
  })
  const [a, b] = native.socketPair('stream' as Native.SocketType, 'framed' as Native.ChannelMode)
  b.watch(reactor, 1, 1)
  a.send(Buffer.from('x'), new Int32Array(0), 0)
  await done
  t.deepEqual(order, ['reaction queued by the wake', 'immediate queued by the wake'])
  b.watch(reactor, 1, 0)
  a.close()
  b.close()
})

test.serial('an exception thrown by a wake reaches uncaughtException', async (t) => {
  const binding = join(__dirname, '..', '..', 'binding.js')
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const native = require(${JSON.stringify(binding)})
      process.on('uncaughtException', (err) => { console.log('uncaught: ' + err.message); process.exit(0) })
      const reactor = new native.Reactor(() => { throw new Error('thrown by the wake') })
      const [a, b] = native.socketPair('stream', 'framed')
      b.watch(reactor, 1, 1)
      a.send(Buffer.from('x'), new Int32Array(0), 0)`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  let stdout = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  t.is(stdout.trim(), 'uncaught: thrown by the wake')
  t.is(code, 0)
})
