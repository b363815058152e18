// The package as users get it: `npm pack` of the main package and of this
// platform's binary package, installed into a fresh project with no network
// and no Rust toolchain on PATH, then used through both `import` and
// `require` to pass a descriptor between two processes. And the one error a
// platform without a binary gets.
import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

const ROOT = join(__dirname, '..', '..')
const rootPackage = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; files: string[] }

interface PlatformManifest {
  name: string
  main: string
  os: string[]
  cpu: string[]
  libc?: string[]
}

/** The per-platform packages in npm/, by directory. */
function platformPackages(): Map<string, PlatformManifest> {
  const dirs = readdirSync(join(ROOT, 'npm'))
  return new Map(dirs.map((dir) => [dir, JSON.parse(readFileSync(join(ROOT, 'npm', dir, 'package.json'), 'utf8')) as PlatformManifest]))
}

/** Whether this Node runs on glibc (else, on Linux, musl). */
function onGlibc(): boolean {
  return (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime !== undefined
}

/** This machine's platform as the loader names it (linux-x64-gnu, darwin-arm64, freebsd-x64, ...). */
function thisPlatform(): string {
  return `${process.platform}-${process.arch}${process.platform === 'linux' ? (onGlibc() ? '-gnu' : '-musl') : ''}`
}

/** The one package in npm/ that npm installs here, by its os, cpu and libc: its directory and manifest. */
function thisPlatformPackage(): [string, PlatformManifest] {
  const libc = onGlibc() ? 'glibc' : 'musl'
  const [fitting, ...others] = [...platformPackages()].filter(
    ([, { os, cpu, libc: libcs }]) => os.includes(process.platform) && cpu.includes(process.arch) && (libcs === undefined || libcs.includes(libc)),
  )
  if (fitting === undefined || others.length > 0) throw new Error(`not exactly one package in npm/ fits ${thisPlatform()}: ${[fitting, ...others].map((entry) => entry?.[0]).join(', ')}`)
  return fitting
}

/** A PATH with no cargo or rustc on it. */
function pathWithoutRust(): string {
  return (process.env.PATH ?? '')
    .split(':')
    .filter((dir) => !['cargo', 'rustc'].some((tool) => statSync(join(dir, tool), { throwIfNoEntry: false })))
    .join(':')
}

function npm(args: string[], cwd: string): string {
  return execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8', env: { ...process.env, PATH: pathWithoutRust() } })
}

/**
 * Stages the main package as publishing does (`napi pre-publish` adds one
 * optional dependency per npm/ package) and packs it and this platform's
 * package, whose binary is the one `npm run build` made.
 */
function pack(into: string): { main: string; platform: string } {
  const stage = join(into, 'stage')
  mkdirSync(stage)
  for (const file of rootPackage.files) cpSync(join(ROOT, file), join(stage, file), { recursive: true })
  const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>
  manifest.optionalDependencies = Object.fromEntries([...platformPackages().values()].map(({ name }) => [name, rootPackage.version]))
  delete manifest.scripts
  delete manifest.devDependencies
  writeFileSync(join(stage, 'package.json'), JSON.stringify(manifest, null, 2))

  const [dir, platform] = thisPlatformPackage()
  const platformStage = join(into, dir)
  cpSync(join(ROOT, 'npm', dir), platformStage, { recursive: true })
  copyFileSync(join(ROOT, platform.main), join(platformStage, platform.main))

  const packed = (source: string): string => join(into, npm(['pack', source, '--pack-destination', into], into).trim().split('\n').at(-1) as string)
  return { main: packed(stage), platform: packed(platformStage) }
}

const PARENT = `
const fs = require('node:fs')
module.exports = async function run({ spawnWithChannel }) {
  const { child, channel } = spawnWithChannel(process.execPath, [__dirname + '/child.cjs'], { stdio: ['ignore', 'pipe', 'inherit'] })
  fs.writeFileSync(__dirname + '/secret.txt', 'passed along')
  const fd = fs.openSync(__dirname + '/secret.txt', 'r')
  await channel.send({ data: 'a file', fds: [fd], move: true })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  await new Promise((resolve) => child.on('close', resolve))
  channel.close()
  return out.trim()
}
`
const CHILD = `
const fs = require('node:fs')
const { inheritedChannel } = require('fdpass')
inheritedChannel().recv().then((m) => {
  process.stdout.write(m.data + ': ' + fs.readFileSync(m.fds[0].take(), 'utf8'))
  process.exit(0)
})
`
const VIA_IMPORT = `
import { spawnWithChannel } from 'fdpass'
import run from './parent.cjs'
console.log(await run({ spawnWithChannel }))
`
const VIA_REQUIRE = `
const { spawnWithChannel } = require('fdpass')
require('./parent.cjs')({ spawnWithChannel }).then((line) => console.log(line))
`

// Type-checked, not run: each line only compiles with the package's types
// found and right, and @ts-expect-error fails the check if they were 'any'.
const CONSUMER_ESM = `
import { connect, listen, socketPair, type Channel, type Message } from 'fdpass'
import { offerListeners, type Listener } from 'fdpass/handoff'
import { listenFds } from 'fdpass/activation'
export async function use(): Promise<void> {
  const [a, b]: [Channel, Channel] = socketPair({ type: 'seqpacket' })
  await a.send({ data: 'x', fds: [0] })
  const message: Message = await b.recv()
  const count: number = message.fds.length
  const channel: Channel = await connect('/tmp/socket')
  const server = listen({ path: '/tmp/socket' }, (peer: Channel) => peer.close())
  const listeners: Map<string, unknown[]> = listenFds()
  const offered: Listener = server as unknown as Listener
  await offerListeners({ path: '/tmp/control', listeners: { http: offered } })
  // @ts-expect-error connect needs a target
  await connect()
  void [count, channel, listeners]
}
`
const CONSUMER_CJS = `
import fdpass = require('fdpass')
import handoff = require('fdpass/handoff')
export function use(): fdpass.Channel {
  const [a]: [fdpass.Channel, fdpass.Channel] = fdpass.socketPair()
  const take: typeof handoff.takeListeners = handoff.takeListeners
  // @ts-expect-error socketPair takes options, not a number
  fdpass.socketPair(5)
  void take
  return a
}
`
/** The TypeScript a user would compile with: Node's module rules, strict, the package's .d.ts files checked too. */
function typeCheckConsumers(project: string): { status: number | null; output: string } {
  writeFileSync(join(project, 'consumer.mts'), CONSUMER_ESM)
  writeFileSync(join(project, 'consumer.cts'), CONSUMER_CJS)
  const compilerOptions = { module: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: false, types: ['node'], typeRoots: [join(ROOT, 'node_modules', '@types')] }
  writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['consumer.mts', 'consumer.cts'] }))
  const run = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], { encoding: 'utf8' })
  return { status: run.status, output: run.stdout + run.stderr }
}

