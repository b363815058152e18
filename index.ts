/**
 * fdpass: pass open file descriptors between processes over Unix domain
 * sockets (SCM_RIGHTS), with a Promise API.
 *
 * Every received descriptor is owned by a {@link ReceivedFd} until you take it,
 * convert it or close it; what nobody claims is closed when it is collected.
 */
import { spawn, type ChildProcess, type SpawnOptions, type StdioOptions } from 'node:child_process'
import * as dgram from 'node:dgram'
import { EventEmitter } from 'node:events'
import * as fs from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import * as net from 'node:net'
import { Stream, type Readable, type Writable } from 'node:stream'

import type * as native from './binding'
import {
  abortError,
  closedError,
  invalidArgType,
  makeError,
  validateBoolean,
  validateInteger,
  validateObject,
  validateSignal,
  type FdpassError,
} from './errors'

export type { FdpassError } from './errors'

// ---------------------------------------------------------------------------
// The native addon

/**
 * Loads the addon for this platform (the `fdpass-<platform>` package, or a
 * build next to this file). When none fits, throws one error that names the
 * platform and how to build from source, instead of the loader's list of
 * every path it tried (kept as `cause`).
 */
function loadBinding(): typeof native {
  try {
    return require('./binding') as typeof native
  } catch (cause) {
    const libc = process.platform === 'linux' ? (isMusl() ? '-musl' : '-gnu') : ''
    const platform = `${process.platform}-${process.arch}${libc}`
    const message =
      process.platform === 'win32'
        ? 'fdpass needs Unix domain sockets that carry descriptors (SCM_RIGHTS), which Windows does not have'
        : `fdpass has no native binary for ${platform} (prebuilt: linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, ` +
          'linux-arm64-musl, darwin-x64, darwin-arm64, freebsd-x64). If this platform is one of them, reinstall so that npm ' +
          `fetches the optional dependency fdpass-${platform}. Otherwise build it from source with Rust (https://rustup.rs): ` +
          'git clone https://github.com/fdpass/fdpass && cd fdpass && npm ci && npm run build:native, then point ' +
          'NAPI_RS_NATIVE_LIBRARY_PATH at the fdpass.*.node file it wrote'
    const err = makeError(Error, 'ERR_FDPASS_NO_BINARY', message)
    err.cause = cause
    throw err
  }
}

function isMusl(): boolean {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
  return report?.header?.glibcVersionRuntime === undefined
}

const binding = loadBinding()

/** The kind of Unix socket a channel runs on. */
export type SocketType = 'stream' | 'seqpacket' | 'dgram'

/**
 * `framed` (default): one `send` is one message on every socket type, with its
 * descriptors paired to it, and sets larger than the per-message limit are
 * chunked and reassembled (PROTOCOL.md). `raw`: one `sendmsg` / `recvmsg`, for
 * peers with their own framing (Python's `socket.send_fds`, Go, C).
 */
export type Framing = 'framed' | 'raw'

/** What a descriptor is, from fstat and getsockopt. */
export type FdKind =
  | 'file'
  | 'directory'
  | 'fifo'
  | 'tty'
  | 'char-device'
  | 'tcp'
  | 'tcp-listener'
  | 'udp'
  | 'unix-stream'
  | 'unix-stream-listener'
  | 'unix-dgram'
  | 'unix-seqpacket'
  | 'other'

/**
 * Anything that holds a descriptor `send` can pass: a number; a `net.Socket`
 * (TCP or Unix, connected; also child process stdio pipes and TTY streams); a
 * `net.Server`, `http.Server` or `https.Server` (listening); a `dgram.Socket`
 * (bound); a `FileHandle`; an `fs.ReadStream` or `fs.WriteStream` (open), or
 * another stream with a descriptor (a child process's stdio, typed as
 * `Readable`/`Writable`); a {@link ReceivedFd}.
 */
export type FdHolder =
  | number
  | net.Socket
  | net.Server
  | dgram.Socket
  | FileHandle
  | fs.ReadStream
  | fs.WriteStream
  | Readable
  | Writable
  | ReceivedFd

/** One descriptor to send, given up by the sender after the send if `move` is set. */
export interface MovedFd {
  fd: FdHolder
  move?: boolean
}

/** An entry of {@link SendOptions.fds}. */
export type Descriptor = FdHolder | MovedFd

export interface SendOptions {
  /** Payload bytes (a string is sent as UTF-8). */
  data?: Uint8Array | string
  /**
   * Descriptors to pass. The sender keeps them, but for those given as
   * `{ fd, move: true }` or all of them with `move`.
   */
  fds?: readonly Descriptor[]
  /**
   * Close (or destroy) the sender's copies once the message is with the
   * kernel. Never done when the send fails.
   */
  move?: boolean
}

export interface RecvOptions {
  /** Cancels the receive; a message that arrives for it later goes to the next receive. */
  signal?: AbortSignal
  /**
   * Most descriptors this receive accepts. A message with more is consumed
   * whole, its descriptors closed, and the receive rejects with
   * `ERR_FDPASS_TOO_MANY_FDS`. Default: {@link limits}`.maxFdsPerMessage` (253 on Linux).
   */
  maxFds?: number
  /**
   * Framed mode: most payload bytes accepted (default 4 MiB, gRPC's receive
   * limit; raise it for larger messages). Raw mode: the
   * receive buffer (default 64 KiB); a longer datagram or record rejects with
   * `ERR_FDPASS_MESSAGE_TRUNCATED`.
   */
  maxBytes?: number
}

export interface Message {
  data: Buffer
  fds: ReceivedFd[]
}

export interface ChannelOptions {
  /** `'framed'` (default) or `'raw'`; both ends must agree. */
  framing?: Framing
  /**
   * Most milliseconds a peer may take to finish a message it has begun (as
   * `http.Server`'s `headersTimeout`): once part of a message is here, the
   * rest must follow within it, or the pending receive rejects with
   * `ERR_FDPASS_MESSAGE_TIMEOUT`, what arrived of it is dropped and its
   * descriptors closed, and the channel closes. 0: no limit. Default: 0,
   * and 60,000 for the channels a {@link Server} accepts.
   */
  messageTimeout?: number
}

/** The default {@link ChannelOptions.messageTimeout} of accepted channels, as `http.Server`'s `headersTimeout`. */
const SERVER_MESSAGE_TIMEOUT_MS = 60_000
/** Most a timer takes (setTimeout's limit, about 24.8 days). */
const MAX_TIMEOUT_MS = 0x7fffffff

function normaliseMessageTimeout(name: string, value: unknown, fallback: number): number {
  return value === undefined ? fallback : validateInteger(name, value, 0, MAX_TIMEOUT_MS)
}

export interface ConnectOptions extends ChannelOptions {
  path: string
  /** Linux abstract socket name instead of a filesystem path. */
  abstract?: boolean
  type?: Exclude<SocketType, 'dgram'>
  signal?: AbortSignal
}

export interface ListenOptions extends ChannelOptions {
  path: string
  /** Linux abstract socket name instead of a filesystem path. */
  abstract?: boolean
  type?: Exclude<SocketType, 'dgram'>
  /** Permission bits of the socket file (e.g. `0o600`), set before any peer can connect. */
  mode?: number
  backlog?: number
  /**
   * Access policy, asked for each connection before it becomes a channel and
   * before anything is read from it: `true` admits the peer; anything else
   * (or a throw) refuses it. A refused connection is closed, its peer's next
   * receive rejects with `ERR_FDPASS_PEER_REFUSED` (framed mode), and the
   * server emits `'refused'`.
   */
  allow?: (peer: PeerCredentials) => boolean
  /**
   * Refuse descriptors on every accepted connection, in the kernel and from
   * the moment it connects: a peer's send with descriptors fails with
   * `EPERM` and nothing is installed here. Needs {@link limits}`.canRefuseFds`;
   * elsewhere `listen()` throws `ERR_FDPASS_UNSUPPORTED` (receive with
   * `maxFds: 0` instead, which closes what arrives).
   */
  refuseFds?: boolean
}

