import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import * as http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { limits, type Message } from 'fdpass'

import { assertBaselines, fdCount, openAfterExec, withPeer } from './helpers'

test.serial('a file sent by another process is read here, sharing its offset', async (t) => {
  const file = join(tmpdir(), `fdpass-file-${process.pid}`)
  writeFileSync(file, '0123456789')
  const r = await withPeer('send-file', [file], async (channel) => {
    const message = await channel.recv()
    t.is(message.data.toString(), 'a file')
    t.is(message.fds.length, 1)
    const fd = message.fds[0]!
    t.is(fd.kind, 'file')
    // The peer read 4 bytes through the same open file description.
    t.is(readFileSync(fd.fd, 'utf8'), '456789')
    fd.close()
    await channel.send({ data: 'ack' })
  })
  rmSync(file)
  assertBaselines(t, r)
})

test.serial('a received TCP listener serves a real HTTP request', async (t) => {
  const r = await withPeer('send-listener', [], async (channel) => {
    const message = await channel.recv()
    const port = Number(message.data.toString())
    const [listener] = message.fds
    t.is(listener?.kind, 'tcp-listener')
    const server = http.createServer((_req, res) => res.end('served from a passed listener'))
    await new Promise<void>((resolve) => listener!.listen(server, resolve))
    t.true(listener!.released, 'ownership went to the http.Server')
    const body = await new Promise<string>((resolve, reject) => {
      get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        let text = ''
        res.on('data', (d: Buffer) => (text += d.toString()))
        res.on('end', () => resolve(text))
      }).on('error', reject)
    })
    t.is(body, 'served from a passed listener')
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await channel.send({ data: 'ack' })
  })
  assertBaselines(t, r)
})

test.serial('a received TCP connection becomes a net.Socket that talks to the original client', async (t) => {
  const r = await withPeer('send-connection', [], async (channel) => {
    const message = await channel.recv()
    t.is(message.data.toString(), 'parked')
    const [connection] = message.fds
    t.is(connection?.kind, 'tcp')
    const socket = connection!.toSocket()
    t.true(connection!.released, 'ownership went to the net.Socket')
    const ping = await new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString())))
    t.is(ping, 'ping')
    socket.end('pong')
    const answer = await channel.recv()
    t.is(answer.data.toString(), 'pong', 'the client in the other process got our reply')
    socket.destroy()
    await channel.send({ data: 'ack' })
  })
  assertBaselines(t, r)
})

for (const framing of ['raw', 'framed'] as const) {
  test.serial(`${limits.maxFdsPerMessage} descriptors in one ${framing} message`, async (t) => {
    const n = limits.maxFdsPerMessage
    const r = await withPeer(
      'send-n',
      [String(n), framing],
      async (channel) => {
        const message = await channel.recv({ maxFds: n })
        t.is(message.fds.length, n)
        t.true(message.fds.every((fd) => fd.kind === 'char-device'))
        for (const fd of message.fds) fd.close()
        await channel.send({ data: 'ack' })
      },
      { framing },
    )
    assertBaselines(t, r)
  })
}

test.serial('1,000 descriptors in one framed message are chunked and reassembled', async (t) => {
  const r = await withPeer('send-n', ['1000', 'framed'], async (channel) => {
    const message = await channel.recv({ maxFds: 1000 })
    t.is(message.fds.length, 1000)
    t.is(new Set(message.fds.map((fd) => fd.fd)).size, 1000)
    for (const fd of message.fds) fd.close()
    await channel.send({ data: 'ack' })
  })
  assertBaselines(t, r)
})

test.serial('a message with more descriptors than maxFds is refused whole and closed', async (t) => {
  const r = await withPeer('send-n', ['40', 'framed'], async (channel) => {
    const before = fdCount()
    const err = await t.throwsAsync(channel.recv({ maxFds: 3 }), { code: 'ERR_FDPASS_TOO_MANY_FDS' })
    t.regex(err!.message, /40 descriptors/)
    t.is(fdCount(), before, 'none of the 40 stayed open here')
    // The channel stays in step: the next message arrives intact.
    await channel.send({ data: 'ack' })
  })
  assertBaselines(t, r)
})

test.serial('raw mode: the kernel gets room for maxFds descriptors only; a message with more is refused and nothing of it stays open', async (t) => {
  // FreeBSD carries at most 85 in one raw message.
  const sent = Math.min(100, limits.maxFdsPerMessage)
  const r = await withPeer(
    'send-n',
    [String(sent), 'raw'],
    async (channel) => {
      const before = fdCount()
      // Linux and FreeBSD install the 2 there is room for and release the
      // rest; macOS installs every one first, and fdpass closes the surplus.
      const err = await t.throwsAsync(channel.recv({ maxFds: 2 }), { code: 'ERR_FDPASS_TOO_MANY_FDS' })
      t.regex(err!.message, /more descriptors than the 2 this receive accepts/)
      t.is(fdCount(), before)
      await channel.send({ data: 'ack' })
    },
    { framing: 'raw' },
  )
  assertBaselines(t, r)
})

test.serial('a peer that exits mid-message leaves a protocol error and no descriptor behind', async (t) => {
  const r = await withPeer('die-mid-message', [], async (channel) => {
    const err = await t.throwsAsync(channel.recv(), { code: 'ERR_FDPASS_PROTOCOL' })
    t.regex(err!.message, /middle of a message/)
    await t.throwsAsync(channel.recv(), { code: 'ERR_FDPASS_CLOSED' })
  })
  t.is(r.peer.code, 0, r.peer.stderr)
  t.is(r.after, r.before)
})

test.serial('an aborted receive rejects with AbortError and the next receive gets the message', async (t) => {
  const r = await withPeer('echo', [], async (channel) => {
    const controller = new AbortController()
    const pending = channel.recv({ signal: controller.signal })
    controller.abort()
    await t.throwsAsync(pending, { name: 'AbortError', code: 'ABORT_ERR' })
    await t.throwsAsync(channel.recv({ signal: AbortSignal.abort() }), { code: 'ABORT_ERR' })
    const file = join(tmpdir(), `fdpass-echo-${process.pid}`)
    writeFileSync(file, 'echoed')
    const { openSync, closeSync } = await import('node:fs')
    const fd = openSync(file, 'r')
    await channel.send({ data: 'round trip', fds: [fd] })
    closeSync(fd)
    const back: Message = await channel.recv()
    t.is(back.data.toString(), 'round trip')
    t.is(readFileSync(back.fds[0]!.fd, 'utf8'), 'echoed')
    back.fds[0]!.close()
    rmSync(file)
  })
  assertBaselines(t, r)
})

test.serial('received descriptors are closed in an exec’d child (close-on-exec)', async (t) => {
  const r = await withPeer('send-n', ['3', 'framed'], async (channel) => {
    const message = await channel.recv()
    t.is(message.fds.length, 3)
    t.deepEqual(openAfterExec(message.fds.map((fd) => fd.fd)), [])
    for (const fd of message.fds) fd.close()
    await channel.send({ data: 'ack' })
  })
  assertBaselines(t, r)
})
