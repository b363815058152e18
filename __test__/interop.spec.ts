// fdpass against the fd-passing code other languages use, both ways, across
// real processes: the peers under interop/ (Python's standard library, Go
// modules, plain C, systemd). Each case uses what arrives for real and ends
// with this process at its descriptor baseline.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import * as dgram from 'node:dgram'
import { closeSync, constants, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import * as net from 'node:net'
import { constants as osConstants, tmpdir } from 'node:os'
import { join } from 'node:path'

import test, { type ExecutionContext } from 'ava'

import { closeAll, connect, limits, listen, spawnWithChannel, type Channel, type Descriptor, type Message, type SocketType } from 'fdpass'

import { fdCount, freePort, onlyOn, openAfterExec, Process, runsHere, settledFdCount, SOCKET_TYPES, socketPath, SYSTEMD, withSystemd, type RunsOn } from './helpers'

const ROOT = join(__dirname, '..', '..')
const INTEROP = join(ROOT, 'interop')
const BIN = join(ROOT, 'build', 'interop')

type PeerName = 'python' | 'go' | 'c' | 'systemd'

/**
 * Where each peer builds and runs. The peers' wire behaviour in PROTOCOL.md
 * is Linux's; where another system behaves otherwise for a case, the case
 * says so (see the other RunsOn below).
 */
const PEERS_RUN_ON: Record<PeerName, RunsOn> = {
  python: { platforms: ['linux', 'darwin', 'freebsd'], lacking: '' },
  c: { platforms: ['linux', 'freebsd'], lacking: 'no SOCK_CLOEXEC, accept4, pipe2, MSG_NOSIGNAL or MSG_CMSG_CLOEXEC, which interop/c/peer.c uses' },
  go: { platforms: ['linux', 'freebsd'], lacking: 'no MSG_CMSG_CLOEXEC in golang.org/x/sys/unix, which interop/go uses' },
  systemd: SYSTEMD,
}

/** On macOS, multiprocessing.reduction's sendfds waits for an acknowledgement byte and recvfds sends one (ACKNOWLEDGE). */
const ACKNOWLEDGED: RunsOn = { platforms: ['linux', 'freebsd'], lacking: 'multiprocessing.reduction acknowledges each message, and raw fdpass does not' }

/**
 * socket.recv_fds sizes its control buffer with CMSG_LEN; FreeBSD, which fills
 * CMSG_SPACE, truncates three descriptors there (python/cpython#111675).
 */
const RECV_FDS_FITS: RunsOn = { platforms: ['linux', 'darwin'], lacking: 'socket.recv_fds sizes its control buffer with CMSG_LEN, short of the CMSG_SPACE filled here (MSG_CTRUNC)' }

/**
 * A peer that sends several seqpacket messages: FreeBSD 15 ends a record only
 * at MSG_EOR, which the peers do not send, so their messages run together
 * (macOS has no seqpacket at all).
 */
const RECORD_PER_SEND: RunsOn = { platforms: ['linux'], lacking: 'a seqpacket record ends only at MSG_EOR, which the peers do not send' }

/**
 * Linux shortens cmsg_len to what fits when it truncates control data;
 * FreeBSD leaves it whole, so peer.c would count, and close, descriptors that
 * never arrived.
 */
const CMSG_LEN_TRUNCATED: RunsOn = { platforms: ['linux'], lacking: 'cmsg_len is left whole on MSG_CTRUNC, so peer.c would count descriptors that never arrived' }

/** SO_PASSRIGHTS, for a listener that refuses descriptors in the kernel. */
const REFUSES_FDS: RunsOn = { platforms: ['linux'], lacking: 'no SO_PASSRIGHTS' }

/** Why a peer cannot run on this machine, for those that cannot. */
function whyMissing(command: string, args: readonly string[]): string | undefined {
  const run = spawnSync(command, args, { encoding: 'utf8' })
  if (run.error) return `${command}: ${run.error.message}`
  return run.status === 0 ? undefined : `${command} ${args.join(' ')}: ${run.stderr.trim()}`
}

const missing: Partial<Record<PeerName, string>> = {}
for (const [peer, command, args] of [
  ['python', 'python3', ['-c', 'import socket; socket.send_fds; socket.recv_fds']],
  ['go', 'go', ['version']],
  ['c', 'cc', ['--version']],
  ['systemd', 'systemd-socket-activate', ['--version']],
] as const) {
  if (!runsHere(PEERS_RUN_ON[peer].platforms)) continue
  const why = whyMissing(command, args)
  if (why !== undefined) missing[peer] = why
}
if (Object.keys(missing).length > 0) {
  console.warn(`interop peers not run on this machine: ${JSON.stringify(missing)}`)
}

/** A case may wait this long for its peer before it fails (a peer that stops answering must not hang the suite). */
const CASE_TIMEOUT_MS = 60_000

/** The peer each running case started, for its stderr when the case fails. */
const peers = new WeakMap<ExecutionContext, Process>()

/** Build failures, found by the `before` hook. */
const unbuilt: Partial<Record<PeerName, string>> = {}

test.before(() => {
  mkdirSync(BIN, { recursive: true })
  const build = (peer: PeerName, command: string, args: string[], cwd: string): void => {
    if (!runsHere(PEERS_RUN_ON[peer].platforms) || missing[peer] !== undefined) return
    const run = spawnSync(command, args, { cwd, encoding: 'utf8' })
    if (run.status !== 0) unbuilt[peer] = `${command} ${args.join(' ')}: ${run.error?.message ?? run.stderr}`
  }
  build('c', 'cc', ['-std=c11', '-Wall', '-Wextra', '-Werror', '-O1', '-o', join(BIN, 'c-peer'), 'peer.c'], join(INTEROP, 'c'))
  build('go', 'go', ['build', '-mod=readonly', '-o', join(BIN, 'go-peer'), '.'], join(INTEROP, 'go'))
})

interface CaseNeeds {
  /** Besides the peer's own, what the case needs of the system; elsewhere it is skipped. */
  runsOn?: readonly RunsOn[]
  /** What this machine lacks for the case, where the system has it (an older kernel). */
  alsoMissing?: string | undefined
}

/**
 * Registers a case that needs `peer`. On a system that cannot run it (see
 * RunsOn) it is skipped, with the reason in its title. Where the system can
 * but this machine lacks something (a peer's tool, `alsoMissing`), the case
 * fails with the reason, in CI or not: a green run means every peer ran.
 */
function peerTest(peer: PeerName, title: string, body: (t: ExecutionContext) => Promise<void>, { runsOn = [], alsoMissing }: CaseNeeds = {}): void {
  const where = [PEERS_RUN_ON[peer], ...runsOn].find((needs) => !runsHere(needs.platforms)) ?? PEERS_RUN_ON[peer]
  const register = peer === 'systemd' ? withSystemd(test.serial) : onlyOn(test.serial, where.platforms, where.lacking)
  register(title, async (t) => {
    const why = missing[peer] ?? alsoMissing
    if (why !== undefined) return t.fail(`cannot run here: ${why}`)
    t.timeout(CASE_TIMEOUT_MS)
    const failed = unbuilt[peer]
    if (failed !== undefined) return t.fail(`the ${peer} peer did not build: ${failed}`)
    try {
      await body(t)
    } catch (err) {
      // An error on this side (EPIPE, say) often has its cause in the peer's stderr.
      const running = peers.get(t)
      if (running) {
        await Promise.race([running.exited, new Promise((resolve) => setTimeout(resolve, 1000))])
        t.log(`the peer's stderr: ${running.stderr || '(empty)'}`)
      }
      throw err
    }
  })
}

function peerCommand(peer: PeerName): [string, string[]] {
  switch (peer) {
    case 'python':
      return ['python3', [join(INTEROP, 'python', 'peer.py')]]
    case 'go':
      return [join(BIN, 'go-peer'), []]
    default:
      return [join(BIN, 'c-peer'), []]
  }
}

/** What Go's `unix.Sendmsg` and `syscall.Sendmsg` put on the wire for a message with descriptors and no payload. */
function goHiddenByte(type: SocketType): Buffer {
  return type === 'dgram' ? Buffer.alloc(0) : Buffer.from([0])
}

interface Library {
  peer: PeerName
  /** The library's name on the peer's command line. */
  name: string
  title: string
  /** One descriptor per message (else all three in one). */
  onePerMessage: boolean
  /** The second resource is a connected TCP socket (conduit's TransferConn/ReceiveConn), not a listener. */
  passesConnection: boolean
  /**
   * The data fdpass receives with a message from the peer carrying `count`
   * descriptors, given the payload the peer gave the library (hex; null where
   * the library takes none).
   */
  arrives(given: string | null, type: SocketType, count: number): Buffer
  /** The data fdpass sends the peer's receiver with a message carrying descriptors with these `names`. */
  toSend(names: readonly string[], type: SocketType): Buffer
  /** The library hands the payload it read to its caller (then the peer reports it, else it reports null). */
  exposesPayload: boolean
  /** The library's receive makes descriptors close-on-exec (documented in PROTOCOL.md; a peer that does not leaks them into what it execs). */
  receivesCloexec: boolean
  /** What the library needs of the system, both ways, besides what its peer needs. */
  runsOn?: RunsOn
  /** What its receive needs of the system. */
  receivesOn?: RunsOn
}

const given = (payload: string | null): Buffer => Buffer.from(payload ?? '', 'hex')
const namesJoined = (names: readonly string[]): Buffer => Buffer.from(names.join(','))

const LIBRARIES: readonly Library[] = [
  {
    peer: 'python',
    name: 'socket',
    title: 'Python socket.send_fds / socket.recv_fds',
    onePerMessage: false,
    passesConnection: false,
    arrives: given,
    toSend: namesJoined,
    exposesPayload: true,
    receivesCloexec: false,
    receivesOn: RECV_FDS_FITS,
  },
  {
    peer: 'python',
    name: 'multiprocessing',
    title: 'Python multiprocessing.reduction.sendfds / recvfds',
    onePerMessage: false,
    passesConnection: false,
    // One data byte: the descriptor count modulo 256, checked by recvfds.
    arrives: (_given, _type, count) => Buffer.from([count % 256]),
    toSend: (names) => Buffer.from([names.length % 256]),
    exposesPayload: false,
    receivesCloexec: false,
    runsOn: ACKNOWLEDGED,
  },
  {
    peer: 'go',
    name: 'ftrvxmtrx',
    title: 'Go github.com/ftrvxmtrx/fd Put / Get',
    onePerMessage: false,
    passesConnection: false,
    arrives: (_given, type) => goHiddenByte(type),
    toSend: (_names, type) => goHiddenByte(type),
    exposesPayload: false,
    receivesCloexec: false,
  },
  {
    peer: 'go',
    name: 'conduit',
    title: 'Go toolman.org/net/conduit TransferFD / ReceiveFD, TransferConn / ReceiveConn (x/sys/unix)',
    onePerMessage: true,
    passesConnection: true,
    arrives: (_given, type) => goHiddenByte(type),
    toSend: (_names, type) => goHiddenByte(type),
    exposesPayload: false,
    receivesCloexec: false,
  },
  {
    peer: 'go',
    name: 'devlights',
    title: 'Go github.com/devlights/fdpassing Send / Recv (x/sys/unix)',
    onePerMessage: true,
    passesConnection: false,
    // Its own one-byte payload, on every socket type.
    arrives: () => Buffer.from([0]),
    toSend: () => Buffer.from([0]),
    exposesPayload: true,
    receivesCloexec: true,
  },
  {
    peer: 'go',
    name: 'runc',
    title: 'Go golang.org/x/sys/unix as runc SendFile / RecvFile (the name as payload)',
    onePerMessage: true,
    passesConnection: false,
    arrives: given,
    toSend: (names) => Buffer.from(names[0] ?? ''),
    exposesPayload: true,
    receivesCloexec: true,
  },
  {
    peer: 'c',
    name: 'sendmsg',
    title: 'C sendmsg / recvmsg',
    onePerMessage: false,
    passesConnection: false,
    arrives: given,
    toSend: namesJoined,
    exposesPayload: true,
    receivesCloexec: true,
  },
]

/** Bounds each receive from a peer, so that one that stops sending fails with the receive's own error. */
const PATIENCE_MS = 30_000

let tempCounter = 0
/** A file holding `content`, removed when the case ends. */
function tempFile(t: ExecutionContext, content: string): string {
  tempCounter += 1
  const path = join(tmpdir(), `fdpass-${process.pid}-interop-${tempCounter}.txt`)
  writeFileSync(path, content)
  t.teardown(() => rmSync(path, { force: true }))
  return path
}

/** Everything `stream` gives until it ends, as UTF-8. */
function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => (text += chunk))
    stream.on('end', () => resolve(text))
    stream.on('error', reject)
  })
}