/**
 * Who is at the other end of a channel, as the kernel recorded it when the
 * connection was made (`connect`, or `socketPair`): a later `setuid` or `exec`
 * in the peer does not change it. `pid` is absent where the platform does not
 * record it (FreeBSD).
 */
export interface PeerCredentials {
  pid?: number
  uid: number
  gid: number
}

/** Frozen credentials, without `pid` where the platform records none. */
function credentialsOf({ pid, uid, gid }: native.PeerCredentials): PeerCredentials {
  return Object.freeze(pid === undefined || pid === null ? { uid, gid } : { pid, uid, gid })
}

export interface SocketPairOptions extends ChannelOptions {
  type?: SocketType
}

/**
 * What this platform allows. `canRefuseFds`: whether sockets can refuse
 * descriptors in the kernel (`SO_PASSRIGHTS`, Linux 6.16 and later), for
 * `listen({ refuseFds })` and {@link Channel.refuseFds}.
 */
export const limits: Readonly<{ maxFdsPerMessage: number; hasSeqpacket: boolean; hasAbstractNames: boolean; canRefuseFds: boolean }> =
  Object.freeze(binding.platformLimits())

const DEFAULT_MAX_BYTES = { framed: 4 * 1024 * 1024, raw: 64 * 1024 } as const
const MAX_FD_NUMBER = 0x7fffffff

// ---------------------------------------------------------------------------
// Descriptors out of Node objects: the one place that knows Node's internals

interface HandleHolder {
  _handle?: { fd?: number } | null
}

function isFileHandle(value: object): value is FileHandle {
  return value.constructor?.name === 'FileHandle' && typeof (value as FileHandle).fd === 'number'
}

function noDescriptor(name: string, what: string): FdpassError {
  return makeError(TypeError, 'ERR_FDPASS_NO_DESCRIPTOR', `${name} holds no descriptor: ${what}`)
}

/** Where a dgram.Socket keeps its handle (Node's `kStateSymbol`); found once. */
let dgramState: symbol | undefined

function dgramHandleFd(socket: dgram.Socket): unknown {
  dgramState ??= Object.getOwnPropertySymbols(socket).find((key) => key.description === 'state symbol')
  const state = dgramState === undefined ? undefined : (socket as unknown as Record<symbol, { handle?: { fd?: unknown } | null }>)[dgramState]
  return state?.handle?.fd
}

/**
 * The one place that reads descriptors out of Node objects (through their
 * internal handles where Node has no public accessor), checked before any
 * system call. Throws `ERR_FDPASS_NO_DESCRIPTOR` for an object that holds
 * none now: not connected, listening, bound or open yet, already closed, or
 * of a type that never has one.
 */
function holderFd(holder: unknown, name: string): number {
  if (typeof holder === 'number') return validateInteger(name, holder, 0, MAX_FD_NUMBER)
  if (holder === null || typeof holder !== 'object') {
    throw invalidArgType(name, 'a descriptor number or an object holding a descriptor', holder)
  }
  const valid = (fd: unknown, what: string): number => {
    if (typeof fd !== 'number' || fd < 0) throw noDescriptor(name, what)
    // A number the native side would truncate (1.5, Infinity, 2 ** 32 + 1) names another descriptor.
    return validateInteger(`${name}.fd`, fd, 0, MAX_FD_NUMBER)
  }
  if (holder instanceof ReceivedFd) return valid(holder.released ? -1 : holder.fd, 'a ReceivedFd that was taken or closed')
  if (holder instanceof net.Socket) return valid((holder as HandleHolder)._handle?.fd, 'a net.Socket that is not connected or was destroyed')
  if (holder instanceof net.Server) return valid((holder as HandleHolder)._handle?.fd, 'a server that is not listening in this process')
  if (holder instanceof dgram.Socket) return valid(dgramHandleFd(holder), 'a dgram.Socket that is not bound or was closed')
  if (isFileHandle(holder)) return valid(holder.fd, 'a closed FileHandle')
  if (holder instanceof Stream) {
    // fs.ReadStream and fs.WriteStream (whose fd is a FileHandle when opened
    // from one), and Node's synchronous stdio streams.
    const fd = (holder as { fd?: unknown }).fd
    const number = fd !== null && typeof fd === 'object' && isFileHandle(fd) ? fd.fd : fd
    return valid(number, 'a stream that is not open yet, or was closed')
  }
  throw noDescriptor(name, `${holder.constructor?.name ?? 'this object'} is not a kind fdpass can send`)
}

/** An entry of `fds`: a holder, or `{ fd: holder, move }`. */
function isMovedFd(entry: unknown): entry is MovedFd {
  if (entry === null || typeof entry !== 'object') return false
  const proto = Object.getPrototypeOf(entry) as unknown
  return (proto === Object.prototype || proto === null) && 'fd' in entry
}

/** The descriptor number of an `fds` entry, validated before any system call. */
function descriptorOf(entry: unknown, index: number): number {
  // The common case first, without building the name an error would need.
  if (typeof entry === 'number' && Number.isInteger(entry) && entry >= 0 && entry <= MAX_FD_NUMBER) return entry
  if (isMovedFd(entry)) {
    validateBoolean(`fds[${index}].move`, entry.move)
    return holderFd(entry.fd, `fds[${index}].fd`)
  }
  return holderFd(entry, `fds[${index}]`)
}

/** Whether `view`'s buffer was transferred away (a view on it can no longer be made). */
function isDetached(view: Uint8Array): boolean {
  try {
    new Uint8Array(view.buffer, 0, 0)
    return false
  } catch {
    return true
  }
}

/**
 * Descriptor numbers on their way to a native call, in one array reused by
 * every call: a fresh typed array each time costs an allocation, and Node-API
 * moves a small one off the heap again on every access.
 */
let scratchNumbers = new Int32Array(256)

/** The shared number array, at least `length` long; valid until the next call. */
function numberScratch(length: number): Int32Array {
  if (scratchNumbers.length < length) scratchNumbers = new Int32Array(Math.max(length, 2 * scratchNumbers.length))
  return scratchNumbers
}

/** Gives up the sender's copy after a moved send. */
async function release(holder: FdHolder): Promise<void> {
  if (typeof holder === 'number') binding.closeFd(holder)
  else if (holder instanceof ReceivedFd) holder.close()
  else if (holder instanceof net.Socket) holder.destroy()
  else if (holder instanceof net.Server) holder.close()
  else if (holder instanceof dgram.Socket) holder.close()
  else if (holder instanceof fs.WriteStream || holder instanceof fs.ReadStream) {
    // close() lets a WriteStream finish the writes already queued first.
    await new Promise<void>((resolve) => holder.close(() => resolve()))
  } else if (holder instanceof Stream) holder.destroy()
  else await holder.close()
}

/**
 * The holders a send gives up once sent, by descriptor number (so one named
 * twice is given up once, by its object where one names it: a ReceivedFd
 * moved as `[r.fd, r]` is released, not closed behind its back); null, and
 * no allocation, when there are none. A bare number that fdpass owns (a
 * Channel's, a Server's or a ReceivedFd's socket) is refused before the
 * send, with `ERR_FDPASS_FD_OWNED`: closing it would close its owner's
 * descriptor, and later whatever reused the number.
 */
