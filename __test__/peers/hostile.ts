/**
 * Hostile and faulty peers for hostile.spec.ts, and the receivers and senders
 * that run under a low descriptor limit or a storm. Usage:
 * node hostile.js ROLE [ARGS]. Each role takes its channel from its parent
 * (spawnWithChannel) and prints JSON lines as it goes.
 */
import { closeSync, openSync, readlinkSync } from 'node:fs'

import { closeAll, inheritedChannel, listen, socketPair, type Channel, type Message } from 'fdpass'

import { devNulls, fdCount, receiveStorm, sendStorm, setSocketOption, shrinkSocketBuffers, socketInode, SO_PASSPIDFD } from '../helpers'

const report = (line: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(line)}\n`)
}
/** Waits for the spec's next step (a line on stdin); stdin keeps the process alive only meanwhile. */
function stdinLine(): Promise<void> {
  const stdin = process.stdin as NodeJS.ReadStream & { ref?: () => void; unref?: () => void }
  stdin.ref?.()
  stdin.resume()
  return new Promise((resolve) =>
    stdin.once('data', () => {
      stdin.pause()
      stdin.unref?.()
      resolve()
    }),
  )
}

/** Opens /dev/null until the descriptor table is full, then closes `room` of them again; returns those left open. */
function fillDescriptorTable(room: number): number[] {
  const filler: number[] = []
  for (;;) {
    try {
      filler.push(openSync('/dev/null', 'r'))
    } catch (err) {
      if ((err as { code?: string }).code !== 'EMFILE') throw err
      break
    }
  }
  for (let i = 0; i < room; i++) closeSync(filler.pop() as number)
  return filler
}

/** A frame header of PROTOCOL.md, written by hand so that it can lie. */
function frameHeader(fds: number, payloadLength: number, flags = 0): Buffer {
  const header = Buffer.alloc(12)
  header.write('FD', 0, 'latin1')
  header[2] = 1
  header[3] = flags
  header.writeUInt16LE(fds, 4)
  header.writeUInt32LE(payloadLength, 8)
  return header
}

const roles: Record<string, (channel: Channel, args: string[]) => Promise<void>> = {
  /** Well-framed messages with descriptors nobody asked for, as fast as it can. */
  async 'flood-framed'(channel, [count]) {
    for (let i = 0; i < Number(count); i++) await channel.send({ data: `flood ${i}`, fds: devNulls(4), move: true })
    await channel.send({ data: 'after the flood' })
    report({ sent: Number(count) })
  },

  /** Descriptors with bytes that are no frame, until the receiver hangs up. */
  async 'flood-unframed'(channel) {
    let sent = 0
    try {
      for (;;) {
        await channel.send({ data: 'not a frame header', fds: devNulls(4), move: true })
        sent += 1
      }
    } catch (err) {
      report({ sent, stoppedBy: (err as { code?: string }).code })
    }
  },

  /** A header that declares 5 descriptors, with 2 sent. */
  async 'claim-more-fds'(channel) {
    await channel.send({ data: Buffer.concat([frameHeader(5, 3), Buffer.from('abc')]), fds: devNulls(2), move: true })
    await stdinLine()
    channel.close()
  },

  /** A header that declares 1,000 payload bytes, with 10 sent, then an orderly close. */
  async 'claim-more-bytes'(channel) {
    await channel.send({ data: Buffer.concat([frameHeader(3, 1000), Buffer.alloc(10, 7)]), fds: devNulls(3), move: true })
    channel.close()
  },

  /** Half a frame with descriptors, then it waits to be killed. */
  async 'die-mid-frame'(channel) {
    await channel.send({ data: Buffer.concat([frameHeader(2, 64 * 1024), Buffer.alloc(1000, 1)]), fds: devNulls(2), move: true })
    report({ sentHalf: true })
    await new Promise(() => undefined)
  },

  /** Sends its own end of the channel over itself, then exits without closing it. */
  async 'send-itself'(channel) {
    const inode = socketInode(channel.fd)
    await channel.send({ data: 'my own socket', fds: [channel.fd] })
    report({ inode })
    process.exit(0)
  },

  /**
   * Fills its descriptor table to `room` free slots below RLIMIT_NOFILE, has
   * the parent send, and receives: the message with more descriptors than fit
   * must fail with EMFILE; the next one, after the table is freed, arrives.
   */
  async 'receive-at-the-limit'(channel, [room]) {
    const filler = fillDescriptorTable(Number(room))
    const before = fdCount()
    await channel.send({ data: 'ready' })
    let failure: Record<string, unknown> = {}
    try {
      const m = await channel.recv({ maxFds: 64 })
      failure = { unexpected: `a message of ${m.fds.length} descriptors arrived` }
      for (const fd of m.fds) fd.close()
    } catch (err) {
      const e = err as { code?: string; errno?: number; syscall?: string; message: string }
      failure = { code: e.code, errno: e.errno, syscall: e.syscall, message: e.message }
    }
    const atLimitAfter = fdCount()
    for (const fd of filler) closeSync(fd)
    const next: Message = await channel.recv({ maxFds: 64 })
    report({ failure, before, atLimitAfter, next: next.data.toString(), nextFds: next.fds.length })
    for (const fd of next.fds) fd.close()
    channel.close()
  },

  /**
   * Sends messages of 8 descriptors to a receiver that does not read, until
   * the kernel refuses more in flight (ETOOMANYREFS, over RLIMIT_NOFILE);
   * then, once the receiver has read them, sends one more.
   */
  async 'send-until-too-many-in-flight'(channel) {
    let sent = 0
    let failure: Record<string, unknown> = {}
    const held = devNulls(8)
    for (;;) {
      try {
        await channel.send({ data: `batch ${sent}`, fds: held })
        sent += 1
      } catch (err) {
        const e = err as { code?: string; errno?: number; syscall?: string; message: string }
        failure = { code: e.code, errno: e.errno, syscall: e.syscall, message: e.message }
        break
      }
      if (sent > 10_000) break
    }
    report({ sent, failure, open: fdCount() })
    await stdinLine()
    // This user's other processes may have descriptors in flight for a moment
    // (all of root's count together): try until the total is under the limit.
    for (;;) {
      try {
        await channel.send({ data: 'after', fds: held })
        break
      } catch (err) {
        if ((err as { code?: string }).code !== 'ETOOMANYREFS') throw err
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    }
    for (const fd of held) closeSync(fd)
    report({ after: true })
    await stdinLine()
    channel.close()
  },

  /** Sends and receives messages with descriptors while its parent signals it in a tight loop. */
  async signalled(channel, [count]) {
    let signals = 0
    process.on('SIGUSR2', () => (signals += 1))
    report({ ready: true })
    await receiveStorm(channel, Number(count))
    await sendStorm(channel, Number(count))
    report({ signals })
    await stdinLine()
    channel.close()
  },

  /**
   * A header that declares no descriptors but carries two, then a valid
   * frame with its own: the two must never arrive with the second.
   */
  async 'stray-fds'(channel) {
    await channel.send({ data: frameHeader(0, 0), fds: devNulls(2), move: true })
    const own = openSync('/dev/null', 'r')
    await channel.send({ data: Buffer.concat([frameHeader(1, 4), Buffer.from('next')]), fds: [own], move: true })
    report({ own: true })
    await stdinLine()
    channel.close()
  },

  /**
   * Descriptor hoarding: a valid header, then its payload one byte per
   * sendmsg, each with the most descriptors a sendmsg carries (copies of one
   * /dev/null), until the receiver hangs up. `announce` is the payload
   * length the header claims.
   */
  async hoard(channel, [announce, most]) {
    const one = openSync('/dev/null', 'r')
    const copies: number[] = Array.from({ length: Number(most) }, () => one)
    let sent = 0
    try {
      await channel.send({ data: frameHeader(0, Number(announce)) })
      for (; sent < 10_000; sent++) await channel.send({ data: Buffer.from([sent & 0xff]), fds: copies })
      report({ sent, stoppedBy: 'count' })
    } catch (err) {
      report({ sent, stoppedBy: (err as { code?: string }).code })
    }
    closeSync(one)
  },

  /**
   * A frame header announcing `announce` payload bytes, then `send` of them
   * (and a descriptor on the header), then it waits to be killed; with
   * `send` equal to `announce`, then a message after it.
   */
  async 'stall-mid-message'(channel, [announce, send]) {
    await channel.send({ data: frameHeader(1, Number(announce)), fds: devNulls(1), move: true })
    for (let sent = 0; sent < Number(send); sent += 64 * 1024) await channel.send({ data: Buffer.alloc(Math.min(64 * 1024, Number(send) - sent), 7) })
    if (send === announce) await channel.send({ data: Buffer.concat([frameHeader(0, 5), Buffer.from('after')]) })
    report({ sent: Number(send) })
    setInterval(() => channel.fd, 1000) // stay, holding the channel (referenced: GC would close it), until killed
  },

  /**
   * A server whose process is out of descriptors: first with nobody
   * connecting, then while the parent's client waits, then with descriptors
   * freed. Reports the errors the server emitted in each phase.
   */
  async 'server-at-the-limit'(channel, [path]) {
    const errors: string[] = []
    const accepted: string[] = []
    const server = listen(path as string, (connection) => {
      accepted.push('connection')
      connection.close()
    })
    server.on('error', (err: { code?: string }) => errors.push(err.code ?? String(err)))
    const filler = fillDescriptorTable(0)
    const turns = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await new Promise((resolve) => setTimeout(resolve, 10))
    }
    await turns(50)
    report({ idle: errors.length })
    await stdinLine() // the parent's client is waiting
    await turns(150)
    report({ waiting: [...errors] })
    for (const fd of filler) closeSync(fd)
    while (accepted.length === 0) await turns(1)
    report({ accepted: accepted.length, errors: errors.length })
    server.close()
    channel.close()
  },

  /**
   * Receives one `size`-byte message on each of `count` socket pairs (with
   * maxBytes raised for it), drops it, and reports RSS after a GC before,
   * and after, with the channels left idle and open.
   */
  async 'large-then-idle'(channel, [count, size]) {
    const gc = (globalThis as { gc?: () => void }).gc
    if (!gc) throw new Error('run with --expose-gc')
    const pairs = Array.from({ length: Number(count) }, () => socketPair())
    gc()
    const before = process.memoryUsage().rss
    for (const [a, b] of pairs) {
      const [, received] = await Promise.all([a.send({ data: Buffer.alloc(Number(size), 1) }), b.recv({ maxBytes: Number(size) })])
      if (received.data.length !== Number(size)) throw new Error('short message')
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
    gc()
    await new Promise((resolve) => setImmediate(resolve))
    gc()
    report({ grew: process.memoryUsage().rss - before, open: pairs.every(([a, b]) => !a.closed && !b.closed) })
    for (const [a, b] of pairs) {
      a.close()
      b.close()
    }
    channel.close()
  },

  /** Its own socket on one byte that can start no frame, then it exits. */
  async 'junk-with-itself'(channel) {
    const inode = socketInode(channel.fd)
    await channel.send({ data: 'X', fds: [channel.fd] })
    report({ inode })
    process.exit(0)
  },

  /**
   * Sends one end of a new socket pair with SO_PASSPIDFD set on it (so that
   * every receive there would bring a pidfd), then `count` messages into the
   * other end, with a descriptor each.
   */
  async 'pidfd-socket'(channel, [count]) {
    const [theirs, mine] = socketPair()
    setSocketOption(theirs.fd, SO_PASSPIDFD, 1)
    await channel.send({ data: 'a socket that asks for pidfds', fds: [theirs.fd] })
    theirs.close()
    for (let i = 0; i < Number(count); i++) await mine.send({ data: `message ${i}`, fds: devNulls(1), move: true })
    report({ sent: Number(count) })
    await stdinLine()
    mine.close()
    channel.close()
  },

  /**
   * Receives in raw mode with limits at and past every real bound, reporting
   * what arrived and its RSS after each: none may abort the process, pin
   * memory or cut a message.
   */
  async 'raw-limits'(channel) {
    const cases = [{ maxBytes: 2 ** 40 }, { maxBytes: Number.MAX_SAFE_INTEGER }, { maxFds: 2 ** 28 }, { maxFds: 2 ** 30 }, { maxFds: 2 ** 31 - 1 }]
    report({ ready: true })
    for (const options of cases) {
      const rssBefore = process.memoryUsage().rss
      try {
        const m = await channel.recv(options)
        report({ options, bytes: m.data.length, fds: m.fds.length, grew: process.memoryUsage().rss - rssBefore })
        closeAll(m.fds)
      } catch (err) {
        report({ options, failure: (err as { code?: string }).code, message: (err as Error).message })
      }
    }
    report({ done: true, open: fdCount() })
    await stdinLine()
    channel.close()
  },

  /**
   * Fills its descriptor table to `room` free slots, then receives `count`
   * messages the parent queued all at once, closing each message's
   * descriptors before the next receive: every one must arrive.
   */
  async 'receive-near-the-limit'(channel, [room, count]) {
    const filler = fillDescriptorTable(Number(room))
    await channel.send({ data: 'ready' })
    await stdinLine() // the parent has sent them all
    const lost: string[] = []
    let delivered = 0
    for (let i = 0; i < Number(count); i++) {
      try {
        const m = await channel.recv()
        delivered += 1
        closeAll(m.fds)
      } catch (err) {
        lost.push((err as { code?: string }).code ?? String(err))
      }
    }
    for (const fd of filler) closeSync(fd)
    report({ delivered, lost })
    channel.close()
  },

  /**
   * Receives until the channel ends and reports each message: its data and
   * what each descriptor refers to (procfs's name), then closes them.
   */
  async 'report-received'(channel) {
    for await (const message of channel) {
      report({ data: message.data.toString(), fds: message.fds.map((fd) => readlinkSync(`/proc/self/fd/${fd.fd}`)) })
      for (const fd of message.fds) fd.close()
    }
    report({ ended: true, open: fdCount() })
  },

  /** Receives a storm, then sends one back, on a socket whose buffers it shrank to the minimum. */
  async 'tiny-buffers'(channel, [count]) {
    const sndbuf = shrinkSocketBuffers(channel.fd)
    report({ sndbuf })
    await receiveStorm(channel, Number(count))
    await sendStorm(channel, Number(count))
    report({ done: true })
    await stdinLine()
    channel.close()
  },
}

/** Roles that write frames by hand (or no frames at all). */
const WRITES_RAW_BYTES = new Set(['flood-unframed', 'claim-more-fds', 'claim-more-bytes', 'die-mid-frame', 'stray-fds', 'hoard', 'junk-with-itself', 'raw-limits', 'stall-mid-message'])

async function main(): Promise<void> {
  const [role, ...args] = process.argv.slice(2)
  const run = roles[role as string]
  if (!run) throw new Error(`usage: hostile.js ROLE [ARGS]; unknown role ${role}`)
  await run(inheritedChannel({ framing: WRITES_RAW_BYTES.has(role as string) ? 'raw' : 'framed' }), args)
}

// Give up if the spec that started this peer is gone.
setTimeout(() => {
  console.error('hostile peer: gave up after 60 s')
  process.exit(2)
}, 60_000).unref()

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err)
    process.exitCode = 1
  })
}
