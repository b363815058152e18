// Descriptors that could reach the wrong peer or the wrong message: every
// case runs the receiver as a real process and checks what each descriptor it
// got refers to, and both processes' descriptor tables.
import { closeSync, fstatSync, mkdtempSync, openSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'

import test, { type ExecutionContext } from 'ava'

import { adoptFd, Channel, closeAll, listen, socketPair, spawnWithChannel } from 'fdpass'

import { fdCount, fdTable, onlyOn, Process, settledFdCount, socketPath, type Line } from './helpers'

const HOSTILE = join(__dirname, 'peers', 'hostile.js')

/** A peer that reports every message it receives, with what each descriptor refers to. */
function reporter(t: ExecutionContext): { peer: Process; channel: Channel } {
  const { child, channel } = spawnWithChannel(process.execPath, [HOSTILE, 'report-received'], { stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => {
    channel.close()
    child.kill('SIGKILL')
  })
  return { peer: new Process(child), channel }
}

/** `entries` followed by holes up to `length` (what `new Array(n)` or `[a, , ]` make). */
function holes<T>(entries: T[], length: number): T[] {
  const sparse = [...entries]
  sparse.length = length
  return sparse
}

/** A file only this test knows, standing for something the peer must never get. */
function secretFile(): string {
  const path = join(mkdtempSync(join(tmpdir(), 'fdpass-secret-')), 'secret')
  writeFileSync(path, 'not for the peer')
  return path
}

// procfs names what a descriptor refers to; elsewhere the reporter could not say.
onlyOn(test.serial, ['linux'], 'the reporter names descriptors through /proc/self/fd')('a sparse fds array or a holder whose fd is no integer: an argument error, nothing sent, nothing left over from an earlier call reaches the wire', async (t) => {
  const before = fdCount()
  const { peer, channel } = reporter(t)
  const secret = openSync(secretFile(), 'r')
  // Another channel sends the secret first, so its number is what an earlier call left behind.
  const [here, there] = socketPair()
  await here.send({ data: 'elsewhere', fds: [secret] })
  const elsewhere = await there.recv()
  const tableBefore = fdTable()
  t.throws(() => channel.send({ data: 'hole', fds: holes([], 1) }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => channel.send({ data: 'hole after one', fds: holes([elsewhere.fds[0]!], 2) }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  // After closeAll, the shared array holds numbers that the next open reuses.
  closeAll(elsewhere.fds)
  const reused = openSync(secretFile(), 'r')
  t.throws(() => channel.send({ data: 'hole after closeAll', fds: holes([], 2) }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  for (const fd of [1.5, Infinity, 2 ** 32 + 1, -0.5]) {
    const holder = Object.assign(new PassThrough(), { fd })
    t.throws(() => channel.send({ data: `fd ${fd}`, fds: [holder] }), { instanceOf: fd < 0 ? TypeError : RangeError, code: fd < 0 ? 'ERR_FDPASS_NO_DESCRIPTOR' : 'ERR_OUT_OF_RANGE' }, `a holder whose fd is ${fd}`)
  }
  closeSync(reused)
  // closeAll closed the one received; the rest of the table is as it was (the listing's own handle aside).
  const described = (rows: string[]): string[] => rows.filter((row) => row.includes(' → '))
  t.is(described(tableBefore).length - 1, described(fdTable()).length, 'only the descriptor closeAll closed is gone')
  await channel.send({ data: 'the only message' })
  channel.close()
  const messages: Line[] = []
  for (;;) {
    const line = await peer.within(peer.line((l) => 'ended' in l || ('data' in l && !messages.includes(l))))
    if ('ended' in line) break
    messages.push(line)
  }
  t.deepEqual(messages, [{ data: 'the only message', fds: [] }], 'the peer got exactly one message, with no descriptor')
  t.is(await peer.exited, 0, peer.stderr)
  here.close()
  there.close()
  closeSync(secret)
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
})

// The reporter names descriptors through procfs.
onlyOn(test.serial, ['linux'], 'the reporter names descriptors through /proc/self/fd')('one owner per descriptor: a number a Channel, Server or ReceivedFd owns cannot be adopted or moved by number, and a move by both number and object releases the object', async (t) => {
  const before = fdCount()
  const { peer, channel } = reporter(t)
  const [a, b] = socketPair()
  const server = listen(socketPath('owned'))
  const received = await (async () => {
    await a.send({ data: 'a file', fds: [openSync(secretFile(), 'r')], move: true })
    return (await b.recv()).fds[0]!
  })()
  const tableBefore = fdTable()
  for (const [what, fd] of [['a Channel', a.fd], ['a Server', server.fd], ['a ReceivedFd', received.fd]] as const) {
    t.throws(() => adoptFd(fd), { code: 'ERR_FDPASS_FD_OWNED', message: new RegExp(`owned by ${what}`) }, `adoptFd of ${what}'s number`)
    t.throws(() => Channel.fromFd(fd), { code: 'ERR_FDPASS_FD_OWNED' }, `Channel.fromFd of ${what}'s number`)
    t.throws(() => channel.send({ data: 'x', fds: [fd], move: true }), { code: 'ERR_FDPASS_FD_OWNED' }, `moving ${what}'s number`)
  }
  t.deepEqual(fdTable(), tableBefore, 'nothing opened, closed or replaced')
  await a.send({ data: 'a still works' })
  t.is((await b.recv()).data.toString(), 'a still works')

  // A number fdpass does not own may be adopted once, not twice.
  const [x, y] = socketPair()
  await a.send({ data: 'a socket', fds: [y.fd] })
  y.close()
  const taken = (await b.recv()).fds[0]!.take()
  const adopted = Channel.fromFd(taken)
  t.throws(() => Channel.fromFd(taken), { code: 'ERR_FDPASS_FD_OWNED', message: /owned by a Channel/ })
  t.throws(() => adoptFd(taken), { code: 'ERR_FDPASS_FD_OWNED' })
  await x.send({ data: 'through the adopted end' })
  t.is((await adopted.recv()).data.toString(), 'through the adopted end')
  adopted.close()
  x.close()

  // Moved as both number and object: sent once, the ReceivedFd released, the number closed once.
  const number = received.fd
  await channel.send({ data: 'moved twice over', fds: [number, received], move: true })
  t.true(received.released, 'the ReceivedFd gave its descriptor up')
  const reused = openSync('/dev/null', 'r')
  t.is(reused, number, 'the number is free again')
  channel.close()
  const line = await peer.within(peer.line((l) => 'data' in l))
  t.is(line.data, 'moved twice over')
  t.is((line.fds as string[]).length, 2, 'the peer got the descriptor under both entries')
  await peer.within(peer.line((l) => 'ended' in l))
  await new Promise((resolve) => setImmediate(resolve))
  t.notThrows(() => fstatSync(reused), 'nothing closed the reused number afterwards')
  closeSync(reused)
  a.close()
  b.close()
  server.close()
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
})