function movedHolders(entries: readonly Descriptor[], numbers: Int32Array, moveAll: boolean): Map<number, FdHolder> | null {
  let moved: Map<number, FdHolder> | null = null
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i] as Descriptor
    const explicit = isMovedFd(entry)
    if (!moveAll && !(explicit && entry.move === true)) continue
    const fd = numbers[i] as number
    const holder = explicit ? entry.fd : entry
    moved ??= new Map()
    if (!moved.has(fd) || typeof moved.get(fd) === 'number') moved.set(fd, holder)
  }
  if (moved === null) return null
  for (const [fd, holder] of moved) {
    const owner = typeof holder === 'number' ? binding.fdOwner(fd) : null
    if (owner !== null) {
      throw makeError(Error, 'ERR_FDPASS_FD_OWNED', `descriptor ${fd} is owned by ${owner}; move that object instead of its number (nothing was sent)`)
    }
  }
  return moved
}

/**
 * Gives up every moved holder, one per descriptor number (a number and an
 * object naming the same descriptor are closed once), each even if another
 * fails; the message was sent either way, so a failure is thrown after all
 * were tried, saying so.
 */
async function releaseMoved(moved: Map<number, FdHolder>): Promise<void> {
  let failure: unknown
  for (const holder of moved.values()) {
    try {
      await release(holder)
    } catch (err) {
      failure ??= err
    }
  }
  if (failure !== undefined) {
    const err = failure as FdpassError
    err.message = `the message was sent, but giving up a moved descriptor failed: ${err.message}`
    throw err
  }
}

// ---------------------------------------------------------------------------
// Received descriptors

// Received descriptors are held natively until claimed; whatever is still
// held when this JavaScript environment ends is closed then.
binding.closeHeldAtTeardown()

/** Closes, when a ReceivedFd is collected, the descriptor it still owned. */
const unclaimed = new FinalizationRegistry<number>((fd) => {
  try {
    binding.closeHeld(fd)
  } catch {
    // Someone closed the number behind the ReceivedFd's back; nothing to release.
  }
})

/**
 * ReceivedFds not yet registered for finalization: registering (and then
 * unregistering) costs more than the rest of receiving a descriptor, and most
 * are closed, taken or converted at once. So each is registered only if still
 * unclaimed at the next turn of the loop; until then these lists keep it
 * alive, so none can be collected unregistered. A receiver that never waits
 * never reaches the next turn, so every SETTLE_AT descriptors the lists are
 * also settled, a generation at a time: what was already waiting at the
 * previous settling is registered, so descriptors read ahead and claimed
 * soon after are not.
 */
let youngUnregistered: ReceivedFd[] = []
let oldUnregistered: ReceivedFd[] = []
const SETTLE_AT = 1024

function registerUnclaimed(): void {
  for (const received of oldUnregistered) registerIfHeld(received)
  for (const received of youngUnregistered) registerIfHeld(received)
  oldUnregistered = []
  youngUnregistered = []
}

function trackUnclaimed(received: ReceivedFd): void {
  if (youngUnregistered.length === 0 && oldUnregistered.length === 0) setImmediate(registerUnclaimed)
  else if (youngUnregistered.length >= SETTLE_AT) {
    for (const older of oldUnregistered) registerIfHeld(older)
    oldUnregistered = youngUnregistered.filter((young) => !young.released)
    youngUnregistered = []
  }
  youngUnregistered.push(received)
}

/** ReceivedFd's own release, for {@link closeAll}, which closes many at once. */
let releaseForClosing: (received: ReceivedFd) => number
/** Registers a ReceivedFd still holding its descriptor with {@link unclaimed}. */
let registerIfHeld: (received: ReceivedFd) => void

/**
 * A received descriptor, owned until taken, converted or closed. What nobody
 * claims is closed when this object is garbage-collected.
 */
export class ReceivedFd implements Disposable {
  #fd: number
  /** Whether {@link unclaimed} knows this one (unregistering costs, so only then). */
  #registered = false

  /** @internal Wraps a descriptor this process owns. */
  constructor(fd: number) {
    this.#fd = fd
    trackUnclaimed(this)
  }

  /** The descriptor number; throws `ERR_FDPASS_FD_RELEASED` once taken or closed. */
  get fd(): number {
    if (this.#fd < 0) throw makeError(Error, 'ERR_FDPASS_FD_RELEASED', 'this descriptor was already taken or closed')
    return this.#fd
  }

  /** True once taken, converted or closed. */
  get released(): boolean {
    return this.#fd < 0
  }

  /** What the descriptor is (file, tcp-listener, unix-stream, ...). */
  get kind(): FdKind {
    return binding.fdKind(this.fd) as FdKind
  }

  /** Hands the raw number over, once; you then own it and must close it. */
  take(): number {
    const fd = this.fd
    this.#release()
    binding.releaseHeld(fd)
    return fd
  }

  /** Closes the descriptor; does nothing if it was already taken or closed. */
  close(): void {
    const fd = this.#release()
    if (fd >= 0) binding.closeHeld(fd)
  }

  static {
    releaseForClosing = (received) => received.#release()
    registerIfHeld = (received) => {
      if (received.#fd < 0) return
      unclaimed.register(received, received.#fd, received)
      received.#registered = true
    }
  }

  /** Marks this released and gives the number it held (-1 if none), for a caller that closes it. */
  #release(): number {
    const fd = this.#fd
    if (fd < 0) return -1
    this.#fd = -1
    if (this.#registered) unclaimed.unregister(this)
    return fd
  }

  [Symbol.dispose](): void {
    this.close()
  }

  #expect(kinds: readonly FdKind[], conversion: string): void {
    const kind = this.kind
    if (!kinds.includes(kind)) {
      throw makeError(
        Error,
        'ERR_FDPASS_WRONG_KIND',
        `${conversion} needs ${kinds.join(' or ')}, but this descriptor is ${kind}; it stays open and owned here`,
      )
    }
  }

  /**
   * Hands the descriptor to what `adopt` makes of it: released from here only
   * once `adopt` returned, so a conversion that throws leaves it owned here.
   */
  #handOver<T>(adopt: (fd: number) => T): T {
    const adopted = adopt(this.fd)
    binding.releaseHeld(this.#release())
    return adopted
  }

  /**
   * A `net.Socket` over a connected TCP or Unix stream socket, or a fifo (as
   * a pipe: no thread-pool thread is held while it waits). Node makes the
   * descriptor non-blocking, a flag shared with every other holder of it.
   */
  toSocket(options: Omit<net.SocketConstructorOpts, 'fd'> = {}): net.Socket {
    this.#expect(['tcp', 'unix-stream', 'fifo'], 'toSocket()')
    return this.#handOver((fd) => new net.Socket({ readable: true, writable: true, ...options, fd }))
  }

  /**
   * A `net.Server` accepting on a listening TCP or Unix socket. Exclusive: in
   * a cluster worker it accepts here, instead of asking the primary to listen.
   */
  toServer(connectionListener?: (socket: net.Socket) => void): net.Server
  toServer(options?: net.ServerOpts, connectionListener?: (socket: net.Socket) => void): net.Server
  toServer(options: net.ServerOpts | ((socket: net.Socket) => void) = {}, connectionListener?: (socket: net.Socket) => void): net.Server {
    this.#expect(['tcp-listener', 'unix-stream-listener'], 'toServer()')
    const [serverOptions, onConnection] = typeof options === 'function' ? [{}, options] : [options, connectionListener]
    return this.#handOver((fd) => net.createServer(serverOptions, onConnection).listen({ fd, exclusive: true }))
  }

  /** Makes `server` (for example an `http.Server`) accept on this listening socket, as {@link toServer}. */
  listen<S extends net.Server>(server: S, callback?: () => void): S {
    this.#expect(['tcp-listener', 'unix-stream-listener'], 'listen()')
    return this.#handOver((fd) => server.listen({ fd, exclusive: true }, callback))
  }

  /**
   * A `dgram.Socket` over a UDP socket (IPv4 or IPv6, found from the socket),
   * bound already by whoever made it: it receives at once.
   */
  toDgram(options: Omit<dgram.SocketOptions, 'type'> = {}): dgram.Socket {
    this.#expect(['udp'], 'toDgram()')
    // dgram takes a descriptor only when it is above 0.
    if (this.fd === 0) throw makeError(Error, 'ERR_FDPASS_UNSUPPORTED', 'dgram cannot adopt descriptor 0; it stays open and owned here')
    const type = binding.socketFamily(this.fd) === 'inet6' ? 'udp6' : 'udp4'
    return this.#handOver((fd) => {
      const socket = dgram.createSocket({ ...options, type })
      try {
        socket.bind({ fd, exclusive: true })
      } catch (err) {
        socket.close()
        throw err
      }
      return socket
    })
  }

