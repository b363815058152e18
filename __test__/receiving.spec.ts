import { closeSync, openSync } from 'node:fs'

import test from 'ava'

import { closeAll, socketPair, type Channel } from 'fdpass'

import { fdCount } from './helpers'

// No read-ahead of descriptors: a receive on a framed stream takes its own
// message and nothing of the next, so no descriptor is installed for a
// message no receive has asked for yet, and each message is judged by the
// receive that takes it. These specs send every message before receiving,
// so the later messages are always in the socket when the first is read.

function openDevNull(count: number): number[] {
  return Array.from({ length: count }, () => openSync('/dev/null', 'r'))
}

async function sendAll(channel: Channel, messages: Array<{ data: string; fds: number[] }>): Promise<void> {
  for (const message of messages) await channel.send(message)
}

test.serial('each message is judged by the limits of the receive that gets it, and the later ones stay in the socket', async (t) => {
  const [a, b] = socketPair()
  const [f1, f2, f3] = openDevNull(3) as [number, number, number]
  const base = fdCount()
  await sendAll(a, [
    { data: '0', fds: [] },
    { data: '1', fds: [f1, f2] },
    { data: '2', fds: [f1] },
    { data: 'three', fds: [f1, f2, f3] },
  ])

  const first = await b.recv({ maxFds: 5 })
  t.is(first.data.toString(), '0')
  t.is(fdCount(), base, 'no descriptor of the later messages was installed here')

  const tooMany = await t.throwsAsync(b.recv({ maxFds: 1 }), { code: 'ERR_FDPASS_TOO_MANY_FDS' })
  t.regex(tooMany!.message, /2 descriptors/)
  t.is(fdCount(), base, 'the refused message’s descriptors were closed (the kernel had room for 1 only)')

  const second = await b.recv({ maxFds: 1 })
  t.is(second.data.toString(), '2', 'the channel stays in step')
  t.is(second.fds.length, 1)
  closeAll(second.fds)

  await t.throwsAsync(b.recv({ maxBytes: 2 }), { code: 'ERR_FDPASS_MESSAGE_TOO_LARGE' })
  t.is(fdCount(), base, 'the over-long message’s descriptors were closed too')

  a.close()
  b.close()
  for (const fd of [f1, f2, f3]) closeSync(fd)
})

test.serial('a message over the first receive’s limits is left for the receive that reaches it', async (t) => {
  const [a, b] = socketPair()
  const fds = openDevNull(3)
  const base = fdCount()
  await sendAll(a, [
    { data: 'plain', fds: [] },
    { data: 'three', fds },
    { data: 'x'.repeat(1000), fds: [] },
  ])
  // maxFds 0 and maxBytes 5 would refuse both later messages, had read-ahead judged them.
  t.is((await b.recv({ maxFds: 0, maxBytes: 5 })).data.toString(), 'plain')
  const withFds = await b.recv({ maxFds: 3, maxBytes: 5 })
  t.is(withFds.data.toString(), 'three')
  t.is(withFds.fds.length, 3)
  closeAll(withFds.fds)
  t.is((await b.recv({ maxFds: 0 })).data.length, 1000)
  t.is(fdCount(), base, 'nothing received stayed open')
  a.close()
  b.close()
  for (const fd of fds) closeSync(fd)
})

test.serial('closing a channel with messages unread closes their descriptors with the socket, never installing them', async (t) => {
  const [a, b] = socketPair()
  const fds = openDevNull(2)
  const base = fdCount()
  await sendAll(a, [
    { data: '0', fds },
    { data: '1', fds },
    { data: '2', fds },
  ])
  const first = await b.recv()
  t.is(fdCount(), base + 2, 'only the first message’s descriptors were installed')
  closeAll(first.fds)
  b.close()
  t.is(fdCount(), base - 1, 'the unread messages’ descriptors went with the socket')
  a.close()
  for (const fd of fds) closeSync(fd)
})

test.serial('closeAll closes what is still held, once, and refuses bad input before closing any', async (t) => {
  const [a, b] = socketPair()
  const fds = openDevNull(3)
  const base = fdCount()
  await a.send({ data: 'x', fds })
  const { fds: received } = await b.recv()
  t.is(fdCount(), base + 3)

  const [first, ...rest] = received
  t.throws(() => closeAll([first!, 42 as never]), { code: 'ERR_INVALID_ARG_TYPE' })
  t.is(fdCount(), base + 3, 'nothing was closed for a list with a bad entry')
  t.false(first!.released)

  first!.close()
  closeAll(received) // the closed one is skipped, not closed twice
  t.true(rest.every((fd) => fd.released))
  t.is(fdCount(), base)
  t.throws(() => rest[0]!.fd, { code: 'ERR_FDPASS_FD_RELEASED' })
  closeAll(new Set(received)) // any iterable; all released already: a no-op
  a.close()
  b.close()
  for (const fd of fds) closeSync(fd)
})