/**
 * A pipe (a fifo, as Node has no pipe()): its write end's number, and the
 * text its read end gets until EOF. The read end is closed when the case
 * ends, should it end before EOF.
 */
function pipe(t: ExecutionContext): { writeFd: number; written: Promise<string> } {
  tempCounter += 1
  const path = join(tmpdir(), `fdpass-${process.pid}-interop-${tempCounter}.fifo`)
  execFileSync('mkfifo', [path])
  try {
    const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
    const writeFd = openSync(path, constants.O_WRONLY)
    const reader = new net.Socket({ fd: readFd, readable: true, writable: false })
    t.teardown(() => reader.destroy())
    return { writeFd, written: readAll(reader) }
  } finally {
    rmSync(path)
  }
}

/** Closes a UDP socket that may be closed already (a second `close()` throws). */
function closeDgram(socket: dgram.Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      socket.close(resolve)
    } catch {
      resolve()
    }
  })
}

/** What a loopback TCP connection to `port` receives until the server closes it. */
async function greeting(port: number): Promise<string> {
  return readAll(net.connect(port, '127.0.0.1'))
}

interface Reached {
  channel: Channel
  peer: Process
}

interface ReachOptions {
  type: SocketType
  /** The peer listens and fdpass connects (else the other way round); stream and seqpacket only. */
  peerListens?: boolean
  /** Arguments after the endpoint. */
  tail?: readonly string[]
  framing?: 'raw' | 'framed'
  /** The fdpass listener refuses descriptors in the kernel (SO_PASSRIGHTS). */
  refuseFds?: boolean
}

