/**
 * fdpass/activation: the listening sockets a service manager passed at exec
 * (systemd socket activation: `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`),
 * read as systemd's own `sd_listen_fds_with_names` reads them.
 */
import { readlinkSync } from 'node:fs'

import { fdKind } from './binding'
import { adoptFd, type ReceivedFd } from './index'
import { makeError } from './errors'

/** The first descriptor systemd passes (`SD_LISTEN_FDS_START`). */
const FIRST_PASSED_FD = 3
const ACTIVATION_VARIABLES = ['LISTEN_PID', 'LISTEN_PIDFDID', 'LISTEN_FDS', 'LISTEN_FDNAMES'] as const

function invalidActivation(message: string): Error {
  return makeError(Error, 'ERR_FDPASS_INVALID_ACTIVATION', `socket activation: ${message}`)
}

/** What `fd` is when it is this process's own rather than passed, else undefined. */
function ownDescriptor(fd: number): string | undefined {
  const kind = fdKind(fd)
  if (kind === 'other') return 'an anonymous inode (such as the epoll or eventfd Node opened)'
  if (kind === 'fifo' && process.platform === 'linux' && readlinkSync(`/proc/self/fd/${fd}`).startsWith('pipe:')) {
    return 'an anonymous pipe (such as the signal pipe Node opened)'
  }
  return undefined
}

/**
 * Takes the descriptors passed to this process by socket activation, by name
 * (`FileDescriptorName=`, or `"unknown"` when the manager gave none; names
 * need not be unique, so each maps to a list in the order passed). Each is a
 * {@link ReceivedFd} owned here, with close-on-exec set, so this process's
 * own children do not inherit it; convert it (`listen(server)`,
 * `toServer()`, `toDgram()`) or close it.
 *
 * The variables are removed from the environment in every case, so children
 * do not take the descriptors for theirs. When they were meant for another
 * process (`LISTEN_PID` is not this one) or are absent, the map is empty.
 * Malformed variables throw `ERR_FDPASS_INVALID_ACTIVATION` and take nothing.
 */
export function listenFds(): Map<string, ReceivedFd[]> {
  const env = process.env
  const { LISTEN_PID: pid, LISTEN_FDS: count, LISTEN_FDNAMES: names } = env
  // Removed whatever they say, as sd_listen_fds(unset_environment=1) does,
  // so no child of this process takes them for its own.
  for (const variable of ACTIVATION_VARIABLES) delete env[variable]
  const passed = new Map<string, ReceivedFd[]>()
  if (pid === undefined || count === undefined) return passed
  if (!/^[1-9][0-9]*$/.test(pid)) throw invalidActivation(`LISTEN_PID=${pid} is not a process id`)
  if (Number(pid) !== process.pid) return passed
  if (!/^[0-9]+$/.test(count)) throw invalidActivation(`LISTEN_FDS=${count} is not a count`)
  const total = Number(count)
  const named = names === undefined || (names === '' && total === 0) ? [] : names.split(':')
  if (names !== undefined && named.length !== total) {
    throw invalidActivation(`LISTEN_FDNAMES has ${named.length} names for ${total} descriptors`)
  }
  // Only what was really passed: a count past what the manager passed
  // reaches this process's own descriptors, which sit right after (Node's
  // epoll, eventfd and signal pipes first), and adopting one would close it
  // under Node at the next GC. A manager passes sockets, FIFOs, files and
  // special files; an anonymous inode (epoll, eventfd, signalfd, timerfd) or
  // an anonymous pipe is this process's own. All are checked before any is
  // adopted. (Close-on-exec cannot tell: Node sets it on what it inherits.)
  for (let i = 0; i < total; i++) {
    const fd = FIRST_PASSED_FD + i
    let own: string | undefined
    try {
      own = ownDescriptor(fd)
    } catch (err) {
      throw invalidActivation(`LISTEN_FDS=${total}, but descriptor ${fd} is not open (${(err as Error).message})`)
    }
    if (own !== undefined) {
      throw invalidActivation(`LISTEN_FDS=${total}, but descriptor ${fd} is ${own}, which no service manager passes; nothing was taken`)
    }
  }
  const adopted: ReceivedFd[] = []
  try {
    for (let i = 0; i < total; i++) adopted.push(adoptFd(FIRST_PASSED_FD + i))
  } catch (err) {
    // Leave every descriptor as it was passed, as sd_listen_fds would.
    for (const fd of adopted) fd.take()
    throw invalidActivation(`LISTEN_FDS=${total}, but descriptor ${FIRST_PASSED_FD + adopted.length} is not open (${(err as Error).message})`)
  }
  adopted.forEach((fd, i) => {
    const name = named[i] ?? 'unknown'
    const group = passed.get(name)
    if (group) group.push(fd)
    else passed.set(name, [fd])
  })
  return passed
}
