/**
 * fdpass: pass open file descriptors between processes over Unix domain
 * sockets (SCM_RIGHTS), with a Promise API.
 *
 * Every received descriptor is owned by a {@link ReceivedFd} until you take it,
 * convert it or close it; what nobody claims is closed when it is collected.
 */
import { type ChildProcess, type SpawnOptions } from 'node:child_process';
import * as dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as net from 'node:net';
import { type Readable, type Writable } from 'node:stream';
export type { FdpassError } from './errors';
/** The kind of Unix socket a channel runs on. */
export type SocketType = 'stream' | 'seqpacket' | 'dgram';
/**
 * `framed` (default): one `send` is one message on every socket type, with its
 * descriptors paired to it, and sets larger than the per-message limit are
 * chunked and reassembled (PROTOCOL.md). `raw`: one `sendmsg` / `recvmsg`, for
 * peers with their own framing (Python's `socket.send_fds`, Go, C).
 */
export type Framing = 'framed' | 'raw';
/** What a descriptor is, from fstat and getsockopt. */
export type FdKind = 'file' | 'directory' | 'fifo' | 'tty' | 'char-device' | 'tcp' | 'tcp-listener' | 'udp' | 'unix-stream' | 'unix-stream-listener' | 'unix-dgram' | 'unix-seqpacket' | 'other';
/**
 * Anything that holds a descriptor `send` can pass: a number; a `net.Socket`
 * (TCP or Unix, connected; also child process stdio pipes and TTY streams); a
 * `net.Server`, `http.Server` or `https.Server` (listening); a `dgram.Socket`
 * (bound); a `FileHandle`; an `fs.ReadStream` or `fs.WriteStream` (open), or
 * another stream with a descriptor (a child process's stdio, typed as
 * `Readable`/`Writable`); a {@link ReceivedFd}.
 */
export type FdHolder = number | net.Socket | net.Server | dgram.Socket | FileHandle | fs.ReadStream | fs.WriteStream | Readable | Writable | ReceivedFd;
/** One descriptor to send, given up by the sender after the send if `move` is set. */
export interface MovedFd {
    fd: FdHolder;
    move?: boolean;
}
/** An entry of {@link SendOptions.fds}. */
export type Descriptor = FdHolder | MovedFd;
export interface SendOptions {
    /** Payload bytes (a string is sent as UTF-8). */
    data?: Uint8Array | string;
    /**
     * Descriptors to pass. The sender keeps them, but for those given as
     * `{ fd, move: true }` or all of them with `move`.
     */
    fds?: readonly Descriptor[];
    /**
     * Close (or destroy) the sender's copies once the message is with the
     * kernel. Never done when the send fails.
     */
    move?: boolean;
}
export interface RecvOptions {
    /** Cancels the receive; a message that arrives for it later goes to the next receive. */
    signal?: AbortSignal;
    /**
     * Most descriptors this receive accepts. A message with more is consumed
     * whole, its descriptors closed, and the receive rejects with
     * `ERR_FDPASS_TOO_MANY_FDS`. Default: {@link limits}`.maxFdsPerMessage` (253 on Linux).
     */
    maxFds?: number;
    /**
     * Framed mode: most payload bytes accepted (default 4 MiB, gRPC's receive
     * limit; raise it for larger messages). Raw mode: the
     * receive buffer (default 64 KiB); a longer datagram or record rejects with
     * `ERR_FDPASS_MESSAGE_TRUNCATED`.
     */
    maxBytes?: number;
}
export interface Message {
    data: Buffer;
    fds: ReceivedFd[];
}
export interface ChannelOptions {
    /** `'framed'` (default) or `'raw'`; both ends must agree. */
    framing?: Framing;
    /**
     * Most milliseconds a peer may take to finish a message it has begun (as
     * `http.Server`'s `headersTimeout`): once part of a message is here, the
     * rest must follow within it, or the pending receive rejects with
     * `ERR_FDPASS_MESSAGE_TIMEOUT`, what arrived of it is dropped and its
     * descriptors closed, and the channel closes. 0: no limit. Default: 0,
     * and 60,000 for the channels a {@link Server} accepts.
     */
    messageTimeout?: number;
}
export interface ConnectOptions extends ChannelOptions {
    path: string;
    /** Linux abstract socket name instead of a filesystem path. */
    abstract?: boolean;
    type?: Exclude<SocketType, 'dgram'>;
    signal?: AbortSignal;
}
export interface ListenOptions extends ChannelOptions {
    path: string;
    /** Linux abstract socket name instead of a filesystem path. */
    abstract?: boolean;
    type?: Exclude<SocketType, 'dgram'>;
    /** Permission bits of the socket file (e.g. `0o600`), set before any peer can connect. */
    mode?: number;
    backlog?: number;
    /**
     * Access policy, asked for each connection before it becomes a channel and
     * before anything is read from it: `true` admits the peer; anything else
     * (or a throw) refuses it. A refused connection is closed, its peer's next
     * receive rejects with `ERR_FDPASS_PEER_REFUSED` (framed mode), and the
     * server emits `'refused'`.
     */
    allow?: (peer: PeerCredentials) => boolean;
    /**
     * Refuse descriptors on every accepted connection, in the kernel and from
     * the moment it connects: a peer's send with descriptors fails with
     * `EPERM` and nothing is installed here. Needs {@link limits}`.canRefuseFds`;
     * elsewhere `listen()` throws `ERR_FDPASS_UNSUPPORTED` (receive with
     * `maxFds: 0` instead, which closes what arrives).
     */
    refuseFds?: boolean;
}
/**
 * Who is at the other end of a channel, as the kernel recorded it when the
 * connection was made (`connect`, or `socketPair`): a later `setuid` or `exec`
 * in the peer does not change it. `pid` is absent where the platform does not
 * record it (FreeBSD).
 */
