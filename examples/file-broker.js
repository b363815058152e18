'use strict'
// File access broker. Clients ask for a path; the broker applies its policy
// (under one root directory, no symlink out of it, a size limit, regular
// files only) and answers with an open read-only descriptor or a refusal.
// The client reads files it could not open itself by name.
//
//   node examples/file-broker.js
//
// Prints each request and answer, then one JSON summary line.
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const { tmpdir } = require('node:os')
const { join, sep } = require('node:path')

const fdpass = require('..')
const { baselineFds, openFds } = require('./lib/descriptors')

const MAX_BYTES = 1024
const log = (who, text) => console.log(`[${who} ${process.pid}] ${text}`)

/**
 * Opens `requested` for reading if the policy allows it, else throws with the
 * reason. The path is resolved (symlinks included) and must stay under
 * `root`; the file is opened with O_NOFOLLOW and checked again through the
 * descriptor (same file as resolved, regular, small enough), so a rename
 * between the check and the open cannot swap in another file.
 */
function openUnder(root, requested) {
  let resolved
  try {
    resolved = fs.realpathSync(join(root, requested))
  } catch {
    throw new Error('no such file')
  }
  if (!resolved.startsWith(root + sep)) throw new Error('outside the root')
  const fd = fs.openSync(resolved, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
  try {
    const opened = fs.fstatSync(fd)
    const named = fs.lstatSync(resolved)
    if (opened.ino !== named.ino || opened.dev !== named.dev) throw new Error('changed while opening')
    if (!opened.isFile()) throw new Error('not a regular file')
    if (opened.size > MAX_BYTES) throw new Error(`larger than ${MAX_BYTES} bytes`)
    return fd
  } catch (err) {
    fs.closeSync(fd)
    throw err
  }
}

async function broker() {
  const root = fs.realpathSync(fs.mkdtempSync(join(tmpdir(), 'fdpass-file-broker-')))
  fs.writeFileSync(join(root, 'hello.txt'), 'hello from a file the client never opened by name\n')
  fs.writeFileSync(join(root, 'big.bin'), Buffer.alloc(MAX_BYTES + 1))
  fs.mkdirSync(join(root, 'dir'))
  fs.symlinkSync('/etc/passwd', join(root, 'escape'))
  const socketPath = join(tmpdir(), `fdpass-file-broker-${process.pid}.sock`)
  const fdsBefore = await baselineFds()

  const server = fdpass.listen({ path: socketPath, mode: 0o600 })
  const served = []
  server.on('connection', (channel) => served.push(serve(channel)))
  async function serve(channel) {
    for await (const { data } of channel.messages({ maxFds: 0, maxBytes: 4096 })) {
      const requested = data.toString()
      let fd
      try {
        fd = openUnder(root, requested)
      } catch (err) {
        log('broker', `${requested}: refused (${err.message})`)
        await channel.send({ data: JSON.stringify({ path: requested, refused: err.message }) })
        continue
      }
      log('broker', `${requested}: granted, read-only`)
      await channel.send({ data: JSON.stringify({ path: requested }), fds: [fd], move: true })
    }
    channel.close()
  }

  const client = spawn(process.execPath, [__filename, 'client', socketPath], { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  client.stdout.on('data', (d) => {
    output += d
    process.stdout.write(d)
  })
  const clientExit = await new Promise((resolve) => client.on('close', resolve))
  await Promise.all(served)
  server.close()
  fs.rmSync(root, { recursive: true })
  const answers = JSON.parse(output.split('\n').find((line) => line.startsWith('{')))
  console.log(JSON.stringify({ clientExit, answers, fdsBefore, fdsAfter: openFds() }))
}

async function client(socketPath) {
  const channel = await fdpass.connect(socketPath)
  const answers = {}
  for (const path of ['hello.txt', '../../etc/passwd', 'escape', 'big.bin', 'dir', 'missing.txt']) {
    await channel.send({ data: path })
    const { data, fds } = await channel.recv({ maxFds: 1 })
    const answer = JSON.parse(data.toString())
    if (answer.refused) {
      answers[path] = `refused: ${answer.refused}`
    } else {
      const [file] = fds
      try {
        answers[path] = fs.readFileSync(file.fd, 'utf8')
      } finally {
        file.close()
      }
    }
    log('client', `${path} -> ${answers[path].trim()}`)
  }
  channel.close()
  console.log(JSON.stringify(answers))
}

const [role, socketPath] = process.argv.slice(2)
;(role === 'client' ? client(socketPath) : broker()).catch((err) => {
  console.error(err)
  process.exitCode = 1
})
