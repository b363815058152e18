import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import * as dgram from 'node:dgram'
import { once } from 'node:events'
import { fstatSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import type { ExecutionContext, ImplementationFn } from 'ava'

import { listen, type Channel, type ListenOptions, type Server, type SocketType } from 'fdpass'

/** The systems the suite runs on. */
export type Platform = 'linux' | 'darwin' | 'freebsd'

/** Whether this system is one of `platforms`. */
export function runsHere(platforms: readonly Platform[]): boolean {
  return (platforms as readonly string[]).includes(process.platform)
}

/** ava's `test` or `test.serial`, as far as {@link onlyOn} needs them. */
interface Register {
  (title: string, implementation: ImplementationFn<[]>): void
  skip(title: string, implementation: ImplementationFn<[]>): void
}

/**
 * `register` (ava's `test` or `test.serial`) for a test that needs what only
 * `platforms` have; elsewhere the test is skipped, its title saying what this
 * system lacks. Linux has everything the suite tests, so it is always one of
 * them: nothing is skipped there.
 */
export function onlyOn(register: Register, platforms: readonly ['linux', ...Platform[]], lacking: string): (title: string, implementation: ImplementationFn<[]>) => void {
  if (runsHere(platforms)) return (title, implementation) => register(title, implementation)
  return (title, implementation) => register.skip(`${title} [not on ${process.platform}: ${lacking}]`, implementation)
}

/**
 * `register` for a test of systemd's own activator, systemd-socket-activate.
 * Only Linux has systemd, and not every Linux: Alpine's CI job sets
 * FDPASS_TEST_WITHOUT_SYSTEMD=1. The opt-out is explicit so that a Linux
 * machine merely missing the tool fails these tests instead of skipping them.
 */
export function withSystemd(register: Register): (title: string, implementation: ImplementationFn<[]>) => void {
  if (process.env.FDPASS_TEST_WITHOUT_SYSTEMD === '1') return (title, implementation) => register.skip(`${title} [FDPASS_TEST_WITHOUT_SYSTEMD=1: no systemd here]`, implementation)
  return onlyOn(register, SYSTEMD.platforms, SYSTEMD.lacking)
}

/** Where a test can run (Linux has all the suite tests), and what the other systems lack for it. */
export interface RunsOn {
  platforms: readonly ['linux', ...Platform[]]
  lacking: string
}

/** Where systemd's activator runs. */
export const SYSTEMD: RunsOn = { platforms: ['linux'], lacking: 'no systemd-socket-activate' }

/** The socket types this system has: macOS has no SOCK_SEQPACKET Unix sockets. */
export const SOCKET_TYPES: readonly SocketType[] = process.platform === 'darwin' ? ['stream', 'dgram'] : ['stream', 'seqpacket', 'dgram']

/**
 * The directory that lists this process's open descriptors. Elsewhere than
 * Linux it is /dev/fd, which on FreeBSD lists them only with fdescfs mounted
 * there (without it, only 0, 1 and 2).
 */
export const FD_DIRECTORY = process.platform === 'linux' ? '/proc/self/fd' : '/dev/fd'

/** The numbers of this process's open descriptors, the listing's own included. */
export function openFds(): number[] {
  const fds = readdirSync(FD_DIRECTORY).map(Number)
  // Node always holds more than stdio (its event loop's descriptors, at least).
  if (!fds.some((fd) => fd > 2)) throw new Error(`${FD_DIRECTORY} lists only stdio: on FreeBSD, mount fdescfs there (mount -t fdescfs fdesc /dev/fd)`)
  return fds
}

/** Descriptors open in this process right now. */
export function fdCount(): number {
  return openFds().length
}

/**
 * Every descriptor of this process with what it refers to (device and inode;
 * on Linux also procfs's name for it, which tells apart anonymous inodes that
 * share one inode, such as an epoll and an eventfd): an unchanged table means
 * no descriptor was opened, closed or replaced.
 */
export function fdTable(): string[] {
  return openFds().map((fd) => {
    try {
      const { dev, ino, mode } = fstatSync(fd, { bigint: true })
      const name = process.platform === 'linux' ? ` ${readlinkSync(`${FD_DIRECTORY}/${fd}`)}` : ''
      return `${fd} → ${dev}:${ino} mode ${mode.toString(8)}${name}`
    } catch {
      return String(fd) // the directory handle the listing itself had open
    }
  })
}

/**
 * The inode of the socket `fd` refers to: one number for the socket in every
 * process that holds it (on Linux, the one /proc/net/unix lists).
 */
export function socketInode(fd: number): number {
  return fstatSync(fd).ino
}

/**
 * Which of `fds` (descriptor numbers of this process) are still open in a
 * program this process execs. libuv closes no stray descriptors in a spawned
 * child: only FD_CLOEXEC keeps them out, so the answer is those without it.
 */
export function openAfterExec(fds: readonly number[]): number[] {
  if (fds.length === 0) return []
  const probe = fds.map((n) => `[ -e ${FD_DIRECTORY}/${n} ] && echo ${n}`).join('; ')
  const out = spawnSync('sh', ['-c', `${probe}; true`], { encoding: 'utf8' })
  if (out.status !== 0) throw new Error(`the exec probe failed: ${out.stderr}`)
  return out.stdout.split('\n').filter(Boolean).map(Number)
}

/** Threads of this process right now. */
export function threadCount(): number {
  if (process.platform === 'linux') {
    const line = readFileSync('/proc/self/status', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Threads:'))
    return Number(line?.split(/\s+/)[1])
  }
  // One line per thread: macOS's ps -M after a header line, FreeBSD's ps -H with the header left out.
  const [args, headers] = process.platform === 'darwin' ? [['-M', '-p', String(process.pid)], 1] : [['-H', '-o', 'lwp=', '-p', String(process.pid)], 0]
  const run = spawnSync('ps', args, { encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`ps ${args.join(' ')} failed: ${run.error?.message ?? run.stderr}`)
  return run.stdout.split('\n').filter((line) => line.trim() !== '').length - headers
}

/** A loopback TCP or UDP port that was free a moment ago, for programs that bind it themselves. */
export async function freePort(protocol: 'tcp' | 'udp' = 'tcp'): Promise<number> {
  if (protocol === 'udp') {
    const probe = dgram.createSocket('udp4')
    await new Promise<void>((resolve) => probe.bind(0, '127.0.0.1', resolve))
    const { port } = probe.address()
    await new Promise<void>((resolve) => probe.close(resolve))
    return port
  }
  const probe = net.createServer().listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const { port } = probe.address() as net.AddressInfo
  await new Promise((resolve) => probe.close(resolve))
  return port
}

let counter = 0
export function socketPath(tag: string): string {
  counter += 1
  return join(tmpdir(), `fdpass-${process.pid}-${tag}-${counter}.sock`)
}

/**
 * Waits (bounded) for closes that finish off the JS thread, such as a socket
 * released once its reactor wait lets go, then reports the count.
 */
export async function settledFdCount(expected: number): Promise<number> {
  for (let i = 0; i < 200 && fdCount() !== expected; i++) await new Promise((r) => setTimeout(r, 10))
  return fdCount()
}

export interface PeerResult {
  code: number | null
  /** The peer's descriptor count before it started and after it closed everything. */
  report: { before: number; after: number } | undefined
  stderr: string
}

const PEER = join(__dirname, 'peers', 'peer.js')

/** Runs the peer script (another Node process) in `role`. */
export function runPeer(role: string, ...args: string[]): { exited: Promise<PeerResult>; pid: number | undefined } {
  const child = spawn(process.execPath, [PEER, role, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<PeerResult>((resolve) => {
    child.on('close', (code) => {
      const line = stdout.split('\n').find((l) => l.startsWith('{'))
      resolve({ code, report: line ? (JSON.parse(line) as PeerResult['report']) : undefined, stderr })
    })
  })
  return { exited, pid: child.pid }
}

/** Listens, runs the peer, and hands over the accepted channel. */
export async function withPeer(
  role: string,
  args: string[],
  body: (channel: Channel) => Promise<void>,
  listenOptions: Omit<ListenOptions, 'path'> = {},
): Promise<{ before: number; after: number; peer: Awaited<ReturnType<typeof runPeer>['exited']> }> {
  const before = fdCount()
  const path = socketPath(role)
  const server: Server = listen({ path, ...listenOptions })
  const peer = runPeer(role, path, ...args)
  const { value: channel } = await server[Symbol.asyncIterator]().next()
  if (!channel) throw new Error('no connection')
  try {
    await body(channel)
  } finally {
    channel.close()
    server.close()
  }
  const result = await peer.exited
  return { before, after: await settledFdCount(before), peer: result }
}

export function assertBaselines(t: ExecutionContext, r: Awaited<ReturnType<typeof withPeer>>): void {
  t.is(r.peer.code, 0, r.peer.stderr)
  t.truthy(r.peer.report, 'the peer reported its descriptor counts')
  t.is(r.peer.report?.after, r.peer.report?.before, `the peer ends at its descriptor baseline ${JSON.stringify(r.peer.report)}`)
  t.is(r.after, r.before, 'this process ends at its descriptor baseline')
}

/** A JSON line a child process reported. */
export type Line = Record<string, unknown>

/** Waits until `ready()` holds, checking after each of `emitter`'s `event`s. */
export function until<T>(emitter: NodeJS.EventEmitter, event: string, ready: () => T | undefined): Promise<T> {
  return new Promise((resolve) => {
    const check = (): void => {
      const value = ready()
      if (value === undefined) return
      emitter.off(event, check)
      resolve(value)
    }
    emitter.on(event, check)
    check()
  })
}

/** A child whose JSON lines (stdout, or IPC messages) are collected as they come. */
export class Process {
  readonly lines: Line[] = []
  readonly exited: Promise<number | null>
  /**
   * Rejects, with the child's stderr, when the child ends other than with
   * exit code 0; never settles otherwise. See {@link within}.
   */
  readonly failed: Promise<never>
  stderr = ''
  #closed = false

  constructor(readonly child: ChildProcess) {
    let buffered = ''
    child.stdout?.setEncoding('utf8')
    child.stdout?.on('data', (chunk: string) => {
      buffered += chunk
      let newline: number
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline)
        buffered = buffered.slice(newline + 1)
        if (line.startsWith('{')) this.#add(parseLine(line))
      }
    })
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      this.stderr += chunk
      child.emit('printed')
    })
    child.on('message', (message: Line) => this.#add(message))
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)))
    // 'close' comes after the last of stdout and stderr, so nothing more can arrive.
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve))
    void closed.then(() => {
      this.#closed = true
      child.emit('line')
      child.emit('printed')
    })
    this.failed = closed.then((code) => {
      if (code === 0) return new Promise<never>(() => undefined)
      throw new Error(`the child ended with ${code === null ? (child.signalCode ?? 'a signal') : `exit code ${code}`}: ${this.stderr}`)
    })
    this.failed.catch(() => undefined)
  }

  #add(line: Line): void {
    this.lines.push(line)
    this.child.emit('line', line)
  }

  /**
   * The first line (so far or to come) that `match` accepts; rejects with the
   * child's stderr if it ends without one.
   */
  line(match: (line: Line) => boolean): Promise<Line> {
    return this.#awaited('line', () => this.lines.find(match))
  }

  /** Resolves once the child's stderr matches `pattern`; rejects if it ends first. */
  printed(pattern: RegExp): Promise<true> {
    return this.#awaited('printed', () => (pattern.test(this.stderr) ? true : undefined))
  }

  #awaited<T>(event: string, find: () => T | undefined): Promise<T> {
    return until(this.child, event, () => {
      const found = find()
      if (found === undefined && this.#closed) return new Error(`the child ended without what was awaited: ${this.stderr}`)
      return found
    }).then((found) => {
      if (found instanceof Error) throw found
      return found
    })
  }

  /**
   * `promise`, or the child's failure if the child fails first: a wait on
   * something the child should do ends with the child's stderr instead of
   * hanging when the child dies.
   */
  within<T>(promise: Promise<T>): Promise<T> {
    return Promise.race([promise, this.failed])
  }

  /** Sends the role's next step. */
  step(): void {
    this.child.stdin?.write('go\n')
  }

  get pid(): number {
    return this.child.pid as number
  }
}

