import * as dgram from 'node:dgram'
import { once } from 'node:events'
import { closeSync, createReadStream, createWriteStream, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import * as http from 'node:http'
import * as https from 'node:https'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { socketPair, type ReceivedFd } from 'fdpass'

import { assertBaselines, fdCount, onlyOn, settledFdCount, withPeer } from './helpers'

const tempFile = (tag: string): string => join(tmpdir(), `fdpass-${process.pid}-${tag}`)

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let text = ''
  for await (const chunk of stream) text += String(chunk)
  return text
}

test.serial('a UDP socket sent by another process becomes a dgram.Socket that receives here', async (t) => {
  const r = await withPeer('send-udp', [], async (channel) => {
    const message = await channel.recv()
    const port = Number(message.data.toString())
    const [received] = message.fds as [ReceivedFd]
    t.is(received.kind, 'udp')
    const udp = received.toDgram()
    t.true(received.released, 'ownership went to the dgram.Socket')
    t.is(udp.address().port, port, 'still bound where the other process bound it')
    const datagram = once(udp, 'message')
    const client = dgram.createSocket('udp4')
    client.send('a datagram', port, '127.0.0.1')
    const [payload] = (await datagram) as [Buffer]
    t.is(payload.toString(), 'a datagram')
    await new Promise<void>((resolve) => client.close(resolve))
    await new Promise<void>((resolve) => udp.close(resolve))
    await channel.send({ data: 'ack' })
  })
  assertBaselines(t, r)
})

// An abstract name: closing a server bound to a filesystem path makes libuv
// unlink the path, which a move does in the sending process. Abstract names
// are Linux's.
onlyOn(test.serial, ['linux'], 'no abstract socket names, and a server bound to a path unlinks it when moved')('an http.Server listening on a Unix socket, moved here, serves here', async (t) => {
  const name = `fdpass-${process.pid}-http`
  const path = `\0${name}`
  const r = await withPeer('send-unix-http', [name], async (channel) => {
    const message = await channel.recv()
    const [received] = message.fds as [ReceivedFd]
    t.is(received.kind, 'unix-stream-listener')
    const server = http.createServer((_req, res) => res.end(`served by ${process.pid}`))
    await new Promise<void>((resolve) => received.listen(server, resolve))
    const body = await new Promise<string>((resolve, reject) => {
      http.get({ socketPath: path, path: '/', agent: false }, (res) => resolve(readAll(res))).on('error', reject)
    })
    t.is(body, `served by ${process.pid}`)
    t.not(message.data.toString(), String(process.pid))
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await channel.send({ data: 'ack' })
  })
  assertBaselines(t, r)
})

test.serial('fs streams sent by another process become a ReadStream and a WriteStream here', async (t) => {
  const input = tempFile('input')
  const output = tempFile('output')
  writeFileSync(input, 'read through a passed stream')
  const r = await withPeer('send-fs-streams', [input, output], async (channel) => {
    const { fds } = await channel.recv()
    const [reader, writer] = fds as [ReceivedFd, ReceivedFd]
    t.deepEqual([reader.kind, writer.kind], ['file', 'file'])
    t.is(await readAll(reader.toReadStream({ encoding: 'utf8' })), 'read through a passed stream')
    const stream = writer.toWriteStream()
    stream.end('written through a passed stream')
    await once(stream, 'close')
    t.is(readFileSync(output, 'utf8'), 'written through a passed stream')
    await channel.send({ data: 'ack' })
  })
  rmSync(input)
  rmSync(output)
  assertBaselines(t, r)
})

test.serial('a child’s stdio pipes sent by its parent drive the child from here', async (t) => {
  const r = await withPeer('send-child-stdio', [], async (channel) => {
    const { fds } = await channel.recv()
    const [stdinFd, stdoutFd] = fds as [ReceivedFd, ReceivedFd]
    t.deepEqual([stdinFd.kind, stdoutFd.kind], ['unix-stream', 'unix-stream'])
    const stdin = stdinFd.toSocket()
    const stdout = stdoutFd.toSocket()
    const echoed = readAll(stdout)
    stdin.end('typed into cat from another process')
    t.is(await echoed, 'typed into cat from another process')
    t.is((await channel.recv()).data.toString(), 'cat exited 0')
    await channel.send({ data: 'ack' })
  })
  assertBaselines(t, r)
})

test.serial('a Unix socket sent by another process becomes a channel that passes descriptors', async (t) => {
  const file = tempFile('over-a-passed-channel')
  writeFileSync(file, 'content of the file')
  const r = await withPeer('send-channel', [], async (channel) => {
    const { fds } = await channel.recv()
    const [received] = fds as [ReceivedFd]
    t.is(received.kind, 'unix-stream')
    const passed = received.toChannel()
    t.true(received.released)
    const handle = await open(file, 'r')
    await passed.send({ data: 'a file over a passed channel', fds: [handle], move: true })
    t.is((await passed.recv()).data.toString(), 'thanks')
    passed.close()
    t.is((await channel.recv()).data.toString(), 'a file over a passed channel: content of the file')
    await channel.send({ data: 'ack' })
  })
  rmSync(file)
  assertBaselines(t, r)
})

