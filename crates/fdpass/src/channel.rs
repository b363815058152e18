use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::error::{Error, Result};
use crate::frame::{self, Limits, LookAhead, Message, RecordReassembler, StreamReassembler};
use crate::sys::{self, Recv, Sent};
use crate::{Mode, SocketType};

/// Bytes asked of the kernel per read on a stream in framed mode.
const STREAM_READ_CHUNK: usize = 64 * 1024;
/// Largest receive buffer kept between calls; a raw receive asking for more
/// gets a buffer of its own for that call.
const SCRATCH_LIMIT: usize = 1024 * 1024;
/// What one `try_recv_many` may take beyond its first message: frame bytes
/// and descriptors. Small enough that read-ahead never holds much the caller
/// did not ask for yet, large enough to amortise a call over many messages.
const READ_AHEAD: Limits = Limits {
    max_fds: 512,
    max_bytes: 64 * 1024,
};

/// Where a receive comes from: whether the event loop has just reported the
/// socket readable, or the caller tries before waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The event loop reported the socket readable.
    Reported,
    /// Nothing is known: a receive tried before waiting.
    Unknown,
}

/// Predicts, for one kind of read, that the socket is empty, from how the
/// last reads of that kind went. After [`MISSES_BEFORE_SKIPPING`] reads in a
/// row found nothing it advises skipping the read (the caller waits for
/// readiness instead), except every [`PROBE_EVERY`]th time. Request/response
/// traffic thus stops paying a recvmsg that says EAGAIN before every wait,
/// and a sender that runs ahead is noticed within a few calls.
#[derive(Debug, Default, Clone, Copy)]
struct EmptyPredictor {
    misses: u8,
    skipped: u8,
}

const MISSES_BEFORE_SKIPPING: u8 = 2;
const PROBE_EVERY: u8 = 8;

impl EmptyPredictor {
    fn worth_reading(&mut self) -> bool {
        if self.misses < MISSES_BEFORE_SKIPPING {
            return true;
        }
        self.skipped += 1;
        if self.skipped < PROBE_EVERY {
            return false;
        }
        self.skipped = 0;
        true
    }

    fn record(&mut self, found: bool) {
        self.misses = if found {
            0
        } else {
            self.misses.saturating_add(1)
        };
    }
}

/// Receive buffers shared by the channels of a thread. A channel keeps only
/// the bytes of a message still incomplete, so 10,000 channels waiting cost
/// no read buffer each. Both only grow; each call uses the prefix it needs.
struct Scratch {
    data: Vec<u8>,
    control: Vec<u64>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new(Scratch { data: Vec::new(), control: Vec::new() })
    };
}

/// What one read of a record did.
enum RecordStep {
    WouldBlock,
    /// Taken by the reassembler, which may have completed a message.
    Pushed(Option<Result<Message>>),
    /// Empty (end of stream on seqpacket) or truncated: handled by the caller.
    Unusual(sys::Received),
}

/// Runs `receive` with a data buffer of `bytes` and a control buffer sized
/// for `max_fds` (its size is what limits the descriptors the kernel may
/// deliver; it can hold more, see `sys::control_space`). `receive` must not
/// receive again (it makes one call).
fn with_scratch<T>(
    bytes: usize,
    max_fds: usize,
    receive: impl FnOnce(&mut [u8], &mut [u64]) -> T,
) -> T {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Scratch { data, control } = &mut *scratch;
        let words = sys::control_space(max_fds).div_ceil(8);
        if control.len() < words {
            control.resize(words, 0);
        }
        let control = &mut control[..words];
        if bytes > SCRATCH_LIMIT {
            return receive(&mut vec![0u8; bytes], control);
        }
        if data.len() < bytes {
            data.resize(bytes, 0);
        }
        receive(&mut data[..bytes], control)
    })
}

/// Receive limits a caller sets per receive.
#[derive(Debug, Clone, Copy)]
pub struct RecvOptions {
    /// Most descriptors accepted in one message; more are closed and reported.
    pub max_fds: usize,
    /// Most payload bytes accepted in one message (framed mode), or the size
    /// of the receive buffer (raw mode).
    pub max_bytes: usize,
}

