import { fork, spawn, spawnSync } from 'node:child_process'
import * as dgram from 'node:dgram'
import { EventEmitter, once } from 'node:events'
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import * as http from 'node:http'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test, { type ExecutionContext } from 'ava'

import { adoptFd, inheritedChannel, listen } from 'fdpass'
import { listenFds } from 'fdpass/activation'
import { offerListeners, takeListeners } from 'fdpass/handoff'

import { AS_NOBODY, asRootAgainstNobody, fdCount, fdTable, freePort, nobodyUid, Process, settledFdCount, settledFdTable, socketPath, until, withSystemd } from './helpers'

const EXAMPLE = join(__dirname, '..', '..', 'examples', 'zero-downtime')
const PEER = join(__dirname, 'peers', 'handoff-peer.js')

function peer(role: string, control: string, ...args: string[]): Process {
  return new Process(spawn(process.execPath, [PEER, role, control, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }))
}

/** The example's server.js run on its own (no supervisor), reporting over IPC. */
function exampleServer(control: string, env: Record<string, string> = {}): Process {
  return new Process(fork(join(EXAMPLE, 'server.js'), [], { env: { ...process.env, HANDOFF_SOCKET: control, ...env }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }))
}

function controlPath(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'fdpass-handoff-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return join(dir, 'handoff.sock')
}

/** GET / on 127.0.0.1:`port`; resolves to the answering process's pid. */
function get(port: number, agent: http.Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: '127.0.0.1', port, path: '/', agent }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => (body += chunk))
      response.on('end', () => {
        if (response.statusCode !== 200) reject(new Error(`status ${response.statusCode}`))
        else resolve((JSON.parse(body) as { pid: number }).pid)
      })
      response.on('error', reject)
    })
    request.on('error', reject)
  })
}

/**
 * Requests in a loop until stopped, half over keep-alive connections (used in
 * turn, so none idles into the server's keep-alive timeout) and half on a new
 * connection each: every failure is kept, and which process answered.
 */
class Load {
  answered = 0
  readonly failures: string[] = []
  readonly pids = new Map<number, number>()
  readonly progress = new EventEmitter()
  #running = true
  readonly #workers: Promise<void>[]
  readonly #agents: http.Agent[]