export interface PeerCredentials {
    pid?: number;
    uid: number;
    gid: number;
}
export interface SocketPairOptions extends ChannelOptions {
    type?: SocketType;
}
/**
 * What this platform allows. `canRefuseFds`: whether sockets can refuse
 * descriptors in the kernel (`SO_PASSRIGHTS`, Linux 6.16 and later), for
 * `listen({ refuseFds })` and {@link Channel.refuseFds}.
 */
export declare const limits: Readonly<{
    maxFdsPerMessage: number;
    hasSeqpacket: boolean;
    hasAbstractNames: boolean;
    canRefuseFds: boolean;
}>;
/**
 * A received descriptor, owned until taken, converted or closed. What nobody
 * claims is closed when this object is garbage-collected.
 */
export declare class ReceivedFd implements Disposable {
    #private;
    /** The descriptor number; throws `ERR_FDPASS_FD_RELEASED` once taken or closed. */
    get fd(): number;
    /** True once taken, converted or closed. */
    get released(): boolean;
    /** What the descriptor is (file, tcp-listener, unix-stream, ...). */
    get kind(): FdKind;
    /** Hands the raw number over, once; you then own it and must close it. */
    take(): number;
    /** Closes the descriptor; does nothing if it was already taken or closed. */
    close(): void;
    [Symbol.dispose](): void;
    /**
     * A `net.Socket` over a connected TCP or Unix stream socket, or a fifo (as
     * a pipe: no thread-pool thread is held while it waits). Node makes the
     * descriptor non-blocking, a flag shared with every other holder of it.
     */
    toSocket(options?: Omit<net.SocketConstructorOpts, 'fd'>): net.Socket;
    /**
     * A `net.Server` accepting on a listening TCP or Unix socket. Exclusive: in
     * a cluster worker it accepts here, instead of asking the primary to listen.
     */
    toServer(connectionListener?: (socket: net.Socket) => void): net.Server;
    toServer(options?: net.ServerOpts, connectionListener?: (socket: net.Socket) => void): net.Server;
    /** Makes `server` (for example an `http.Server`) accept on this listening socket, as {@link toServer}. */
    listen<S extends net.Server>(server: S, callback?: () => void): S;
    /**
     * A `dgram.Socket` over a UDP socket (IPv4 or IPv6, found from the socket),
     * bound already by whoever made it: it receives at once.
     */
    toDgram(options?: Omit<dgram.SocketOptions, 'type'>): dgram.Socket;
    /**
     * An `fs.ReadStream` over a file, fifo, TTY or character device, closing the
     * descriptor when it ends. fs reads on the libuv thread pool and needs a
     * blocking descriptor, so a non-blocking one is made blocking first: the
     * flag belongs to the open file, so every other holder of it (the sender
     * too) sees it change. Each read of a fifo or TTY that waits holds a
     * thread-pool thread meanwhile; for a fifo, {@link toSocket} holds none.
     */
    toReadStream(options?: StreamOptions): fs.ReadStream;
    /** An `fs.WriteStream` over a file, fifo, TTY or character device; as {@link toReadStream}. */
    toWriteStream(options?: StreamOptions): fs.WriteStream;
    /** An fdpass {@link Channel} over a received connected Unix socket. */
    toChannel(options?: ChannelOptions): Channel;
}
/**
 * Takes ownership of a descriptor this process already has (inherited at exec,
 * from systemd socket activation or a parent's stdio) as a {@link ReceivedFd},
 * with the same conversions and the same care as a received one: close-on-exec
 * is set on it now, so this process's own children do not inherit it, and it
 * is closed when collected unless claimed. Throws `EBADF` when it is not open
 * and `ERR_FDPASS_FD_OWNED` when fdpass owns it already (a {@link Channel}'s
 * or {@link Server}'s socket, or a `ReceivedFd`'s).
 */
