use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::error::{Error, Result};
use crate::frame::{self, Arrival, Limits, Message, RecordReassembler, StreamReassembler};
use crate::sys::{self, FdsCut, Recv, Sent};
use crate::{Mode, SocketType};

/// Largest receive buffer kept between calls; a raw receive that needs more
/// gets a buffer of its own for that call, sized by what is queued.
const SCRATCH_LIMIT: usize = 1024 * 1024;

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

thread_local! {
    /// The receive buffer shared by the channels of a thread. A channel keeps
    /// only the message it is assembling, so 10,000 channels waiting cost no
    /// read buffer each. It only grows (to [`SCRATCH_LIMIT`] at most); each
    /// call uses the prefix it needs.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What one read of a framed socket did.
enum ReadStep {
    WouldBlock,
    /// No bytes and no descriptors: end of stream (or, for records, also an
    /// empty datagram or a truncated record, which the caller tells apart).
    Unusual(sys::Received),
    /// Taken by the reassembler, which may have completed a message.
    Pushed(Option<Result<Message>>),
}

/// Runs `receive` with a data buffer of `bytes`: the thread's shared one,
/// or for more than [`SCRATCH_LIMIT`] one of its own. `receive` must not
/// receive again (it makes one call).
fn with_scratch<T>(bytes: usize, receive: impl FnOnce(&mut [u8]) -> T) -> T {
    if bytes > SCRATCH_LIMIT {
        return receive(&mut vec![0u8; bytes]);
    }
    SCRATCH.with(|scratch| {
        let mut data = scratch.borrow_mut();
        if data.len() < bytes {
            data.resize(bytes, 0);
        }
        receive(&mut data[..bytes])
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

/// Default per-message payload cap for framed receives (DEFAULT_MAX_BYTES), and
/// buffer for raw ones (DEFAULT_RAW_MAX_BYTES). 4 MiB, gRPC's default receive limit: the most payload a peer can make a
/// framed receive hold unless the caller raises it.
pub const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;
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
    /// Whether a receive tried before waiting will find anything.
    unprompted_reads: EmptyPredictor,
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
        // Whoever made the socket (a sender that passed it, say) may have
        // asked for credentials or a pidfd with every message.
        sys::clear_passing_options(sock)?;
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
            unprompted_reads: EmptyPredictor::default(),
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

    /// Whether part of a message has been received (bytes or descriptors of
    /// a message not yet complete): what a time limit on incomplete
    /// messages measures.
    pub fn receiving_message(&self) -> bool {
        self.stream_in.mid_message() || self.record_in.mid_message()
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
    ///
    /// The kernel is never given room for more descriptors than `opts`
    /// accepts (with `max_fds` 0, none: a message that carries some installs
    /// nothing here and fails), nor for any of a message this receive does
    /// not take: on a framed stream every read stays within one frame.
    pub fn try_recv(&mut self, opts: RecvOptions) -> Result<Option<Message>> {
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

    /// [`try_recv`](Self::try_recv) for a caller on an event loop. With
    /// `Readiness::Unknown`, and while reads without a readiness report keep
    /// finding nothing, it may return `None` without a system call: the
    /// caller waits for readiness as it would after EAGAIN. So a `None` does
    /// not prove the socket empty: wait with level-triggered readiness (poll,
    /// libuv's uv_poll, epoll without EPOLLET), which reports data a skipped
    /// read left behind; an edge-triggered waiter could sleep on it forever.
    pub fn try_recv_paced(
        &mut self,
        opts: RecvOptions,
        readiness: Readiness,
    ) -> Result<Option<Message>> {
        let predicted = readiness == Readiness::Unknown && !self.eof;
        if predicted && !self.unprompted_reads.worth_reading() {
            return Ok(None);
        }
        let got = self.try_recv(opts)?;
        if predicted {
            self.unprompted_reads.record(got.is_some());
        }
        Ok(got)
    }

    fn try_recv_raw(&mut self, opts: RecvOptions) -> Result<Option<Message>> {
        if self.eof {
            return Err(Error::PeerClosed);
        }
        let room = opts.max_fds.min(sys::MAX_FDS_PER_RECVMSG);
        let Some(size) = self.raw_read_size(opts.max_bytes.max(1))? else {
            return Ok(None);
        };
        let sock = self.sock.as_fd();
        // The message gets a copy of its bytes only, never the whole buffer.
        let (got, data) = match with_scratch(size, |buf| {
            sys::recv_with_fds(sock, buf, room).map(|r| match r {
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
        let arrived = got.fds.len();
        match got.fds_cut {
            Some(FdsCut::NotInstalled(errno)) => {
                if self.kind == SocketType::Stream {
                    // The read may hold bytes of earlier writes and only part of the
                    // one that carried them: with no framing to tell them apart,
                    // the stream cannot go on.
                    self.eof = true;
                }
                return Err(Error::DescriptorsDropped { arrived, errno });
            }
            Some(FdsCut::NoRoom) if room < sys::MAX_FDS_PER_RECVMSG => {
                return Err(Error::FdsOverLimit {
                    limit: opts.max_fds,
                    arrived,
                });
            }
            Some(FdsCut::NoRoom) => return Err(Error::ControlTruncated { arrived }),
            None => {}
        }
        if got.data_truncated {
            return Err(Error::MessageTruncated {
                limit: size,
                fds: arrived,
            });
        }
        Ok(Some(Message { data, fds: got.fds }))
    }

    /// The buffer a raw receive of at most `wanted` bytes reads into, or
    /// `None` when nothing is queued. Up to [`SCRATCH_LIMIT`] it is `wanted`
    /// (from the shared buffer); past it, no larger than what is queued, so
    /// a receive that accepts terabytes allocates what arrived. A record is
    /// never longer than what FIONREAD reports while it is queued.
    fn raw_read_size(&self, wanted: usize) -> Result<Option<usize>> {
        if wanted <= SCRATCH_LIMIT {
            return Ok(Some(wanted));
        }
        let sock = self.sock.as_fd();
        let mut queued = sys::queued_bytes(sock)?;
        if queued == 0 {
            // Empty, or at its head an empty record or end of stream.
            if !sys::anything_queued(sock)? {
                return Ok(None);
            }
            // Bytes may have come since: those are then at the head.
            queued = sys::queued_bytes(sock)?;
        }
        Ok(Some(wanted.min(queued.max(1))))
    }

    fn try_recv_framed_stream(&mut self, opts: RecvOptions) -> Result<Option<Message>> {
        let limits = Limits {
            max_fds: opts.max_fds,
            max_bytes: opts.max_bytes,
        };
        loop {
            if self.eof {
                return Err(Error::PeerClosed);
            }
            let plan = self.stream_in.next_read(limits);
            let (sock, stream_in) = (self.sock.as_fd(), &mut self.stream_in);
            let step = with_scratch(plan.bytes, |buf| {
                Ok(match sys::recv_with_fds(sock, buf, plan.fd_room)? {
                    Recv::WouldBlock => ReadStep::WouldBlock,
                    Recv::Got(g) if g.bytes == 0 => ReadStep::Unusual(g),
                    Recv::Got(g) => {
                        let arrival = Arrival {
                            fds: g.fds,
                            cut: g.fds_cut,
                            room: plan.fd_room,
                        };
                        ReadStep::Pushed(stream_in.push(&buf[..g.bytes], arrival, limits))
                    }
                })
            });
            match step {
                Ok(ReadStep::WouldBlock) => return Ok(None),
                Ok(ReadStep::Pushed(None)) => {}
                Ok(ReadStep::Pushed(Some(r))) => {
                    if matches!(&r, Err(e) if !e.is_recoverable()) {
                        self.eof = true;
                    }
                    return r.map(Some);
                }
                Ok(ReadStep::Unusual(got)) => {
                    self.eof = true;
                    if got.carried_fds() {
                        self.stream_in.clear();
                        return Err(Error::Protocol(
                            "descriptors arrived without a byte to carry them; they were closed"
                                .into(),
                        ));
                    }
                    if self.stream_in.mid_message() {
                        let fds = self.stream_in.clear();
                        return Err(Error::ClosedMidMessage { fds });
                    }
                    return Err(Error::PeerClosed);
                }
                Err(e) => {
                    self.stream_in.clear();
                    self.eof = true;
                    return Err(e);
                }
            }
        }
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
            let room = self.record_in.fd_room(limits);
            let (sock, record_in) = (self.sock.as_fd(), &mut self.record_in);
            // The record goes to the reassembler while the shared buffer holds it.
            let step = with_scratch(record_len, |buf| {
                Ok(match sys::recv_with_fds(sock, buf, room)? {
                    Recv::WouldBlock => ReadStep::WouldBlock,
                    Recv::Got(g) if g.bytes == 0 || g.data_truncated => ReadStep::Unusual(g),
                    Recv::Got(g) => {
                        let arrival = Arrival {
                            fds: g.fds,
                            cut: g.fds_cut,
                            room,
                        };
                        ReadStep::Pushed(record_in.push(&buf[..g.bytes], arrival, limits))
                    }
                })
            });
            let got = match step {
                Ok(ReadStep::WouldBlock) => return Ok(None),
                Ok(ReadStep::Pushed(Some(r))) => return r.map(Some),
                Ok(ReadStep::Pushed(None)) => continue,
                Ok(ReadStep::Unusual(g)) => g,
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
            let arrival = Arrival {
                fds: got.fds,
                cut: got.fds_cut,
                room,
            };
            if let Some(r) = self.record_in.push(&[], arrival, limits) {
                return r.map(Some);
            }
        }
    }
}