/**
 * Starts `command` as the other end of a channel of `type` (raw framing
 * unless asked): over a path for stream and seqpacket (the peer connects to
 * fdpass, or listens and fdpass connects, as unrelated processes do), and as
 * an inherited socket pair for dgram. The peer's arguments are `args`, the
 * type, the endpoint, then `tail`. When the case ends, the peer is killed and
 * the channel closed (the normal path closes it first, for the baseline).
 */
async function reach(t: ExecutionContext, [command, prefix]: [string, string[]], args: readonly string[], options: ReachOptions): Promise<Reached> {
  const { type, peerListens = false, tail = [], framing = 'raw', refuseFds = false } = options
  const stdio = ['ignore', 'pipe', 'pipe'] as const
  const track = (child: ChildProcess): Process => {
    t.teardown(() => child.kill('SIGKILL'))
    const peer = new Process(child)
    peers.set(t, peer)
    return peer
  }
  const start = (endpoint: string): Process => track(spawn(command, [...prefix, ...args, type, endpoint, ...tail], { stdio: [...stdio] }))
  const closing = (channel: Channel): Channel => {
    t.teardown(() => channel.close())
    return channel
  }
  if (type === 'dgram') {
    const { child, channel } = spawnWithChannel(command, [...prefix, ...args, type, 'fd:3', ...tail], { type, framing, stdio: [...stdio] })
    return { channel: closing(channel), peer: track(child) }
  }
  const path = socketPath('interop')
  if (peerListens) {
    t.teardown(() => rmSync(path, { force: true }))
    const peer = start(`listen:${path}`)
    await peer.line((l) => l.listening === true)
    return { channel: closing(await connect({ path, type, framing })), peer }
  }
  const server = listen({ path, type, framing, refuseFds })
  const peer = start(`connect:${path}`)
  try {
    // A peer that ends without connecting fails here, with its stderr.
    const [channel] = (await peer.within(once(server, 'connection'))) as [Channel]
    return { channel: closing(channel), peer }
  } finally {
    server.close()
  }
}

