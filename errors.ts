/**
 * The errors every fdpass module throws: Node-style, each with a `code`, and
 * the argument checks that make them, in one place.
 */

/** An error with a Node-style `code`, as all fdpass errors have. */
export interface FdpassError extends Error {
  code: string
  errno?: number
  syscall?: string
}

export function makeError(
  Ctor: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor,
  code: string,
  message: string,
): FdpassError {
  const err = new Ctor(message) as FdpassError
  err.code = code
  return err
}

export function invalidArgType(name: string, expected: string, actual: unknown): FdpassError {
  const got = actual === null ? 'null' : typeof actual === 'object' ? `an instance of ${actual.constructor?.name ?? 'Object'}` : `type ${typeof actual} (${String(actual)})`
  return makeError(TypeError, 'ERR_INVALID_ARG_TYPE', `The "${name}" argument must be ${expected}. Received ${got}`)
}

export function outOfRange(name: string, range: string, actual: unknown): FdpassError {
  return makeError(RangeError, 'ERR_OUT_OF_RANGE', `The value of "${name}" is out of range. It must be ${range}. Received ${String(actual)}`)
}

export function closedError(what: string): FdpassError {
  return makeError(Error, 'ERR_FDPASS_CLOSED', `the ${what} is closed`)
}

export function abortError(signal: AbortSignal): Error {
  const err = new Error('The operation was aborted', { cause: signal.reason }) as FdpassError
  err.name = 'AbortError'
  err.code = 'ABORT_ERR'
  return err
}

export function validateInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  if (!Number.isInteger(value) || value < min || value > max) throw outOfRange(name, `an integer >= ${min} and <= ${max}`, value)
  return value
}

/** An optional boolean option: `undefined` stays `undefined`. */
export function validateBoolean(name: string, value: unknown): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') throw invalidArgType(name, 'of type boolean', value)
  return value
}

export function validateSignal(name: string, signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined
  if (!(signal instanceof AbortSignal)) throw invalidArgType(name, 'an instance of AbortSignal', signal)
  return signal
}

export function validateObject<T extends object>(name: string, value: unknown): Partial<T> {
  if (value === undefined) return {}
  if (value === null || typeof value !== 'object') throw invalidArgType(name, 'of type object', value)
  return value as Partial<T>
}
