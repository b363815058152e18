// Hostile and faulty peers, each a real process (peers/hostile.ts) on the
// other end of a channel: whatever they send or however they fail, this side
// reports a typed error, keeps what it can, and leaks no descriptor.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test, { type ExecutionContext } from 'ava'

import { closeAll, connect, limits, socketPair, spawnWithChannel, type Channel, type SocketType } from 'fdpass'

import { AS_NOBODY, asRootAgainstNobody, devNulls, fdCount, onlyOn, Process, receiveStorm, sendStorm, setSocketOption, settledFdCount, shrinkSocketBuffers, SO_PASSPIDFD, SOCKET_TYPES, socketInode, socketPath, type Line } from './helpers'

const HOSTILE = join(__dirname, 'peers', 'hostile.js')

interface Started {
  peer: Process
  channel: Channel
  /** This process's descriptor count before the peer started. */
  before: number
}

/**
 * Starts hostile.js in `role` with a framed channel to it; `wrapper` runs in
 * front of node (to lower a limit or drop privileges). Teardown kills the
 * peer and closes the channel if the case did not.
 */
function start(t: ExecutionContext, role: string, args: string[] = [], options: { wrapper?: string[]; nodeOptions?: string[]; type?: SocketType; messageTimeout?: number } = {}): Started {
  const before = fdCount()
  const [command, ...prefix] = [...(options.wrapper ?? []), process.execPath, ...(options.nodeOptions ?? [])]
  const { child, channel } = spawnWithChannel(command as string, [...prefix, HOSTILE, role, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    type: options.type,
    messageTimeout: options.messageTimeout,
  })
  const peer = new Process(child)
  t.teardown(() => {
    channel.close()
    child.kill('SIGKILL')
  })
  return { peer, channel, before }
}

/** Closes the channel, waits for the peer, and checks this process is back at its baseline. */
async function finish(t: ExecutionContext, { peer, channel, before }: Started, exitCode: number | null = 0): Promise<void> {
  channel.close()
  t.is(await peer.exited, exitCode, peer.stderr)
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
}

/** A shell in front of node that lowers RLIMIT_NOFILE to `limit`. */
function withLimit(limit: number): string[] {
  return ['sh', '-c', `ulimit -n ${limit} && exec "$0" "$@"`]
}

test.serial('a peer flooding descriptors nobody asked for: each message is refused and closed, the table stays flat, the next message arrives', async (t) => {
  const flood = 500
  const started = start(t, 'flood-framed', [String(flood)])
  const { peer, channel } = started
  const baseline = fdCount() // with the channel and the pipes to the peer
  let most = 0
  for (let i = 0; i < flood; i++) {
    await t.throwsAsync(peer.within(channel.recv({ maxFds: 0 })), { code: 'ERR_FDPASS_TOO_MANY_FDS' })
    most = Math.max(most, fdCount())
  }
  const after = await peer.within(channel.recv({ maxFds: 0 }))
  t.is(after.data.toString(), 'after the flood')
  // At most one message's four descriptors are held at a time.
  t.true(most <= baseline + 4, `at most ${most - baseline} descriptors held during a flood of ${flood * 4}`)
  await finish(t, started)
})

test.serial('descriptors riding on bytes that are no frame: ERR_FDPASS_PROTOCOL, all closed, and the flood stops when this side closes', async (t) => {
  const started = start(t, 'flood-unframed')
  const { peer, channel } = started
  const err = await t.throwsAsync(peer.within(channel.recv()), { code: 'ERR_FDPASS_PROTOCOL' })
  t.regex(err?.message ?? '', /bad frame magic/)
  await t.throwsAsync(channel.recv(), { code: 'ERR_FDPASS_CLOSED' }, 'the stream is out of step: it ends')
  channel.close()
  const stopped = await peer.within(peer.line((l) => 'stoppedBy' in l))
  t.true(['EPIPE', 'ECONNRESET'].includes(stopped.stoppedBy as string), JSON.stringify(stopped))
  await finish(t, started)
})

test.serial('a frame header declaring 5 descriptors with 2 sent: ERR_FDPASS_PROTOCOL, and the 2 are closed', async (t) => {
  const started = start(t, 'claim-more-fds')
  const { peer, channel } = started
  const err = await t.throwsAsync(peer.within(channel.recv({ maxFds: 8 })), { code: 'ERR_FDPASS_PROTOCOL' })
  t.regex(err?.message ?? '', /declares 5 descriptors but 2 arrived/)
  peer.step()
  await finish(t, started)
})