impl Default for RecvOptions {
    fn default() -> Self {
        RecvOptions {
            max_fds: sys::MAX_FDS_PER_SENDMSG,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Default per-message payload cap for framed receives, and buffer for raw ones.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_RAW_MAX_BYTES: usize = 64 * 1024;

/// Result of a non-blocking send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// The whole message is with the kernel.
    Sent,
    /// Part or all of it waits in the channel's queue (descriptors duplicated,
    /// so the caller may close its own); call `flush` when writable.
    Queued,
}

/// Bytes still to write, with the descriptors that must ride on their first byte.
#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    at: usize,
    fds: Vec<OwnedFd>,
    /// The last chunk of a message: finishing it completes one `send`.
    ends_message: bool,
}

/// A connected Unix socket that carries messages with descriptors.
///
/// All operations are non-blocking: `try_recv` gives `None` and `send` gives
/// `Queued` when the socket would block. `recv_blocking` and `send_blocking`
/// wait with poll(2) for callers without an event loop.
#[derive(Debug)]
pub struct Channel {
    sock: OwnedFd,
    kind: SocketType,
    mode: Mode,
    outbox: VecDeque<Pending>,
    stream_in: StreamReassembler,
    record_in: RecordReassembler,
    eof: bool,
    /// An error read-ahead met after it had messages to return: the next
    /// receive reports it, so it reaches the caller in order.
    deferred: Option<Error>,
    /// Whether a receive tried before waiting will find anything.
    unprompted_reads: EmptyPredictor,
    /// Whether reading ahead after a first message will find anything.
    read_ahead_reads: EmptyPredictor,
    /// Set while a non-blocking connect is in progress.
    connecting: Option<nix::sys::socket::UnixAddr>,
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Channel {
    /// Adopts a connected Unix socket: makes it non-blocking and close-on-exec
    /// and reads its type.
    pub fn from_fd(sock: OwnedFd, mode: Mode) -> Result<Channel> {
        let kind = Channel::prepare(sock.as_fd())?;
        Ok(Channel::new(sock, kind, mode))
    }

    /// Checks that `sock` can carry messages and readies it for a channel.
    fn prepare(sock: BorrowedFd<'_>) -> Result<SocketType> {
        let kind = sys::socket_type_of(sock)?;
        sys::set_nonblocking(sock, true)?;
        sys::set_cloexec(sock, "fcntl")?;
        sys::no_sigpipe(sock)?;
        Ok(kind)
    }

    pub(crate) fn new(sock: OwnedFd, kind: SocketType, mode: Mode) -> Channel {
        Channel {
            sock,
            kind,
            mode,
            outbox: VecDeque::new(),
            stream_in: StreamReassembler::default(),
            record_in: RecordReassembler::default(),
            eof: false,
            deferred: None,
            unprompted_reads: EmptyPredictor::default(),
            read_ahead_reads: EmptyPredictor::default(),
            connecting: None,
        }
    }

    /// Adopts a connected Unix socket given by number (an inherited descriptor).
    /// The number is checked before ownership is taken: on error the caller
    /// still owns it and it stays open.
    pub fn adopt_raw(fd: RawFd, mode: Mode) -> Result<Channel> {
        let kind = sys::with_raw(fd, Channel::prepare)?;
        Ok(Channel::new(sys::adopt(fd)?, kind, mode))
    }

    pub(crate) fn set_connecting(&mut self, addr: nix::sys::socket::UnixAddr) {
        self.connecting = Some(addr);
    }

    /// Completes a connect started by `connect`: `Ok(true)` once connected,
    /// `Ok(false)` to wait for writability and call again.
    pub fn poll_connect(&mut self) -> Result<bool> {
        let Some(addr) = self.connecting else {
            return Ok(true);
        };
        sys::connect_result(self.sock.as_fd())?;
        // Linux reports a full backlog as EAGAIN, which needs a new connect call.
        let done = match sys::connect(self.sock.as_fd(), &addr) {
            Ok(done) => done,
            Err(Error::Sys {
                errno: nix::errno::Errno::EISCONN,
                ..
            }) => true,
            Err(e) => return Err(e),
        };
        if done {
            self.connecting = None;
        }
        Ok(done)
    }

    /// A connected pair, as socketpair(2) makes.
    pub fn pair(kind: SocketType, mode: Mode) -> Result<(Channel, Channel)> {
        let (a, b) = sys::new_socket_pair(kind)?;
        Ok((Channel::new(a, kind, mode), Channel::new(b, kind, mode)))
    }

    /// Gives the socket back; anything queued or partly received is dropped.
    /// Refuses this connection (a listener's policy said no) and closes it.
    /// In framed mode the peer's next receive then fails with `PeerRefused`:
    /// one refusal frame is written first, best effort, as a fresh socket has
    /// room for it; raw-mode peers have no frames and only see the close.
    /// Nothing is ever read from the socket, so descriptors the peer sent in
    /// the meantime never reach this process: the kernel closes them with it.
    pub fn refuse(self) {
        if self.mode == Mode::Framed {
            let _ = sys::send_with_fds(
                self.sock.as_fd(),
                self.kind,
                &frame::Header::refused_frame(),
                &crate::NO_FDS,
            );
        }
    }

    pub fn into_fd(self) -> OwnedFd {
        self.sock
    }

    pub fn socket_type(&self) -> SocketType {
        self.kind
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether messages wait in the send queue.
    pub fn has_queued(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Sends one message without blocking. Limits and descriptors are checked
    /// before anything is written, so an error means nothing was sent.
    ///
    /// `fds` are borrowed for the call only: descriptors that must wait in the
    /// queue are duplicated first. A number that is not open gives EBADF.
    pub fn send<F: AsRawFd>(&mut self, data: &[u8], fds: &[F]) -> Result<SendStatus> {
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let chunks = self.plan(data, &raw)?;
        let queued_before = self.outbox.len();
        let mut status = SendStatus::Sent;
        let mut on_wire = false;
        let last = chunks.len() - 1;
        for (i, (bytes, fd_range)) in chunks.into_iter().enumerate() {
            let step = self.send_chunk(bytes, &raw[fd_range], i == last, status, &mut on_wire);
            match step {
                Ok(s) => status = s,
                Err(e) => {
                    self.abandon(queued_before, on_wire)?;
                    return Err(e);
                }
            }
        }
        Ok(status)
    }

    /// Writes one chunk, or queues it behind what already waits or would block.
    fn send_chunk(
        &mut self,
        bytes: Vec<u8>,
        fds: &[RawFd],
        ends_message: bool,
        status: SendStatus,
        on_wire: &mut bool,
    ) -> Result<SendStatus> {
        if status == SendStatus::Queued || !self.outbox.is_empty() {
            self.queue(bytes, 0, fds, ends_message)?;
            return Ok(SendStatus::Queued);
        }
        match sys::send_with_fds(self.sock.as_fd(), self.kind, &bytes, fds)? {
            Sent::Bytes(n) if n == bytes.len() => {
                *on_wire = true;
                Ok(SendStatus::Sent)
            }
            Sent::Bytes(n) => {
                *on_wire = true;
                // The descriptors went with the first n bytes; the rest goes without.
                self.queue(bytes, n, &[], ends_message)?;
                Ok(SendStatus::Queued)
            }
            Sent::WouldBlock => {
                self.queue(bytes, 0, fds, ends_message)?;
                Ok(SendStatus::Queued)
            }
        }
    }

    /// Undoes a message whose later chunk failed (the kernel refused its
    /// descriptors, or duplicating them for the queue failed), so a failed
    /// send delivers nothing: its chunks still queued are dropped with their
    /// descriptor copies, and if part of it already went out, an abort frame
    /// follows it so the peer discards what it has. An error here means even
    /// that could not be written, and the channel is closed for sending.
    fn abandon(&mut self, queued_before: usize, on_wire: bool) -> Result<()> {
        // A queued chunk whose first bytes went out is finished first, so the
        // stream stays in step; nothing after it was written.
        let started = self
            .outbox
            .iter()
            .skip(queued_before)
            .take_while(|p| p.at > 0)
            .count();
        self.outbox.truncate(queued_before + started);
        if !on_wire {
            return Ok(());
        }
        let abort = frame::Header::abort_frame().to_vec();
        if self.outbox.is_empty() {
            match sys::send_with_fds(self.sock.as_fd(), self.kind, &abort, &[] as &[RawFd]) {
                Ok(Sent::Bytes(n)) if n == abort.len() => return Ok(()),
                Ok(Sent::Bytes(n)) => return self.queue(abort, n, &[], false),
                Ok(Sent::WouldBlock) => {}
                Err(e) => {
                    // Half a message is on the wire and nothing can follow it.
                    let _ = nix::sys::socket::shutdown(
                        self.sock.as_raw_fd(),
                        nix::sys::socket::Shutdown::Write,
                    );
                    return Err(e);
                }
            }
        }
        self.queue(abort, 0, &[], false)
    }

    /// Checks the message against the limits and splits it into the chunks
    /// each `sendmsg` carries.
    fn plan(&self, data: &[u8], fds: &[RawFd]) -> Result<Vec<(Vec<u8>, std::ops::Range<usize>)>> {
        let limit = sys::MAX_FDS_PER_SENDMSG;
        match self.mode {
            Mode::Raw => {
                if fds.len() > limit {
                    return Err(Error::TooManyFds {
                        count: fds.len(),
                        limit,
                        what: "one raw-mode message carries on this platform; use framed mode to send more",
                    });
                }
                if !fds.is_empty() && data.is_empty() && self.kind == SocketType::Stream {
                    return Err(Error::InvalidArgument(
                        "a raw-mode message with descriptors on a stream socket needs at least one data byte \
                         (the kernel attaches descriptors to bytes)"
                            .into(),
                    ));
                }
                Ok(vec![(data.to_vec(), 0..fds.len())])
            }
            Mode::Framed => {
                if data.len() > u32::MAX as usize && self.kind == SocketType::Stream {
                    return Err(Error::MessageTooLarge {
                        size: data.len(),
                        limit: u32::MAX as usize,
                    });
                }
                if fds.len() > limit {
                    // Several sendmsg calls: check every descriptor first so a bad
                    // one cannot leave half a message on the wire.
                    for &fd in fds {
                        sys::check_open(fd)?;
                    }
                }
                let per_frame = match self.kind {
                    SocketType::Stream => None,
                    _ => Some(self.record_payload(data.len())?),
                };
                let frames = frame::encode(data, fds.len(), limit, per_frame);
                Ok(frames.into_iter().map(|f| (f.bytes, f.fds)).collect())
            }
        }
    }

    /// Payload bytes per record: the protocol's, or fewer when the socket's
    /// send buffer cannot hold a record that large (Linux refuses a record
    /// over SO_SNDBUF - 32 bytes with EMSGSIZE). Payloads that fit the
    /// smallest buffer a socket can have skip asking.
    fn record_payload(&self, len: usize) -> Result<usize> {
        Ok(
            match sys::record_limit(self.sock.as_fd(), len + frame::HEADER_LEN)? {
                Some(limit) => frame::DATAGRAM_FRAME_PAYLOAD
                    .min(limit.saturating_sub(frame::HEADER_LEN))
                    .max(1),
                None => frame::DATAGRAM_FRAME_PAYLOAD,
            },
        )
    }

    fn queue(
        &mut self,
        bytes: Vec<u8>,
        at: usize,
        fds: &[RawFd],
        ends_message: bool,
    ) -> Result<()> {
        let mut owned = Vec::with_capacity(fds.len());
        for &fd in fds {
            owned.push(sys::dup_cloexec(fd)?);
        }
        self.outbox.push_back(Pending {
            bytes,
            at,
            fds: owned,
            ends_message,
        });
        Ok(())
    }

    /// Writes queued chunks until the socket would block. Returns how many
    /// whole messages were completed.
    pub fn flush(&mut self) -> Result<usize> {
        let mut completed = 0;
        while let Some(p) = self.outbox.front_mut() {
            let raw: Vec<RawFd> = p.fds.iter().map(|f| f.as_raw_fd()).collect();
            match sys::send_with_fds(self.sock.as_fd(), self.kind, &p.bytes[p.at..], &raw)? {
                Sent::WouldBlock => break,
                Sent::Bytes(n) => {
                    p.at += n;
                    p.fds.clear(); // sent with the first byte: our duplicates close now
                    if p.at == p.bytes.len() {
                        if p.ends_message {
                            completed += 1;
                        }
                        self.outbox.pop_front();
                    }
                }
            }
        }
        Ok(completed)
    }

    /// Blocking send: queues, then flushes, waiting for writability with poll.
    pub fn send_blocking<F: AsRawFd>(&mut self, data: &[u8], fds: &[F]) -> Result<()> {
        if self.send(data, fds)? == SendStatus::Sent {
            return Ok(());
        }
        while self.has_queued() {
            sys::wait_ready(self.sock.as_fd(), true)?;
            self.flush()?;
        }
        Ok(())
    }

    /// Receives one message without blocking; `Ok(None)` when none is ready.
    /// `Err(PeerClosed)` at orderly end of stream.
    pub fn try_recv(&mut self, opts: RecvOptions) -> Result<Option<Message>> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        match self.mode {
            Mode::Raw => self.try_recv_raw(opts),
            Mode::Framed if self.kind == SocketType::Stream => self.try_recv_framed_stream(opts),
            Mode::Framed => self.try_recv_framed_records(opts),
        }
    }

    /// Blocking receive, waiting for readability with poll.
    pub fn recv_blocking(&mut self, opts: RecvOptions) -> Result<Message> {
        loop {
            if let Some(m) = self.try_recv(opts)? {
                return Ok(m);
            }
            sys::wait_ready(self.sock.as_fd(), false)?;
        }
    }

    /// Receives up to `max_messages` messages without blocking; empty when
    /// none is ready. The first is exactly what `try_recv` returns (errors
    /// included). On a framed stream it then reads ahead, taking further
    /// messages only while each is one whole frame within `opts` and within a
    /// small budget ([`READ_AHEAD`]); anything else stays buffered for the
    /// next call to judge under its own limits. A later receive with stricter
    /// limits must check a message read ahead against them. An error met while
    /// reading ahead is returned by the next call instead.
    ///
    /// With `Readiness::Unknown`, and while reads without a readiness report
    /// keep finding nothing, it may return empty without a system call: the
    /// caller waits for readiness as it would after EAGAIN. Read-ahead is
    /// paced the same way. Neither ever skips what is already buffered. So
    /// an empty result does not prove the socket empty: wait with
    /// level-triggered readiness (poll, libuv's uv_poll, epoll without
    /// EPOLLET), which reports data a skipped read left behind; an
    /// edge-triggered waiter could sleep on it forever.
    pub fn try_recv_many(
        &mut self,
        opts: RecvOptions,
        max_messages: usize,
        readiness: Readiness,
    ) -> Result<Vec<Message>> {
        let predicted = readiness == Readiness::Unknown && self.starts_with_read();
        if predicted && !self.unprompted_reads.worth_reading() {
            return Ok(Vec::new());
        }
        let first = self.try_recv(opts)?;
        if predicted {
            self.unprompted_reads.record(first.is_some());
        }
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        let mut room = READ_AHEAD;
        let mut out = vec![first];
        if self.mode != Mode::Framed || self.kind != SocketType::Stream {
            return Ok(out);
        }
        let limits = Limits {
            max_fds: opts.max_fds,
            max_bytes: opts.max_bytes,
        };
        let mut first_read = true;
        while out.len() < max_messages {
            match self.stream_in.look_ahead(limits, room) {
                LookAhead::Whole => match self.next_from_stream(limits) {
                    Some(Ok(m)) => {
                        room.max_bytes -= frame::HEADER_LEN + m.data.len();
                        room.max_fds -= m.fds.len();
                        out.push(m);
                    }
                    Some(Err(e)) => {
                        self.deferred = Some(e);
                        break;
                    }
                    None => break,
                },
                LookAhead::Incomplete if !self.eof => {
                    // Only a call's first read ahead is predicted: once one
                    // finds bytes, the peer is ahead and more reads pay.
                    let paced = std::mem::take(&mut first_read);
                    if paced && !self.read_ahead_reads.worth_reading() {
                        break;
                    }
                    let filled = self.fill_stream();
                    if paced {
                        self.read_ahead_reads.record(matches!(filled, Ok(true)));
                    }
                    match filled {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            self.deferred = Some(e);
                            break;
                        }
                    }
                }
                LookAhead::Incomplete | LookAhead::Other => break,
            }
        }
        Ok(out)
    }

    /// Whether `try_recv` would begin with a system call rather than with
    /// what is already buffered or known.
    fn starts_with_read(&self) -> bool {
        if self.deferred.is_some() || self.eof {
            return false;
        }
        match self.mode {
            Mode::Framed if self.kind == SocketType::Stream => matches!(
                self.stream_in
                    .look_ahead(Limits::UNBOUNDED, Limits::UNBOUNDED),
                LookAhead::Incomplete
            ),
            _ => true,
        }
    }

    fn try_recv_raw(&mut self, opts: RecvOptions) -> Result<Option<Message>> {
        if self.eof {
            return Err(Error::PeerClosed);
        }
        let wanted = opts.max_bytes.max(1);
        let sock = self.sock.as_fd();
        // The message gets a copy of its bytes only, never the whole buffer.
        let (got, data) = match with_scratch(wanted, opts.max_fds, |buf, control| {
            sys::recv_with_fds(sock, buf, control).map(|r| match r {
                Recv::Got(g) => {
                    let data = buf[..g.bytes].to_vec();
                    Some((g, data))
                }
                Recv::WouldBlock => None,
            })
        })? {
            Some(got) => got,
            None => return Ok(None),
        };
        // Zero bytes is end of stream on streams and seqpacket (where an empty record
        // cannot be told from it); on datagram sockets it is an empty datagram.
        if got.carried_nothing() && self.kind != SocketType::Datagram {
            self.eof = true;
            return Err(Error::PeerClosed);
        }
        if let Some(errno) = got.fds_dropped {
            if self.kind == SocketType::Stream {
                // The read may hold bytes of earlier writes and only part of the
                // one that carried them: with no framing to tell them apart,
                // the stream cannot go on.
                self.eof = true;
            }
            return Err(Error::DescriptorsDropped {
                arrived: got.fds.len(),
                errno,
            });
        }
        if got.data_truncated {
            return Err(Error::MessageTruncated {
                limit: wanted,
                fds: got.fds.len(),
            });
        }
        if got.fds.len() > opts.max_fds {
            // The buffer can hold more than asked for: CMSG_SPACE rounds up
            // (standard-ai/sendfd#14), and on macOS it holds all XNU installs.
            return Err(Error::TooManyFds {
                count: got.fds.len(),
                limit: opts.max_fds,
                what: "this receive accepts (maxFds); all were closed",
            });
        }
        Ok(Some(Message { data, fds: got.fds }))
    }

    fn try_recv_framed_stream(&mut self, opts: RecvOptions) -> Result<Option<Message>> {
        let limits = Limits {
            max_fds: opts.max_fds,
            max_bytes: opts.max_bytes,
        };
        loop {
            if let Some(r) = self.next_from_stream(limits) {
                return r.map(Some);
            }
            if self.eof {
                return Err(Error::PeerClosed);
            }
            if !self.fill_stream()? {
                return Ok(None);
            }
        }
    }

    /// The next message the stream reassembler holds; a violation ends the stream.
    fn next_from_stream(&mut self, limits: Limits) -> Option<Result<Message>> {
        let r = self.stream_in.next(limits)?;
        if let Err(e) = &r {
            if !e.is_recoverable() {
                self.stream_in.clear();
                self.eof = true;
            }
        }
        Some(r)
    }

    /// One read from a framed stream into its reassembler: true if it got
    /// bytes, false if the socket would block. End of stream and errors end
    /// the stream (and close any partly received message).
    fn fill_stream(&mut self) -> Result<bool> {
        let (sock, stream_in) = (self.sock.as_fd(), &mut self.stream_in);
        // Every frame may carry the platform's maximum, whatever this caller
        // accepts: the frame must arrive whole for the stream to stay in step.
        let got = with_scratch(
            STREAM_READ_CHUNK,
            sys::MAX_FDS_PER_SENDMSG,
            |buf, control| {
                sys::recv_with_fds(sock, buf, control).map(|r| match r {
                    Recv::Got(mut g) => {
                        stream_in.push(&buf[..g.bytes], std::mem::take(&mut g.fds), g.fds_dropped);
                        Recv::Got(g)
                    }
                    other => other,
                })
            },
        );
        let got = match got {
            Ok(Recv::Got(g)) => g,
            Ok(Recv::WouldBlock) => return Ok(false),
            Err(e) => {
                self.stream_in.clear();
                self.eof = true;
                return Err(e);
            }
        };
        if got.carried_nothing() {
            self.eof = true;
            if self.stream_in.mid_message() {
                let fds = self.stream_in.clear();
                return Err(Error::ClosedMidMessage { fds });
            }
            return Err(Error::PeerClosed);
        }
        Ok(true)
    }

    fn try_recv_framed_records(&mut self, opts: RecvOptions) -> Result<Option<Message>> {
        let limits = Limits {
            max_fds: opts.max_fds,
            max_bytes: opts.max_bytes,
        };
        let record_len = frame::HEADER_LEN + frame::DATAGRAM_FRAME_PAYLOAD;
        loop {
            if self.eof {
                return Err(Error::PeerClosed);
            }
            let (sock, record_in) = (self.sock.as_fd(), &mut self.record_in);
            // The record goes to the reassembler while the shared buffer holds it.
            let step = with_scratch(record_len, sys::MAX_FDS_PER_SENDMSG, |buf, control| {
                Ok(match sys::recv_with_fds(sock, buf, control)? {
                    Recv::WouldBlock => RecordStep::WouldBlock,
                    Recv::Got(g) if g.bytes == 0 || g.data_truncated => RecordStep::Unusual(g),
                    Recv::Got(g) => RecordStep::Pushed(record_in.push(
                        &buf[..g.bytes],
                        g.fds,
                        g.fds_dropped,
                        limits,
                    )),
                })
            });
            let got = match step {
                Ok(RecordStep::WouldBlock) => return Ok(None),
                Ok(RecordStep::Pushed(Some(r))) => return r.map(Some),
                Ok(RecordStep::Pushed(None)) => continue,
                Ok(RecordStep::Unusual(g)) => g,
                Err(e) => {
                    // A lost record breaks the message it belonged to: drop it whole
                    // rather than deliver it with a frame missing.
                    self.record_in.clear();
                    return Err(e);
                }
            };
            if got.carried_nothing() && self.kind == SocketType::SeqPacket {
                // A zero-length record is end of stream on seqpacket.
                self.eof = true;
                if self.record_in.mid_message() {
                    let fds = self.record_in.clear();
                    return Err(Error::ClosedMidMessage { fds });
                }
                return Err(Error::PeerClosed);
            }
            if got.data_truncated {
                self.record_in.clear();
                return Err(Error::MessageTruncated {
                    limit: record_len,
                    fds: got.fds.len(),
                });
            }
            // An empty record that is not end of stream (a datagram, or one with
            // descriptors): the reassembler refuses it, closing what it carried.
            if let Some(r) = self.record_in.push(&[], got.fds, got.fds_dropped, limits) {
                return r.map(Some);
            }
        }
    }
}
