'use strict'
// A process manager in miniature: runs server.js and replaces it on SIGHUP
// without dropping a connection. The new generation takes the listening
// socket over through fdpass/handoff; the old one stops accepting only once
// the new one serves, drains, and exits. If the new generation fails before
// it serves, the old one never stopped.
//
//   node examples/zero-downtime/supervisor.js        (PORT=8080 for a fixed port)
//   kill -HUP <supervisor pid>                       (replace the server)
//
// Prints one JSON line per event: { event: 'serving' | 'drained' | 'failed', ... }.
const { fork } = require('node:child_process')
const fs = require('node:fs')
const { tmpdir } = require('node:os')
const { join } = require('node:path')

const SERVER = join(__dirname, 'server.js')
/** How long a new generation has to start serving before it is killed. */
const START_TIMEOUT_MS = Number(process.env.START_TIMEOUT_MS ?? 30_000)

const controlDir = fs.mkdtempSync(join(tmpdir(), 'fdpass-zero-downtime-'))
const controlPath = join(controlDir, 'handoff.sock')
let generation = 0
let current = null
let starting = null
const emit = (event) => console.log(JSON.stringify(event))

function start() {
  generation += 1
  const child = fork(SERVER, [], {
    env: { ...process.env, HANDOFF_SOCKET: controlPath, GENERATION: String(generation) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), START_TIMEOUT_MS)
  let drained = false
  starting = child
  child.on('message', (message) => {
    if (message.type === 'serving') {
      clearTimeout(timer)
      starting = null
      current = child
      emit({ event: 'serving', generation: message.generation, pid: message.pid, address: message.address })
    } else if (message.type === 'drained') {
      // Handed over: its exit, possibly before its successor says it serves, is expected.
      drained = true
      emit({ event: 'drained', generation: message.generation, pid: message.pid, drained: message.report.drained, handoffMs: message.report.handoffMs, drainMs: Math.round(message.report.drainMs) })
    }
  })
  // 'close', not 'exit': only then have all of the child's messages arrived.
  child.on('close', (code, signal) => {
    clearTimeout(timer)
    if (child === starting) {
      // Failed before serving: the running generation never stopped accepting.
      starting = null
      emit({ event: 'failed', pid: child.pid, code, signal, stillServing: current?.pid ?? null })
    } else if (child === current && !drained) {
      current = null
      emit({ event: 'exited', pid: child.pid, code, signal })
      if (!stopping) process.exitCode = 1
    }
  })
}

process.on('SIGHUP', () => {
  if (starting) {
    emit({ event: 'busy', pid: starting.pid })
    return
  }
  start()
})

let stopping = false
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    stopping = true
    for (const child of [current, starting]) child?.kill('SIGTERM')
    fs.rmSync(controlDir, { recursive: true, force: true })
    process.exitCode = 0
    setTimeout(() => process.exit(), 100).unref()
  })
}

emit({ event: 'supervising', pid: process.pid, controlPath })
start()
