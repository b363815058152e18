/**
 * fdpass/handoff: zero-downtime restarts. A running process offers its
 * listening sockets by name on an owner-only control socket; its replacement
 * initialises, takes them over, starts accepting and says it is ready; only
 * then does the old process stop accepting and drain. The sockets themselves
 * never close, so no connection waiting in a backlog is lost. The exchange is
 * specified in docs/HANDOFF.md.
 */
import * as dgram from 'node:dgram'
import { EventEmitter } from 'node:events'
import * as fs from 'node:fs'
import * as net from 'node:net'

import { abortError, invalidArgType, makeError, validateInteger, validateObject, validateSignal, type FdpassError } from './errors'
import { closeAll, connect, listen, ReceivedFd, type Channel, type PeerCredentials, type Server } from './index'

/** A listening socket a process can hand over. */
export type Listener = net.Server | dgram.Socket | ReceivedFd | number

const PROTOCOL_VERSION = 1
/**
 * Descriptors per batch: HAProxy's figure, within the 252 musl's control
 * buffer allows and Linux's 253.
 */
const BATCH_FDS = 252
/** Largest control message either side accepts: names and addresses only. */
const MAX_CONTROL_BYTES = 1024 * 1024
const DEFAULT_READY_TIMEOUT_MS = 60_000
const DEFAULT_DRAIN_TIMEOUT_MS = 30_000
const DEFAULT_TAKE_TIMEOUT_MS = 10_000
const MAX_TIMEOUT_MS = 0x7fffffff

interface ControlMessage {
  type: string
  [field: string]: unknown
}

function handoffError(code: string, message: string, fields: Record<string, unknown> = {}): FdpassError {
  return Object.assign(makeError(Error, `ERR_FDPASS_HANDOFF_${code}`, message), fields)
}

function protocolError(message: string): FdpassError {
  return handoffError('PROTOCOL', `handoff protocol: ${message}`)
}

/**
 * After the other side closed on us: the error it sent before closing, if it
 * sent one (what was queued is still readable), else undefined. Anything else
 * still queued is dropped, its descriptors closed.
 */
async function reasonLeft(channel: Channel, signal: AbortSignal): Promise<unknown> {
  for (;;) {
    try {
      closeAll((await receive(channel, signal, BATCH_FDS)).fds)
    } catch (err) {
      return isGone(err) || signal.aborted ? undefined : err
    }
  }
}

/** Whether an error means the other process closed the connection (exited, crashed, or gave up). */
function isGone(err: unknown): boolean {
  const code = (err as FdpassError | undefined)?.code
  return code === 'ERR_FDPASS_CLOSED' || code === 'EPIPE' || code === 'ECONNRESET'
}

/**
 * Sends within a deadline: a peer that stopped reading must not hold the
 * exchange forever, so when `signal` aborts first the channel is closed,
 * which rejects the send.
 */
async function sendWithin(signal: AbortSignal, channel: Channel, message: ControlMessage, fds: readonly Listener[] = []): Promise<void> {
  const giveUp = (): void => channel.close()
  if (signal.aborted) giveUp()
  signal.addEventListener('abort', giveUp, { once: true })
  try {
    await channel.send({ data: JSON.stringify(message), fds })
  } finally {
    signal.removeEventListener('abort', giveUp)
  }
}

/** How long a last message (a refusal, an error, `stopped`) may take to go out before the connection is closed anyway. */
const FAREWELL_MS = 1000

/** Sends a last message, briefly and ignoring failure (the other side may be gone), then closes. */
async function sayAndClose(channel: Channel, message: ControlMessage): Promise<void> {
  const timer = deadline(FAREWELL_MS, undefined)
  await sendWithin(timer.signal, channel, message).catch(() => {})
  timer.clear()
  channel.close()
}

/**
 * The next control message, parsed. An `error` message from the other side
 * is thrown as the error it names; a malformed one closes what came with it.
 */
