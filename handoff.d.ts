/**
 * fdpass/handoff: zero-downtime restarts. A running process offers its
 * listening sockets by name on an owner-only control socket; its replacement
 * initialises, takes them over, starts accepting and says it is ready; only
 * then does the old process stop accepting and drain. The sockets themselves
 * never close, so no connection waiting in a backlog is lost. The exchange is
 * specified in docs/HANDOFF.md.
 */
import * as dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { ReceivedFd, type PeerCredentials } from './index';
/** A listening socket a process can hand over. */
export type Listener = net.Server | dgram.Socket | ReceivedFd | number;
export interface OfferOptions {
    /**
     * The control socket's path (or Linux abstract name with `abstract`). The
     * file is created owner-only (`0o600`); a stale one left by a process that
     * died is replaced, a live one is `EADDRINUSE`.
     */
    path: string;
    abstract?: boolean;
    /**
     * The listening sockets, by name. A name may hold several (IPv4 and IPv6,
     * say). Each must be listening (bound, for UDP) by the time a successor
     * takes it.
     */
    listeners: Readonly<Record<string, Listener | readonly Listener[]>>;
    /**
     * How long a successor has from connecting until it says it is ready (default
     * 60 s). Then the handoff is abandoned, the successor told so, and this
     * process keeps serving and offering.
     */
    readyTimeout?: number;
    /** How long in-flight connections have to finish after the handoff (default 30 s). */
    drainTimeout?: number;
    /**
     * Who may take over, asked with the connecting process's credentials.
     * Default: processes of this user.
     */
    allow?: (peer: PeerCredentials) => boolean;
}
/** What the old process reports once it handed over and drained. */
export interface HandoffReport {
    /** The process that took over. */
    successor: PeerCredentials;
    /** Names offered that the successor did not take; this process closed them too. */
    unclaimed: string[];
    /** Milliseconds from the successor connecting until this process stopped accepting. */
    handoffMs: number;
    /** Milliseconds spent draining. */
    drainMs: number;
    /** True if every connection finished before `drainTimeout`. */
    drained: boolean;
    /**
     * Connections still open at `drainTimeout`: HTTP(S) connections are closed
     * then; other connections are left to the application.
     */
    remaining: number;
    /** Listeners this process could not close (already closed by the application, say); the others were closed. */
    errors: Error[];
}
/**
 * Listeners on offer to a successor. Events: `'takeover'` (peer) when a
 * successor starts; `'failed'` (error, peer) when an attempt fails, after
 * which this process keeps serving and offering; `'handedOver'` ({ successor,
 * unclaimed }) once this process has stopped accepting; `'drained'` (report).
 */
export declare class ListenerOffer extends EventEmitter {
    #private;
    readonly path: string;
    /** Resolves once a successor took over and this process drained; never if the offer is closed first. */
    readonly finished: Promise<HandoffReport>;
    /** True while a successor is taking over. */
    get busy(): boolean;
    /**
     * Stops offering: the control socket closes, and a handoff in progress is
     * abandoned (the successor is told, and its `ready()` rejects with
     * `ERR_FDPASS_HANDOFF_ABORTED`). The listeners are untouched. Does nothing
     * once a successor took over.
     */
    close(): void;
}
/**
 * Offers `listeners` to a successor that calls {@link takeListeners} with the
 * same path. One successor at a time: another that connects meanwhile gets
 * `ERR_FDPASS_HANDOFF_BUSY`. If a successor fails (exits, times out, asks for
 * names not offered), this process keeps serving and offering. Once one is
 * ready, this process stops accepting, closes the control socket and drains:
 * watch `finished`, then exit.
 */
export declare function offerListeners(options: OfferOptions): Promise<ListenerOffer>;
export interface TakeOptions {
    /** The control socket the running process offers on. */
    path: string;
    abstract?: boolean;
    /**
     * Names this process needs; default: every name offered. A needed name the
     * running process does not offer fails the takeover with
     * `ERR_FDPASS_HANDOFF_MISMATCH` (the error lists `missing` and `offered`),
     * and the running process keeps serving.
     */
    names?: readonly string[];
    /** Names taken if offered, and otherwise listed in {@link Takeover.missing}. */
    optional?: readonly string[];
    /** Time for the exchange, from connecting until every listener arrived, and for the ready confirmation (default 10 s). */
    timeout?: number;
    signal?: AbortSignal;
    /**
     * Whose listeners this process takes, asked with the offering process's
     * credentials (as the kernel recorded them when it listened) before
     * anything is sent to it or read from it: `true` admits it; anything else,
     * or a throw, refuses it with `ERR_FDPASS_PEER_REFUSED`, the connection
     * closed unread. Default: processes of this user, or root. Anyone who can
     * bind the control socket's name (any process, for an abstract name) can
     * offer listeners there.
     */
    allow?: (peer: PeerCredentials) => boolean;
}
/** What {@link Takeover.ready} learned. */
export interface ReadyReport {
    /**
     * True when the old process confirmed that it stopped accepting; false when
     * it was gone before it could (it exited or was killed: its copies of the
     * listeners went with it).
     */
    confirmed: boolean;
    /** Names the old process offered that this one did not take; it closed them. */
    unclaimed: string[];
    /** Names this process took but had not converted by `ready()`; they were closed. */
    unused: string[];
}
/**
 * Listeners taken over from a running process. Convert them (`listen(server)`,
 * `toServer()`, `toDgram()`), start accepting, then call {@link ready}.
 */
export declare class Takeover {
    #private;
    /** The process that offered the listeners. */
    readonly predecessor: PeerCredentials;
    /** The listeners taken, by name, in the order offered. */
    readonly listeners: ReadonlyMap<string, readonly ReceivedFd[]>;
    /** Names offered that this process did not take. */
    readonly unclaimed: readonly string[];
    /** Optional names the running process did not offer. */
    readonly missing: readonly string[];
    /** The first listener taken under `name`; throws `ERR_FDPASS_HANDOFF_MISMATCH` if none was. */
    get(name: string): ReceivedFd;
    /**
     * Tells the old process this one is serving. Listeners not converted by now
     * are closed (reported as `unused`). Resolves once the old process has
     * stopped accepting, or was found gone. Rejects with
     * `ERR_FDPASS_HANDOFF_TIMEOUT` or `ERR_FDPASS_HANDOFF_ABORTED` if the old
     * process had already given up on this handoff: it is still serving, so
     * this process should stop and exit. Rejects with
     * `ERR_FDPASS_HANDOFF_UNCONFIRMED` if the old process did not answer within
     * `timeout`: it will stop when it reads the ready message, so keep serving.
     */
    ready(): Promise<ReadyReport>;
    /**
     * Gives up: the old process is told and keeps serving; listeners not
     * converted yet are closed. Converted ones are yours to close.
     */
    abort(reason?: string): void;
}
/**
 * Takes over the listeners a running process offers at `path` (see
 * {@link offerListeners}): first the list of names, then the descriptors in
 * acknowledged batches. Resolves to null when no process is offering there (a
 * first start: listen yourself). The process found there must pass `allow`
 * (default: this user or root) before anything is exchanged, else this
 * rejects with `ERR_FDPASS_PEER_REFUSED`. Call it once this process is
 * initialised, convert the listeners, then call {@link Takeover.ready}. On any
 * failure everything received is closed and the running process keeps serving.
 */
export declare function takeListeners(options: TakeOptions): Promise<Takeover | null>;