test.serial('a frame header declaring 1,000 bytes with 10 sent, then close: ERR_FDPASS_PROTOCOL, its 3 descriptors closed', async (t) => {
  const started = start(t, 'claim-more-bytes')
  const { peer, channel } = started
  const err = await t.throwsAsync(peer.within(channel.recv({ maxFds: 8 })), { code: 'ERR_FDPASS_PROTOCOL' })
  t.regex(err?.message ?? '', /middle of a message; 3 descriptors of it were closed/)
  await finish(t, started)
})

test.serial('a peer killed in the middle of a frame: ERR_FDPASS_PROTOCOL, its descriptors closed', async (t) => {
  const started = start(t, 'die-mid-frame')
  const { peer, channel } = started
  await peer.within(peer.line((l) => l.sentHalf === true))
  peer.child.kill('SIGKILL')
  const err = await t.throwsAsync(channel.recv({ maxFds: 8 }), { code: 'ERR_FDPASS_PROTOCOL' })
  t.regex(err?.message ?? '', /middle of a message; 2 descriptors of it were closed/)
  await finish(t, started, null)
})

test.serial('a peer that sends its own socket over itself and exits: the channel lives on through it until it is closed, then ends', async (t) => {
  const started = start(t, 'send-itself')
  const { peer, channel } = started
  const message = await peer.within(channel.recv())
  const { inode } = await peer.line((l) => 'inode' in l)
  t.is(await peer.exited, 0)
  t.is(message.data.toString(), 'my own socket')
  t.is(message.fds.length, 1)
  const [itself] = message.fds
  t.is(itself!.kind, 'unix-stream')
  t.is(socketInode(itself!.fd), inode as number, 'the descriptor is the peer’s own end of this channel')
  // The peer process is gone, but its socket is alive in this process: the
  // channel has no end of stream, and what is sent through that socket arrives.
  const loop = itself!.toChannel()
  await loop.send({ data: 'round the loop' })
  t.is((await channel.recv()).data.toString(), 'round the loop')
  loop.close()
  await t.throwsAsync(channel.recv(), { code: 'ERR_FDPASS_CLOSED' }, 'closing the last copy ends the channel')
  await finish(t, started)
})