async function receive(channel: Channel, signal: AbortSignal, maxFds = 0): Promise<{ message: ControlMessage; fds: ReceivedFd[] }> {
  const { data, fds } = await channel.recv({ maxFds, maxBytes: MAX_CONTROL_BYTES, signal })
  let message: unknown
  try {
    message = JSON.parse(data.toString('utf8'))
  } catch {
    closeAll(fds)
    throw protocolError('a control message is not JSON')
  }
  if (message === null || typeof message !== 'object' || typeof (message as ControlMessage).type !== 'string') {
    closeAll(fds)
    throw protocolError('a control message has no type')
  }
  const control = message as ControlMessage
  if (control.type === 'error') {
    closeAll(fds)
    const code = typeof control.code === 'string' && control.code.startsWith('ERR_FDPASS_HANDOFF_') ? control.code : 'ERR_FDPASS_HANDOFF_ABORTED'
    throw makeError(Error, code, `the other process: ${String(control.message)}`)
  }
  return { message: control, fds }
}

function expectType(message: ControlMessage, type: string): void {
  if (message.type !== type) throw protocolError(`expected '${type}', received '${message.type}'`)
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string')
}

/** A timer that aborts the exchange, and the user's signal if any, as one signal. */
function deadline(ms: number, signal: AbortSignal | undefined): { signal: AbortSignal; expired: () => boolean; clear: () => void } {
  const controller = new AbortController()
  let expired = false
  const timer = setTimeout(() => {
    expired = true
    controller.abort()
  }, ms)
  const onAbort = (): void => controller.abort(signal?.reason)
  signal?.addEventListener('abort', onAbort, { once: true })
  return {
    signal: controller.signal,
    expired: () => expired,
    clear: () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    },
  }
}

function validateTimeout(name: string, value: unknown, fallback: number): number {
  return value === undefined ? fallback : validateInteger(name, value, 1, MAX_TIMEOUT_MS)
}

function validateListener(name: string, listener: unknown): Listener {
  if (listener instanceof net.Server || listener instanceof dgram.Socket || listener instanceof ReceivedFd) return listener
  if (typeof listener === 'number') return validateInteger(name, listener, 0, 0x7fffffff)
  throw invalidArgType(name, 'a net.Server (http, https), a dgram.Socket, a ReceivedFd or a descriptor number', listener)
}