const recvOptions = (extra: { maxFds?: number } = {}): { signal: AbortSignal; maxFds?: number } => ({ signal: AbortSignal.timeout(PATIENCE_MS), ...extra })

/** The peer passes a file, a TCP listener (or connection) and a pipe; fdpass takes them and uses each. */
async function peerSends(t: ExecutionContext, library: Library, type: SocketType): Promise<void> {
  const before = fdCount()
  const token = `${library.name} over ${type}, ${Math.random().toString(36).slice(2)}`
  const path = tempFile(t, `file content: ${token}`)
  const { channel, peer } = await reach(t, peerCommand(library.peer), [library.name, 'send'], { type, tail: [path] })

  const messages: Message[] = []
  t.teardown(() => closeAll(messages.flatMap((m) => m.fds)))
  for (let count = 0; count < 3; count += messages.at(-1)?.fds.length ?? 0) messages.push(await peer.within(channel.recv(recvOptions())))
  t.deepEqual(
    messages.map((m) => m.fds.length),
    library.onePerMessage ? [1, 1, 1] : [3],
  )
  const fds = messages.flatMap((m) => m.fds)
  t.deepEqual(
    fds.map((fd) => fd.kind),
    ['file', library.passesConnection ? 'tcp' : 'tcp-listener', 'fifo'],
  )
  t.deepEqual(openAfterExec([channel.fd, ...fds.map((fd) => fd.fd)]), [], 'close-on-exec on every received descriptor and the channel')

  const [file, second, pipeEnd] = fds as [(typeof fds)[0], (typeof fds)[0], (typeof fds)[0]]
  t.is(readFileSync(file.fd, 'utf8'), `file content: ${token}`, 'the received file reads as the file the peer opened')
  file.close()
  let port: number | undefined
  let connectionClosed: Promise<unknown> = Promise.resolve()
  if (library.passesConnection) {
    const socket = second.toSocket()
    t.teardown(() => socket.destroy())
    connectionClosed = once(socket, 'close')
    socket.end(`fdpass wrote the connection: ${token}`)
  } else {
    const server = second.toServer((socket) => socket.end('fdpass accepted on the received listener\n'))
    t.teardown(() => server.close())
    port = (server.address() as net.AddressInfo).port
    t.is(await greeting(port), 'fdpass accepted on the received listener\n')
    await new Promise((resolve) => server.close(resolve))
  }
  writeSync(pipeEnd.fd, `fdpass wrote the pipe: ${token}`)
  pipeEnd.close()

  const report = await peer.line((l) => 'pipe' in l)
  t.is(await peer.exited, 0, peer.stderr)
  t.is(report.pipe, `fdpass wrote the pipe: ${token}`, 'the peer read what fdpass wrote to the pipe it passed')
  if (port !== undefined) t.is(report.port, port, 'the listener is the one the peer bound')
  if (library.passesConnection) t.is(report.connection, `fdpass wrote the connection: ${token}`)
  await connectionClosed
  const payloads = report.payloads as (string | null)[]
  t.is(payloads.length, messages.length)
  messages.forEach((message, i) => {
    t.deepEqual(message.data, library.arrives(payloads[i] ?? null, type, message.fds.length), `the data of message ${i}`)
  })
  channel.close()
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
}

