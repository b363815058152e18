import { lookup } from 'node:dns/promises'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { socketPair, type Channel, type Message } from 'fdpass'

import { fdCount, settledFdCount, threadCount } from './helpers'

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