/** What a listener listens on, for reports. */
function describe(listener: Listener): string {
  if (typeof listener === 'number') return `descriptor ${listener}`
  if (listener instanceof ReceivedFd) return listener.released ? 'a released descriptor' : `descriptor ${listener.fd}`
  let address: ReturnType<net.Server['address']>
  try {
    address = listener.address()
  } catch {
    return 'not bound'
  }
  if (address === null) return 'not listening'
  if (typeof address === 'string') return address.replace('\0', '@')
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`
}

// ---------------------------------------------------------------------------
// The old process

export interface OfferOptions {
  /**
   * The control socket's path (or Linux abstract name with `abstract`). The
   * file is created owner-only (`0o600`); a stale one left by a process that
   * died is replaced, a live one is `EADDRINUSE`.
   */
  path: string
  abstract?: boolean
  /**
   * The listening sockets, by name. A name may hold several (IPv4 and IPv6,
   * say). Each must be listening (bound, for UDP) by the time a successor
   * takes it.
   */
  listeners: Readonly<Record<string, Listener | readonly Listener[]>>
  /**
   * How long a successor has from connecting until it says it is ready (default
   * 60 s). Then the handoff is abandoned, the successor told so, and this
   * process keeps serving and offering.
   */
  readyTimeout?: number
  /** How long in-flight connections have to finish after the handoff (default 30 s). */
  drainTimeout?: number
  /**
   * Who may take over, asked with the connecting process's credentials.
   * Default: processes of this user.
   */
  allow?: (peer: PeerCredentials) => boolean
}

/** What the old process reports once it handed over and drained. */
export interface HandoffReport {
  /** The process that took over. */
  successor: PeerCredentials
  /** Names offered that the successor did not take; this process closed them too. */
  unclaimed: string[]
  /** Milliseconds from the successor connecting until this process stopped accepting. */
  handoffMs: number
  /** Milliseconds spent draining. */
  drainMs: number
  /** True if every connection finished before `drainTimeout`. */
  drained: boolean
  /**
   * Connections still open at `drainTimeout`: HTTP(S) connections are closed
   * then; other connections are left to the application.
   */
  remaining: number
  /** Listeners this process could not close (already closed by the application, say); the others were closed. */
  errors: Error[]
}

interface Offered {
  name: string
  listener: Listener
}

/**
 * Listeners on offer to a successor. Events: `'takeover'` (peer) when a
 * successor starts; `'failed'` (error, peer) when an attempt fails, after
 * which this process keeps serving and offering; `'handedOver'` ({ successor,
 * unclaimed }) once this process has stopped accepting; `'drained'` (report).
 */
export class ListenerOffer extends EventEmitter {
  readonly path: string
  /** Resolves once a successor took over and this process drained; never if the offer is closed first. */
  readonly finished: Promise<HandoffReport>
  #server: Server
  readonly #offered: readonly Offered[]
  readonly #readyTimeout: number
  readonly #drainTimeout: number
  #state: 'offering' | 'handing-over' | 'stopped' | 'closed' = 'offering'
  #current: Channel | undefined
  #finish!: (report: HandoffReport) => void

  /** @internal Use {@link offerListeners}. */
  constructor(server: Server, offered: readonly Offered[], readyTimeout: number, drainTimeout: number) {
    super()
    this.#server = server
    this.path = server.path
    this.#offered = offered
    this.#readyTimeout = readyTimeout
    this.#drainTimeout = drainTimeout
    this.finished = new Promise((resolve) => {
      this.#finish = resolve
    })
    server.on('connection', (channel: Channel) => void this.#attempt(channel))
    server.on('error', (err: unknown) => this.emit('failed', err, undefined))
    server.on('refused', (peer: PeerCredentials | undefined, err: unknown) =>
      this.emit('failed', err ?? makeError(Error, 'ERR_FDPASS_PEER_REFUSED', 'a process the allow policy refused tried to take over'), peer),
    )
  }

  /** True while a successor is taking over. */
  get busy(): boolean {
    return this.#state === 'handing-over'
  }

  /**
   * Stops offering: the control socket closes, and a handoff in progress is
   * abandoned (the successor is told, and its `ready()` rejects with
   * `ERR_FDPASS_HANDOFF_ABORTED`). The listeners are untouched. Does nothing
   * once a successor took over.
   */
  close(): void {
    if (this.#state === 'stopped' || this.#state === 'closed') return
    const current = this.#state === 'handing-over' ? this.#current : undefined
    this.#state = 'closed'
    this.#current = undefined
    this.#server.close()
    if (current) void sayAndClose(current, { type: 'error', code: 'ERR_FDPASS_HANDOFF_ABORTED', message: `process ${process.pid} stopped offering its listeners; it keeps serving` })
  }

  async #attempt(channel: Channel): Promise<void> {
    if (this.#state !== 'offering') {
      // One successor at a time; the second hears why before the connection closes.
      if (this.#state === 'handing-over') {
        await sayAndClose(channel, { type: 'error', code: 'ERR_FDPASS_HANDOFF_BUSY', message: `process ${process.pid} is already handing over to another process` })
      } else {
        await sayAndClose(channel, { type: 'error', code: 'ERR_FDPASS_HANDOFF_ABORTED', message: `process ${process.pid} no longer offers its listeners` })
      }
      return
    }
    this.#state = 'handing-over'
    this.#current = channel
    const started = performance.now()
    let peer: PeerCredentials | undefined
    let greeted = false
    let unclaimed: string[] = []
    let handedOver: Listener[] = []
    const timer = deadline(this.#readyTimeout, undefined)
    try {
      peer = channel.peer
      const { message: hello } = await receive(channel, timer.signal)
      expectType(hello, 'hello')
      greeted = true
      if (hello.version !== PROTOCOL_VERSION) {
        throw protocolError(`the successor speaks version ${String(hello.version)}; this process speaks ${PROTOCOL_VERSION}`)
      }
      this.emit('takeover', peer)
      await sendWithin(timer.signal, channel, {
        type: 'offer',
        version: PROTOCOL_VERSION,
        pid: process.pid,
        listeners: this.#offered.map(({ name, listener }) => ({ name, address: describe(listener) })),
      })
      const { message: take } = await receive(channel, timer.signal)
      if (take.type === 'abort') throw handoffError('ABORTED', `the successor gave up: ${String(take.reason)}`)
      expectType(take, 'take')
      const offeredNames = new Set(this.#offered.map((entry) => entry.name))
      if (!isStringArray(take.names) || take.names.some((name) => !offeredNames.has(name))) {
        throw protocolError(`the successor asked for names not offered: ${JSON.stringify(take.names)}`)
      }
      const taken = new Set(take.names)
      const chosen = this.#offered.filter((entry) => taken.has(entry.name))
      for (let at = 0, index = 0; at < chosen.length; at += BATCH_FDS, index++) {
        const batch = chosen.slice(at, at + BATCH_FDS)
        await sendWithin(
          timer.signal,
          channel,
          { type: 'batch', index, names: batch.map((entry) => entry.name) },
          batch.map((entry) => entry.listener),
        )
        const { message: ack } = await receive(channel, timer.signal)
        expectType(ack, 'ack')
        if (ack.index !== index) throw protocolError(`batch ${index} was acknowledged as ${String(ack.index)}`)
      }
      const { message: ready } = await receive(channel, timer.signal)
      if (ready.type === 'abort') throw handoffError('ABORTED', `the successor gave up: ${String(ready.reason)}`)
      expectType(ready, 'ready')
      unclaimed = [...offeredNames].filter((name) => !taken.has(name))
      handedOver = chosen.map((entry) => entry.listener)
    } catch (err) {
      timer.clear()
      // close() abandoned this handoff and told the successor already.
      if (this.#state !== 'handing-over') return
      this.#state = 'offering'
      this.#current = undefined
      const expired = timer.expired()
      const error = expired
        ? handoffError('TIMEOUT', `the successor was not ready within ${this.#readyTimeout} ms; this process keeps serving`)
        : isGone(err)
          ? handoffError('ABORTED', 'the successor closed the connection before it was ready; this process keeps serving')
          : err
      if (isGone(err)) channel.close()
      else await sayAndClose(channel, { type: 'error', code: (error as FdpassError).code ?? 'ERR_FDPASS_HANDOFF_ABORTED', message: (error as Error).message })
      // A connection that never said hello (a probe, a stray client) was no attempt.
      if (greeted || expired) this.emit('failed', error, peer)
      return
    }
    timer.clear()
    if (this.#state !== 'handing-over') {
      // close() came while the successor's ready was on its way: it was told this process serves on.
      channel.close()
      return
    }
    this.#handOver(channel, peer, unclaimed, handedOver, started)
  }

  /**
   * The successor is ready: stop accepting, tell it, then drain. Runs to the
   * end whatever fails on the way: a listener that cannot be closed is
   * reported, and the others are closed all the same.
   */
  #handOver(channel: Channel, successor: PeerCredentials, unclaimed: string[], handedOver: readonly Listener[], started: number): void {
    this.#state = 'stopped'
    this.#current = undefined
    const successors = new Set(handedOver)
    const errors: Error[] = []
    const stopped: Stopped[] = []
    for (const listener of new Set(this.#offered.map((entry) => entry.listener))) {
      try {
        stopped.push(stopAccepting(listener, successors.has(listener), errors))
      } catch (err) {
        errors.push(err as Error)
      }
    }
    this.#server.close()
    const handoffMs = performance.now() - started
    // The successor holds the listeners either way; if it is gone by now, so is the reply.
    void sayAndClose(channel, { type: 'stopped', unclaimed })
    this.emit('handedOver', { successor, unclaimed })
    const drainStarted = performance.now()
    void drainAll(stopped, this.#drainTimeout).then(({ drained, remaining }) => {
      const report: HandoffReport = { successor, unclaimed, handoffMs, drainMs: performance.now() - drainStarted, drained, remaining, errors }
      this.emit('drained', report)
      this.#finish(report)
    })
  }
}

