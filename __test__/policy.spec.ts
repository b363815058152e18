import { closeSync, openSync } from 'node:fs'

import test from 'ava'

import { closeAll, limits, listen, socketPair, type Channel, type PeerCredentials } from 'fdpass'

import { assertBaselines, fdCount, onlyOn, runPeer, runsHere, settledFdCount, socketPath, withPeer } from './helpers'

/** Whether the kernel records the peer's pid: FreeBSD's getpeereid gives only its uid and gid. */
const PEER_PID_RECORDED = runsHere(['linux', 'darwin'])

test.serial('channel.peer names the process at the other end, as the kernel recorded it', async (t) => {
  const before = fdCount()
  const path = socketPath('peer')
  const server = listen(path)
  const peer = runPeer('echo', path)
  const { value: channel } = await server[Symbol.asyncIterator]().next()
  if (!channel) throw new Error('no connection')
  const ids = { uid: process.getuid!(), gid: process.getgid!() }
  t.deepEqual(channel.peer, PEER_PID_RECORDED ? { pid: peer.pid, ...ids } : ids)
  t.is(channel.peer, channel.peer, 'read once, then kept')
  channel.close()
  server.close()
  t.is((await peer.exited).code, 0)

  const [a, b] = socketPair()
  const maker = PEER_PID_RECORDED ? process.pid : undefined
  t.is(a.peer.pid, maker, 'a socket pair was made by this process')
  b.close()
  a.close()
  t.is(a.peer.pid, maker, 'what was read stays readable after close')
  t.throws(() => b.peer, { code: 'ERR_FDPASS_CLOSED' }, 'never read before close: nothing to read now')
  t.is(await settledFdCount(before), before)
})

// The policy tells the two peers apart by pid, which FreeBSD does not record.
onlyOn(test.serial, ['linux', 'darwin'], 'no peer pid to tell the peers apart by')('a peer the policy refuses gets ERR_FDPASS_PEER_REFUSED and nothing it sent arrives', async (t) => {
  const before = fdCount()
  const path = socketPath('policy')
  const refusals: (PeerCredentials | undefined)[] = []
  let refusedPid: number | undefined
  const server = listen({ path, mode: 0o600, allow: (peer) => peer.pid !== refusedPid })
  server.on('refused', (peer: PeerCredentials | undefined) => refusals.push(peer))
  const refused = runPeer('expect-refused', path)
  refusedPid = refused.pid
  const admitted = runPeer('echo', path)
  const channels: Channel[] = []
  server.on('connection', (channel: Channel) => channels.push(channel))

  const refusedResult = await refused.exited
  t.is(refusedResult.code, 0, refusedResult.stderr)
  t.is(refusedResult.report?.after, refusedResult.report?.before, 'the refused peer ends at its baseline')
  t.deepEqual(
    refusals.map((peer) => peer?.pid),
    [refused.pid],
  )

  while (channels.length === 0) await new Promise((r) => setTimeout(r, 10))
  const [channel] = channels as [Channel]
  t.is(channel.peer.pid, admitted.pid)
  const file = openSync(__filename, 'r')
  await channel.send({ data: 'admitted', fds: [file], move: true })
  const echo = await channel.recv()
  t.is(echo.data.toString(), 'admitted')
  closeAll(echo.fds)
  channel.close()
  server.close()
  t.is((await admitted.exited).code, 0)
  t.is(await settledFdCount(before), before, 'nothing the refused peer sent was installed here')
})

test.serial('a policy that throws refuses, and allow must be a function', async (t) => {
  const path = socketPath('policy-throws')
  const server = listen({
    path,
    allow: () => {
      throw new Error('policy failed')
    },
  })
  const reasons: unknown[] = []
  server.on('refused', (_peer: unknown, reason: unknown) => reasons.push(reason))
  server.on('connection', () => t.fail('a throwing policy admitted a peer'))
  const peer = runPeer('expect-refused', path)
  t.is((await peer.exited).code, 0)
  t.is((reasons[0] as Error | undefined)?.message, 'policy failed')
  server.close()
  t.throws(() => listen({ path: socketPath('bad-allow'), allow: true as never }), { code: 'ERR_INVALID_ARG_TYPE' })
})

test.serial('a listener that refuses descriptors makes the kernel refuse them at the sender', async (t) => {
  const before = fdCount()
  const path = socketPath('refuse-fds')
  if (!limits.canRefuseFds) {
    // Kernels before Linux 6.16 (and other systems) have no SO_PASSRIGHTS.
    t.throws(() => listen({ path, refuseFds: true }), { code: 'ERR_FDPASS_UNSUPPORTED' })
    return
  }
  const r = await withPeer(
    'send-to-refuser',
    [],
    async (channel) => {
      const message = await channel.recv({ maxFds: 253 })
      t.is(message.data.toString(), 'refused with EPERM')
      t.is(message.fds.length, 0)
      await channel.send({ data: 'ack' })
    },
    { refuseFds: true },
  )
  assertBaselines(t, r)
  t.is(r.after, before)
})

test.serial('channel.refuseFds() switches refusal on and off', async (t) => {
  const before = fdCount()
  const [a, b] = socketPair()
  const fd = openSync('/dev/null', 'r')
  if (!limits.canRefuseFds) {
    t.throws(() => b.refuseFds(), { code: 'ERR_FDPASS_UNSUPPORTED' })
  } else {
    b.refuseFds()
    await t.throwsAsync(a.send({ data: 'x', fds: [fd] }), { code: 'EPERM' })
    b.refuseFds(false)
    await a.send({ data: 'y', fds: [fd] })
    const message = await b.recv()
    t.is(message.data.toString(), 'y', 'the refused message never arrived; this one did')
    closeAll(message.fds)
  }
  closeSync(fd)
  a.close()
  b.close()
  t.throws(() => b.refuseFds(), { code: 'ERR_FDPASS_CLOSED' })
  t.is(await settledFdCount(before), before)
})
