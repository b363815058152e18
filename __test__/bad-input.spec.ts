// Bad input to every public function, as a table: each call throws (or its
// promise rejects) with the right error class and Node-style code, and the
// descriptor table is exactly what it was before the call: nothing opened,
// nothing closed.
import { closeSync, openSync } from 'node:fs'
import * as net from 'node:net'

import test from 'ava'

import { adoptFd, Channel, closeAll, connect, listen, socketPair, spawnWithChannel, inheritedChannel, type ReceivedFd } from 'fdpass'
import { offerListeners, takeListeners } from 'fdpass/handoff'

import { fdTable, openFds, socketPath } from './helpers'

type ErrorClass = typeof TypeError | typeof RangeError | typeof Error

interface Row {
  /** What is wrong, in words. */
  what: string
  call: () => unknown
  instanceOf: ErrorClass
  code: string
}

// Fixtures, all made before any row runs.
const [open, peer] = socketPair()
const [closed] = socketPair()
closed.close()
const plainFile = openSync('/dev/null', 'r')
/** A number no descriptor has: above every open one (a closed one would be reused by the next open). */
const closedFd = Math.max(...openFds()) + 100
const destroyedSocket = new net.Socket()
destroyedSocket.destroy()
const detached = new Uint8Array(new ArrayBuffer(16))
structuredClone(detached.buffer, { transfer: [detached.buffer] })
const used: ReceivedFd = adoptFd(openSync('/dev/null', 'r'))
used.close()
const aborted = AbortSignal.abort()
const missingPath = socketPath('missing')