/** A listener that stopped accepting: settles once its connections are done. */
interface Stopped {
  closed: Promise<void>
  /** Connections still open. */
  remaining: () => Promise<number>
  /** Closes what is still open, where this process can (HTTP servers). */
  force: () => void
}

const alreadyStopped: Stopped = { closed: Promise.resolve(), remaining: () => Promise.resolve(0), force: () => {} }

/** An `http.Server` or `https.Server`, which can close its keep-alive connections. */
interface HttpServer extends net.Server {
  closeAllConnections(): void
  closeIdleConnections(): void
}

function isHttpServer(server: net.Server): server is HttpServer {
  return typeof (server as Partial<HttpServer>).closeIdleConnections === 'function'
}

/**
 * Closes this process's copy of a listener; the socket lives on in the
 * successor. A server keeps serving its open connections: HTTP responses from
 * now on say `Connection: close`, so keep-alive clients move to the successor
 * after their current request instead of racing a close of an idle connection.
 */
function stopAccepting(listener: Listener, successorHasIt: boolean, errors: Error[]): Stopped {
  if (typeof listener === 'number') {
    fs.closeSync(listener)
    return alreadyStopped
  }
  if (listener instanceof ReceivedFd) {
    listener.close()
    return alreadyStopped
  }
  if (listener instanceof dgram.Socket) {
    listener.close()
    return alreadyStopped
  }
  const server = listener
  if (isHttpServer(server)) {
    server.prependListener('request', (_request: unknown, response: { headersSent: boolean; setHeader: (name: string, value: string) => void }) => {
      if (!response.headersSent) response.setHeader('Connection', 'close')
    })
  }
  // Node's close() unlinks the path of a Unix server this process bound
  // (nodejs/node#19729), which is now the successor's too: keep a second name
  // for the socket across the close and put it back. Not for a socket no
  // successor took: its path goes with it.
  const address = server.address()
  const path = successorHasIt && typeof address === 'string' && !address.startsWith('\0') ? address : undefined
  let spare: string | undefined
  if (path !== undefined) {
    try {
      const second = `${path}.fdpass-handoff-${process.pid}`
      fs.rmSync(second, { force: true })
      fs.linkSync(path, second)
      spare = second
    } catch (err) {
      // Stop accepting all the same; the path is lost, and reported.
      errors.push(err as Error)
    }
  }
  // net.Server's close, not http's: http's also closes idle keep-alive
  // connections at once, racing clients that are sending on them.
  const closed = new Promise<void>((resolve) => net.Server.prototype.close.call(server, () => resolve()))
  if (spare !== undefined && path !== undefined) fs.renameSync(spare, path)
  return {
    closed,
    remaining: () => new Promise((resolve) => server.getConnections((err, count) => resolve(err ? 0 : count))),
    force: () => {
      if (isHttpServer(server)) server.closeAllConnections()
    },
  }
}

