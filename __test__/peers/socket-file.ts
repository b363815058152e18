/**
 * The listening process of the socket-file specs (the attacker is
 * path-attacker.py). Usage: node socket-file.js listen ARGS; prints one JSON
 * line when it is done.
 */
import { lstatSync, openSync, rmSync } from 'node:fs'
import { join } from 'node:path'

import { listen } from 'fdpass'
import { offerListeners } from 'fdpass/handoff'

import { fdCount, settledFdCount } from '../helpers'

const say = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(line)}\n`)

const roles: Record<string, (args: string[]) => Promise<void>> = {
  /**
   * Listens `count` times on `dir`/`name` (a name per round with `fresh`)
   * with `mode` under `umask`, through listen() or, with `offer`, through
   * offerListeners (its control socket); after each listen notes the mode of
   * the socket file at the path, if it is one of this user's. Reports the
   * modes seen, the errors by code, and its descriptor count before and after.
   */
  async listen([dir, name, mode, umask, count, api, naming]) {
    process.umask(Number.parseInt(umask as string, 8))
    const asked = Number.parseInt(mode as string, 8)
    const listener = openSync('/dev/null', 'r')
    const before = fdCount()
    const errors: Record<string, number> = {}
    const modes = new Set<number>()
    let listened = 0
    for (let round = 0; round < Number(count); round++) {
      const path = join(dir as string, naming === 'fresh' ? `${name}-${round}` : (name as string))
      if (naming !== 'fresh') rmSync(path, { force: true })
      let close: () => void
      try {
        if (api === 'offer') {
          const offer = await offerListeners({ path, listeners: { x: listener } })
          close = () => offer.close()
        } else {
          const server = listen({ path, mode: asked })
          close = () => server.close()
        }
      } catch (err) {
        const code = (err as { code?: string }).code ?? String(err)
        errors[code] = (errors[code] ?? 0) + 1
        continue
      }
      listened += 1
      try {
        const file = lstatSync(path)
        if (file.isSocket() && file.uid === process.geteuid?.()) modes.add(file.mode & 0o7777)
      } catch {
        // Moved away already.
      }
      close()
    }
    say({ listened, errors, modes: [...modes], before, after: await settledFdCount(before) })
  },
}

const [role, ...args] = process.argv.slice(2)
const run = roles[role as string]
if (!run) throw new Error(`unknown role ${role}`)
run(args).then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err)
    process.exit(1)
  },
)