export declare function adoptFd(fd: number): ReceivedFd;
/** Options of {@link ReceivedFd.toReadStream} and {@link ReceivedFd.toWriteStream}. */
export interface StreamOptions {
    encoding?: BufferEncoding;
    highWaterMark?: number;
    /** Where reads or writes start (files only); default: the shared file offset. */
    start?: number;
}
/**
 * Closes every descriptor of `fds` that is still held, in one native call:
 * what a receiver that refuses a message's descriptors, or is done with
 * them, wants, at a fraction of the cost of closing them one by one. Each
 * closed one is released as by `close()`; all are closed even if one fails,
 * and then the first failure is thrown.
 */
export declare function closeAll(fds: Iterable<ReceivedFd>): void;
/**
 * A connected Unix socket that carries messages with descriptors. Emits
 * `'end'` when a receive finds the peer has closed, and `'close'` once closed.
 */
export declare class Channel extends EventEmitter implements AsyncIterable<Message>, Disposable {
    #private;
    readonly framing: Framing;
    readonly type: SocketType;
    /**
     * Adopts a connected Unix socket you own (for example one inherited in a
     * child's stdio). The channel takes it over; on error it stays yours, open.
     */
    static fromFd(fd: number, options?: ChannelOptions): Channel;
    /** The socket's descriptor number, or -1 once closed. */
    get fd(): number;
    get closed(): boolean;
    /**
     * The peer's credentials (`SO_PEERCRED` on Linux, `getpeereid` and
     * `LOCAL_PEERPID` on macOS, `getpeereid` on FreeBSD), read once and kept.
     * Throws `ERR_FDPASS_CLOSED` if first read after the channel closed.
     */
    get peer(): PeerCredentials;
    /**
     * Refuses descriptors from now on, in the kernel (`SO_PASSRIGHTS`): the
     * peer's sends with descriptors fail with `EPERM` and nothing is installed
     * here; messages already queued are unaffected. `refuseFds(false)` accepts
     * them again. Throws `ERR_FDPASS_UNSUPPORTED` where {@link limits}`.canRefuseFds`
     * is false.
     */
    refuseFds(refuse?: boolean): void;
    /**
     * Sends one message. Resolves once it is all with the kernel. Argument
     * errors throw before any system call; system errors reject, and then
     * nothing was sent and the caller's descriptors are untouched.
     */
    send(message: SendOptions): Promise<void>;
    /**
     * Receives one message. Rejects with `ERR_FDPASS_CLOSED` at end of stream,
     * `ABORT_ERR` when `signal` aborts; nothing that arrived is ever leaked.
     */
    recv(options?: RecvOptions): Promise<Message>;
    /** Async iteration over messages until the peer closes; `options` as for {@link recv}. */
    messages(options?: Omit<RecvOptions, 'signal'> & {
        signal?: AbortSignal;
    }): AsyncGenerator<Message, void, undefined>;
    [Symbol.asyncIterator](): AsyncGenerator<Message, void, undefined>;
    /**
     * Closes the channel. Pending receives and sends reject with
     * `ERR_FDPASS_CLOSED`; queued messages, messages read ahead and partly
     * received ones are dropped and their descriptors closed.
     */
    close(): void;
    [Symbol.dispose](): void;
}
/** A connected pair of channels (socketpair(2)), for example to hand one end to a child. */
export declare function socketPair(options?: SocketPairOptions): [Channel, Channel];
/** Options of {@link spawnWithChannel}: `spawn`'s, plus where the channel goes. */
export interface SpawnWithChannelOptions extends SpawnOptions, SocketPairOptions {
    /** The child's descriptor number for its end (default 3; 0 to 2 replace stdio). */
    fd?: number;
}
/**
 * Spawns `command` (any program) with one end of a new socket pair as its
 * descriptor `options.fd` (default 3), named in its environment as
 * `FDPASS_FD`, and returns the child and the parent's end. The child's end is
 * closed in this process once the child has its copy; on a spawn that throws,
 * both ends are closed. The child's end is blocking, as programs expect of
 * what they inherit. A Node child adopts its end with
 * {@link inheritedChannel}; another program uses the descriptor directly (in
 * raw framing unless it speaks PROTOCOL.md).
 */