async function drainAll(stopped: readonly Stopped[], timeoutMs: number): Promise<{ drained: boolean; remaining: number }> {
  let timer: NodeJS.Timeout | undefined
  const drained = await Promise.race([
    Promise.all(stopped.map((listener) => listener.closed)).then(() => true),
    new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs)
    }),
  ])
  clearTimeout(timer)
  if (drained) return { drained, remaining: 0 }
  let remaining = 0
  for (const listener of stopped) remaining += await listener.remaining()
  for (const listener of stopped) listener.force()
  return { drained, remaining }
}

/** Listens on the control path, replacing a file no process listens on any more. */
async function listenForSuccessors(options: { path: string; abstract: boolean; allow: (peer: PeerCredentials) => boolean }): Promise<Server> {
  const listenOptions = { path: options.path, abstract: options.abstract, mode: options.abstract ? undefined : 0o600, allow: options.allow }
  try {
    return listen(listenOptions)
  } catch (err) {
    if ((err as FdpassError).code !== 'EADDRINUSE' || options.abstract) throw err
  }
  try {
    const probe = await connect({ path: options.path })
    probe.close()
  } catch (err) {
    const code = (err as FdpassError).code
    if (code !== 'ECONNREFUSED' && code !== 'ENOENT') throw err
    fs.rmSync(options.path, { force: true })
    return listen(listenOptions)
  }
  throw Object.assign(makeError(Error, 'EADDRINUSE', `another process is offering listeners at ${options.path}`), { syscall: 'bind' })
}

/**
 * Offers `listeners` to a successor that calls {@link takeListeners} with the
 * same path. One successor at a time: another that connects meanwhile gets
 * `ERR_FDPASS_HANDOFF_BUSY`. If a successor fails (exits, times out, asks for
 * names not offered), this process keeps serving and offering. Once one is
 * ready, this process stops accepting, closes the control socket and drains:
 * watch `finished`, then exit.
 */