/** fdpass passes a file, a TCP listener (or connection) and a pipe; the peer takes them and uses each. */
async function peerReceives(t: ExecutionContext, library: Library, type: SocketType): Promise<void> {
  const before = fdCount()
  const token = `${library.name} over ${type}, ${Math.random().toString(36).slice(2)}`
  const path = tempFile(t, `file content: ${token}`)
  const file = openSync(path, 'r')
  const { writeFd, written } = pipe(t)
  // The numbers this case still owns; a send with move gives them up.
  const unsent = new Set([file, writeFd])
  t.teardown(() => unsent.forEach((fd) => closeSync(fd)))

  let second: Descriptor
  let answer: Promise<string> | undefined
  let port = 0
  const server = net.createServer().listen(0, '127.0.0.1')
  t.teardown(() => server.close())
  await once(server, 'listening')
  if (library.passesConnection) {
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
    t.teardown(() => client.destroy())
    const [accepted] = (await once(server, 'connection')) as [net.Socket]
    t.teardown(() => accepted.destroy())
    server.close()
    answer = readAll(client)
    second = accepted
  } else {
    port = (server.address() as net.AddressInfo).port
    second = server
  }

  const { channel, peer } = await reach(t, peerCommand(library.peer), [library.name, 'recv'], { type, peerListens: true })
  t.deepEqual(openAfterExec([channel.fd]), [], 'close-on-exec on the channel')
  const names = ['file', library.passesConnection ? 'connection' : 'listener', 'pipe']
  const holders = [file, second, writeFd]
  const sent: Buffer[] = []
  const batches = library.onePerMessage ? holders.map((_, i) => [i]) : [[0, 1, 2]]
  for (const batch of batches) {
    const data = library.toSend(
      batch.map((i) => names[i] as string),
      type,
    )
    sent.push(data)
    // move: this side's copies go once the kernel has them, so EOF and accepts happen over there.
    await channel.send({ data, fds: batch.map((i) => holders[i] as Descriptor), move: true })
    for (const i of batch) unsent.delete(holders[i] as number)
  }
  answer ??= greeting(port)
  t.regex(await peer.within(answer), library.passesConnection ? /answered on the received connection\n$/ : /accepted on the received listener\n$/)
  t.regex(await peer.within(written), /wrote the received pipe$/)

  const report = await peer.line((l) => 'file' in l)
  t.is(await peer.exited, 0, peer.stderr)
  t.is(report.file, `file content: ${token}`, 'the peer read the file fdpass passed')
  t.deepEqual(
    report.payloads,
    sent.map((data) => (library.exposesPayload ? data.toString('hex') : null)),
    'the payloads the peer read are those fdpass sent',
  )
  t.deepEqual(report.cloexec, Array.from({ length: 3 }, () => library.receivesCloexec), 'close-on-exec as the library sets it (PROTOCOL.md)')
  channel.close()
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
}

