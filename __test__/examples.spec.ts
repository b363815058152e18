import { spawn } from 'node:child_process'
import { join } from 'node:path'

import test from 'ava'

const EXAMPLES = join(__dirname, '..', '..', 'examples')

/** Runs a command to its end, feeding `input` on stdin once `startWhen` shows up in its output. */
function run(command: string, args: string[], input?: string, startWhen?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    const feed = (): void => {
      if (input !== undefined && !child.stdin.writableEnded) child.stdin.end(input)
    }
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
      if (startWhen === undefined || stdout.includes(startWhen)) feed()
    })
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    if (startWhen === undefined) feed()
    const guard = setTimeout(() => child.kill(), 30_000)
    child.on('close', (code) => {
      clearTimeout(guard)
      resolve({ code, stdout, stderr })
    })
  })
}

const lastJson = (stdout: string): Record<string, unknown> => JSON.parse(stdout.trim().split('\n').at(-1) as string) as Record<string, unknown>

test('port broker: the allowed worker serves HTTP on the passed port, another user is refused, nothing leaks', async (t) => {
  const { code, stdout, stderr } = await run(process.execPath, [join(EXAMPLES, 'port-broker.js')])
  t.is(code, 0, stderr)
  const summary = lastJson(stdout)
  t.regex(summary.body as string, /^hello from worker \d+, which never bound port \d+$/)
  t.is(summary.workerExit, 0)
  t.is(summary.fdsAfter, summary.fdsBefore)
  if (process.getuid!() === 0) {
    t.is(summary.intruderExit, 0, 'the intruder saw ERR_FDPASS_PEER_REFUSED')
    t.deepEqual(summary.refusedUids, [65534])
  } else {
    // Only root can start the intruder as another user.
    t.is(summary.intruderExit, null)
    t.deepEqual(summary.refusedUids, [])
  }
})

test('file broker: a granted file is read, every escape and oversize request refused, nothing leaks', async (t) => {
  const { code, stdout, stderr } = await run(process.execPath, [join(EXAMPLES, 'file-broker.js')])
  t.is(code, 0, stderr)
  const summary = lastJson(stdout)
  t.is(summary.clientExit, 0)
  t.deepEqual(summary.answers, {
    'hello.txt': 'hello from a file the client never opened by name\n',
    '../../etc/passwd': 'refused: outside the root',
    escape: 'refused: outside the root',
    'big.bin': 'refused: larger than 1024 bytes',
    dir: 'refused: not a regular file',
    'missing.txt': 'refused: no such file',
  })
  t.is(summary.fdsAfter, summary.fdsBefore)
})

const relay = join(EXAMPLES, 'terminal-relay.js')
const typedLines = (stdout: string): string[] => [...stdout.matchAll(/you typed: (.*)/g)].map((m) => m[1] as string)

test('terminal relay: the server reads the client’s stdin when it is a socket', async (t) => {
  const { code, stdout, stderr } = await run(process.execPath, [relay], 'first\nsecond\n', 'type away')
  t.is(code, 0, stderr)
  t.regex(stdout, /reading the client's stdin \(unix-stream\)/)
  t.deepEqual(typedLines(stdout), ['first', 'second'])
  t.regex(stdout, /server says: read 2 lines from your stdin/)
})

test('terminal relay: … a fifo (a shell pipe)', async (t) => {
  const { code, stdout, stderr } = await run('sh', ['-c', `printf 'through a pipe\\n' | "${process.execPath}" "${relay}"`])
  t.is(code, 0, stderr)
  t.regex(stdout, /reading the client's stdin \(fifo\)/)
  t.deepEqual(typedLines(stdout), ['through a pipe'])
})

/** script(1) running node `script` on a new pseudo-terminal: util-linux's takes a shell command, the BSDs' (macOS, FreeBSD) a file and then the command. */
function onATerminal(script: string): [string, string[]] {
  return process.platform === 'linux' ? ['script', ['-qec', `"${process.execPath}" "${script}"`, '/dev/null']] : ['script', ['-q', '/dev/null', process.execPath, script]]
}

test('terminal relay: … a TTY (a pseudo-terminal from script(1))', async (t) => {
  // Typed after the server has the terminal; Ctrl-D (\x04) ends the input.
  const { code, stdout, stderr } = await run(...onATerminal(relay), 'typed on a tty\n\x04', 'type away')
  t.is(code, 0, stderr)
  t.regex(stdout, /reading the client's stdin \(tty\)/)
  t.deepEqual(typedLines(stdout), ['typed on a tty'])
})