export async function offerListeners(options: OfferOptions): Promise<ListenerOffer> {
  const opts = validateObject<OfferOptions>('options', options)
  if (options === undefined) throw invalidArgType('options', 'of type object', options)
  if (typeof opts.path !== 'string' || opts.path.length === 0) throw invalidArgType('options.path', 'a non-empty string', opts.path)
  const listeners = opts.listeners
  if (listeners === null || typeof listeners !== 'object') throw invalidArgType('options.listeners', 'an object of named listeners', listeners)
  const offered: Offered[] = []
  for (const [name, value] of Object.entries(listeners)) {
    if (name.length === 0) throw makeError(TypeError, 'ERR_INVALID_ARG_VALUE', 'listener names must not be empty')
    const group = Array.isArray(value) ? (value as readonly unknown[]) : [value]
    group.forEach((listener, i) => offered.push({ name, listener: validateListener(`options.listeners.${name}${Array.isArray(value) ? `[${i}]` : ''}`, listener) }))
  }
  if (offered.length === 0) throw makeError(TypeError, 'ERR_INVALID_ARG_VALUE', 'options.listeners names no listener')
  const readyTimeout = validateTimeout('options.readyTimeout', opts.readyTimeout, DEFAULT_READY_TIMEOUT_MS)
  const drainTimeout = validateTimeout('options.drainTimeout', opts.drainTimeout, DEFAULT_DRAIN_TIMEOUT_MS)
  if (opts.allow !== undefined && typeof opts.allow !== 'function') throw invalidArgType('options.allow', 'a function', opts.allow)
  const uid = process.getuid?.()
  const allow = opts.allow ?? ((peer: PeerCredentials) => peer.uid === uid)
  const server = await listenForSuccessors({ path: opts.path, abstract: opts.abstract === true, allow })
  return new ListenerOffer(server, offered, readyTimeout, drainTimeout)
}

// ---------------------------------------------------------------------------
// The new process

export interface TakeOptions {
  /** The control socket the running process offers on. */
  path: string
  abstract?: boolean
  /**
   * Names this process needs; default: every name offered. A needed name the
   * running process does not offer fails the takeover with
   * `ERR_FDPASS_HANDOFF_MISMATCH` (the error lists `missing` and `offered`),
   * and the running process keeps serving.
   */
  names?: readonly string[]
  /** Names taken if offered, and otherwise listed in {@link Takeover.missing}. */
  optional?: readonly string[]
  /** Time for the exchange, from connecting until every listener arrived, and for the ready confirmation (default 10 s). */
  timeout?: number
  signal?: AbortSignal
  /**
   * Whose listeners this process takes, asked with the offering process's
   * credentials (as the kernel recorded them when it listened) before
   * anything is sent to it or read from it: `true` admits it; anything else,
   * or a throw, refuses it with `ERR_FDPASS_PEER_REFUSED`, the connection
   * closed unread. Default: processes of this user, or root. Anyone who can
   * bind the control socket's name (any process, for an abstract name) can
   * offer listeners there.
   */
  allow?: (peer: PeerCredentials) => boolean
}

/** What {@link Takeover.ready} learned. */
export interface ReadyReport {
  /**
   * True when the old process confirmed that it stopped accepting; false when
   * it was gone before it could (it exited or was killed: its copies of the
   * listeners went with it).
   */
  confirmed: boolean
  /** Names the old process offered that this one did not take; it closed them. */
  unclaimed: string[]
  /** Names this process took but had not converted by `ready()`; they were closed. */
  unused: string[]
}

/**
 * Listeners taken over from a running process. Convert them (`listen(server)`,
 * `toServer()`, `toDgram()`), start accepting, then call {@link ready}.
 */
export class Takeover {
  /** The process that offered the listeners. */
  readonly predecessor: PeerCredentials
  /** The listeners taken, by name, in the order offered. */
  readonly listeners: ReadonlyMap<string, readonly ReceivedFd[]>
  /** Names offered that this process did not take. */
  readonly unclaimed: readonly string[]
  /** Optional names the running process did not offer. */
  readonly missing: readonly string[]
  #channel: Channel | null
  readonly #timeout: number

  /** @internal Use {@link takeListeners}. */
  constructor(channel: Channel, listeners: Map<string, ReceivedFd[]>, unclaimed: string[], missing: string[], timeout: number) {
    this.#channel = channel
    this.predecessor = channel.peer
    this.listeners = listeners
    this.unclaimed = Object.freeze(unclaimed)
    this.missing = Object.freeze(missing)
    this.#timeout = timeout
  }

  /** The first listener taken under `name`; throws `ERR_FDPASS_HANDOFF_MISMATCH` if none was. */
  get(name: string): ReceivedFd {
    const fd = this.listeners.get(name)?.[0]
    if (fd === undefined) throw handoffError('MISMATCH', `no listener named '${name}' was taken over`, { missing: [name], offered: [...this.listeners.keys()] })
    return fd
  }