export declare function spawnWithChannel(command: string, args?: readonly string[], options?: SpawnWithChannelOptions): {
    child: ChildProcess;
    channel: Channel;
};
/**
 * In a child started by {@link spawnWithChannel}: adopts the channel it was
 * given (the descriptor `FDPASS_FD` names, else 3) and removes `FDPASS_FD`
 * from the environment, so this child's own children do not take it for
 * theirs. Throws `ERR_FDPASS_NO_DESCRIPTOR` when no channel was given.
 */
export declare function inheritedChannel(options?: ChannelOptions): Channel;
/**
 * Connects to a listening fdpass (or any Unix) socket. Argument errors throw
 * synchronously; system errors reject.
 */
export declare function connect(target: string | ConnectOptions): Promise<Channel>;
/**
 * A listening Unix socket. Accepted connections arrive as `'connection'`
 * events or by async iteration, and only while someone is listening for them
 * (otherwise they wait in the kernel's backlog).
 */
export declare class Server extends EventEmitter implements AsyncIterable<Channel>, Disposable {
    #private;
    readonly path: string;
    readonly abstract: boolean;
    readonly framing: Framing;
    /** The listening socket's descriptor number, or -1 once closed. */
    get fd(): number;
    get closed(): boolean;
    /** The next connection; resolves `done` once the server is closed. */
    [Symbol.asyncIterator](): AsyncIterator<Channel, undefined>;
    /** Stops accepting and removes the socket file (if it is still this server's). */
    close(): void;
    [Symbol.dispose](): void;
}
/**
 * Listens on a Unix socket path (or a Linux abstract name). Synchronous: a
 * path in use throws `EADDRINUSE` here.
 */
export declare function listen(target: string | ListenOptions, connectionListener?: (channel: Channel) => void): Server;