  constructor(port: number, concurrency = 4) {
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: concurrency / 2, scheduling: 'fifo' })
    const fresh = new http.Agent({ keepAlive: false })
    this.#agents = [keepAlive, fresh]
    this.#workers = Array.from({ length: concurrency }, (_, i) => this.#loop(port, i % 2 === 0 ? keepAlive : fresh))
  }

  async #loop(port: number, agent: http.Agent): Promise<void> {
    while (this.#running) {
      try {
        const pid = await get(port, agent)
        this.answered += 1
        this.pids.set(pid, (this.pids.get(pid) ?? 0) + 1)
      } catch (err) {
        this.failures.push(`${(err as NodeJS.ErrnoException).code ?? ''} ${(err as Error).message}`)
      }
      this.progress.emit('request')
    }
  }

  /** Resolves once `pid` has answered a request. */
  answeredBy(pid: number): Promise<void> {
    return until(this.progress, 'request', () => (this.pids.has(pid) ? true : undefined)).then(() => undefined)
  }

  /** Resolves after `count` more requests completed. */
  more(count: number): Promise<void> {
    const target = this.answered + this.failures.length + count
    return until(this.progress, 'request', () => (this.answered + this.failures.length >= target ? true : undefined)).then(() => undefined)
  }

  async stop(): Promise<this> {
    this.#running = false
    await Promise.all(this.#workers)
    for (const agent of this.#agents) agent.destroy()
    return this
  }
}

test('five handoffs under a request loop, with and without keep-alive: no request fails', async (t) => {
  const supervisor = new Process(spawn(process.execPath, [join(EXAMPLE, 'supervisor.js')], { stdio: ['ignore', 'pipe', 'pipe'] }))
  t.teardown(() => supervisor.child.kill('SIGTERM'))
  const first = await supervisor.line((l) => l.event === 'serving')
  const port = (first.address as net.AddressInfo).port
  const load = new Load(port)
  await load.answeredBy(first.pid as number)
  for (let generation = 2; generation <= 6; generation++) {
    supervisor.child.kill('SIGHUP')
    const serving = await supervisor.line((l) => l.event === 'serving' && l.generation === generation)
    await supervisor.line((l) => l.event === 'drained' && l.generation === generation - 1)
    await load.answeredBy(serving.pid as number)
  }
  await load.stop()
  t.deepEqual(load.failures, [], 'no request failed')
  t.is(load.pids.size, 6, `six generations answered: ${JSON.stringify([...load.pids])}`)
  t.false(
    supervisor.lines.some((l) => l.event === 'failed' || l.event === 'exited'),
    JSON.stringify(supervisor.lines),
  )
  t.true(supervisor.lines.filter((l) => l.event === 'drained').every((l) => l.drained === true), 'every old generation drained in time')
})

test('a successor that crashes before it is ready changes nothing: the old process serves on, then hands over', async (t) => {
  const control = controlPath(t)
  const old = exampleServer(control)
  t.teardown(() => old.child.kill('SIGKILL'))
  const serving = await old.line((l) => l.type === 'serving')
  const load = new Load((serving.address as net.AddressInfo).port)
  await load.answeredBy(old.pid)

  const crashing = peer('crash-before-ready', control)
  t.deepEqual((await crashing.line((l) => 'took' in l)).took, ['http'], 'it took the listener over')
  t.is(await crashing.exited, 1)
  t.is((await old.line((l) => l.type === 'failed')).code, 'ERR_FDPASS_HANDOFF_ABORTED')
  await load.more(50)

  const successor = peer('take-and-wait', control, 'serve')
  t.teardown(() => successor.child.kill('SIGKILL'))
  await successor.line((l) => 'took' in l)
  successor.step()
  t.like(await successor.line((l) => 'ready' in l), { ready: { confirmed: true, unused: [], unclaimed: [] } })
  await old.line((l) => l.type === 'drained')
  await load.answeredBy(successor.pid)
  await load.stop()
  successor.step()
  t.deepEqual(load.failures, [], 'no request failed')
  t.deepEqual([...load.pids.keys()].sort(), [old.pid, successor.pid].sort())
  t.is(await old.exited, 0)
})

test('a successor that never says ready times out: the old process serves on, and the late ready is refused', async (t) => {
  const control = controlPath(t)
  const old = exampleServer(control, { READY_TIMEOUT_MS: '300' })
  t.teardown(() => old.child.kill('SIGKILL'))
  const serving = await old.line((l) => l.type === 'serving')
  const load = new Load((serving.address as net.AddressInfo).port)
  await load.answeredBy(old.pid)

  const hung = peer('take-and-wait', control, 'idle')
  t.deepEqual((await hung.line((l) => 'took' in l || 'error' in l)).took, ['http'])
  t.is((await old.line((l) => l.type === 'failed')).code, 'ERR_FDPASS_HANDOFF_TIMEOUT')
  await load.more(50)
  hung.step()
  t.is((await hung.line((l) => 'error' in l)).error, 'ERR_FDPASS_HANDOFF_TIMEOUT', 'its ready() rejects')
  t.is(await hung.exited, 0)
  await load.more(50)
  await load.stop()
  t.deepEqual(load.failures, [], 'no request failed')
  t.deepEqual([...load.pids.keys()], [old.pid], 'only the old process served')
})

test('the old process killed after it sent the listeners: the successor serves, and ready() says it was gone', async (t) => {
  const control = controlPath(t)
  const old = exampleServer(control)
  t.teardown(() => old.child.kill('SIGKILL'))
  const port = ((await old.line((l) => l.type === 'serving')).address as net.AddressInfo).port
  const successor = peer('take-and-wait', control, 'serve')
  t.teardown(() => successor.child.kill('SIGKILL'))
  await successor.line((l) => 'took' in l)
  old.child.kill('SIGKILL')
  await old.exited
  successor.step()
  t.like(await successor.line((l) => 'ready' in l), { ready: { confirmed: false } })
  const agent = new http.Agent({ keepAlive: false })
  const answers = await Promise.all(Array.from({ length: 20 }, () => get(port, agent)))
  t.deepEqual(new Set(answers), new Set([successor.pid]))
  successor.step()
  t.is(await successor.exited, 0)
})

test('one handoff at a time: a second successor gets ERR_FDPASS_HANDOFF_BUSY; names not offered are reported', async (t) => {
  const control = controlPath(t)
  const old = exampleServer(control)
  t.teardown(() => old.child.kill('SIGKILL'))
  const port = ((await old.line((l) => l.type === 'serving')).address as net.AddressInfo).port

  const mismatched = peer('take-and-wait', control, 'serve', 'http,admin')
  t.like(await mismatched.line((l) => 'error' in l), { error: 'ERR_FDPASS_HANDOFF_MISMATCH', missing: ['admin'] })
  t.is((await old.line((l) => l.type === 'failed')).code, 'ERR_FDPASS_HANDOFF_ABORTED')

  const first = peer('take-and-wait', control, 'serve')
  t.teardown(() => first.child.kill('SIGKILL'))
  await first.line((l) => 'took' in l)
  const second = peer('take-and-wait', control, 'serve')
  t.is((await second.line((l) => 'error' in l)).error, 'ERR_FDPASS_HANDOFF_BUSY')
  t.is(await second.exited, 0)

  first.step()
  t.like(await first.line((l) => 'ready' in l), { ready: { confirmed: true } })
  t.is(await old.exited, 0, 'the old process drained and exited')
  t.is(await get(port, new http.Agent()), first.pid)
  first.step()
})

test.serial('every kind of listener is taken over; the old process closes its copies and keeps the Unix path', async (t) => {
  const control = controlPath(t)
  const dir = mkdtempSync(join(tmpdir(), 'fdpass-handoff-kinds-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const unixPath = join(dir, 'service.sock')
  const file = join(dir, 'data.txt')
  writeFileSync(file, 'raw descriptor\n')
  const before = fdCount()
  const old = peer('offer-all', control, unixPath, file)
  const where = await old.line((l) => l.offering === true)

  const takeover = await takeListeners({ path: control })
  t.truthy(takeover)
  if (takeover === null) return
  t.deepEqual([...takeover.listeners.keys()], ['tcp', 'http', 'unix', 'udp', 'raw'])
  t.deepEqual(
    [...takeover.listeners.values()].map(([fd]) => fd?.kind),
    ['tcp-listener', 'tcp-listener', 'unix-stream-listener', 'udp', 'file'],
  )
  const tcp = takeover.get('tcp').toServer((socket) => socket.end('new tcp\n'))
  const web = takeover.get('http').listen(http.createServer((_req, res) => res.end(JSON.stringify({ pid: process.pid }))))
  const unix = takeover.get('unix').toServer((socket) => socket.end('new unix\n'))
  const udp = takeover.get('udp').toDgram()
  const raw = takeover.get('raw').toReadStream({ encoding: 'utf8', start: 0 })
  const ready = await takeover.ready()
  t.deepEqual(ready, { confirmed: true, unclaimed: [], unused: [] })

  const finished = (await old.line((l) => 'finished' in l)) as { finished: { drained: boolean }; before: number; after: number }
  t.true(finished.finished.drained)
  t.is(await old.exited, 0, old.stderr)
  t.is(finished.after, finished.before, `the old process closed its copies: ${JSON.stringify(finished)}`)

  const readAll = (socket: net.Socket): Promise<string> =>
    new Promise((resolve, reject) => {
      let text = ''
      socket.setEncoding('utf8').on('data', (d: string) => (text += d)).on('end', () => resolve(text)).on('error', reject)
    })
  t.is(await readAll(net.connect(where.tcp as number, '127.0.0.1')), 'new tcp\n')
  t.is(await get(where.http as number, new http.Agent()), process.pid)
  t.true(existsSync(unixPath), 'the Unix socket path outlived the old process')
  t.is(await readAll(net.connect(unixPath)), 'new unix\n')
  const datagram = once(udp, 'message')
  const sender = dgram.createSocket('udp4')
  sender.send('ping', where.udp as number, '127.0.0.1')
  t.is(String((await datagram)[0]), 'ping')
  let text = ''
  for await (const chunk of raw) text += chunk as string
  t.is(text, 'raw descriptor\n')

  sender.close()
  udp.close()
  await new Promise((resolve) => tcp.close(resolve))
  await new Promise((resolve) => web.close(resolve))
  await new Promise((resolve) => unix.close(resolve))
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
})

withSystemd(test)('systemd socket activation: the first process takes the socket from systemd-socket-activate, close-on-exec and unset, then hands it over', async (t) => {
  const control = controlPath(t)
  const port = await freePort()

  const activator = new Process(
    spawn('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, '--fdname=http', process.execPath, PEER, 'activated', control], { stdio: ['ignore', 'pipe', 'pipe'] }),
  )
  t.teardown(() => activator.child.kill('SIGKILL'))
  // systemd-socket-activate listens at once and starts the program on the first connection.
  const readLine = async (): Promise<string> => {
    for (;;) {
      const socket = net.connect(port, '127.0.0.1')
      try {
        const [data] = (await once(socket, 'data')) as [Buffer]
        return data.toString()
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 50))
      } finally {
        socket.destroy()
      }
    }
  }
  const first = await readLine()
  const report = await activator.line((l) => 'names' in l)
  t.deepEqual(report.names, ['http'])
  t.deepEqual(report.kinds, ['tcp-listener'])
  t.deepEqual(report.fds, [3])
  t.deepEqual(report.envWas, ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'])
  t.deepEqual(report.envLeft, [], 'the variables are removed')
  t.false((report.inherited as number[]).includes(3), `a child does not inherit descriptor 3: ${JSON.stringify(report.inherited)}`)
  t.regex(first, /^activated \d+\n$/)
  await activator.line((l) => l.offering === true)

  const takeover = await takeListeners({ path: control, names: ['http'] })
  if (takeover === null) return t.fail('nobody offered')
  const server = takeover.get('http').toServer((socket) => socket.end(`successor ${process.pid}\n`))
  t.like(await takeover.ready(), { confirmed: true })
  await activator.line((l) => 'finished' in l)
  t.is(await activator.exited, 0, activator.stderr)
  t.is(await readLine(), `successor ${process.pid}\n`, 'the successor serves on the port systemd bound')
  await new Promise((resolve) => server.close(resolve))
})

test.serial('an offer closed during a handoff tells the successor, whose ready() rejects; the listener is untouched', async (t) => {
  const control = controlPath(t)
  const before = fdCount()
  const server = net.createServer((socket) => socket.end('still here\n'))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const offer = await offerListeners({ path: control, listeners: { tcp: server } })
  const failed: unknown[] = []
  offer.on('failed', (err) => failed.push(err))
  const takeover = await takeListeners({ path: control })
  if (takeover === null) return t.fail('nobody offered')
  t.true(offer.busy)
  offer.close()
  await t.throwsAsync(takeover.ready(), { code: 'ERR_FDPASS_HANDOFF_ABORTED' })
  t.true(server.listening, 'the old process still listens')
  t.deepEqual(failed, [], 'closing is not a failed attempt')
  t.false(existsSync(control), 'the control socket is gone')
  await new Promise((resolve) => server.close(resolve))
  t.is(await settledFdCount(before), before)
})

test.serial('adoptFd refuses a descriptor a ReceivedFd owns; listenFds removes the variables and checks them', (t) => {
  const before = fdCount()
  const saved = { ...process.env }
  t.teardown(() => {
    for (const name of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES']) {
      if (saved[name] === undefined) delete process.env[name]
      else process.env[name] = saved[name]
    }
  })
  const fd = openSync(__filename, 'r')
  const owned = adoptFd(fd)
  t.throws(() => adoptFd(fd), { code: 'ERR_FDPASS_FD_OWNED' })
  owned.close()
  t.throws(() => adoptFd(fd), { code: 'EBADF' })

  Object.assign(process.env, { LISTEN_PID: String(process.pid + 1), LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' })
  t.is(listenFds().size, 0, 'meant for another process: nothing taken')
  t.is(process.env.LISTEN_FDS, undefined, 'and the variables are gone')
  Object.assign(process.env, { LISTEN_PID: String(process.pid), LISTEN_FDS: '2', LISTEN_FDNAMES: 'http' })
  t.throws(() => listenFds(), { code: 'ERR_FDPASS_INVALID_ACTIVATION' })
  t.is(process.env.LISTEN_PID, undefined)
  t.is(fdCount(), before)
})

test.serial('a listener the old process can no longer close is reported, and the handoff completes for the rest', async (t) => {
  const control = controlPath(t)
  const before = fdCount()
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const raw = openSync(__filename, 'r')
  const offer = await offerListeners({ path: control, listeners: { tcp: server, raw } })
  const takeover = await takeListeners({ path: control })
  if (takeover === null) return t.fail('nobody offered')
  const taken = takeover.get('tcp').toServer()
  const file = takeover.get('raw').take()
  // The application closes its copy behind the offer's back.
  closeSync(raw)
  t.like(await takeover.ready(), { confirmed: true, unused: [] })
  const report = await offer.finished
  t.is(report.errors.length, 1)
  t.is((report.errors[0] as NodeJS.ErrnoException).code, 'EBADF')
  t.true(report.drained)
  t.false(server.listening, 'the other listener was closed all the same')
  closeSync(file)
  await new Promise((resolve) => taken.close(resolve))
  t.is(await settledFdCount(before), before)
})

asRootAgainstNobody(test.serial)(
  "a root successor refuses another user's fake predecessor on an abstract name and in a world-writable directory, holding nothing of it; allow admits it",
  async (t) => {
    const nobody = nobodyUid()
    const dir = mkdtempSync(join(tmpdir(), 'fdpass-handoff-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    chmodSync(dir, 0o1777)
    const places = [
      { what: 'an abstract name', path: `fdpass-handoff-${process.pid}-fake`, abstract: true },
      { what: 'a world-writable directory', path: join(dir, 'handoff.sock'), abstract: false },
    ]
    const start = fdTable()
    for (const { what, path, abstract } of places) {
      const fakePredecessor = async (): Promise<Process> => {
        const [command, ...args] = [...AS_NOBODY, process.execPath, PEER, 'offer-to-anyone', path, abstract ? 'abstract' : 'path']
        const fake = new Process(spawn(command as string, args, { stdio: ['ignore', 'pipe', 'pipe'] }))
        t.teardown(() => fake.child.kill('SIGKILL'))
        await fake.within(fake.line((l) => l.offering === true))
        return fake
      }
      const refusing = await fakePredecessor()
      const before = fdTable()
      const refused = await t.throwsAsync(takeListeners({ path, abstract }), { code: 'ERR_FDPASS_PEER_REFUSED' }, what)
      t.like((refused as unknown as { peer: unknown }).peer, { uid: nobody, pid: refusing.pid }, `${what}: the error names the process refused`)
      t.deepEqual(await settledFdTable(before), before, `${what}: nothing the fake predecessor has or sent is held`)
      const broken = await t.throwsAsync(
        takeListeners({
          path,
          abstract,
          allow: () => {
            throw new Error('the policy broke')
          },
        }),
        { code: 'ERR_FDPASS_PEER_REFUSED' },
      )
      t.is(((broken as Error).cause as Error).message, 'the policy broke', `${what}: a policy that throws refuses`)
      t.deepEqual(await settledFdTable(before), before)
      refusing.child.kill('SIGKILL')
      await refusing.exited

      // A fresh one: the refused connections above may still be ending in the first.
      const admitted = await fakePredecessor()
      const takeover = await admitted.within(takeListeners({ path, abstract, allow: (peer) => peer.uid === nobody }))
      if (takeover === null) return t.fail(`${what}: nobody offered`)
      t.is(takeover.predecessor.uid, nobody, `${what}: a policy that admits nobody takes its listener`)
      const server = takeover.get('http').toServer()
      t.like(await takeover.ready(), { confirmed: true })
      t.like(await admitted.within(admitted.line((l) => 'finished' in l)), { finished: { successor: 0 } })
      t.is(await admitted.exited, 0, admitted.stderr)
      await new Promise((resolve) => server.close(resolve))
      t.deepEqual(await settledFdTable(start), start, `${what}: with the fake predecessors gone, the table is as it was`)
    }
  },
)

test.serial('listenFds with a bogus LISTEN_FDS over a process’s own descriptors: ERR_FDPASS_INVALID_ACTIVATION, nothing taken, and the process lives on after GC', async (t) => {
  // LISTEN_PID=$$ names the process the shell execs into: Node, whose own
  // epoll, eventfd and signal pipe sit from descriptor 3 on.
  const script = [
    "const { readdirSync, readlinkSync } = require('node:fs')",
    "const table = () => readdirSync('/proc/self/fd').map((fd) => { try { return `${fd} ${readlinkSync(`/proc/self/fd/${fd}`)}` } catch { return fd } }).join('\\n')",
    'const before = table()',
    'let code',
    "try { require('fdpass/activation').listenFds() } catch (err) { code = err.code }",
    'global.gc()',
    "setTimeout(() => { global.gc(); console.log(JSON.stringify({ code, same: table() === before, alive: true })) }, 20)",
  ].join('\n')
  const run = spawnSync('sh', ['-c', `LISTEN_PID=$$ LISTEN_FDS=10 exec "${process.execPath}" --expose-gc -e "$0"`, script], { encoding: 'utf8', cwd: join(__dirname, '..', '..') })
  t.is(run.status, 0, run.stderr)
  t.deepEqual(JSON.parse(run.stdout.trim()), { code: 'ERR_FDPASS_INVALID_ACTIVATION', same: true, alive: true })
})

test.serial('small ones: FDPASS_FD="" names no descriptor, and listen() checks its connection listener before it binds', (t) => {
  const table = fdTable()
  const saved = process.env.FDPASS_FD
  t.teardown(() => {
    if (saved === undefined) delete process.env.FDPASS_FD
    else process.env.FDPASS_FD = saved
  })
  for (const named of ['', ' 3', '3x', '-1', '1e3']) {
    process.env.FDPASS_FD = named
    t.throws(() => inheritedChannel(), { instanceOf: TypeError, code: 'ERR_FDPASS_NO_DESCRIPTOR' }, `FDPASS_FD=${JSON.stringify(named)}`)
  }
  const path = socketPath('listener-check')
  t.throws(() => listen(path, 'not a function' as never), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.false(existsSync(path), 'no socket file was made')
  t.deepEqual(fdTable(), table, 'no descriptor opened or closed')
})