  /**
   * An `fs.ReadStream` over a file, fifo, TTY or character device, closing the
   * descriptor when it ends. fs reads on the libuv thread pool and needs a
   * blocking descriptor, so a non-blocking one is made blocking first: the
   * flag belongs to the open file, so every other holder of it (the sender
   * too) sees it change. Each read of a fifo or TTY that waits holds a
   * thread-pool thread meanwhile; for a fifo, {@link toSocket} holds none.
   */
  toReadStream(options: StreamOptions = {}): fs.ReadStream {
    this.#expect(STREAMABLE, 'toReadStream()')
    binding.setBlocking(this.fd, true)
    return this.#handOver((fd) => fs.createReadStream('', { ...options, fd, autoClose: true }))
  }

  /** An `fs.WriteStream` over a file, fifo, TTY or character device; as {@link toReadStream}. */
  toWriteStream(options: StreamOptions = {}): fs.WriteStream {
    this.#expect(STREAMABLE, 'toWriteStream()')
    binding.setBlocking(this.fd, true)
    return this.#handOver((fd) => fs.createWriteStream('', { ...options, fd, autoClose: true }))
  }

  /** An fdpass {@link Channel} over a received connected Unix socket. */
  toChannel(options: ChannelOptions = {}): Channel {
    this.#expect(['unix-stream', 'unix-seqpacket', 'unix-dgram'], 'toChannel()')
    return this.#handOver((fd) => adoptChannel(fd, options, true))
  }
}

/**
 * Takes ownership of a descriptor this process already has (inherited at exec,
 * from systemd socket activation or a parent's stdio) as a {@link ReceivedFd},
 * with the same conversions and the same care as a received one: close-on-exec
 * is set on it now, so this process's own children do not inherit it, and it
 * is closed when collected unless claimed. Throws `EBADF` when it is not open
 * and `ERR_FDPASS_FD_OWNED` when fdpass owns it already (a {@link Channel}'s
 * or {@link Server}'s socket, or a `ReceivedFd`'s).
 */
export function adoptFd(fd: number): ReceivedFd {
  validateInteger('fd', fd, 0, MAX_FD_NUMBER)
  binding.holdInherited(fd) // ERR_FDPASS_FD_OWNED when a Channel, Server or ReceivedFd owns it
  return new ReceivedFd(fd)
}

/** Kinds that fs streams read and write. */
const STREAMABLE: readonly FdKind[] = ['file', 'fifo', 'tty', 'char-device']

/** Options of {@link ReceivedFd.toReadStream} and {@link ReceivedFd.toWriteStream}. */
export interface StreamOptions {
  encoding?: BufferEncoding
  highWaterMark?: number
  /** Where reads or writes start (files only); default: the shared file offset. */
  start?: number
}

/**
 * Closes every descriptor of `fds` that is still held, in one native call:
 * what a receiver that refuses a message's descriptors, or is done with
 * them, wants, at a fraction of the cost of closing them one by one. Each
 * closed one is released as by `close()`; all are closed even if one fails,
 * and then the first failure is thrown.
 */
export function closeAll(fds: Iterable<ReceivedFd>): void {
  if (typeof (fds as Partial<Iterable<unknown>> | null | undefined)?.[Symbol.iterator] !== 'function') {
    throw invalidArgType('fds', 'an iterable of ReceivedFd', fds)
  }
  const list = Array.isArray(fds) ? (fds as readonly unknown[]) : [...fds]
  // Checked before any is released, so bad input changes nothing.
  for (const received of list) {
    if (!(received instanceof ReceivedFd)) throw invalidArgType('fds', 'an iterable of ReceivedFd', received)
  }
  const numbers = numberScratch(list.length)
  let count = 0
  for (const received of list as ReceivedFd[]) {
    const fd = releaseForClosing(received)
    if (fd >= 0) numbers[count++] = fd
  }
  if (count > 0) binding.closeHeldMany(numbers, count)
}

// ---------------------------------------------------------------------------
// Channels

interface PendingRecv {
  maxFds: number
  maxBytes: number
  resolve: (message: Message) => void
  reject: (err: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
}

interface PendingSend {
  resolve: () => void
  reject: (err: unknown) => void
}

function normaliseFraming(framing: unknown): Framing {
  if (framing === undefined) return 'framed'
  if (framing !== 'framed' && framing !== 'raw') throw makeError(TypeError, 'ERR_INVALID_ARG_VALUE', `The "framing" option must be 'framed' or 'raw'. Received ${String(framing)}`)
  return framing
}

function normaliseType(name: string, type: unknown, allowDgram: boolean): SocketType {
  if (type === undefined) return 'stream'
  if (type === 'stream' || type === 'seqpacket' || (allowDgram && type === 'dgram')) return type
  const allowed = allowDgram ? "'stream', 'seqpacket' or 'dgram'" : "'stream' or 'seqpacket'"
  throw makeError(TypeError, 'ERR_INVALID_ARG_VALUE', `The "${name}" option must be ${allowed}. Received ${String(type)}`)
}

// ---------------------------------------------------------------------------
// Waiting (docs/WAITING.md): a one-shot uv_poll per socket on Node's own loop

const READABLE = 1
const WRITABLE = 2

/** What each armed watch runs when its socket is ready, by the arming's token. */
const wakers = new Map<number, (ready: number) => void>()
let lastToken = 0

const reactor = new binding.Reactor((tokenTimesFourPlusReady) => {
  // A wake for a token no longer armed (the watch was stopped after the
  // native side sent it) finds nothing here and is dropped.
  wakers.get(Math.floor(tokenTimesFourPlusReady / 4))?.(tokenTimesFourPlusReady % 4)
})

/** A token no armed watch holds (u32 on the native side). */
function freeToken(): number {
  do lastToken = lastToken >= 0xffffffff ? 1 : lastToken + 1
  while (wakers.has(lastToken))
  return lastToken
}

/**
 * One socket's watch. `set(events)` asks for a single wake once the socket is
 * ready for them (0 stops asking). A wake must be answered by `set` in the
 * same turn: the native poll stays started until then, keeping the process
 * alive and (if the socket is still ready) the loop busy. So after the wake's
 * handler, `answer` (the owner's re-watch) always runs, even if the handler
 * threw. The wakers map keeps the owner alive while it waits, so a pending
 * promise never loses its socket to the garbage collector.
 */
class Watch {
  /** The current arming's token; 0 when not armed. */
  #token = 0
  /** Events the native poll is armed for; -1 between a wake and its answer. */
  #events = 0
  readonly #arm: (reactor: native.Reactor, token: number, events: number) => void
  readonly #onReady: (ready: number) => void
  readonly #answer: () => void