for (const library of LIBRARIES) {
  const both = library.runsOn === undefined ? [] : [library.runsOn]
  const receiving = library.receivesOn === undefined ? [] : [library.receivesOn]
  for (const type of SOCKET_TYPES) {
    const severalRecords = type === 'seqpacket' && library.onePerMessage ? [RECORD_PER_SEND] : []
    peerTest(library.peer, `${library.title} → fdpass, ${type}`, (t) => peerSends(t, library, type), { runsOn: [...both, ...severalRecords] })
    peerTest(library.peer, `fdpass → ${library.title}, ${type}`, (t) => peerReceives(t, library, type), { runsOn: [...both, ...receiving] })
  }
}

// A hostile C peer. Each case ends with a typed error (or the kernel's
// refusal) on the fdpass side, nothing leaked, and the channel going on: the
// peer's next message, "after", arrives whole and without descriptors.

/** Runs hostile `peerCase` against fdpass, `receive` being what fdpass does with it; returns the peer's report. */
async function hostile(
  t: ExecutionContext,
  peerCase: string,
  options: ReachOptions,
  receive: (channel: Channel) => Promise<void>,
): Promise<Record<string, unknown>> {
  const before = fdCount()
  const { channel, peer } = await reach(t, peerCommand('c'), ['hostile', peerCase], options)
  await peer.within(receive(channel))
  const after = await peer.within(channel.recv(recvOptions()))
  t.is(after.data.toString(), 'after', 'the channel goes on with the next message')
  t.is(after.fds.length, 0)
  const report = await peer.line(() => true)
  t.is(await peer.exited, 0, peer.stderr)
  channel.close()
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
  return report
}

for (const type of SOCKET_TYPES) {
  // In each case but small-control the peer sends two messages: its own, then "after".
  const thenAfter = type === 'seqpacket' ? { runsOn: [RECORD_PER_SEND] } : {}

  peerTest(
    'c',
    `hostile C: more descriptors than the receive allows (4, maxFds 2) → ERR_FDPASS_TOO_MANY_FDS, all closed, ${type}`,
    async (t) => {
      const report = await hostile(t, 'many:4', { type }, async (channel) => {
        await t.throwsAsync(channel.recv(recvOptions({ maxFds: 2 })), { code: 'ERR_FDPASS_TOO_MANY_FDS' })
      })
      t.is(report.sent, 4)
    },
    thenAfter,
  )

  peerTest(
    'c',
    `hostile C: the platform's most descriptors (${limits.maxFdsPerMessage}) to a receive of maxFds 2 → ERR_FDPASS_TOO_MANY_FDS, the kernel installs 2 at most, all closed, ${type}`,
    async (t) => {
      const report = await hostile(t, `many:${limits.maxFdsPerMessage}`, { type }, async (channel) => {
        await t.throwsAsync(channel.recv(recvOptions({ maxFds: 2 })), { code: 'ERR_FDPASS_TOO_MANY_FDS' })
      })
      t.is(report.sent, limits.maxFdsPerMessage)
    },
    thenAfter,
  )

  peerTest(
    'c',
    `hostile C: descriptors to a receive that asked for none (maxFds 0) → ERR_FDPASS_TOO_MANY_FDS, closed, ${type}`,
    async (t) => {
      const report = await hostile(t, 'unasked', { type }, async (channel) => {
        await t.throwsAsync(channel.recv(recvOptions({ maxFds: 0 })), { code: 'ERR_FDPASS_TOO_MANY_FDS' })
      })
      t.is(report.errno, 0, 'the kernel took them; fdpass closed them')
    },
    thenAfter,
  )

  peerTest(
    'c',
    `hostile C: a receiver whose control buffer is too small on purpose loses descriptors there, none here, ${type}`,
    async (t) => {
      const report = await hostile(t, 'small-control', { type }, async (channel) => {
        const fds = Array.from({ length: 5 }, () => openSync('/dev/null', 'r'))
        await channel.send({ data: 'five', fds, move: true })
      })
      t.true(report.ctrunc, 'the peer saw MSG_CTRUNC')
      t.is(report.arrived, 1, 'one descriptor reached the peer, the rest were dropped by its kernel')
      t.is(report.payload, 'five')
    },
    { runsOn: [CMSG_LEN_TRUNCATED] },
  )
}

