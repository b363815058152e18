/**
 * The other process in the ava specs. Usage: node peer.js ROLE SOCKET [ARGS].
 * Prints one JSON line with its descriptor count before and after, so a spec
 * can check that both processes end at their baseline.
 */
import { open } from 'node:fs/promises'
import { openSync, readdirSync, readlinkSync } from 'node:fs'
import * as net from 'node:net'

import { connect, type Channel } from 'fdpass'

const fdCount = (): number => readdirSync('/proc/self/fd').length
const fdList = (): string[] =>
  readdirSync('/proc/self/fd').map((f) => {
    try {
      return `${f}:${readlinkSync(`/proc/self/fd/${f}`)}`
    } catch {
      return f
    }
  })

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
  const listed = fdList()
  await run(socket, args)
  // Sockets released by the reactor close just after their last wait; allow that.
  for (let i = 0; i < 200 && fdCount() !== before; i++) await new Promise((r) => setTimeout(r, 10))
  const after = fdCount()
  const now = fdList()
  const gained = now.filter((f) => !listed.includes(f))
  process.stdout.write(`${JSON.stringify({ before, after, gained })}\n`)
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
