import { once } from 'node:events'
import { openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { closeAll, inheritedChannel, spawnWithChannel, type ReceivedFd } from 'fdpass'

import { fdCount, settledFdCount } from './helpers'

const INDEX = join(__dirname, '..', '..', 'index.js')

function withFile(content: string): { path: string; fd: number } {
  const path = join(tmpdir(), `fdpass-${process.pid}-child-${Math.random().toString(36).slice(2)}`)
  writeFileSync(path, content)
  return { path, fd: openSync(path, 'r') }
}

test.serial('a Node child adopts the channel its parent gave it and reads a file through it', async (t) => {
  const before = fdCount()
  const file = withFile('for the node child')
  const code = `
    const fdpass = require(${JSON.stringify(INDEX)})
    const fs = require('node:fs')
    ;(async () => {
      const channel = fdpass.inheritedChannel()
      const leftInEnv = process.env.FDPASS_FD
      const { fds: [file] } = await channel.recv()
      const content = fs.readFileSync(file.fd, 'utf8')
      file.close()
      await channel.send({ data: JSON.stringify({ content, leftInEnv: leftInEnv ?? null }) })
      channel.close()
    })()`
  const { child, channel } = spawnWithChannel(process.execPath, ['-e', code])
  await channel.send({ data: 'a file', fds: [file.fd], move: true })
  const answer = JSON.parse((await channel.recv()).data.toString()) as { content: string; leftInEnv: string | null }
  t.deepEqual(answer, { content: 'for the node child', leftInEnv: null })
  const [exitCode] = (await once(child, 'exit')) as [number]
  t.is(exitCode, 0)
  channel.close()
  rmSync(file.path)
  t.is(await settledFdCount(before), before)
})

test.serial('a Python child passes descriptors both ways with socket.recv_fds and send_fds (raw framing)', async (t) => {
  const before = fdCount()
  const file = withFile('for the python child')
  const code = [
    'import os, socket',
    "s = socket.socket(fileno=int(os.environ['FDPASS_FD']))",
    's.setblocking(True)',
    'data, fds, flags, addr = socket.recv_fds(s, 1024, 8)',
    'content = os.read(fds[0], 100)',
    "socket.send_fds(s, [b'python read: ' + content], fds)",
    'for fd in fds: os.close(fd)',
    'r, w = os.pipe()',
    "os.write(w, b'through a pipe from python')",
    'os.close(w)',
    "socket.send_fds(s, [b'pipe'], [r])",
    'os.close(r)',
  ].join('\n')
  const { child, channel } = spawnWithChannel('python3', ['-c', code], { framing: 'raw' })
  await channel.send({ data: 'a file', fds: [file.fd], move: true })
  const first = await channel.recv()
  t.is(first.data.toString(), 'python read: for the python child')
  const [back] = first.fds as [ReceivedFd]
  t.is(back.kind, 'file', 'the same file came back')
  closeAll(first.fds)
  const second = await channel.recv()
  t.is(second.data.toString(), 'pipe')
  const [pipe] = second.fds as [ReceivedFd]
  t.is(pipe.kind, 'fifo')
  t.is(readFileSync(pipe.fd, 'utf8'), 'through a pipe from python')
  pipe.close()
  const [exitCode] = (await once(child, 'exit')) as [number]
  t.is(exitCode, 0)
  channel.close()
  rmSync(file.path)
  t.is(await settledFdCount(before), before)
})

test.serial('spawnWithChannel places the channel where asked, and inheritedChannel refuses what is not one', async (t) => {
  const before = fdCount()
  const code = `
    const fdpass = require(${JSON.stringify(INDEX)})
    const channel = fdpass.inheritedChannel()
    channel.send({ data: process.env.FDPASS_FD ?? 'removed from the environment' }).then(() => channel.close())`
  const { child, channel } = spawnWithChannel(process.execPath, ['-e', code], { fd: 5, stdio: 'ignore' })
  t.is((await channel.recv()).data.toString(), 'removed from the environment')
  await once(child, 'exit')
  channel.close()

  const saved = process.env.FDPASS_FD
  process.env.FDPASS_FD = '999'
  t.throws(() => inheritedChannel(), { code: 'ERR_FDPASS_NO_DESCRIPTOR' })
  if (saved === undefined) delete process.env.FDPASS_FD
  else process.env.FDPASS_FD = saved
  t.is(await settledFdCount(before), before)
})