for (const type of (['stream', 'seqpacket'] as const).filter((type) => SOCKET_TYPES.includes(type))) {
  peerTest(
    'c',
    `hostile C: descriptors to a listener that refuses them (refuseFds) → the peer's sendmsg fails, nothing arrives, ${type}`,
    async (t) => {
      const report = await hostile(t, 'unasked', { type, refuseFds: true }, async () => undefined)
      t.is(report.errno, osConstants.errno.EPERM, `the kernel refused the descriptors: ${String(report.error)}`)
    },
    { runsOn: [REFUSES_FDS], alsoMissing: limits.canRefuseFds ? undefined : 'this kernel has no SO_PASSRIGHTS (Linux 6.16 or later)' },
  )
}

for (const type of (['seqpacket', 'dgram'] as const).filter((type) => SOCKET_TYPES.includes(type))) {
  peerTest(
    'c',
    `hostile C: descriptors with a zero-length payload arrive as an empty message in raw mode, ${type}`,
    async (t) => {
      await hostile(t, 'empty', { type }, async (channel) => {
        const message = await channel.recv(recvOptions())
        t.is(message.data.length, 0)
        t.deepEqual(
          message.fds.map((fd) => fd.kind),
          ['char-device', 'char-device'],
        )
        t.deepEqual(openAfterExec(message.fds.map((fd) => fd.fd)), [], 'close-on-exec')
        for (const fd of message.fds) fd.close()
      })
    },
    type === 'seqpacket' ? { runsOn: [RECORD_PER_SEND] } : {},
  )
}

peerTest('c', 'hostile C: descriptors with a zero-length payload on a framed dgram channel → ERR_FDPASS_PROTOCOL, closed', async (t) => {
  const before = fdCount()
  const { channel, peer } = await reach(t, peerCommand('c'), ['hostile', 'empty'], { type: 'dgram', framing: 'framed' })
  await t.throwsAsync(peer.within(channel.recv(recvOptions())), { code: 'ERR_FDPASS_PROTOCOL' })
  // "after" is no frame either: on a datagram socket each is dropped alone.
  await t.throwsAsync(peer.within(channel.recv(recvOptions())), { code: 'ERR_FDPASS_PROTOCOL' })
  await peer.line(() => true)
  t.is(await peer.exited, 0, peer.stderr)
  channel.close()
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
})

// systemd: systemd-socket-activate binds the sockets and starts a Node program
// (interop/systemd/relay.js) on the first connection or datagram; the program
// takes them with fdpass/activation and passes them on with fdpass.

const RELAY = join(INTEROP, 'systemd', 'relay.js')

/**
 * Starts the relay under systemd-socket-activate with `activatorArgs`, and
 * the fdpass server it relays to; resolves once the activator listens on all
 * `sockets` (it binds at once and starts the relay on the first connection or
 * datagram, which waits in the socket for whoever takes it).
 */
