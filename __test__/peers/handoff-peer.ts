/**
 * The other process in the handoff specs. Usage: node handoff-peer.js ROLE
 * CONTROL_PATH [ARGS]. Prints JSON lines: what it did, for the spec to check.
 * Roles that wait for the spec read one line of stdin per step.
 */
import * as dgram from 'node:dgram'
import { once } from 'node:events'
import { openSync } from 'node:fs'
import * as http from 'node:http'
import * as net from 'node:net'
import { createInterface } from 'node:readline'

import { listenFds } from 'fdpass/activation'
import { offerListeners, takeListeners } from 'fdpass/handoff'

import { fdCount, openAfterExec, openFds } from '../helpers'

const say = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(line)}\n`)
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
/** Waits for the spec's next line on stdin. */
async function step(): Promise<string> {
  const { value, done } = await stdinLines.next()
  return done ? '' : (value as string)
}

function listening(server: net.Server | dgram.Socket, start: () => void): Promise<void> {
  const ready = once(server, 'listening')
  start()
  return ready.then(() => undefined)
}

const roles: Record<string, (control: string, args: string[]) => Promise<void>> = {
  /**
   * Offers one listener of every kind: TCP, HTTP, a Unix socket bound by path,
   * UDP, and a raw descriptor (a file); reports where, then the handoff.
   */
  async 'offer-all'(control, [unixPath, file]) {
    // libuv keeps a spare descriptor from the first listen on (for EMFILE): open it first.
    const warm = net.createServer()
    await listening(warm, () => warm.listen(0, '127.0.0.1'))
    await new Promise((resolve) => warm.close(resolve))
    const before = fdCount()
    const tcp = net.createServer((socket) => socket.end('old tcp\n'))
    const web = http.createServer((_req, res) => res.end('old http'))
    const unix = net.createServer((socket) => socket.end('old unix\n'))
    const udp = dgram.createSocket('udp4')
    await listening(tcp, () => tcp.listen(0, '127.0.0.1'))
    await listening(web, () => web.listen(0, '127.0.0.1'))
    await listening(unix, () => unix.listen(unixPath as string))
    await listening(udp, () => udp.bind(0, '127.0.0.1'))
    const raw = openSync(file as string, 'r')
    const offer = await offerListeners({ path: control, listeners: { tcp, http: web, unix, udp, raw }, drainTimeout: 10_000 })
    say({ tcp: (tcp.address() as net.AddressInfo).port, http: (web.address() as net.AddressInfo).port, udp: udp.address().port, offering: true })
    const report = await offer.finished
    say({ finished: report, before, after: fdCount() })
  },

  /** The generation systemd-socket-activate starts: takes the passed sockets, checks them, offers them. */
  async activated(control) {
    const env = ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'].filter((name) => process.env[name] !== undefined)
    const passed = listenFds()
    const http = passed.get('http') ?? []
    const inherited = openAfterExec(openFds())
    say({
      names: [...passed.keys()],
      kinds: http.map((fd) => fd.kind),
      fds: http.map((fd) => fd.fd),
      envLeft: ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'].filter((name) => process.env[name] !== undefined),
      envWas: env,
      inherited,
    })
    const server = http[0]?.toServer((socket) => socket.end(`activated ${process.pid}\n`))
    if (!server) throw new Error('no socket named http was passed')
    const offer = await offerListeners({ path: control, listeners: { http: server } })
    say({ offering: true })
    say({ finished: await offer.finished })
  },

  /**
   * A fake predecessor (the specs run it as another user): offers a TCP
   * listener of its own to anyone, on a path or, with `abstract`, an abstract
   * name; reports the port, then whom it handed over to.
   */
  async 'offer-to-anyone'(control, [where]) {
    const tcp = net.createServer((socket) => socket.end('attacker\n'))
    await listening(tcp, () => tcp.listen(0, '127.0.0.1'))
    const offer = await offerListeners({ path: control, abstract: where === 'abstract', listeners: { http: tcp }, allow: () => true })
    say({ port: (tcp.address() as net.AddressInfo).port, offering: true })
    const report = await offer.finished
    say({ finished: { successor: report.successor.uid, unclaimed: report.unclaimed } })
  },

  /** Takes the listeners over, then fails before it serves. */
  async 'crash-before-ready'(control) {
    const takeover = await takeListeners({ path: control, names: ['http'] })
    say({ took: [...(takeover?.listeners.keys() ?? [])] })
    throw new Error('initialisation failed after the takeover')
  },

  /**
   * Takes the listeners over; with `serve`, serves on them (answering its
   * pid), with `idle` never converts them. Says ready when told on stdin,
   * reports how that went, and exits on the next line.
   */
  async 'take-and-wait'(control, [mode, names]) {
    let takeover
    try {
      takeover = await takeListeners({ path: control, names: names === undefined ? ['http'] : names.split(',') })
    } catch (err) {
      say({ error: (err as { code?: string }).code, missing: (err as { missing?: string[] }).missing })
      return
    }
    if (takeover === null) throw new Error('nobody is offering')
    const server = http.createServer((_req, res) => res.end(JSON.stringify({ pid: process.pid })))
    if (mode === 'serve') await listening(server, () => takeover.get('http').listen(server))
    say({ took: [...takeover.listeners.keys()], predecessor: takeover.predecessor.pid })
    await step()
    try {
      say({ ready: await takeover.ready() })
    } catch (err) {
      say({ error: (err as { code?: string }).code })
      return
    }
    await step()
  },
}

const [role, control, ...args] = process.argv.slice(2)
const run = roles[role as string]
if (!run) throw new Error(`unknown role ${role}`)
run(control as string, args).then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err)
    process.exit(1)
  },
)
