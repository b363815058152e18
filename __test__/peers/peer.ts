/**
 * The other process in the ava specs. Usage: node peer.js ROLE SOCKET [ARGS].
 * Prints one JSON line with its descriptor count before and after, so a spec
 * can check that both processes end at their baseline.
 */
import { spawn } from 'node:child_process'
import * as dgram from 'node:dgram'
import { once } from 'node:events'
import { closeSync, createReadStream, createWriteStream, openSync, readFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import * as http from 'node:http'
import * as net from 'node:net'

import { connect, socketPair, type Channel } from 'fdpass'

import { fdCount, fdTable } from '../helpers'

async function awaitAck(channel: Channel): Promise<void> {
  const ack = await channel.recv({ maxFds: 0 })
  if (ack.data.toString() !== 'ack') throw new Error(`expected ack, got ${ack.data.toString()}`)
}

const roles: Record<string, (socket: string, args: string[]) => Promise<void>> = {
  /** Reads 4 bytes of a file, then sends the FileHandle: the receiver sees offset 4. */
  async 'send-file'(socket, [file]) {
    const channel = await connect(socket)
    const handle = await open(file as string, 'r')
    await handle.read(Buffer.alloc(4), 0, 4, null)
    await channel.send({ data: 'a file', fds: [handle] })
    await awaitAck(channel)
    await handle.close()
    channel.close()
  },

  /** Sends a listening TCP socket; the receiver serves HTTP on it. */
  async 'send-listener'(socket) {
    const channel = await connect(socket)
    const server = net.createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as net.AddressInfo
    await channel.send({ data: String(port), fds: [server], move: true })
    await awaitAck(channel)
    channel.close()
  },

  /**
   * Parks a live TCP connection: sends the accepted end and keeps only the
   * client end, then checks the receiver answers "ping" with "pong" on it.
   */
  async 'send-connection'(socket) {
    const channel = await connect(socket)
    const server = net.createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve))
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
    const serverSide = await accepted
    server.close()
    serverSide.pause()
    await channel.send({ data: 'parked', fds: [serverSide], move: true })
    const reply = new Promise<string>((resolve) => client.once('data', (d: Buffer) => resolve(d.toString())))
    client.write('ping')
    const answer = await reply
    client.destroy()
    await channel.send({ data: answer })
    await awaitAck(channel)
    channel.close()
  },

  /** Sends N descriptors of /dev/null in one message. */
  async 'send-n'(socket, [count, framing]) {
    const channel = await connect({ path: socket, framing: framing === 'raw' ? 'raw' : 'framed' })
    const fds = Array.from({ length: Number(count) }, () => openSync('/dev/null', 'r'))
    await channel.send({ data: 'n', fds, move: true })
    await awaitAck(channel)
    channel.close()
  },

  /** Writes a frame header that promises 100 bytes and 1 descriptor, then exits. */
  async 'die-mid-message'(socket) {
    const channel = await connect({ path: socket, framing: 'raw' })
    const header = Buffer.from([0x46, 0x44, 1, 0, 1, 0, 0, 0, 100, 0, 0, 0])
    const fd = openSync('/dev/null', 'r')
    await channel.send({ data: header, fds: [fd], move: true })
    channel.close()
  },

  /** Sends a bound UDP socket, moved; checks it was closed here once sent. */
  async 'send-udp'(socket) {
    const channel = await connect(socket)
    const udp = dgram.createSocket('udp4')
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve))
    const closed = once(udp, 'close')
    await channel.send({ data: String(udp.address().port), fds: [{ fd: udp, move: true }] })
    await closed
    await awaitAck(channel)
    channel.close()
  },

  /** Sends a listening http.Server on a Unix socket with an abstract name, moved. */
  async 'send-unix-http'(socket, [name]) {
    const channel = await connect(socket)
    const server = http.createServer((_req, res) => res.end(`served by ${process.pid}`))
    await new Promise<void>((resolve) => server.listen(`\0${name}`, resolve))
    await channel.send({ data: String(process.pid), fds: [server], move: true })
    await awaitAck(channel)
    channel.close()
  },

  /** Sends an open fs.ReadStream and fs.WriteStream, moved. */
  async 'send-fs-streams'(socket, [input, output]) {
    const channel = await connect(socket)
    const reader = createReadStream(input as string)
    const writer = createWriteStream(output as string)
    await Promise.all([once(reader, 'open'), once(writer, 'open')])
    await channel.send({ fds: [reader, writer], move: true })
    await awaitAck(channel)
    channel.close()
  },

  /** Sends the stdin and stdout pipes of a child (cat), moved; waits for it to exit. */
  async 'send-child-stdio'(socket) {
    const channel = await connect(socket)
    const cat = spawn('cat', [], { stdio: ['pipe', 'pipe', 'inherit'] })
    const exited = once(cat, 'close')
    await channel.send({ fds: [cat.stdin, cat.stdout], move: true })
    const [code] = (await exited) as [number]
    await channel.send({ data: `cat exited ${code}` })
    await awaitAck(channel)
    channel.close()
  },

  /**
   * Sends one end of a new socket pair; over the other end, receives a file
   * and reports its content on the first channel.
   */
  async 'send-channel'(socket) {
    const channel = await connect(socket)
    const [mine, theirs] = socketPair()
    await channel.send({ fds: [theirs.fd] })
    theirs.close()
    const message = await mine.recv()
    const [file] = message.fds
    const content = readFileSync(file!.fd, 'utf8')
    file!.close()
    await mine.send({ data: 'thanks' })
    mine.close()
    await channel.send({ data: `${message.data.toString()}: ${content}` })
    await awaitAck(channel)
    channel.close()
  },

  /**
   * Connects to a listener whose policy refuses it: sends a descriptor
   * anyway (EPIPE if the refusal came first), then expects its receive to
   * reject with ERR_FDPASS_PEER_REFUSED.
   */
  async 'expect-refused'(socket) {
    const channel = await connect(socket)
    const fd = openSync('/dev/null', 'r')
    try {
      await channel.send({ data: 'let me in', fds: [fd], move: true })
    } catch (err) {
      // A failed send moves nothing: the descriptor is still ours to close.
      closeSync(fd)
      if ((err as { code?: string }).code !== 'EPIPE') throw err
    }
    const code = await channel.recv().then(
      () => 'a message',
      (err: { code?: string }) => err.code,
    )
    channel.close()
    if (code !== 'ERR_FDPASS_PEER_REFUSED') throw new Error(`expected ERR_FDPASS_PEER_REFUSED, got ${code}`)
  },

  /**
   * Connects to a listener that refuses descriptors: a send with one must
   * fail with EPERM and leave it ours; a send without any goes through.
   */
  async 'send-to-refuser'(socket) {
    const channel = await connect(socket)
    const fd = openSync('/dev/null', 'r')
    const code = await channel.send({ data: 'with a descriptor', fds: [fd], move: true }).then(
      () => 'sent',
      (err: { code?: string }) => err.code,
    )
    closeSync(fd) // the failed send moved nothing
    await channel.send({ data: `refused with ${code}` })
    await awaitAck(channel)
    channel.close()
  },

  /** Echoes every message back with its descriptors until the peer closes. */
  async echo(socket) {
    const channel = await connect(socket)
    for await (const message of channel) {
      await channel.send({ data: message.data, fds: message.fds })
      for (const fd of message.fds) fd.close()
    }
    channel.close()
  },
}

async function main(): Promise<void> {
  const [role, socket, ...args] = process.argv.slice(2)
  const run = roles[role as string]
  if (!run || !socket) throw new Error(`usage: peer.js ROLE SOCKET [ARGS]; unknown role ${role}`)
  // libuv keeps one /dev/null descriptor in reserve from a process's first TCP
  // listen on (its EMFILE trick); open it before counting.
  const warm = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => warm.once('listening', r))
  await new Promise((r) => warm.close(r))
  const before = fdCount()
  const listed = fdTable()
  await run(socket, args)
  // Sockets released by the reactor close just after their last wait; allow that.
  for (let i = 0; i < 200 && fdCount() !== before; i++) await new Promise((r) => setTimeout(r, 10))
  const after = fdCount()
  const now = fdTable()
  const gained = now.filter((f) => !listed.includes(f))
  process.stdout.write(`${JSON.stringify({ before, after, gained })}\n`)
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
