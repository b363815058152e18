import { spawnSync } from 'node:child_process'
import { closeSync, existsSync, fstatSync, openSync, statSync } from 'node:fs'
import { open } from 'node:fs/promises'
import * as net from 'node:net'
import { join } from 'node:path'

import test from 'ava'

import { Channel, limits, listen, connect, socketPair, type ReceivedFd } from 'fdpass'

import { fdCount, settledFdCount, SOCKET_TYPES, socketPath } from './helpers'

function devNull(): number {
  return openSync('/dev/null', 'r')
}

function isOpen(fd: number): boolean {
  try {
    fstatSync(fd)
    return true
  } catch {
    return false
  }
}

test.serial('argument errors throw before any system call', (t) => {
  const [a, b] = socketPair()
  t.throws(() => a.send({ fds: [-1] }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.send({ fds: [1.5] }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.send({ fds: ['3' as unknown as number] }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => a.send({ data: 5 as unknown as string }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => a.send(undefined as unknown as object), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => a.send({ fds: [new net.Socket()] }), { instanceOf: TypeError, code: 'ERR_FDPASS_NO_DESCRIPTOR' })
  t.throws(() => a.recv({ maxFds: -1 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.recv({ maxBytes: 0 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.recv({ signal: {} as AbortSignal }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => socketPair({ type: 'bogus' as 'stream' }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => Channel.fromFd(-3), { code: 'ERR_OUT_OF_RANGE' })
  a.close()
  b.close()
})

test.serial('raw mode refuses more than the platform carries, before sending', async (t) => {
  const [a, b] = socketPair({ framing: 'raw' })
  const fds = Array.from({ length: limits.maxFdsPerMessage + 1 }, devNull)
  t.throws(() => a.send({ data: 'x', fds }), { instanceOf: RangeError, code: 'ERR_FDPASS_TOO_MANY_FDS' })
  t.throws(() => a.send({ fds: [fds[0]!] }), { code: 'ERR_INVALID_ARG_VALUE' }, 'a stream message with fds needs a byte')
  t.true(fds.every(isOpen), 'the caller keeps every descriptor')
  for (const fd of fds) closeSync(fd)
  a.close()
  b.close()
})

test.serial('a closed descriptor rejects with EBADF, sends nothing, and leaves the others open', async (t) => {
  const before = fdCount()
  const [a, b] = socketPair()
  const good = devNull()
  const stale = devNull()
  closeSync(stale)
  const err = await t.throwsAsync(a.send({ data: 'x', fds: [good, stale] }), { code: 'EBADF' })
  t.is((err as unknown as { errno: number }).errno, -9)
  t.is((err as unknown as { syscall: string }).syscall, 'sendmsg')
  t.true(isOpen(good))
  await a.send({ data: 'after' })
  const m = await b.recv()
  t.is(m.data.toString(), 'after', 'nothing from the failed send arrived')
  closeSync(good)
  a.close()
  b.close()
  t.is(await settledFdCount(before), before)
})

test.serial('Node objects are sent by their descriptor and kept unless moved', async (t) => {
  const before = fdCount()
  const [a, b] = socketPair()
  const server = net.createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const file = await open(__filename, 'r')
  await a.send({ data: 'kept', fds: [server, file] })
  const kept = await b.recv()
  t.deepEqual(kept.fds.map((fd) => fd.kind), ['tcp-listener', 'file'])
  t.true(server.listening)
  t.true(file.fd >= 0)
  await a.send({ data: 'moved', fds: [file], move: true })
  const moved = await b.recv()
  t.is(file.fd, -1, 'the FileHandle was closed after the send')
  for (const fd of [...kept.fds, ...moved.fds]) fd.close()
  await new Promise<void>((r) => server.close(() => r()))
  a.close()
  b.close()
  t.is(await settledFdCount(before), before)
})

test.serial('ReceivedFd hands its descriptor over once and refuses the wrong conversion', async (t) => {
  const before = fdCount()
  const [a, b] = socketPair()
  const fd = devNull()
  await a.send({ data: 'x', fds: [fd, fd] })
  closeSync(fd)
  const { fds } = await b.recv()
  const [first, second] = fds as [ReceivedFd, ReceivedFd]
  t.throws(() => first.toSocket(), { code: 'ERR_FDPASS_WRONG_KIND' })
  t.false(first.released, 'a refused conversion leaves it owned')
  t.true(isOpen(first.fd))
  const raw = first.take()
  t.throws(() => first.take(), { code: 'ERR_FDPASS_FD_RELEASED' })
  t.throws(() => first.fd, { code: 'ERR_FDPASS_FD_RELEASED' })
  closeSync(raw)
  {
    using owned = second
    t.true(isOpen(owned.fd))
  }
  t.true(second.released, 'Symbol.dispose closed it')
  second.close()
  a.close()
  b.close()
  t.is(await settledFdCount(before), before)
})

test.serial('descriptors nobody claims are closed when collected', (t) => {
  // A separate process, so that only its own garbage decides the outcome.
  const script = `
    const { socketPair } = require('fdpass')
    const { openSync, closeSync } = require('node:fs')
    const { fdCount: count } = require(${JSON.stringify(join(__dirname, 'helpers.js'))})
    ;(async () => {
      const [a, b] = socketPair()
      const fd = openSync('/dev/null', 'r')
      const before = count()
      await a.send({ fds: [fd, fd, fd] })
      const received = (await b.recv()).fds.length
      const held = count()
      await new Promise((r) => setImmediate(r))
      for (let i = 0; i < 10 && count() > before; i++) { global.gc(); await new Promise((r) => setTimeout(r, 10)) }
      console.log(JSON.stringify({ received, held: held - before, after: count() - before }))
      closeSync(fd); a.close(); b.close()
    })()`
  const out = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', cwd: join(__dirname, '..', '..') })
  t.is(out.status, 0, out.stderr)
  t.deepEqual(JSON.parse(out.stdout), { received: 3, held: 3, after: 0 })
})

test.serial('every socket type keeps message boundaries with descriptors', async (t) => {
  const before = fdCount()
  t.is(limits.hasSeqpacket, SOCKET_TYPES.includes('seqpacket'))
  if (!limits.hasSeqpacket) {
    t.throws(() => socketPair({ type: 'seqpacket' }), { code: 'ERR_FDPASS_UNSUPPORTED' })
    t.throws(() => listen({ path: socketPath('seqpacket'), type: 'seqpacket' }), { code: 'ERR_FDPASS_UNSUPPORTED' })
  }
  for (const type of SOCKET_TYPES) {
    const [a, b] = socketPair({ type })
    const fd = devNull()
    const receiving = Promise.all([b.recv(), b.recv(), b.recv()])
    await Promise.all([a.send({ data: 'one', fds: [fd] }), a.send({ data: '' }), a.send({ data: Buffer.alloc(300_000, 7), fds: [fd, fd] })])
    closeSync(fd)
    const got = await receiving
    t.deepEqual(
      got.map((m) => [m.data.length, m.fds.length]),
      [
        [3, 1],
        [0, 0],
        [300_000, 2],
      ],
      type,
    )
    for (const m of got) for (const r of m.fds) r.close()
    a.close()
    b.close()
  }
  t.is(await settledFdCount(before), before)
})

test.serial('listen, connect and async iteration over connections and messages', async (t) => {
  const before = fdCount()
  const path = socketPath('iter')
  const server = listen({ path, mode: 0o600 })
  t.is(statSync(path).mode & 0o777, 0o600)
  t.throws(() => listen(path), { code: 'EADDRINUSE' })
  const accepted = (async () => {
    const seen: string[] = []
    for await (const channel of server) {
      for await (const message of channel) seen.push(message.data.toString())
      channel.close()
      break
    }
    return seen
  })()
  const client = await connect(path)
  await client.send({ data: 'a' })
  await client.send({ data: 'b' })
  client.close()
  t.deepEqual(await accepted, ['a', 'b'])
  t.true(server.closed, 'breaking out of the iteration closed the server')
  t.false(existsSync(path), 'closing the server removed its socket file')
  t.is(await settledFdCount(before), before)
})

test.serial('connect to nothing rejects with ENOENT and leaks nothing', async (t) => {
  const before = fdCount()
  const err = await t.throwsAsync(connect(socketPath('absent')), { code: 'ENOENT' })
  t.is((err as unknown as { syscall: string }).syscall, 'connect')
  t.is(await settledFdCount(before), before)
})

test.serial('close rejects pending receives with ERR_FDPASS_CLOSED', async (t) => {
  const [a, b] = socketPair()
  const pending = a.recv()
  a.close()
  await t.throwsAsync(pending, { code: 'ERR_FDPASS_CLOSED' })
  await t.throwsAsync(a.send({ data: 'x' }), { code: 'ERR_FDPASS_CLOSED' })
  b.close()
})

test.serial("the peer closing rejects receives with ERR_FDPASS_CLOSED and emits 'end' once", async (t) => {
  const before = fdCount()
  const [a, b] = socketPair()
  let ends = 0
  a.on('end', () => (ends += 1))
  const first = a.recv()
  const second = a.recv()
  b.close()
  await t.throwsAsync(first, { code: 'ERR_FDPASS_CLOSED' })
  await t.throwsAsync(second, { code: 'ERR_FDPASS_CLOSED' })
  await new Promise((r) => setImmediate(r))
  t.is(ends, 1)
  t.false(a.closed, 'the channel stays open until closed')
  a.close()
  t.is(await settledFdCount(before), before)
})

test.serial('argument errors of connect and listen throw synchronously', (t) => {
  const before = fdCount()
  t.throws(() => connect({ path: '' }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => connect({ path: socketPath('x'), type: 'dgram' as 'stream' }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => listen({ path: 'fdpass-abstract-mode', abstract: true, mode: 0o600 }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.is(fdCount(), before, 'no socket was made')
})

test.serial('Channel.fromFd refuses what is not a connected Unix socket, and leaves it open', async (t) => {
  // libuv keeps a spare descriptor from a process's first TCP listen on; open it first.
  const warm = net.createServer().listen(0, '127.0.0.1')
  await new Promise((resolve) => warm.once('listening', resolve))
  await new Promise((resolve) => warm.close(resolve))
  const before = fdCount()
  const file = openSync(__filename, 'r')
  t.throws(() => Channel.fromFd(file), { code: 'ENOTSOCK' })
  t.notThrows(() => fstatSync(file), 'still open and still the caller’s')
  closeSync(file)
  const tcp = net.createServer()
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve))
  const tcpFd = (tcp as unknown as { _handle: { fd: number } })._handle.fd
  t.throws(() => Channel.fromFd(tcpFd), { code: 'ERR_FDPASS_UNSUPPORTED' })
  t.notThrows(() => fstatSync(tcpFd))
  await new Promise((resolve) => tcp.close(resolve))
  // A listening Unix socket fdpass does not own (Node's); fdpass's own is refused as owned.
  const unix = net.createServer()
  await new Promise<void>((resolve) => unix.listen(socketPath('listening'), resolve))
  const unixFd = (unix as unknown as { _handle: { fd: number } })._handle.fd
  t.throws(() => Channel.fromFd(unixFd), { code: 'ERR_INVALID_ARG_VALUE' })
  t.notThrows(() => fstatSync(unixFd))
  await new Promise((resolve) => unix.close(resolve))
  const server = listen(socketPath('listening'))
  t.throws(() => Channel.fromFd(server.fd), { code: 'ERR_FDPASS_FD_OWNED' })
  t.false(server.closed)
  server.close()
  t.is(await settledFdCount(before), before)
})
