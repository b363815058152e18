'use strict'
// Descriptor counting for the examples' "nothing leaked" line.
const { spawn } = require('node:child_process')
const { readdirSync } = require('node:fs')
const net = require('node:net')

/** Descriptors open in this process now (FreeBSD: with fdescfs on /dev/fd). */
const openFds = () => readdirSync(process.platform === 'linux' ? '/proc/self/fd' : '/dev/fd').length

/**
 * The count to compare against at the end. libuv opens a spare /dev/null the
 * first time a process listens on TCP or spawns a child, and keeps it (its
 * EMFILE reserve); both are done once here first so that spare is not
 * mistaken for a leak.
 */
async function baselineFds() {
  const tcp = net.createServer().listen(0, '127.0.0.1')
  await new Promise((resolve) => tcp.once('listening', () => tcp.close(resolve)))
  await new Promise((resolve) => spawn('true', [], { stdio: 'ignore' }).on('close', resolve))
  return openFds()
}

module.exports = { openFds, baselineFds }
