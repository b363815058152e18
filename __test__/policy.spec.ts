import test from 'ava'

import { listen, socketPair } from 'fdpass'

import { fdCount, runPeer, settledFdCount, socketPath } from './helpers'

test.serial('channel.peer names the process at the other end, as the kernel recorded it', async (t) => {
  const before = fdCount()
  const path = socketPath('peer')
  const server = listen(path)
  const peer = runPeer('echo', path)
  const { value: channel } = await server[Symbol.asyncIterator]().next()
  if (!channel) throw new Error('no connection')
  t.deepEqual(channel.peer, { pid: peer.pid, uid: process.getuid!(), gid: process.getgid!() })
  t.is(channel.peer, channel.peer, 'read once, then kept')
  channel.close()
  server.close()
  t.is((await peer.exited).code, 0)

  const [a, b] = socketPair()
  t.is(a.peer.pid, process.pid, 'a socket pair was made by this process')
  b.close()
  a.close()
  t.is(a.peer.pid, process.pid, 'what was read stays readable after close')
  t.throws(() => b.peer, { code: 'ERR_FDPASS_CLOSED' }, 'never read before close: nothing to read now')
  t.is(await settledFdCount(before), before)
})