test.serial('holders without a descriptor are refused with ERR_FDPASS_NO_DESCRIPTOR, sending nothing', async (t) => {
  const [a, b] = socketPair()
  const unbound = dgram.createSocket('udp4')
  const destroyed = createWriteStream(tempFile('destroyed'))
  await once(destroyed, 'open')
  destroyed.destroy()
  await once(destroyed, 'close')
  const [c, d] = socketPair()
  const gone = (await (async () => {
    await c.send({ data: 'x', fds: [openSync('/dev/null', 'r')], move: true })
    const { fds } = await d.recv()
    fds[0]!.close()
    return fds[0]!
  })()) as ReceivedFd
  const before = fdCount()
  const notOpenYet = createReadStream(__filename) // opens on a later turn
  const holders: [string, unknown][] = [
    ['a net.Socket not connected', new net.Socket()],
    ['a net.Server not listening', net.createServer()],
    ['an unbound dgram.Socket', unbound],
    ['an fs.ReadStream not open yet', notOpenYet],
    ['a destroyed fs.WriteStream', destroyed],
    ['a released ReceivedFd', gone],
    ['an object of another kind', new Map()],
    ['a moved entry holding nothing', { fd: new net.Socket(), move: true }],
  ]
  for (const [what, holder] of holders) {
    // A good descriptor first: nothing at all is sent when a later one is bad.
    t.throws(() => a.send({ data: 'never sent', fds: [0, holder as never] }), { instanceOf: TypeError, code: 'ERR_FDPASS_NO_DESCRIPTOR' }, what)
  }
  t.throws(() => a.send({ fds: ['3' as never] }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.is(fdCount(), before, 'no descriptor opened or closed')
  notOpenYet.destroy()
  await once(notOpenYet, 'close')
  await a.send({ data: 'only this' })
  t.is((await b.recv()).data.toString(), 'only this', 'nothing was sent before')
  await new Promise<void>((resolve) => unbound.close(resolve))
  for (const ch of [a, b, c, d]) ch.close()
})

test.serial('move per descriptor gives up only those, only after the send succeeded', async (t) => {
  const before = fdCount()
  const [a, b] = socketPair()
  const kept = await open(__filename, 'r')
  const moved = await open(__filename, 'r')
  await a.send({ data: 'x', fds: [kept, { fd: moved, move: true }] })
  t.true(kept.fd >= 0, 'kept without move')
  t.is(moved.fd, -1, 'moved one closed')
  const { fds } = await b.recv()
  t.is(fds.length, 2)
  for (const fd of fds) fd.close()

  // One descriptor named twice, by object and by number, is given up once
  // (closing the number again could close a reused one).
  const twice = await open(__filename, 'r')
  await a.send({ fds: [twice, twice.fd], move: true })
  t.is(twice.fd, -1)
  for (const fd of (await b.recv()).fds) fd.close()

  // A failed send gives up nothing: the moved holder stays open.
  const survivor = await open(__filename, 'r')
  const stale = openSync('/dev/null', 'r')
  closeSync(stale)
  await t.throwsAsync(a.send({ fds: [{ fd: survivor, move: true }, stale] }), { code: 'EBADF' })
  t.true(survivor.fd >= 0, 'not closed after a failed send')
  await survivor.close()
  await kept.close()
  a.close()
  b.close()
  t.is(await settledFdCount(before), before)
})

test.serial('conversions of the wrong kind throw ERR_FDPASS_WRONG_KIND and keep the descriptor', async (t) => {
  const before = fdCount()
  const [a, b] = socketPair()
  const file = await open(__filename, 'r')
  const udp = dgram.createSocket('udp4')
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve))
  await a.send({ fds: [file, udp], move: true })
  const [fileFd, udpFd] = (await b.recv()).fds as [ReceivedFd, ReceivedFd]
  for (const convert of [() => fileFd.toDgram(), () => fileFd.toChannel(), () => fileFd.toSocket(), () => udpFd.toReadStream(), () => udpFd.toWriteStream()]) {
    t.throws(convert, { code: 'ERR_FDPASS_WRONG_KIND' })
  }
  t.false(fileFd.released || udpFd.released, 'both still owned here')
  // A conversion of the right kind that Node refuses leaves it owned too.
  t.throws(() => fileFd.toReadStream({ encoding: 'no-such-encoding' as BufferEncoding }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.false(fileFd.released, 'still owned after Node refused the stream')
  t.is(readFileSync(fileFd.fd, 'utf8').length > 0, true, 'and still open')
  fileFd.close()
  udpFd.close()
  a.close()
  b.close()
  t.is(await settledFdCount(before), before)
})

test.serial('an https.Server is sent by its listening socket, which keeps listening here', async (t) => {
  const before = fdCount()
  const [a, b] = socketPair()
  const secure = https.createServer()
  await new Promise<void>((resolve) => secure.listen(0, '127.0.0.1', resolve))
  const { port } = secure.address() as net.AddressInfo
  await a.send({ fds: [secure] })
  const [received] = (await b.recv()).fds as [ReceivedFd]
  t.is(received.kind, 'tcp-listener')
  const server = received.toServer()
  await once(server, 'listening')
  t.is((server.address() as net.AddressInfo).port, port, 'the same listening socket')
  await new Promise<void>((resolve) => server.close(() => resolve()))
  await new Promise<void>((resolve) => secure.close(() => resolve()))
  a.close()
  b.close()
  t.is(await settledFdCount(before), before)
})
