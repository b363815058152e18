/**
 * The errors every fdpass module throws: Node-style, each with a `code`, and
 * the argument checks that make them, in one place.
 */
/** An error with a Node-style `code`, as all fdpass errors have. */
export interface FdpassError extends Error {
    code: string;
    errno?: number;
    syscall?: string;
}
export declare function makeError(Ctor: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor, code: string, message: string): FdpassError;
export declare function invalidArgType(name: string, expected: string, actual: unknown): FdpassError;
export declare function outOfRange(name: string, range: string, actual: unknown): FdpassError;
export declare function closedError(what: string): FdpassError;
export declare function abortError(signal: AbortSignal): Error;
export declare function validateInteger(name: string, value: unknown, min: number, max: number): number;
/** An optional boolean option: `undefined` stays `undefined`. */
export declare function validateBoolean(name: string, value: unknown): boolean | undefined;
export declare function validateSignal(name: string, signal: unknown): AbortSignal | undefined;
export declare function validateObject<T extends object>(name: string, value: unknown): Partial<T>;