test.serial('npm pack tarballs install offline without Rust and pass a descriptor, through import and through require, with types for both', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fdpass-pack-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { main, platform } = pack(dir)
  t.log(`tarballs: ${main.split('/').at(-1)} ${statSync(main).size} bytes, ${platform.split('/').at(-1)} ${statSync(platform).size} bytes`)

  const project = join(dir, 'project')
  mkdirSync(project)
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'user', version: '1.0.0', private: true }))
  npm(['install', '--offline', main, platform], project)
  t.deepEqual(readdirSync(join(project, 'node_modules')).filter((name) => !name.startsWith('.')).sort(), ['fdpass', `fdpass-${thisPlatform()}`], 'only this platform’s binary is installed')

  writeFileSync(join(project, 'parent.cjs'), PARENT)
  writeFileSync(join(project, 'child.cjs'), CHILD)
  writeFileSync(join(project, 'via-import.mjs'), VIA_IMPORT)
  writeFileSync(join(project, 'via-require.cjs'), VIA_REQUIRE)
  for (const script of ['via-import.mjs', 'via-require.cjs']) {
    const run = spawnSync(process.execPath, [script], { cwd: project, encoding: 'utf8', env: { ...process.env, PATH: pathWithoutRust() } })
    t.is(run.status, 0, `${script}: ${run.stderr}`)
    t.is(run.stdout.trim(), 'a file: passed along', script)
  }

  const typed = typeCheckConsumers(project)
  t.is(typed.status, 0, `an ESM and a CommonJS consumer type-check against the installed package:\n${typed.output}`)
})

test.serial('a platform without a binary gets one error naming it and how to build from source', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fdpass-nobinary-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // The package's JavaScript alone: neither a binary beside it nor a platform package.
  for (const file of ['index.js', 'binding.js', 'errors.js', 'package.json']) copyFileSync(join(ROOT, file), join(dir, file))
  const run = spawnSync(process.execPath, ['-e', `try { require('./index.js') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, cause: Boolean(e.cause) })) }`], {
    cwd: dir,
    encoding: 'utf8',
  })
  const err = JSON.parse(run.stdout) as { code: string; message: string; cause: boolean }
  t.is(err.code, 'ERR_FDPASS_NO_BINARY')
  t.true(err.message.includes(`no native binary for ${thisPlatform()}`), err.message)
  t.regex(err.message, /build it from source .*npm run build:native.*NAPI_RS_NATIVE_LIBRARY_PATH/)
  t.true(err.cause, 'what the loader tried is kept as the cause')
})