async function activate(t: ExecutionContext, activatorArgs: readonly string[], sockets: number): Promise<{ relay: Process; relayed: Promise<Channel> }> {
  const path = socketPath('relay')
  const server = listen(path)
  const relay = new Process(spawn('systemd-socket-activate', [...activatorArgs, process.execPath, RELAY, path], { stdio: ['ignore', 'pipe', 'pipe'] }))
  peers.set(t, relay)
  t.teardown(() => {
    relay.child.kill('SIGKILL')
    server.close()
  })
  const connected = relay.within(once(server, 'connection')).then(([channel]) => {
    server.close()
    t.teardown(() => (channel as Channel).close())
    return channel as Channel
  })
  connected.catch(() => undefined)
  await relay.printed(new RegExp(`Listening on .* as ${2 + sockets}\\.`))
  return { relay, relayed: connected }
}

/** Receives the relay's messages, one per name, checking close-on-exec; then tells the relay it has them. */
async function relayed(t: ExecutionContext, relay: Process, channel: Channel, count: number): Promise<Message[]> {
  const messages: Message[] = []
  t.teardown(() => closeAll(messages.flatMap((m) => m.fds)))
  while (messages.length < count) messages.push(await relay.within(channel.recv(recvOptions())))
  t.deepEqual(openAfterExec(messages.flatMap((m) => m.fds.map((fd) => fd.fd))), [], 'close-on-exec on every received descriptor')
  await channel.send({ data: 'have them' })
  return messages
}

peerTest('systemd', 'systemd-socket-activate → Node (fdpass/activation) → fdpass: a TCP and a Unix listener, by name; the first connection is served here', async (t) => {
  const before = fdCount()
  const port = await freePort()
  const adminPath = socketPath('admin')
  t.teardown(() => rmSync(adminPath, { force: true }))
  const { relay, relayed: connected } = await activate(t, ['-l', `127.0.0.1:${port}`, '-l', adminPath, '--fdname=web:admin'], 2)
  // This connection starts the relay, and waits in the listener's backlog for whoever accepts on it.
  const first = net.connect(port, '127.0.0.1')
  t.teardown(() => first.destroy())
  const firstAnswer = readAll(first)
  const channel = await connected
  const messages = await relayed(t, relay, channel, 2)
  t.deepEqual(
    messages.map((m) => [m.data.toString(), m.fds.map((fd) => fd.kind)]),
    [
      ['web', ['tcp-listener']],
      ['admin', ['unix-stream-listener']],
    ],
  )
  const servers = messages.map((m) => m.fds[0]?.toServer((socket) => socket.end(`fdpass serves ${m.data.toString()}\n`)))
  t.teardown(() => servers.forEach((s) => s?.close()))
  t.is(await relay.within(firstAnswer), 'fdpass serves web\n', 'the connection that started the relay is accepted here')
  t.is(await readAll(net.connect(adminPath)), 'fdpass serves admin\n')

  const report = await relay.line((l) => 'relayed' in l)
  t.is(await relay.exited, 0, relay.stderr)
  t.deepEqual(report, { relayed: ['web', 'admin'], answer: 'have them' })
  channel.close()
  await Promise.all(servers.map((s) => new Promise((resolve) => s?.close(resolve))))
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
})

peerTest('systemd', 'systemd-socket-activate → Node (fdpass/activation) → fdpass: a UDP socket, with the datagram that started the relay still in it', async (t) => {
  const before = fdCount()
  const port = await freePort('udp')
  const { relay, relayed: connected } = await activate(t, ['--datagram', '-l', `127.0.0.1:${port}`, '--fdname=metrics'], 1)
  const sender = dgram.createSocket('udp4')
  t.teardown(() => closeDgram(sender))
  const token = `started the relay ${Math.random().toString(36).slice(2)}`
  sender.send(token, port, '127.0.0.1')
  const channel = await connected
  const [message] = await relayed(t, relay, channel, 1)
  t.is(message?.data.toString(), 'metrics')
  t.deepEqual(
    message?.fds.map((fd) => fd.kind),
    ['udp'],
  )
  const socket = message?.fds[0]?.toDgram() as dgram.Socket
  t.teardown(() => closeDgram(socket))
  const [datagram] = (await relay.within(once(socket, 'message'))) as [Buffer]
  t.is(datagram.toString(), token, 'the one datagram sent, which started the relay, is read here')
  t.is(socket.address().port, port)

  const report = await relay.line((l) => 'relayed' in l)
  t.is(await relay.exited, 0, relay.stderr)
  t.deepEqual(report, { relayed: ['metrics'], answer: 'have them' })
  channel.close()
  await Promise.all([closeDgram(socket), closeDgram(sender)])
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
})