const huge = 2 ** 53
const rows: Row[] = [
  // Channel#send
  { what: 'send(): no message', call: () => open.send(undefined as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'send(): a string for the message', call: () => open.send('hi' as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'send(): data of the wrong type', call: () => open.send({ data: 5 as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'send(): data in a detached buffer', call: () => open.send({ data: detached }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_VALUE' },
  { what: 'send(): fds not an array', call: () => open.send({ fds: 3 as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'send(): a string descriptor', call: () => open.send({ fds: ['3' as never] }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'send(): NaN for a descriptor', call: () => open.send({ fds: [NaN] }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'send(): a negative descriptor', call: () => open.send({ fds: [-1] }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'send(): a fractional descriptor', call: () => open.send({ fds: [1.5] }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'send(): a huge descriptor', call: () => open.send({ fds: [huge] }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'send(): Infinity for a descriptor', call: () => open.send({ fds: [Infinity] }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'send(): a closed descriptor', call: () => open.send({ data: 'x', fds: [closedFd] }), instanceOf: Error, code: 'EBADF' },
  { what: 'send(): a destroyed net.Socket', call: () => open.send({ fds: [destroyedSocket] }), instanceOf: TypeError, code: 'ERR_FDPASS_NO_DESCRIPTOR' },
  { what: 'send(): a ReceivedFd already closed', call: () => open.send({ fds: [used] }), instanceOf: TypeError, code: 'ERR_FDPASS_NO_DESCRIPTOR' },
  { what: 'send(): move not a boolean', call: () => open.send({ data: 'x', move: 'yes' as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'send(): an entry’s move not a boolean', call: () => open.send({ data: 'x', fds: [{ fd: plainFile, move: 1 as never }] }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'send(): on a closed channel', call: () => closed.send({ data: 'x' }), instanceOf: Error, code: 'ERR_FDPASS_CLOSED' },
  // Channel#recv
  { what: 'recv(): options of the wrong type', call: () => open.recv('x' as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'recv(): maxFds NaN', call: () => open.recv({ maxFds: NaN }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'recv(): maxFds negative', call: () => open.recv({ maxFds: -1 }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'recv(): maxFds huge', call: () => open.recv({ maxFds: huge }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'recv(): maxFds a string', call: () => open.recv({ maxFds: '2' as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'recv(): maxBytes zero', call: () => open.recv({ maxBytes: 0 }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'recv(): maxBytes NaN', call: () => open.recv({ maxBytes: NaN }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'recv(): maxBytes huge', call: () => open.recv({ maxBytes: huge }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'recv(): a signal that is no AbortSignal', call: () => open.recv({ signal: {} as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'recv(): a signal already aborted', call: () => open.recv({ signal: aborted }), instanceOf: Error, code: 'ABORT_ERR' },
  { what: 'recv(): on a closed channel', call: () => closed.recv(), instanceOf: Error, code: 'ERR_FDPASS_CLOSED' },
  // Channel#refuseFds and Channel.fromFd
  { what: 'refuseFds(): not a boolean', call: () => open.refuseFds('no' as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'Channel.fromFd(): negative', call: () => Channel.fromFd(-3), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'Channel.fromFd(): NaN', call: () => Channel.fromFd(NaN), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'Channel.fromFd(): a string', call: () => Channel.fromFd('3' as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'Channel.fromFd(): a closed descriptor', call: () => Channel.fromFd(closedFd), instanceOf: Error, code: 'EBADF' },
  { what: 'Channel.fromFd(): a file, not a socket', call: () => Channel.fromFd(plainFile), instanceOf: Error, code: 'ENOTSOCK' },
  { what: 'Channel.fromFd(): bad framing', call: () => Channel.fromFd(open.fd, { framing: 'lines' as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_VALUE' },
  // socketPair, connect, listen
  { what: 'socketPair(): options of the wrong type', call: () => socketPair('stream' as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'socketPair(): unknown type', call: () => socketPair({ type: 'bogus' as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_VALUE' },
  { what: 'connect(): a number for the target', call: () => connect(5 as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'connect(): an empty path', call: () => connect({ path: '' }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'connect(): a dgram type', call: () => connect({ path: missingPath, type: 'dgram' as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_VALUE' },
  { what: 'connect(): a path longer than sun_path', call: () => connect(`/tmp/${'x'.repeat(200)}`), instanceOf: Error, code: 'ENAMETOOLONG' },
  { what: 'connect(): abstract not a boolean', call: () => connect({ path: missingPath, abstract: 1 as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'connect(): nothing listening there', call: () => connect(missingPath), instanceOf: Error, code: 'ENOENT' },
  { what: 'listen(): a number for the target', call: () => listen(5 as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'listen(): a negative backlog', call: () => listen({ path: missingPath, backlog: -1 }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'listen(): a mode that is no number', call: () => listen({ path: missingPath, mode: 'rw' as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'listen(): refuseFds not a boolean', call: () => listen({ path: missingPath, refuseFds: 'yes' as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'listen(): allow not a function', call: () => listen({ path: missingPath, allow: true as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'listen(): a directory that does not exist', call: () => listen(`/nonexistent-dir/${process.pid}.sock`), instanceOf: Error, code: 'ENOENT' },
  // adoptFd, closeAll, ReceivedFd
  { what: 'adoptFd(): negative', call: () => adoptFd(-1), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'adoptFd(): NaN', call: () => adoptFd(NaN), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'adoptFd(): a string', call: () => adoptFd('3' as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'adoptFd(): a closed descriptor', call: () => adoptFd(closedFd), instanceOf: Error, code: 'EBADF' },
  { what: 'closeAll(): not iterable', call: () => closeAll(5 as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'closeAll(): numbers, not ReceivedFds', call: () => closeAll([plainFile] as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'ReceivedFd#take(): already closed', call: () => used.take(), instanceOf: Error, code: 'ERR_FDPASS_FD_RELEASED' },
  { what: 'ReceivedFd#toSocket(): already closed', call: () => used.toSocket(), instanceOf: Error, code: 'ERR_FDPASS_FD_RELEASED' },
  { what: 'ReceivedFd#toChannel(): already closed', call: () => used.toChannel(), instanceOf: Error, code: 'ERR_FDPASS_FD_RELEASED' },
  { what: 'ReceivedFd#fd: already closed', call: () => used.fd, instanceOf: Error, code: 'ERR_FDPASS_FD_RELEASED' },
  // spawnWithChannel, inheritedChannel
  { what: 'spawnWithChannel(): a number for the command', call: () => spawnWithChannel(5 as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'spawnWithChannel(): args not an array', call: () => spawnWithChannel('true', 'x' as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'spawnWithChannel(): a negative fd', call: () => spawnWithChannel('true', [], { fd: -1 }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  { what: 'spawnWithChannel(): a huge fd', call: () => spawnWithChannel('true', [], { fd: huge }), instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' },
  {
    what: 'inheritedChannel(): FDPASS_FD that names no descriptor',
    call: () => {
      process.env.FDPASS_FD = 'three'
      try {
        return inheritedChannel()
      } finally {
        delete process.env.FDPASS_FD
      }
    },
    instanceOf: TypeError,
    code: 'ERR_FDPASS_NO_DESCRIPTOR',
  },
  // fdpass/handoff
  { what: 'offerListeners(): no options', call: () => offerListeners(undefined as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'offerListeners(): listeners not an object', call: () => offerListeners({ path: missingPath, listeners: 5 as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'takeListeners(): a number for the options', call: () => takeListeners(5 as never), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'takeListeners(): names not an array', call: () => takeListeners({ path: missingPath, names: 'web' as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
  { what: 'takeListeners(): allow not a function', call: () => takeListeners({ path: missingPath, allow: true as never }), instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
]

/** Runs `call`, sync or async, and returns what it threw or rejected with. */
async function failureOf(call: () => unknown): Promise<unknown> {
  try {
    const result = call()
    if (result instanceof Promise) await result
  } catch (err) {
    return err
  }
  return undefined
}

for (const row of rows) {
  test.serial(`bad input: ${row.what} → ${row.instanceOf.name} ${row.code}, descriptor table unchanged`, async (t) => {
    const before = fdTable()
    const err = (await failureOf(row.call)) as (Error & { code?: string }) | undefined
    t.truthy(err, 'it failed')
    t.true(err instanceof row.instanceOf, `${err?.constructor?.name}: ${err?.message}`)
    t.is(err?.code, row.code, err?.message)
    t.deepEqual(fdTable(), before)
  })
}

test.after.always(() => {
  open.close()
  peer.close()
  closeSync(plainFile)
})