  /**
   * Tells the old process this one is serving. Listeners not converted by now
   * are closed (reported as `unused`). Resolves once the old process has
   * stopped accepting, or was found gone. Rejects with
   * `ERR_FDPASS_HANDOFF_TIMEOUT` or `ERR_FDPASS_HANDOFF_ABORTED` if the old
   * process had already given up on this handoff: it is still serving, so
   * this process should stop and exit. Rejects with
   * `ERR_FDPASS_HANDOFF_UNCONFIRMED` if the old process did not answer within
   * `timeout`: it will stop when it reads the ready message, so keep serving.
   */
  async ready(): Promise<ReadyReport> {
    const channel = this.#channel
    if (channel === null) throw handoffError('ABORTED', 'this takeover was already made ready or aborted')
    this.#channel = null
    const unused = this.#closeUnconverted()
    const timer = deadline(this.#timeout, undefined)
    try {
      await sendWithin(timer.signal, channel, { type: 'ready' })
      const { message } = await receive(channel, timer.signal)
      expectType(message, 'stopped')
      return { confirmed: true, unclaimed: [...this.unclaimed], unused }
    } catch (err) {
      if (timer.expired()) {
        throw handoffError(
          'UNCONFIRMED',
          `the old process did not confirm within ${this.#timeout} ms that it stopped accepting; it stops when it reads the ready message, so keep serving`,
        )
      }
      if (isGone(err)) {
        // It refused this handoff before closing (a timeout, a close()), or it is gone.
        const reason = await reasonLeft(channel, timer.signal)
        if (reason !== undefined) throw reason
        return { confirmed: false, unclaimed: [...this.unclaimed], unused }
      }
      throw err
    } finally {
      timer.clear()
      channel.close()
    }
  }

  /**
   * Gives up: the old process is told and keeps serving; listeners not
   * converted yet are closed. Converted ones are yours to close.
   */
  abort(reason = 'the successor aborted'): void {
    const channel = this.#channel
    if (channel === null) return
    this.#channel = null
    this.#closeUnconverted()
    const timer = deadline(FAREWELL_MS, undefined)
    void sendWithin(timer.signal, channel, { type: 'abort', reason: String(reason) })
      .catch(() => {})
      .finally(() => {
        timer.clear()
        channel.close()
      })
  }

  #closeUnconverted(): string[] {
    const unused: string[] = []
    for (const [name, fds] of this.listeners) {
      if (fds.some((fd) => !fd.released)) unused.push(name)
      closeAll(fds)
    }
    return unused
  }
}

/**
 * Closes the connection, unread, and throws `ERR_FDPASS_PEER_REFUSED` unless
 * the policy admits the process at the other end: nothing it sent (queued
 * descriptors included) ever reaches this process.
 */
function refuseUnlessAllowed(channel: Channel, allow: (peer: PeerCredentials) => boolean, path: string): void {
  let peer: PeerCredentials | undefined
  let cause: unknown
  try {
    peer = channel.peer
    if (allow(peer) === true) return
  } catch (err) {
    cause = err
  }
  channel.close()
  const who = peer === undefined ? 'the process' : `the process${peer.pid === undefined ? '' : ` ${peer.pid}`} (uid ${peer.uid})`
  const error = makeError(Error, 'ERR_FDPASS_PEER_REFUSED', `${who} offering listeners at ${path} is not one the allow policy takes them from; nothing was taken`)
  throw Object.assign(error, { peer }, cause === undefined ? {} : { cause })
}

/**
 * Takes over the listeners a running process offers at `path` (see
 * {@link offerListeners}): first the list of names, then the descriptors in
 * acknowledged batches. Resolves to null when no process is offering there (a
 * first start: listen yourself). The process found there must pass `allow`
 * (default: this user or root) before anything is exchanged, else this
 * rejects with `ERR_FDPASS_PEER_REFUSED`. Call it once this process is
 * initialised, convert the listeners, then call {@link Takeover.ready}. On any
 * failure everything received is closed and the running process keeps serving.
 */