  constructor(arm: (reactor: native.Reactor, token: number, events: number) => void, onReady: (ready: number) => void, answer: () => void) {
    this.#arm = arm
    this.#onReady = onReady
    this.#answer = answer
  }

  set(events: number): void {
    if (events === this.#events) return
    if (events === 0) {
      this.#arm(reactor, this.#token, 0)
      this.forget()
      return
    }
    const token = this.#token === 0 ? freeToken() : this.#token
    this.#arm(reactor, token, events)
    this.#token = token
    this.#events = events
    wakers.set(token, this.#woken)
  }

  /** Drops the arming; alone, for an owner whose native handle closed (which dropped the poll). */
  forget(): void {
    wakers.delete(this.#token)
    this.#token = 0
    this.#events = 0
  }

  readonly #woken = (ready: number): void => {
    this.#events = -1
    try {
      this.#onReady(ready)
    } finally {
      if (this.#events === -1) this.#answer()
      if (this.#events === -1) {
        // The answer failed too: stop, or the loop would spin on a ready socket.
        try {
          this.set(0)
        } catch {
          this.forget()
        }
      }
    }
  }
}

/**
 * The messages of one native receive (see the binding's `tryRecv`): per
 * message a descriptor count, the numbers, a payload length and the payload.
 * Every descriptor is wrapped before any other code runs, so each has an owner.
 */
function unpackMessages(packed: Buffer): Message[] {
  const count = packed.readInt32LE(0)
  const messages: Message[] = []
  let at = 4
  for (let m = 0; m < count; m++) {
    const fdCount = packed.readInt32LE(at)
    at += 4
    const fds: ReceivedFd[] = []
    for (let i = 0; i < fdCount; i++, at += 4) fds.push(new ReceivedFd(packed.readInt32LE(at)))
    const length = packed.readUInt32LE(at)
    at += 4
    messages.push({ data: packed.subarray(at, at + length), fds })
    at += length
  }
  return messages
}

/**
 * A message read ahead under one receive's limits, judged by the limits of
 * the receive that gets it, as if that receive had read it: one over them is
 * dropped whole, its descriptors closed.
 */
function withinLimits(message: Message, maxFds: number, maxBytes: number): Message {
  if (message.fds.length > maxFds) {
    closeAll(message.fds)
    throw makeError(
      RangeError,
      'ERR_FDPASS_TOO_MANY_FDS',
      `${message.fds.length} descriptors exceed the limit of ${maxFds} this receive accepts (maxFds); all were closed`,
    )
  }
  if (message.data.length > maxBytes) {
    closeAll(message.fds)
    throw makeError(RangeError, 'ERR_FDPASS_MESSAGE_TOO_LARGE', `the message of ${message.data.length} bytes exceeds the limit of ${maxBytes} bytes`)
  }
  return message
}

/**
 * A channel over the socket `fd`: one fdpass does not own yet (`held`
 * false: ERR_FDPASS_FD_OWNED otherwise), or a ReceivedFd's of this thread
 * handing it over (`held` true).
 */
function adoptChannel(fd: number, options: ChannelOptions, held: boolean): Channel {
  validateInteger('fd', fd, 0, MAX_FD_NUMBER)
  const opts = validateObject<ChannelOptions>('options', options)
  const framing = normaliseFraming(opts.framing)
  const messageTimeout = normaliseMessageTimeout('options.messageTimeout', opts.messageTimeout, 0)
  return new Channel(binding.adoptChannel(fd, framing as native.ChannelMode, held), framing, messageTimeout)
}

/**
 * A connected Unix socket that carries messages with descriptors. Emits
 * `'end'` when a receive finds the peer has closed, and `'close'` once closed.
 */
export class Channel extends EventEmitter implements AsyncIterable<Message>, Disposable {
  #native: native.NativeChannel | null
  readonly framing: Framing
  readonly type: SocketType
  #receives: PendingRecv[] = []
  /** Messages read ahead of any receive asking for them, in order; owned here until taken. */
  #ready: Message[] = []
  #sends: PendingSend[] = []
  readonly #watch: Watch
  #ended = false
  #peer: PeerCredentials | undefined
  readonly #messageTimeout: number
  /** Runs while part of a message is held: the peer's time to finish it. */
  #messageTimer: NodeJS.Timeout | undefined

  /** @internal Use {@link connect}, {@link listen}, {@link socketPair} or {@link Channel.fromFd}. */
  constructor(handle: native.NativeChannel, framing: Framing, messageTimeout = 0) {
    super()
    this.#native = handle
    this.#messageTimeout = messageTimeout
    this.framing = framing
    this.type = handle.socketType
    this.#watch = new Watch(
      (reactor, token, events) => handle.watch(reactor, token, events),
      (ready) => {
        if (ready & READABLE) this.#drainReceives(true)
        if (ready & WRITABLE) this.#flushSends()
      },
      () => this.#rewatch(),
    )
  }

  /**
   * Adopts a connected Unix socket you own (for example one inherited in a
   * child's stdio). The channel takes it over; on error it stays yours, open.
   */
  static fromFd(fd: number, options: ChannelOptions = {}): Channel {
    return adoptChannel(fd, options, false)
  }

  /** The socket's descriptor number, or -1 once closed. */
  get fd(): number {
    return this.#native?.fd ?? -1
  }

  get closed(): boolean {
    return this.#native === null
  }

  /**
   * The peer's credentials (`SO_PEERCRED` on Linux, `getpeereid` and
   * `LOCAL_PEERPID` on macOS, `getpeereid` on FreeBSD), read once and kept.
   * Throws `ERR_FDPASS_CLOSED` if first read after the channel closed.
   */
  get peer(): PeerCredentials {
    if (this.#peer === undefined) {
      const handle = this.#native
      if (handle === null) throw closedError('channel')
      this.#peer = credentialsOf(handle.peer())
    }
    return this.#peer
  }

  /**
   * Refuses descriptors from now on, in the kernel (`SO_PASSRIGHTS`): the
   * peer's sends with descriptors fail with `EPERM` and nothing is installed
   * here; messages already queued are unaffected. `refuseFds(false)` accepts
   * them again. Throws `ERR_FDPASS_UNSUPPORTED` where {@link limits}`.canRefuseFds`
   * is false.
   */
  refuseFds(refuse = true): void {
    validateBoolean('refuse', refuse)
    const handle = this.#native
    if (handle === null) throw closedError('channel')
    binding.setAcceptsFds(handle.fd, !refuse)
  }

  /**
   * Sends one message. Resolves once it is all with the kernel. Argument
   * errors throw before any system call; system errors reject, and then
   * nothing was sent and the caller's descriptors are untouched.
   */
  send(message: SendOptions): Promise<void> {
    const opts = validateObject<SendOptions>('message', message)
    if (message === undefined) throw invalidArgType('message', 'of type object', message)
    const data = typeof opts.data === 'string' ? Buffer.from(opts.data) : (opts.data ?? Buffer.alloc(0))
    if (!(data instanceof Uint8Array)) throw invalidArgType('message.data', 'a string, Buffer or Uint8Array', opts.data)
    if (data.byteLength === 0 && isDetached(data)) {
      throw makeError(TypeError, 'ERR_INVALID_ARG_VALUE', 'The "message.data" argument is a view of a detached ArrayBuffer (transferred away): its bytes are gone')
    }
    validateBoolean('message.move', opts.move)
    const holders = opts.fds ?? []
    if (!Array.isArray(holders)) throw invalidArgType('message.fds', 'an array', holders)
    const numbers = numberScratch(holders.length)
    // Every index, holes included (forEach would skip a hole and leave
    // whatever an earlier call put in the shared array): a hole is not a
    // descriptor, and each of the first `holders.length` numbers is written
    // here before anything reads them.
    for (let i = 0; i < holders.length; i++) numbers[i] = descriptorOf(holders[i], i)
    if (this.framing === 'raw' && holders.length > limits.maxFdsPerMessage) {
      throw makeError(
        RangeError,
        'ERR_FDPASS_TOO_MANY_FDS',
        `${holders.length} descriptors exceed the ${limits.maxFdsPerMessage} one raw-mode message carries on this platform; use framed mode to send more`,
      )
    }
    if (this.framing === 'raw' && this.type === 'stream' && holders.length > 0 && data.length === 0) {
      throw makeError(TypeError, 'ERR_INVALID_ARG_VALUE', 'a raw-mode stream message with descriptors needs at least one data byte')
    }
    const moved = movedHolders(holders, numbers, opts.move === true)
    const handle = this.#native
    if (handle === null) return Promise.reject(closedError('channel'))
    let sentNow: boolean
    try {
      sentNow = handle.send(data, numbers, holders.length)
    } catch (err) {
      this.#rewatch() // a failed send may have queued an abort frame to flush
      return Promise.reject(err)
    }
    const done = sentNow
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => {
          this.#sends.push({ resolve, reject })
          this.#rewatch()
        })
    return moved === null ? done : done.then(() => releaseMoved(moved))
  }

  /**
   * Receives one message. Rejects with `ERR_FDPASS_CLOSED` at end of stream,
   * `ABORT_ERR` when `signal` aborts; nothing that arrived is ever leaked.
   */
  recv(options?: RecvOptions): Promise<Message> {
    const opts = validateObject<RecvOptions>('options', options)
    const maxFds = opts.maxFds === undefined ? limits.maxFdsPerMessage : validateInteger('options.maxFds', opts.maxFds, 0, MAX_FD_NUMBER)
    const maxBytes =
      opts.maxBytes === undefined ? DEFAULT_MAX_BYTES[this.framing] : validateInteger('options.maxBytes', opts.maxBytes, 1, Number.MAX_SAFE_INTEGER)
    const signal = validateSignal('options.signal', opts.signal)
    if (this.#native === null) return Promise.reject(closedError('channel'))
    if (signal?.aborted) return Promise.reject(abortError(signal))
    if (this.#receives.length === 0 && this.#ready.length > 0) {
      try {
        return Promise.resolve(withinLimits(this.#ready.shift() as Message, maxFds, maxBytes))
      } catch (err) {
        return Promise.reject(err)
      }
    }
    return new Promise<Message>((resolve, reject) => {
      const pending: PendingRecv = { maxFds, maxBytes, resolve, reject }
      if (signal) {
        pending.signal = signal
        pending.onAbort = () => this.#abortReceive(pending)
        signal.addEventListener('abort', pending.onAbort, { once: true })
      }
      this.#receives.push(pending)
      this.#drainReceives(false)
      this.#rewatch()
    })
  }

  /** Async iteration over messages until the peer closes; `options` as for {@link recv}. */
  async *messages(options?: Omit<RecvOptions, 'signal'> & { signal?: AbortSignal }): AsyncGenerator<Message, void, undefined> {
    for (;;) {
      try {
        yield await this.recv(options)
      } catch (err) {
        if ((err as FdpassError).code === 'ERR_FDPASS_CLOSED') return
        throw err
      }
    }
  }

  [Symbol.asyncIterator](): AsyncGenerator<Message, void, undefined> {
    return this.messages()
  }

  /**
   * Closes the channel. Pending receives and sends reject with
   * `ERR_FDPASS_CLOSED`; queued messages, messages read ahead and partly
   * received ones are dropped and their descriptors closed.
   */
  close(): void {
    const handle = this.#native
    if (handle === null) return
    this.#native = null
    handle.close()
    this.#watch.forget()
    clearTimeout(this.#messageTimer)
    for (const message of this.#ready.splice(0)) closeAll(message.fds)
    const err = closedError('channel')
    for (const pending of this.#receives.splice(0)) this.#settleReceive(pending, err)
    for (const pending of this.#sends.splice(0)) pending.reject(err)
    process.nextTick(() => this.emit('close'))
  }

  [Symbol.dispose](): void {
    this.close()
  }

  #settleReceive(pending: PendingRecv, err: unknown, message?: Message): void {
    if (pending.onAbort) pending.signal?.removeEventListener('abort', pending.onAbort)
    if (message) pending.resolve(message)
    else pending.reject(err)
  }

  /**
   * Waits for what pending operations still need: after a drain or a flush,
   * a pending receive or send means the socket said EAGAIN.
   */
  #rewatch(): void {
    if (this.#native === null) return
    // Queued bytes can outlive every pending send: the rest of a message whose
    // send failed after it started, and the abort frame that follows it.
    const writing = this.#sends.length > 0 || this.#native.hasQueued
    const events = (this.#receives.length > 0 ? READABLE : 0) | (writing ? WRITABLE : 0)
    try {
      this.#watch.set(events)
    } catch (err) {
      for (const pending of this.#receives.splice(0)) this.#settleReceive(pending, err)
      for (const pending of this.#sends.splice(0)) pending.reject(err)
      try {
        this.#watch.set(0)
      } catch {
        this.#watch.forget()
      }
    }
  }

  /**
   * Takes every ready message for the receives waiting, in one pass.
   * `woken`: the loop just reported the socket readable, so the first native
   * receive must read; otherwise it may predict an empty socket and skip.
   */
  #drainReceives(woken: boolean): void {
    while (this.#receives.length > 0) {
      const pending = this.#receives[0]
      const early = this.#ready.shift()
      if (early !== undefined) {
        this.#receives.shift()
        let message: Message
        try {
          message = withinLimits(early, pending.maxFds, pending.maxBytes)
        } catch (err) {
          this.#settleReceive(pending, err)
          continue
        }
        this.#settleReceive(pending, undefined, message)
        continue
      }
      const handle = this.#native
      if (handle === null) return
      let packed: Buffer | null
      const reportedReadable = woken
      woken = false
      try {
        packed = handle.tryRecv(pending.maxFds, pending.maxBytes, reportedReadable)
      } catch (err) {
        this.#receives.shift()
        this.#settleReceive(pending, err)
        if ((err as FdpassError).code === 'ERR_FDPASS_CLOSED' && !this.#ended) {
          this.#ended = true
          process.nextTick(() => this.emit('end'))
        }
        continue
      }
      this.#timeIncomplete(handle)
      if (packed === null) return
      // Every message came within this receive's limits; the first is its answer.
      this.#ready.push(...unpackMessages(packed))
    }
  }

  /** Starts the peer's clock when part of a message is held, and stops it when none is. */
  #timeIncomplete(handle: native.NativeChannel): void {
    if (this.#messageTimeout === 0) return
    if (!handle.receivingMessage) {
      clearTimeout(this.#messageTimer)
      this.#messageTimer = undefined
    } else if (this.#messageTimer === undefined) {
      this.#messageTimer = setTimeout(() => this.#expire(), this.#messageTimeout)
      this.#messageTimer.unref()
    }
  }

  /** The peer did not finish its message in time: what came of it is dropped, and the channel closes. */
  #expire(): void {
    const err = makeError(
      Error,
      'ERR_FDPASS_MESSAGE_TIMEOUT',
      `the peer did not finish a message within ${this.#messageTimeout} ms (messageTimeout); what arrived of it was dropped, its descriptors closed, and the channel closed`,
    )
    for (const pending of this.#receives.splice(0)) this.#settleReceive(pending, err)
    this.emit('timeout')
    this.close()
  }

  #abortReceive(pending: PendingRecv): void {
    const at = this.#receives.indexOf(pending)
    if (at < 0) return
    this.#receives.splice(at, 1)
    this.#settleReceive(pending, abortError(pending.signal as AbortSignal))
    // With nobody waiting, stop watching, so the process may exit.
    this.#rewatch()
  }

  #flushSends(): void {
    const handle = this.#native
    if (handle === null) return
    let completed: number
    try {
      completed = handle.flush()
    } catch (err) {
      // The stream is out of step: every queued message fails and the channel closes.
      const failed = this.#sends.splice(0)
      this.close()
      for (const pending of failed) pending.reject(err)
      return
    }
    for (const pending of this.#sends.splice(0, completed)) pending.resolve()
  }

}

// ---------------------------------------------------------------------------
// Creating channels

/** A connected pair of channels (socketpair(2)), for example to hand one end to a child. */
export function socketPair(options: SocketPairOptions = {}): [Channel, Channel] {
  const opts = validateObject<SocketPairOptions>('options', options)
  const type = normaliseType('type', opts.type, true)
  const framing = normaliseFraming(opts.framing)
  const messageTimeout = normaliseMessageTimeout('options.messageTimeout', opts.messageTimeout, 0)
  const [a, b] = binding.socketPair(type as native.SocketType, framing as native.ChannelMode)
  return [new Channel(a, framing, messageTimeout), new Channel(b, framing, messageTimeout)]
}

/** Options of {@link spawnWithChannel}: `spawn`'s, plus where the channel goes. */
export interface SpawnWithChannelOptions extends SpawnOptions, SocketPairOptions {
  /** The child's descriptor number for its end (default 3; 0 to 2 replace stdio). */
  fd?: number
}

/** The environment variable that tells a child which descriptor is its channel. */
const CHANNEL_FD_ENV = 'FDPASS_FD'

/**
 * Spawns `command` (any program) with one end of a new socket pair as its
 * descriptor `options.fd` (default 3), named in its environment as
 * `FDPASS_FD`, and returns the child and the parent's end. The child's end is
 * closed in this process once the child has its copy; on a spawn that throws,
 * both ends are closed. The child's end is blocking, as programs expect of
 * what they inherit. A Node child adopts its end with
 * {@link inheritedChannel}; another program uses the descriptor directly (in
 * raw framing unless it speaks PROTOCOL.md).
 */
export function spawnWithChannel(
  command: string,
  args: readonly string[] = [],
  options: SpawnWithChannelOptions = {},
): { child: ChildProcess; channel: Channel } {
  if (typeof command !== 'string') throw invalidArgType('command', 'of type string', command)
  if (!Array.isArray(args)) throw invalidArgType('args', 'an array of strings', args)
  const opts = validateObject<SpawnWithChannelOptions>('options', options)
  const at = opts.fd === undefined ? 3 : validateInteger('options.fd', opts.fd, 0, 1024)
  const { fd: _fd, type, framing, messageTimeout, stdio, env, ...spawnOptions } = opts
  const [mine, theirs] = socketPair({ type, framing, messageTimeout })
  try {
    // Other programs expect a descriptor they inherit to block, as stdio
    // does; the flag is the child's end's own (a socket pair's ends are
    // separate open files), and inheritedChannel makes it non-blocking again.
    binding.setBlocking(theirs.fd, true)
    const slots: unknown[] = Array.isArray(stdio) ? [...(stdio as unknown[])] : Array.from({ length: 3 }, () => stdio ?? 'inherit')
    while (slots.length < at) slots.push('ignore')
    slots[at] = theirs.fd
    const child = spawn(command, [...args], {
      ...spawnOptions,
      stdio: slots as StdioOptions,
      env: { ...(env ?? process.env), [CHANNEL_FD_ENV]: String(at) },
    })
    return { child, channel: mine }
  } catch (err) {
    mine.close()
    throw err
  } finally {
    theirs.close()
  }
}

/**
 * In a child started by {@link spawnWithChannel}: adopts the channel it was
 * given (the descriptor `FDPASS_FD` names, else 3) and removes `FDPASS_FD`
 * from the environment, so this child's own children do not take it for
 * theirs. Throws `ERR_FDPASS_NO_DESCRIPTOR` when no channel was given.
 */
export function inheritedChannel(options: ChannelOptions = {}): Channel {
  const named = process.env[CHANNEL_FD_ENV]
  // Only decimal digits name a descriptor ('' or ' 4' would read as 0 or 4).
  const fd = named === undefined ? 3 : /^[0-9]{1,10}$/.test(named) ? Number(named) : Number.NaN
  if (!Number.isInteger(fd) || fd > MAX_FD_NUMBER) {
    throw makeError(TypeError, 'ERR_FDPASS_NO_DESCRIPTOR', `${CHANNEL_FD_ENV}=${named} names no descriptor`)
  }
  let channel: Channel
  try {
    channel = Channel.fromFd(fd, options)
  } catch (err) {
    const code = (err as FdpassError).code
    if (code === 'EBADF' || code === 'ENOTSOCK') {
      throw makeError(TypeError, 'ERR_FDPASS_NO_DESCRIPTOR', `descriptor ${fd} is not a channel this process was given (${code})`)
    }
    throw err
  }
  delete process.env[CHANNEL_FD_ENV]
  return channel
}

function addressOptions<T extends ConnectOptions | ListenOptions>(name: string, target: unknown): Partial<T> & { path: string } {
  const opts = (typeof target === 'string' ? { path: target } : validateObject<T>(name, target)) as Partial<T>
  if (typeof opts.path !== 'string' || opts.path.length === 0) throw invalidArgType(`${name}.path`, 'a non-empty string', opts.path)
  validateBoolean(`${name}.abstract`, opts.abstract)
  return opts as Partial<T> & { path: string }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/**
 * Connects to a listening fdpass (or any Unix) socket. Argument errors throw
 * synchronously; system errors reject.
 */
export function connect(target: string | ConnectOptions): Promise<Channel> {
  const opts = addressOptions<ConnectOptions>('target', target)
  const type = normaliseType('type', opts.type, false)
  const framing = normaliseFraming(opts.framing)
  const messageTimeout = normaliseMessageTimeout('target.messageTimeout', opts.messageTimeout, 0)
  const signal = validateSignal('target.signal', opts.signal)
  if (signal?.aborted) return Promise.reject(abortError(signal))
  let handle: native.NativeChannel
  try {
    handle = binding.connect(opts.path, opts.abstract === true, type as native.SocketType, framing as native.ChannelMode)
  } catch (err) {
    return Promise.reject(err)
  }
  return completeConnect(handle, framing, messageTimeout, signal)
}

async function completeConnect(handle: native.NativeChannel, framing: Framing, messageTimeout: number, signal: AbortSignal | undefined): Promise<Channel> {
  // Unix connects complete at once unless the listener's backlog is full; then
  // Linux says EAGAIN and only a new connect call tells, so retry with backoff.
  let backoff = 1
  try {
    while (!handle.pollConnect()) {
      if (signal?.aborted) throw abortError(signal)
      await delay(backoff)
      backoff = Math.min(backoff * 2, 100)
    }
  } catch (err) {
    handle.close()
    throw err
  }
  return new Channel(handle, framing, messageTimeout)
}

/** Accept errors that a retry cannot fix until descriptors are freed. */
const OUT_OF_DESCRIPTORS = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM'])
/** The first pause after running out of descriptors; it doubles per failed retry, up to the most. */
const ACCEPT_RETRY_MS = 100
const ACCEPT_RETRY_MOST_MS = 5_000

/**
 * A listening Unix socket. Accepted connections arrive as `'connection'`
 * events or by async iteration, and only while someone is listening for them
 * (otherwise they wait in the kernel's backlog).
 */
export class Server extends EventEmitter implements AsyncIterable<Channel>, Disposable {
  #native: native.NativeListener | null
  readonly path: string
  readonly abstract: boolean
  readonly framing: Framing
  #takers: { resolve: (c: IteratorResult<Channel, undefined>) => void; reject: (e: unknown) => void }[] = []
  readonly #watch: Watch
  /** Set while accepting pauses after running out of descriptors. */
  #retry: NodeJS.Timeout | undefined
  /** The next pause while accepting keeps running out of descriptors; 0 outside such an episode. */
  #backoff = 0

  readonly #allow: ((peer: PeerCredentials) => boolean) | undefined
  readonly #messageTimeout: number

  /** @internal Use {@link listen}. */
  constructor(handle: native.NativeListener, path: string, abstract: boolean, framing: Framing, messageTimeout: number, allow?: (peer: PeerCredentials) => boolean) {
    super()
    this.#native = handle
    this.#messageTimeout = messageTimeout
    this.#allow = allow
    this.path = path
    this.abstract = abstract
    this.framing = framing
    this.#watch = new Watch(
      (reactor, token, events) => handle.watch(reactor, token, events),
      () => this.#accept(),
      () => this.#rewatch(),
    )
    this.on('newListener', (event: string) => {
      // Accepting waits for the loop to report a connection pending, as
      // node:net does: accept4 fails with EMFILE before it looks at the
      // queue, so an accept with nobody waiting could only fail.
      if (event === 'connection') process.nextTick(() => this.#rewatch())
    })
    // Nobody left to take connections: stop watching, so the process may exit.
    this.on('removeListener', (event: string) => {
      if (event === 'connection') process.nextTick(() => this.#rewatch())
    })
  }

  /** The listening socket's descriptor number, or -1 once closed. */
  get fd(): number {
    return this.#native?.fd ?? -1
  }

  get closed(): boolean {
    return this.#native === null
  }

  #wanted(): boolean {
    return this.#takers.length > 0 || this.listenerCount('connection') > 0
  }

  #accept(): void {
    while (this.#native !== null && this.#wanted()) {
      let handle: native.NativeChannel | null
      try {
        handle = this.#native.tryAccept()
      } catch (err) {
        if (OUT_OF_DESCRIPTORS.has((err as FdpassError).code ?? '')) {
          this.#starved(err)
          break
        }
        const taker = this.#takers.shift()
        if (taker) taker.reject(err)
        else this.emit('error', err)
        continue
      }
      if (handle === null) break
      this.#backoff = 0
      if (!this.#admits(handle)) continue
      const channel = new Channel(handle, this.framing, this.#messageTimeout)
      const taker = this.#takers.shift()
      if (taker) taker.resolve({ value: channel, done: false })
      else this.emit('connection', channel)
    }
    this.#rewatch()
  }

  /**
   * A connection waits but this process has no descriptor for it. It stays
   * in the backlog and would fail again at once, so stop watching and try
   * again later, doubling the pause up to 5 s. An episode (until an accept
   * succeeds) is reported once: to an `'error'` listener if there is one,
   * else as a process warning, so that running out of descriptors for a
   * moment does not end a process that has no `'error'` listener.
   */
  #starved(err: unknown): void {
    if (this.#backoff === 0) {
      if (this.listenerCount('error') > 0) this.emit('error', err)
      else process.emitWarning(`fdpass server ${this.path}: ${(err as Error).message}; retrying with backoff`, { code: (err as FdpassError).code })
    }
    const pause = this.#backoff === 0 ? ACCEPT_RETRY_MS : this.#backoff
    this.#backoff = Math.min(pause * 2, ACCEPT_RETRY_MOST_MS)
    this.#retry = setTimeout(() => {
      this.#retry = undefined
      this.#rewatch()
    }, pause)
  }

  /** Asks the policy about a new connection; refuses (and closes) it unless admitted. */
  #admits(handle: native.NativeChannel): boolean {
    if (this.#allow === undefined) return true
    let peer: PeerCredentials | undefined
    let error: unknown
    try {
      peer = credentialsOf(handle.peer())
      if (this.#allow(peer) === true) return true
    } catch (err) {
      error = err
    }
    handle.refuse()
    this.emit('refused', peer, error)
    return false
  }

  /** Waits for a connection while someone wants one; after `#accept`, that means EAGAIN. */
  #rewatch(): void {
    if (this.#native === null) return
    try {
      this.#watch.set(this.#wanted() && this.#retry === undefined ? READABLE : 0)
    } catch (err) {
      const takers = this.#takers.splice(0)
      for (const taker of takers) taker.reject(err)
      if (takers.length === 0) this.emit('error', err)
    }
  }

  /** The next connection; resolves `done` once the server is closed. */
  [Symbol.asyncIterator](): AsyncIterator<Channel, undefined> {
    return {
      next: () =>
        new Promise<IteratorResult<Channel, undefined>>((resolve, reject) => {
          if (this.#native === null) {
            resolve({ value: undefined, done: true })
            return
          }
          this.#takers.push({ resolve, reject })
          this.#rewatch()
        }),
      return: () => {
        this.close()
        return Promise.resolve({ value: undefined, done: true })
      },
    }
  }

  /** Stops accepting and removes the socket file (if it is still this server's). */
  close(): void {
    const handle = this.#native
    if (handle === null) return
    this.#native = null
    handle.close()
    this.#watch.forget()
    clearTimeout(this.#retry)
    for (const taker of this.#takers.splice(0)) taker.resolve({ value: undefined, done: true })
    process.nextTick(() => this.emit('close'))
  }

  [Symbol.dispose](): void {
    this.close()
  }
}

/**
 * Listens on a Unix socket path (or a Linux abstract name). Synchronous: a
 * path in use throws `EADDRINUSE` here.
 */
export function listen(target: string | ListenOptions, connectionListener?: (channel: Channel) => void): Server {
  const opts = addressOptions<ListenOptions>('target', target)
  const type = normaliseType('type', opts.type, false)
  const framing = normaliseFraming(opts.framing)
  const fileMode = opts.mode === undefined ? undefined : validateInteger('target.mode', opts.mode, 0, 0o7777)
  if (fileMode !== undefined && opts.abstract === true) {
    throw makeError(TypeError, 'ERR_INVALID_ARG_VALUE', 'The "target.mode" option applies to filesystem sockets; abstract names have no permissions')
  }
  const backlog = opts.backlog === undefined ? 511 : validateInteger('target.backlog', opts.backlog, 0, 0x7fffffff)
  if (opts.allow !== undefined && typeof opts.allow !== 'function') throw invalidArgType('target.allow', 'a function', opts.allow)
  validateBoolean('target.refuseFds', opts.refuseFds)
  const messageTimeout = normaliseMessageTimeout('target.messageTimeout', opts.messageTimeout, SERVER_MESSAGE_TIMEOUT_MS)
  // Before the bind: an argument error must leave no socket open and no file behind.
  if (connectionListener !== undefined && typeof connectionListener !== 'function') {
    throw invalidArgType('connectionListener', 'a function', connectionListener)
  }
  const handle = binding.listen({
    path: opts.path,
    abstractName: opts.abstract === true,
    socketType: type as native.SocketType,
    fileMode,
    backlog,
    mode: framing as native.ChannelMode,
    acceptFds: opts.refuseFds !== true,
  })
  const server = new Server(handle, opts.path, opts.abstract === true, framing, messageTimeout, opts.allow)
  if (connectionListener) server.on('connection', connectionListener)
  return server
}