// Only Linux lists every Unix socket by inode (/proc/net/unix); macOS and FreeBSD have no such list.
onlyOn(test.serial, ['linux'], 'no list of Unix sockets by inode (/proc/net/unix)')('a peer that sends its own socket over itself and exits: closing the channel unread frees that socket', async (t) => {
  const started = start(t, 'send-itself')
  const { peer } = started
  const { inode } = await peer.within(peer.line((l) => 'inode' in l))
  t.is(await peer.exited, 0)
  const listed = (): boolean => readFileSync('/proc/net/unix', 'utf8').split('\n').some((row) => row.trim().split(/\s+/)[6] === String(inode))
  t.true(listed(), 'the peer’s socket outlives the peer while it is queued here')
  await finish(t, started)
  // The kernel frees it once the queue holding it is gone (fput may defer to a worker).
  for (let i = 0; i < 500 && listed(); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.false(listed(), 'the kernel released the socket once the queue holding it was closed')
})

// Linux installs the descriptors that fit and releases the rest, so fdpass drops that one message and goes
// on (README: EMFILE on receive). macOS and FreeBSD fail the receive and discard them all (EMSGSIZE), and a
// framed stream ends there.
onlyOn(test.serial, ['linux'], 'a receive whose descriptors do not fit fails whole, and a framed stream ends')('a receiver at its descriptor limit: the message fails with EMFILE, the kernel releases the rest, the next message arrives', async (t) => {
  const started = start(t, 'receive-at-the-limit', ['3'], { wrapper: withLimit(256) })
  const { peer, channel } = started
  t.is((await peer.within(channel.recv())).data.toString(), 'ready')
  await channel.send({ data: 'eight descriptors', fds: devNulls(8), move: true })
  await channel.send({ data: 'after', fds: devNulls(1), move: true })
  const result = await peer.within(peer.line((l) => 'failure' in l))
  const failure = result.failure as Line
  t.is(failure.code, 'EMFILE', JSON.stringify(failure))
  t.is(failure.syscall, 'recvmsg')
  t.regex(failure.message as string, /could not install the descriptors of a message/)
  t.is(result.atLimitAfter, result.before, 'the three that were installed were closed')
  t.is(result.next, 'after')
  t.is(result.nextFds, 1)
  await finish(t, started)
})

// The per-user limit on descriptors in flight (RLIMIT_NOFILE, ETOOMANYREFS) is Linux's, and so is setpriv
// (util-linux): macOS and FreeBSD have no per-user limit to reach.
onlyOn(test.serial, ['linux'], 'no per-user limit on descriptors in flight (ETOOMANYREFS)')('a sender over its in-flight limit gets ETOOMANYREFS as a typed error, and sends again once the receiver reads', async (t) => {
  // Root (CAP_SYS_ADMIN or CAP_SYS_RESOURCE) is exempt from the limit: drop every capability first.
  const dropPrivileges =
    process.getuid?.() === 0 ? ['setpriv', '--inh-caps=-all', '--bounding-set=-all', '--securebits=+noroot,+noroot_locked', '--'] : []
  const started = start(t, 'send-until-too-many-in-flight', [], { wrapper: [...dropPrivileges, ...withLimit(64)] })
  const { peer, channel } = started
  const stopped = await peer.within(peer.line((l) => 'failure' in l))
  const failure = stopped.failure as Line
  t.is(failure.code, 'ETOOMANYREFS', JSON.stringify(stopped))
  t.is(failure.syscall, 'sendmsg')
  t.regex(failure.message as string, /RLIMIT_NOFILE/)
  // Other processes of this user (root: the other test worker) count towards
  // the same in-flight total, so the first send may already be refused.
  for (let i = 0; i < (stopped.sent as number); i++) {
    const m = await channel.recv({ maxFds: 8 })
    t.is(m.fds.length, 8)
    for (const fd of m.fds) fd.close()
  }
  peer.step()
  const after = await peer.within(channel.recv({ maxFds: 8 }))
  t.is(after.data.toString(), 'after')
  for (const fd of after.fds) fd.close()
  await peer.within(peer.line((l) => l.after === true))
  peer.step()
  await finish(t, started)
})

test.serial('signals delivered in a tight loop to both processes: every message arrives whole and in order, both ways', async (t) => {
  const count = 100
  const started = start(t, 'signalled', [String(count)])
  const { peer, channel } = started
  let received = 0
  const onSignal = (): void => {
    received += 1
  }
  process.on('SIGUSR2', onSignal)
  await peer.within(peer.line((l) => l.ready === true))
  let storming = true
  const storm = (async () => {
    while (storming) {
      try {
        process.kill(peer.pid, 'SIGUSR2')
      } catch {
        break // the peer is gone: its failure is what the test reports
      }
      process.kill(process.pid, 'SIGUSR2')
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  try {
    await peer.within(sendStorm(channel, count))
    await peer.within(receiveStorm(channel, count))
  } finally {
    storming = false
    await storm
    process.off('SIGUSR2', onSignal)
  }
  const { signals } = await peer.line((l) => 'signals' in l)
  t.true((signals as number) > 0 && received > 0, `signals handled: ${String(signals)} there, ${received} here`)
  peer.step()
  await finish(t, started)
})

for (const type of (['stream', 'seqpacket'] as const).filter((type) => SOCKET_TYPES.includes(type))) {
  test.serial(`socket buffers at the kernel's minimum on both ends: large framed messages arrive whole and in order, both ways, ${type}`, async (t) => {
    const count = 60
    const started = start(t, 'tiny-buffers', [String(count)], { type })
    const { peer, channel } = started
    const theirs = await peer.within(peer.line((l) => 'sndbuf' in l))
    const ours = shrinkSocketBuffers(channel.fd)
    t.true(ours < 16 * 1024 && (theirs.sndbuf as number) < 16 * 1024, `SO_SNDBUF ${ours} here, ${String(theirs.sndbuf)} there`)
    await peer.within(sendStorm(channel, count))
    await peer.within(receiveStorm(channel, count))
    await peer.within(peer.line((l) => l.done === true))
    peer.step()
    await finish(t, started)
  })
}

test.serial('a frame that declares no descriptors but carries two: ERR_FDPASS_PROTOCOL, the two closed, never delivered with the next frame', async (t) => {
  const started = start(t, 'stray-fds')
  const { peer, channel } = started
  await peer.within(peer.line((l) => 'own' in l))
  const err = await t.throwsAsync(peer.within(channel.recv()), { code: 'ERR_FDPASS_PROTOCOL' })
  t.regex(err?.message ?? '', /declares 0 descriptors but 2 arrived/)
  await t.throwsAsync(channel.recv(), { code: 'ERR_FDPASS_CLOSED' }, 'the stream is out of step: it ends, and nothing of the next frame is delivered')
  peer.step()
  await finish(t, started)
})

/** Samples this process's descriptor count on every turn of the loop until `work` settles; returns the most seen. */
async function mostFdsDuring(work: Promise<unknown>): Promise<number> {
  let most = fdCount()
  let done = false
  void work.finally(() => (done = true)).catch(() => undefined)
  while (!done) {
    most = Math.max(most, fdCount())
    await new Promise((resolve) => setImmediate(resolve))
  }
  return Math.max(most, fdCount())
}

for (const { title, announce, options } of [
  { title: 'maxFds 0', announce: 100, options: { maxFds: 0 } },
  { title: 'the default maxFds', announce: 100, options: {} },
  { title: 'maxBytes 4096 and a header announcing 4 GiB', announce: 2 ** 32 - 1, options: { maxBytes: 4096 } },
]) {
  asRootAgainstNobody(test.serial)(`descriptor hoarding by four connections run as nobody (a valid header, then one payload byte per sendmsg with 253 descriptors), ${title}: none is ever installed here, each receive fails with ERR_FDPASS_PROTOCOL`, async (t) => {
    const attackers = Array.from({ length: 4 }, () => start(t, 'hoard', [String(announce), String(limits.maxFdsPerMessage)], { wrapper: [...AS_NOBODY] }))
    const baseline = fdCount() // with the four channels and the pipes to the attackers
    const receives = attackers.map(({ peer, channel }) => peer.within(channel.recv(options)))
    const most = await mostFdsDuring(Promise.allSettled(receives))
    // nobody's descriptors in flight are limited per user (RLIMIT_NOFILE): an
    // attacker that hits the limit before its first byte with descriptors
    // gives up, and this side sees it close mid-message.
    let cutOff = 0
    for (const receive of receives) {
      const err = await t.throwsAsync(receive, { code: 'ERR_FDPASS_PROTOCOL' })
      t.regex(err?.message ?? '', /descriptors arrived on the payload bytes of a frame|middle of a message; 0 descriptors/)
      if (/payload bytes/.test(err?.message ?? '')) cutOff += 1
    }
    t.true(cutOff > 0, 'at least one attacker got its descriptors to this side')
    t.is(most, baseline, `the most descriptors open here while four attackers pushed theirs: ${most - baseline} over the baseline`)
    t.log(`descriptors held over the baseline under attack: ${most - baseline}`)
    for (const { peer, channel } of attackers) {
      channel.close()
      const stopped = await peer.within(peer.line((l) => 'stoppedBy' in l))
      // Cut off by this side's hang-up, or first by its own limit on descriptors in flight.
      t.true(['EPIPE', 'ECONNRESET', 'ETOOMANYREFS'].includes(stopped.stoppedBy as string), JSON.stringify(stopped))
      t.is(await peer.exited, 0, peer.stderr)
    }
    const before = attackers[0]!.before
    t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline')
  })
}

test.serial('a peer that sends its own socket on a byte that can start no frame and exits: the receive fails at once with ERR_FDPASS_PROTOCOL and the socket is released', async (t) => {
  const started = start(t, 'junk-with-itself')
  const { peer, channel } = started
  const { inode } = await peer.within(peer.line((l) => 'inode' in l))
  t.is(await peer.exited, 0)
  // The peer's socket lives on in this process's queue, so no end of stream
  // would ever come: the byte alone must decide. (The signal only turns a
  // hang into a failure.)
  const err = await t.throwsAsync(channel.recv({ signal: AbortSignal.timeout(30_000) }), { code: 'ERR_FDPASS_PROTOCOL' })
  t.regex(err?.message ?? '', /bad frame magic/)
  await finish(t, started)
  const listed = (): boolean => readFileSync('/proc/net/unix', 'utf8').split('\n').some((row) => row.trim().split(/\s+/)[6] === String(inode))
  for (let i = 0; i < 500 && listed(); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.false(listed(), 'the kernel released the socket once the receive closed it')
})

// SO_PASSPIDFD is Linux's (6.5).
onlyOn(test.serial, ['linux'], 'no SO_PASSPIDFD (Linux 6.5)')('a received socket whose sender set SO_PASSPIDFD on it: toChannel clears it, and a pidfd that comes anyway is closed at once, never held', async (t) => {
  const count = 300
  const started = start(t, 'pidfd-socket', [String(count)])
  const { peer, channel } = started
  const offered = await peer.within(channel.recv())
  t.is(offered.data.toString(), 'a socket that asks for pidfds')
  const received = offered.fds[0]!.toChannel()
  const baseline = fdCount()
  for (let i = 0; i < count; i++) {
    const m = await peer.within(received.recv())
    t.is(m.data.toString(), `message ${i}`)
    t.is(m.fds.length, 1)
    closeAll(m.fds)
  }
  t.is(fdCount(), baseline, `no pidfd installed in ${count} receives: the option was cleared on adoption`)
  // A caller that sets it again on a raw channel gets an SCM_PIDFD with every
  // receive (on a framed stream, every read of payload bytes would then
  // report control data and fail): each is closed at once, never held.
  const [sender, receiver] = socketPair({ framing: 'raw', type: 'seqpacket' })
  t.is(setSocketOption(receiver.fd, SO_PASSPIDFD, 1), 1)
  for (let i = 0; i < count; i++) {
    await sender.send({ data: `raw ${i}`, fds: devNulls(1), move: true })
    const m = await receiver.recv()
    t.is(m.fds.length, 1, 'the message’s own descriptor, and no pidfd')
    closeAll(m.fds)
  }
  t.is(fdCount(), baseline + 2, `no pidfd held after ${count} receives that each brought one (the pair aside)`)
  sender.close()
  receiver.close()
  received.close()
  peer.step()
  await finish(t, started)
})

test.serial('raw receives with limits past every real bound (maxBytes 2**40 and 2**53-1, maxFds 2**28 to 2**31-1): no abort, no memory pinned, every message whole', async (t) => {
  const started = start(t, 'raw-limits')
  const { peer, channel } = started
  await peer.within(peer.line((l) => l.ready === true))
  for (let i = 0; i < 5; i++) await channel.send({ data: `message ${i}`, fds: devNulls(20), move: true })
  const reports: Line[] = []
  for (let i = 0; i < 5; i++) reports.push(await peer.within(peer.line((l) => 'options' in l && !reports.includes(l))))
  for (const report of reports) {
    t.is(report.failure, undefined, JSON.stringify(report))
    t.is(report.fds, 20, JSON.stringify(report))
    // Sized by what arrives: a buffer sized by the limits would be a tebibyte, or 1 GiB of control space.
    t.true((report.grew as number) < 64 * 1024 * 1024, `RSS grew by ${String(report.grew)} bytes: ${JSON.stringify(report.options)}`)
  }
  await peer.within(peer.line((l) => l.done === true))
  peer.step()
  await finish(t, started)
})

// Linux installs what fits and releases the rest (README: EMFILE on receive);
// macOS and FreeBSD fail such a receive whole.
onlyOn(test.serial, ['linux'], 'a receive whose descriptors do not fit fails whole')('a receiver with 100 free descriptor slots takes 30 queued messages of 8 descriptors each: none is lost, as nothing is installed for a message before it is asked for', async (t) => {
  const started = start(t, 'receive-near-the-limit', ['100', '30'], { wrapper: withLimit(256) })
  const { peer, channel } = started
  t.is((await peer.within(channel.recv())).data.toString(), 'ready')
  for (let i = 0; i < 30; i++) await channel.send({ data: `message ${i}`, fds: devNulls(8), move: true })
  peer.step()
  const result = await peer.within(peer.line((l) => 'delivered' in l))
  t.deepEqual(result, { delivered: 30, lost: [] })
  await finish(t, started)
})

asRootAgainstNobody(test.serial)('eight connections run as nobody each stop in the middle of a message just under the 4 MiB default: messageTimeout drops each, closes its descriptor and the channel', async (t) => {
  const announce = 4 * 1024 * 1024 - 1
  const send = 1024 * 1024
  const before = fdCount()
  const rssBefore = process.memoryUsage().rss
  const attackers = Array.from({ length: 8 }, () => start(t, 'stall-mid-message', [String(announce), String(send)], { wrapper: [...AS_NOBODY], messageTimeout: 1000 }))
  const receives = attackers.map(({ peer, channel }) => peer.within(channel.recv()))
  for (const receive of receives) receive.catch(() => undefined) // each is checked below, in turn
  for (const { peer } of attackers) await peer.within(peer.line((l) => 'sent' in l))
  const timedOut = attackers.map(({ channel }) => new Promise((resolve) => channel.once('timeout', resolve)))
  for (const receive of receives) {
    const err = await t.throwsAsync(receive, { code: 'ERR_FDPASS_MESSAGE_TIMEOUT' })
    t.regex(err?.message ?? '', /within 1000 ms/)
  }
  await Promise.all(timedOut)
  t.log(`RSS ${((process.memoryUsage().rss - rssBefore) / 2 ** 20).toFixed(1)} MiB over the start once the eight partial messages (${(8 * send) / 2 ** 20} MiB) were dropped`)
  for (const { channel } of attackers) t.true(channel.closed, 'the channel closed with the message it could not finish')
  for (const { peer, channel } of attackers) {
    channel.close()
    peer.child.kill('SIGKILL')
    await peer.exited
  }
  t.is(await settledFdCount(before), before, 'this process ends at its descriptor baseline: the partial messages’ descriptors were closed')
})

test.serial('a message over the 4 MiB default is refused from its header and discarded as it arrives; the next message arrives', async (t) => {
  const announce = 5 * 1024 * 1024
  const started = start(t, 'stall-mid-message', [String(announce), String(announce)])
  const { peer, channel } = started
  const err = await t.throwsAsync(peer.within(channel.recv()), { code: 'ERR_FDPASS_MESSAGE_TOO_LARGE' })
  t.regex(err?.message ?? '', /exceeds the limit of 4194304 bytes/)
  t.is((await peer.within(channel.recv())).data.toString(), 'after')
  peer.child.kill('SIGKILL')
  await finish(t, started, null)
})

// Linux's accept4 fails with EMFILE before it looks at the queue; the test fills the table the same way everywhere.
test.serial('a server out of descriptors: with nobody connecting it tries no accept and reports nothing; with a client waiting it reports the episode once and backs off; freed, it accepts', async (t) => {
  const path = socketPath('starved')
  const started = start(t, 'server-at-the-limit', [path], { wrapper: withLimit(64) })
  const { peer } = started
  const idle = await peer.within(peer.line((l) => 'idle' in l))
  t.is(idle.idle, 0, 'no error while nobody connects')
  const client = await connect(path)
  peer.step()
  const waiting = await peer.within(peer.line((l) => 'waiting' in l))
  t.deepEqual(waiting.waiting, ['EMFILE'], 'one report for the episode, not one per retry')
  const done = await peer.within(peer.line((l) => 'accepted' in l))
  t.is(done.accepted, 1, 'the waiting client was accepted once descriptors were freed')
  t.is(done.errors, 1)
  client.close()
  await finish(t, started)
})

test.serial('eight idle channels that each received one 32 MiB message hold none of it after GC', async (t) => {
  const size = 32 * 1024 * 1024
  const started = start(t, 'large-then-idle', ['8', String(size)], { nodeOptions: ['--expose-gc'] })
  const { peer } = started
  const { grew, open } = await peer.within(peer.line((l) => 'grew' in l))
  t.true(open, 'the channels are still open, idle')
  t.log(`RSS over the start after eight 32 MiB messages, idle and after GC: ${((grew as number) / 2 ** 20).toFixed(1)} MiB`)
  // Kept buffers would be 8 × 32 MiB (before: 368 MiB); allow one message and the allocator's slack.
  t.true((grew as number) < 2 * size, `RSS grew by ${((grew as number) / 2 ** 20).toFixed(1)} MiB`)
  await finish(t, started)
})