export async function takeListeners(options: TakeOptions): Promise<Takeover | null> {
  const opts = validateObject<TakeOptions>('options', options)
  if (options === undefined) throw invalidArgType('options', 'of type object', options)
  if (typeof opts.path !== 'string' || opts.path.length === 0) throw invalidArgType('options.path', 'a non-empty string', opts.path)
  for (const field of ['names', 'optional'] as const) {
    if (opts[field] !== undefined && !isStringArray(opts[field])) throw invalidArgType(`options.${field}`, 'an array of strings', opts[field])
  }
  const timeout = validateTimeout('options.timeout', opts.timeout, DEFAULT_TAKE_TIMEOUT_MS)
  const signal = validateSignal('options.signal', opts.signal)
  if (opts.allow !== undefined && typeof opts.allow !== 'function') throw invalidArgType('options.allow', 'a function', opts.allow)
  const uid = process.getuid?.()
  const allow = opts.allow ?? ((peer: PeerCredentials) => peer.uid === uid || peer.uid === 0)
  if (signal?.aborted) throw abortError(signal)

  let channel: Channel
  try {
    channel = await connect({ path: opts.path, abstract: opts.abstract === true, signal })
  } catch (err) {
    const code = (err as FdpassError).code
    if (code === 'ENOENT' || code === 'ECONNREFUSED') return null
    throw err
  }
  refuseUnlessAllowed(channel, allow, opts.path)
  const timer = deadline(timeout, signal)
  const received: ReceivedFd[] = []
  try {
    await sendWithin(timer.signal, channel, { type: 'hello', version: PROTOCOL_VERSION, pid: process.pid })
    const { message: offer } = await receive(channel, timer.signal)
    expectType(offer, 'offer')
    const entries = offer.listeners
    if (!Array.isArray(entries) || !entries.every((entry) => typeof (entry as { name?: unknown })?.name === 'string')) {
      throw protocolError('the offer lists no names')
    }
    const offeredNames = entries.map((entry) => (entry as { name: string }).name)
    const offered = new Set(offeredNames)
    const needed = opts.names ?? [...offered]
    const missing = needed.filter((name) => !offered.has(name))
    if (missing.length > 0) {
      const error = handoffError(
        'MISMATCH',
        `the running process does not offer ${missing.map((name) => `'${name}'`).join(', ')} (it offers ${[...offered].map((name) => `'${name}'`).join(', ')}); it keeps serving`,
        { missing, offered: [...offered] },
      )
      await sendWithin(timer.signal, channel, { type: 'abort', reason: error.message }).catch(() => {})
      throw error
    }
    const taking = new Set([...needed, ...(opts.optional ?? []).filter((name) => offered.has(name))])
    await sendWithin(timer.signal, channel, { type: 'take', names: [...taking] })
    const expected = offeredNames.filter((name) => taking.has(name)).length
    const listeners = new Map<string, ReceivedFd[]>()
    for (let index = 0; received.length < expected; index++) {
      const { message: batch, fds } = await receive(channel, timer.signal, BATCH_FDS)
      received.push(...fds)
      expectType(batch, 'batch')
      const names = batch.names
      if (batch.index !== index || !isStringArray(names) || names.length !== fds.length || received.length > expected || names.some((name) => !taking.has(name))) {
        throw protocolError(`batch ${index} does not match what was asked for`)
      }
      names.forEach((name, i) => {
        const group = listeners.get(name)
        if (group) group.push(fds[i] as ReceivedFd)
        else listeners.set(name, [fds[i] as ReceivedFd])
      })
      await sendWithin(timer.signal, channel, { type: 'ack', index })
    }
    const unclaimed = [...offered].filter((name) => !taking.has(name))
    const optionalMissing = (opts.optional ?? []).filter((name) => !offered.has(name))
    return new Takeover(channel, listeners, unclaimed, optionalMissing, timeout)
  } catch (err) {
    closeAll(received)
    // A send that failed because the other side closed may leave its reason (busy, say) to read.
    const reason = isGone(err) ? await reasonLeft(channel, timer.signal) : undefined
    channel.close()
    if (signal?.aborted) throw abortError(signal)
    if (timer.expired()) throw handoffError('TIMEOUT', `the running process did not hand its listeners over within ${timeout} ms; it keeps serving`)
    if (reason !== undefined) throw reason
    if (isGone(err)) throw handoffError('ABORTED', 'the running process closed the connection during the handoff')
    throw err
  } finally {
    timer.clear()
  }
}