function parseLine(line: string): Line {
  try {
    return JSON.parse(line) as Line
  } catch {
    return { unparsed: line }
  }
}

/**
 * Linux rounds a socket buffer size up to its minimum (4,608 bytes for
 * SO_SNDBUF); macOS and FreeBSD take any size as given, and a buffer smaller
 * than one control message could never carry descriptors. So they get Linux's
 * smallest send buffer for both, and the small-buffer cases run at about the
 * same size everywhere.
 */
const SMALLEST_SOCKET_BUFFER = process.platform === 'linux' ? 1 : 4608

/** Sets SO_SNDBUF and SO_RCVBUF of the socket `fd` to the smallest Linux allows (Node cannot); returns SO_SNDBUF. */
export function shrinkSocketBuffers(fd: number): number {
  const script = [
    'import socket',
    's = socket.socket(fileno=3)',
    `for option in (socket.SO_SNDBUF, socket.SO_RCVBUF): s.setsockopt(socket.SOL_SOCKET, option, ${SMALLEST_SOCKET_BUFFER})`,
    'print(s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))',
  ].join('\n')
  const run = spawnSync('python3', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe', fd], encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`python3 could not shrink the socket buffers: ${run.error?.message ?? run.stderr}`)
  return Number(run.stdout.trim())
}

/** Linux's SO_PASSPIDFD (6.5): every receive on the socket brings an SCM_PIDFD. */
export const SO_PASSPIDFD = 76

/** Sets a SOL_SOCKET option of the socket `fd` to `value` (Node cannot; python3 can); returns what it reads back. */
export function setSocketOption(fd: number, option: number, value: number): number {
  const script = ['import socket', 's = socket.socket(fileno=3)', `s.setsockopt(socket.SOL_SOCKET, ${option}, ${value})`, `print(s.getsockopt(socket.SOL_SOCKET, ${option}))`].join('\n')
  const run = spawnSync('python3', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe', fd], encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`python3 could not set socket option ${option}: ${run.error?.message ?? run.stderr}`)
  return Number(run.stdout.trim())
}

/** The n-th message of a storm: its size and bytes depend on n only. */
export function stormPayload(n: number): Buffer {
  const payload = Buffer.alloc(4 + ((n * 104_729) % (768 * 1024)), n % 251)
  payload.writeUInt32LE(n, 0)
  return payload
}

/** `n` new descriptors of /dev/null. */
export function devNulls(n: number): number[] {
  return Array.from({ length: n }, () => openSync('/dev/null', 'r'))
}

/** Sends `count` storm messages, each with `n % 4` descriptors. */
export async function sendStorm(channel: Channel, count: number): Promise<void> {
  for (let n = 0; n < count; n++) {
    const fds = devNulls(n % 4)
    await channel.send({ data: stormPayload(n), fds, move: true })
  }
}

/** Receives `count` storm messages and checks each is whole and in order. */
export async function receiveStorm(channel: Channel, count: number): Promise<void> {
  for (let n = 0; n < count; n++) {
    const message = await channel.recv({ maxFds: 4, maxBytes: 1024 * 1024 })
    const expected = stormPayload(n)
    const fds = message.fds.length
    for (const fd of message.fds) fd.close()
    if (!message.data.equals(expected) || fds !== n % 4) {
      throw new Error(`storm message ${n}: ${message.data.length} bytes and ${fds} descriptors, expected ${expected.length} and ${n % 4}`)
    }
  }
}

/**
 * Waits (bounded, as {@link settledFdCount}) until this process's descriptor
 * table is `expected` again, then returns it: for closes that finish off the
 * JS thread.
 */
export async function settledFdTable(expected: readonly string[]): Promise<string[]> {
  const same = (table: string[]): boolean => JSON.stringify(table) === JSON.stringify(expected)
  for (let i = 0; i < 200 && !same(fdTable()); i++) await new Promise((r) => setTimeout(r, 10))
  return fdTable()
}

/**
 * Runs a command as `nobody`, the other local user of the attacks on a root
 * process: prefix of a spawn's command line (setpriv is util-linux's).
 */
export const AS_NOBODY: readonly string[] = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--']

/**
 * Runs a command as root without any capability (no CAP_DAC_OVERRIDE,
 * CAP_FOWNER, CAP_NET_ADMIN...): root's uid, an unprivileged process's powers.
 */
export const AS_ROOT_WITHOUT_CAPABILITIES: readonly string[] = ['setpriv', '--inh-caps=-all', '--bounding-set=-all', '--securebits=+noroot,+noroot_locked', '--']

/** The uid of `nobody` here. */
export function nobodyUid(): number {
  const run = spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`id -u nobody failed: ${run.stderr}`)
  return Number(run.stdout.trim())
}

/**
 * `register` for an attack by another local user on a root process: the
 * attacker runs as `nobody` by {@link AS_NOBODY}, which needs Linux (setpriv)
 * and root. Not as root, the test is skipped, its title saying so.
 */
export function asRootAgainstNobody(register: Register): (title: string, implementation: ImplementationFn<[]>) => void {
  if (runsHere(['linux']) && process.getuid?.() !== 0) {
    return (title, implementation) => register.skip(`${title} [not root: setpriv cannot run the attacker as nobody]`, implementation)
  }
  return onlyOn(register, ['linux'], 'no setpriv to run the attacker as nobody')
}
