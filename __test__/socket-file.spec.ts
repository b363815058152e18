/**
 * The socket file of listen({ mode }) and of the handoff's control socket,
 * with another local user racing for its path: `nobody` swaps the path, or a
 * directory on it, for a symlink while root listens in a directory anyone may
 * write (no sticky bit). Each round is one listen; the rounds are counted,
 * not timed.
 */
import { spawn } from 'node:child_process'
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test, { type ExecutionContext } from 'ava'

import { AS_NOBODY, AS_ROOT_WITHOUT_CAPABILITIES, asRootAgainstNobody, fdTable, Process, settledFdTable } from './helpers'

const PEER = join(__dirname, 'peers', 'socket-file.js')
const ATTACKER = join(__dirname, '..', '..', '__test__', 'peers', 'path-attacker.py')
/** A python3 another user can run: the system's, not a shim under root's home (pyenv's, say). */
const PYTHON = ['/usr/bin/python3', '/usr/local/bin/python3'].find((path) => existsSync(path)) ?? 'python3'
const ROUNDS = 300
/** The umask of the listening process: strips group and other write. */
const UMASK = 0o022

function run(prefix: readonly string[], role: string, ...args: string[]): Process {
  const [command, ...rest] = [...prefix, process.execPath, PEER, role, ...args]
  return new Process(spawn(command as string, rest, { stdio: ['ignore', 'pipe', 'pipe'] }))
}

/** path-attacker.py as nobody. */
function attack(mode: 'swap' | 'flip', ...args: string[]): Process {
  const [command, ...rest] = [...AS_NOBODY, PYTHON, ATTACKER, mode, ...args]
  return new Process(spawn(command as string, rest, { stdio: ['ignore', 'pipe', 'pipe'] }))
}

/** A directory of root's that anyone may write (no sticky bit), and one only root may enter. */
function arena(t: ExecutionContext): { open: string; secret: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fdpass-socket-file-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  chmodSync(dir, 0o755)
  const open = join(dir, 'open')
  mkdirSync(open)
  chmodSync(open, 0o777)
  const secret = join(dir, 'secret')
  mkdirSync(secret, { mode: 0o700 })
  return { open, secret }
}

interface ListenReport {
  listened: number
  errors: Record<string, number>
  modes: number[]
  before: number
  after: number
}

const octal = (mode: number): string => `0o${mode.toString(8)}`

const swapCases = [
  { api: 'listen', mode: 0o600, as: 'root', prefix: [] },
  // The umask strips 0o022 of 0o666: those bits are added back to the file the socket was bound to.
  { api: 'listen', mode: 0o666, as: 'root', prefix: [] },
  // Without CAP_NET_ADMIN the kernel does not name the bound file (SIOCUNIXFILE): found by path, not following symlinks.
  { api: 'listen', mode: 0o666, as: 'root without capabilities', prefix: AS_ROOT_WITHOUT_CAPABILITIES },
  { api: 'offer', mode: 0o600, as: 'root', prefix: [] },
] as const

for (const { api, mode, as, prefix } of swapCases) {
  const what = api === 'offer' ? "offerListeners' control socket (0o600)" : `listen({ mode: ${octal(mode)} })`
  asRootAgainstNobody(test.serial)(
    `${what} as ${as}, umask ${octal(UMASK)}, while nobody swaps the path for a symlink: no socket file is more open than asked, nothing else changes mode`,
    async (t) => {
      const { open, secret } = arena(t)
      const target = join(secret, 'shadow')
      writeFileSync(target, 'root only\n', { mode: 0o600 })
      const before = fdTable()
      const attacker = attack('swap', open, 'app.sock', target)
      t.teardown(() => attacker.child.kill('SIGKILL'))
      await attacker.within(attacker.line((l) => l.attacking === true))

      const listener = run(prefix, 'listen', open, 'app.sock', mode.toString(8), UMASK.toString(8), String(ROUNDS), api, 'same')
      const report = (await listener.within(listener.line((l) => 'listened' in l))) as unknown as ListenReport
      attacker.child.kill('SIGKILL')
      await attacker.exited
      t.is(await listener.exited, 0, listener.stderr)
      t.log(`${report.listened} of ${ROUNDS} listens succeeded; failures ${JSON.stringify(report.errors)}`)

      t.is(statSync(target).mode & 0o7777, 0o600, 'the file the symlinks point to keeps its mode')
      t.deepEqual(
        report.modes.filter((bits) => bits !== mode).map(octal),
        [],
        'a socket file of the listener found at the path after listen has exactly the mode asked',
      )
      const stolen = readdirSync(open)
        .filter((name) => name.startsWith('stolen-'))
        .map((name) => lstatSync(join(open, name)))
        .filter((file) => file.isSocket() && file.uid === 0)
      t.log(`${stolen.length} socket files of the listener were moved aside by the attacker`)
      t.true(stolen.length > 0, 'the attacker moved socket files of the listener aside')
      const tooOpen = stolen.map((file) => file.mode & 0o7777).filter((bits) => (bits & ~mode) !== 0)
      t.deepEqual(tooOpen.map(octal), [], `of ${stolen.length} socket files moved aside, none is more open than ${octal(mode)}`)
      t.is(report.after, report.before, "the listener's descriptor count is back at its baseline")
      t.deepEqual(await settledFdTable(before), before)
    },
  )
}

asRootAgainstNobody(test.serial)(
  'closing a listener removes its own socket file only: a directory on its path flipped to a symlink by nobody does not make it delete a file there',
  async (t) => {
    const { open, secret } = arena(t)
    const sub = join(open, 'sub')
    mkdirSync(sub, { mode: 0o755 })
    const victims = Array.from({ length: ROUNDS }, (_, round) => `app-${round}`)
    for (const name of victims) writeFileSync(join(secret, name), '', { mode: 0o600 })
    const before = fdTable()
    const attacker = attack('flip', open, 'sub', secret)
    t.teardown(() => attacker.child.kill('SIGKILL'))
    await attacker.within(attacker.line((l) => l.attacking === true))

    const listener = run([], 'listen', sub, 'app', '600', UMASK.toString(8), String(ROUNDS), 'listen', 'fresh')
    const report = (await listener.within(listener.line((l) => 'listened' in l))) as unknown as ListenReport
    attacker.child.kill('SIGKILL')
    await attacker.exited
    t.is(await listener.exited, 0, listener.stderr)
    t.log(`${report.listened} of ${ROUNDS} listens succeeded; failures ${JSON.stringify(report.errors)}`)

    t.true(report.listened > 0, 'some listens got through')
    const left = readdirSync(secret)
    const deleted = victims.filter((name) => !left.includes(name))
    t.deepEqual(deleted, [], `${deleted.length} of the ${ROUNDS} files in the directory the symlink names were deleted`)
    t.deepEqual(
      left.filter((name) => !victims.includes(name)),
      [],
      'nothing was added there',
    )
    t.is(report.after, report.before)
    t.deepEqual(await settledFdTable(before), before)
  },
)
