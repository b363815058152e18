//! The framed protocol (PROTOCOL.md, version 1): one `send` is one message on
//! every socket type, with its descriptors paired to it.
//!
//! A message is one or more frames. Each frame is a 12-byte header and a
//! payload; a frame's descriptors ride on the `sendmsg` that carries the
//! header's first byte. All but the last frame of a message set `MORE`. A
//! sender that cannot finish a message it started sends an `ABORT` frame, and
//! the receiver discards that message whole.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use nix::errno::Errno;

use crate::error::{Error, Result};

pub const MAGIC: [u8; 2] = *b"FD";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 12;
/// Flag bit: more frames of the same message follow.
pub const FLAG_MORE: u8 = 0x01;
/// Flag bit: the sender abandons the message in progress (no payload, no
/// descriptors, no `MORE`); the receiver discards it and closes its descriptors.
pub const FLAG_ABORT: u8 = 0x02;
/// Flag bit: a listener refused this connection (no payload, no descriptors,
/// no other flag); nothing else follows on it.
pub const FLAG_REFUSED: u8 = 0x04;
/// Payload bytes per frame on datagram and seqpacket sockets: under Linux's
/// default socket buffer, and small enough that records are never split.
pub const DATAGRAM_FRAME_PAYLOAD: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    64 * 1024
} else {
    2048 - HEADER_LEN
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub more: bool,
    pub abort: bool,
    pub refused: bool,
    pub fds: u16,
    pub payload_len: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = VERSION;
        h[3] = if self.more { FLAG_MORE } else { 0 }
            | if self.abort { FLAG_ABORT } else { 0 }
            | if self.refused { FLAG_REFUSED } else { 0 };
        h[4..6].copy_from_slice(&self.fds.to_le_bytes());
        // bytes 6..8 reserved, zero
        h[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        h
    }

    pub fn decode(b: &[u8]) -> Result<Header> {
        debug_assert!(b.len() >= HEADER_LEN);
        if b[0..2] != MAGIC {
            return Err(Error::Protocol(format!(
                "bad frame magic {:02x}{:02x}: the peer is not speaking the fdpass framed protocol \
                 (use raw mode for peers with their own framing)",
                b[0], b[1]
            )));
        }
        if b[2] != VERSION {
            return Err(Error::Protocol(format!(
                "unsupported protocol version {} (this side speaks {VERSION})",
                b[2]
            )));
        }
        if b[3] & !(FLAG_MORE | FLAG_ABORT | FLAG_REFUSED) != 0 || b[6] != 0 || b[7] != 0 {
            return Err(Error::Protocol("reserved header bits are set".into()));
        }
        let header = Header {
            more: b[3] & FLAG_MORE != 0,
            abort: b[3] & FLAG_ABORT != 0,
            refused: b[3] & FLAG_REFUSED != 0,
            fds: u16::from_le_bytes([b[4], b[5]]),
            payload_len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        };
        if header.abort && (header.more || header.fds != 0 || header.payload_len != 0) {
            return Err(Error::Protocol(
                "an abort frame carries no payload, no descriptors and no MORE flag".into(),
            ));
        }
        if header.refused
            && (header.more || header.abort || header.fds != 0 || header.payload_len != 0)
        {
            return Err(Error::Protocol(
                "a refusal frame carries no payload, no descriptors and no other flag".into(),
            ));
        }
        Ok(header)
    }

    /// The frame a listener writes to a connection its policy refuses.
    pub fn refused_frame() -> [u8; HEADER_LEN] {
        Header {
            refused: true,
            ..Header::default()
        }
        .encode()
    }

    /// The frame a sender writes to abandon the message it started.
    pub fn abort_frame() -> [u8; HEADER_LEN] {
        Header {
            more: false,
            abort: true,
            refused: false,
            fds: 0,
            payload_len: 0,
        }
        .encode()
    }
}

/// One frame ready to send: header plus payload bytes, and the index range of
/// the message's descriptors that ride on its first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub bytes: Vec<u8>,
    pub fds: std::ops::Range<usize>,
}

/// Splits a message into frames: at most `fds_per_frame` descriptors and (when
/// given) `payload_per_frame` bytes each. Descriptors go with the first frames,
/// payload is spread from the first frame on.
pub fn encode(
    data: &[u8],
    fd_count: usize,
    fds_per_frame: usize,
    payload_per_frame: Option<usize>,
) -> Vec<EncodedFrame> {
    let payload_per_frame = payload_per_frame.unwrap_or(usize::MAX).max(1);
    let fd_frames = fd_count.div_ceil(fds_per_frame);
    let data_frames = data.len().div_ceil(payload_per_frame);
    let frames = fd_frames.max(data_frames).max(1);
    let mut out = Vec::with_capacity(frames);
    let mut fd_at = 0;
    let mut data_at = 0;
    for i in 0..frames {
        let nfds = (fd_count - fd_at).min(fds_per_frame);
        let len = (data.len() - data_at).min(payload_per_frame);
        let header = Header {
            more: i + 1 < frames,
            abort: false,
            refused: false,
            fds: nfds as u16,
            payload_len: len as u32,
        };
        let mut bytes = Vec::with_capacity(HEADER_LEN + len);
        bytes.extend_from_slice(&header.encode());
        bytes.extend_from_slice(&data[data_at..data_at + len]);
        out.push(EncodedFrame {
            bytes,
            fds: fd_at..fd_at + nfds,
        });
        fd_at += nfds;
        data_at += len;
    }
    out
}

/// A whole message taken off the wire.
#[derive(Debug, Default)]
pub struct Message {
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// What the reassembler does with a message that exceeds the caller's limits:
/// it still consumes the whole message (so the stream stays in step), closes
/// its descriptors, and reports the error in place of the message.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_fds: usize,
    pub max_bytes: usize,
}

impl Limits {
    /// No limit: for asking what is buffered, whatever a receive accepts.
    pub const UNBOUNDED: Limits = Limits {
        max_fds: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// A message under assembly.
#[derive(Debug, Default)]
struct Partial {
    msg: Message,
    /// Set when the message broke a limit: the rest is consumed and discarded.
    rejected: Option<Error>,
    fds_seen: usize,
    bytes_seen: usize,
}

impl Partial {
    /// Counts a frame by its header, before its payload is buffered: a message
    /// over a limit is rejected at once and its payload never stored.
    fn admit(&mut self, header: &Header, limits: Limits) {
        self.fds_seen += header.fds as usize;
        self.bytes_seen += header.payload_len as usize;
        self.check(limits);
    }

    /// Adds the descriptors of a frame whose header `admit` already counted.
    fn append_fds(&mut self, fds: Vec<OwnedFd>) {
        if self.rejected.is_none() {
            self.msg.fds.extend(fds);
        } // else `fds` drops here: closed
    }

    /// Adds the payload of a frame whose header `admit` already counted.
    fn append_payload(&mut self, payload: &[u8]) {
        if self.rejected.is_none() {
            self.msg.data.extend_from_slice(payload);
        }
    }

    /// Drops the message for `error` (unless a limit already did): what it
    /// holds is closed and the rest of it will be consumed and discarded.
    fn reject(&mut self, error: Error) {
        if self.rejected.is_none() {
            self.rejected = Some(error);
        }
        self.msg = Message::default();
    }

    fn check(&mut self, limits: Limits) {
        if self.rejected.is_none() {
            if self.fds_seen > limits.max_fds {
                self.rejected = Some(Error::TooManyFds {
                    count: self.fds_seen,
                    limit: limits.max_fds,
                    what: "this receive accepts (maxFds)",
                });
            } else if self.bytes_seen > limits.max_bytes {
                self.rejected = Some(Error::MessageTooLarge {
                    size: self.bytes_seen,
                    limit: limits.max_bytes,
                });
            }
        }
        if self.rejected.is_some() {
            self.msg = Message::default(); // closes what it held
        }
    }

    fn finish(mut self) -> Result<Message> {
        if let Some(e) = self.rejected.take() {
            // The count reported is the whole message's, not where the limit tripped.
            return Err(match e {
                Error::TooManyFds { limit, what, .. } => Error::TooManyFds {
                    count: self.fds_seen,
                    limit,
                    what,
                },
                Error::MessageTooLarge { limit, .. } => Error::MessageTooLarge {
                    size: self.bytes_seen,
                    limit,
                },
                e => e,
            });
        }
        Ok(self.msg)
    }
}

/// What [`StreamReassembler::look_ahead`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookAhead {
    /// A whole single-frame message within the limits: `next` returns it.
    Whole,
    /// Nothing yet, or the start of such a message: read more.
    Incomplete,
    /// Anything else: leave it for a receive of its own.
    Other,
}

/// A stream reassembler keeps this much buffer capacity for the next message.
const KEEP_CAPACITY: usize = 64 * 1024;

/// One entry of a stream reassembler's descriptor queue.
#[derive(Debug)]
enum Arrived {
    Fd(OwnedFd),
    /// Where the kernel failed to install the rest of a read's descriptors
    /// (this errno) and released them.
    Dropped(Errno),
}

impl Arrived {
    fn into_fd(self) -> Option<OwnedFd> {
        match self {
            Arrived::Fd(fd) => Some(fd),
            Arrived::Dropped(_) => None,
        }
    }
}

/// The descriptors a frame header claimed from the queue.
enum Claim {
    Fds(Vec<OwnedFd>),
    /// The frame's descriptors were cut short by an [`Arrived::Dropped`] mark.
    Dropped {
        arrived: usize,
        errno: Errno,
    },
}

/// Reassembles framed messages from a byte stream with descriptors attached.
///
/// On a stream the kernel delivers a sender's descriptors together with the
/// bytes of the chunk they rode on, and never later than the first byte of that
/// chunk; one read may also carry earlier bytes. So descriptors wait in a queue
/// and each frame header, when parsed, takes the count it declares. A header
/// that declares more than have arrived, or descriptors left over with no
/// header to claim them, is a protocol violation.
///
/// When the kernel could not install a read's descriptors (EMFILE), a mark
/// follows those it did in the queue. A sender puts one frame's descriptors
/// on one `sendmsg`, so the header that reaches the mark is the frame that
/// lost them: its message is dropped whole and the stream stays in step.
#[derive(Debug, Default)]
pub struct StreamReassembler {
    /// Bytes read and not yet consumed are `buf[at..]`; only those are
    /// kept, so an idle channel holds no read buffer (reads go through a
    /// buffer shared per thread, see channel.rs).
    buf: Vec<u8>,
    at: usize,
    fds: VecDeque<Arrived>,
    header: Option<Header>,
    /// Payload bytes of the current frame still to discard (rejected message).
    skip: usize,
    partial: Option<Partial>,
}

impl StreamReassembler {
    /// Appends what one read returned: its bytes, the descriptors that came
    /// with them and, when the kernel could not install the rest, why.
    pub fn push(&mut self, bytes: &[u8], fds: Vec<OwnedFd>, dropped: Option<Errno>) {
        if self.at == self.buf.len() {
            // Everything consumed: start over, and give back what a large
            // message made the buffer grow to.
            self.at = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        } else if self.at >= self.buf.len() / 2 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.fds.extend(fds.into_iter().map(Arrived::Fd));
        self.fds.extend(dropped.map(Arrived::Dropped));
    }

    /// Whether a message is partly read (bytes or descriptors buffered).
    pub fn mid_message(&self) -> bool {
        self.at < self.buf.len()
            || self.header.is_some()
            || self.partial.is_some()
            || !self.fds.is_empty()
    }

    /// Descriptors held for a message not yet complete.
    pub fn held_fds(&self) -> usize {
        let queued = self
            .fds
            .iter()
            .filter(|a| matches!(a, Arrived::Fd(_)))
            .count();
        queued + self.partial.as_ref().map_or(0, |p| p.msg.fds.len())
    }

    /// Descriptors at the head of the queue, up to the first dropped mark.
    fn fds_before_mark(&self) -> usize {
        self.fds
            .iter()
            .take_while(|a| matches!(a, Arrived::Fd(_)))
            .count()
    }

    /// Takes `n` descriptors for a frame or, when a dropped mark comes first,
    /// those before it and the mark. The caller checked that one of the two holds.
    fn claim_fds(&mut self, n: usize) -> Claim {
        let before_mark = self.fds_before_mark();
        if n <= before_mark {
            let fds = self.fds.drain(..n).filter_map(Arrived::into_fd).collect();
            return Claim::Fds(fds);
        }
        let arrived = self.fds.drain(..before_mark).count(); // closed
        match self.fds.pop_front() {
            Some(Arrived::Dropped(errno)) => Claim::Dropped { arrived, errno },
            other => unreachable!("claim past the queue: {other:?}"),
        }
    }

    /// The next complete message, if the buffer holds one. `Some(Err)` is a
    /// message dropped for breaking `limits` (recoverable) or a protocol
    /// violation (the stream is out of step). A message over `limits` is
    /// known from its frame headers and discarded as it arrives, so a peer
    /// announcing a huge payload never makes this side buffer it.
    pub fn next(&mut self, limits: Limits) -> Option<Result<Message>> {
        loop {
            let header = match self.header {
                Some(h) => h,
                None => {
                    if self.buf.len() - self.at < HEADER_LEN {
                        return self.check_orphan_fds();
                    }
                    let h = match Header::decode(&self.buf[self.at..self.at + HEADER_LEN]) {
                        Ok(h) => h,
                        Err(e) => return Some(Err(e)),
                    };
                    let before_mark = self.fds_before_mark();
                    if (h.fds as usize) > before_mark && before_mark == self.fds.len() {
                        return Some(Err(Error::Protocol(format!(
                            "a frame declares {} descriptors but {} arrived with it",
                            h.fds, before_mark
                        ))));
                    }
                    self.at += HEADER_LEN;
                    if h.refused {
                        return Some(Err(Error::PeerRefused));
                    }
                    if h.abort {
                        // The sender gave up on the message in progress: drop it whole.
                        self.partial = None;
                        continue;
                    }
                    let claim = self.claim_fds(h.fds as usize);
                    let partial = self.partial.get_or_insert_with(Partial::default);
                    partial.admit(&h, limits);
                    match claim {
                        Claim::Fds(fds) => partial.append_fds(fds),
                        Claim::Dropped { arrived, errno } => {
                            partial.reject(Error::DescriptorsDropped { arrived, errno })
                        }
                    }
                    if partial.rejected.is_some() {
                        self.skip = h.payload_len as usize;
                    }
                    self.header = Some(h);
                    h
                }
            };
            if self.partial.as_ref().is_some_and(|p| p.rejected.is_some()) {
                let discard = self.skip.min(self.buf.len() - self.at);
                self.at += discard;
                self.skip -= discard;
                if self.skip > 0 {
                    return None;
                }
            } else {
                let len = header.payload_len as usize;
                if self.buf.len() - self.at < len {
                    return None;
                }
                let payload = &self.buf[self.at..self.at + len];
                if let Some(partial) = self.partial.as_mut() {
                    partial.append_payload(payload);
                }
                self.at += len;
            }
            self.header = None;
            if !header.more {
                let done = self.partial.take().unwrap_or_default();
                return Some(done.finish());
            }
        }
    }

    /// How the next message stands, judged from what is buffered without
    /// consuming or judging anything: `Whole` only for a message of one frame
    /// that is all here, within `limits`, and no larger than `room` (bytes of
    /// frame, descriptors). Read-ahead takes only such messages, so a message
    /// it leaves is judged later by the receive that gets to it, under that
    /// receive's own limits.
    pub fn look_ahead(&self, limits: Limits, room: Limits) -> LookAhead {
        if self.header.is_some() || self.partial.is_some() || self.skip > 0 {
            return LookAhead::Other;
        }
        let buffered = &self.buf[self.at..];
        if buffered.len() < HEADER_LEN {
            return LookAhead::Incomplete;
        }
        let Ok(h) = Header::decode(&buffered[..HEADER_LEN]) else {
            return LookAhead::Other;
        };
        let (fds, len) = (h.fds as usize, h.payload_len as usize);
        if h.more
            || h.abort
            || h.refused
            || fds > limits.max_fds.min(room.max_fds)
            || len > limits.max_bytes
            || HEADER_LEN + len > room.max_bytes
        {
            return LookAhead::Other;
        }
        if buffered.len() < HEADER_LEN + len {
            return LookAhead::Incomplete;
        }
        if fds > self.fds_before_mark() {
            return LookAhead::Other; // a violation or a drop, for `next` to report
        }
        LookAhead::Whole
    }

    /// Descriptors that arrived but that no parsed or partly read header can
    /// claim are a violation: close them.
    fn check_orphan_fds(&mut self) -> Option<Result<Message>> {
        if !self.fds.is_empty() && self.at == self.buf.len() {
            let n = self.fds.len();
            self.fds.clear();
            return Some(Err(Error::Protocol(format!(
                "{n} descriptors arrived without a frame to carry them; they were closed"
            ))));
        }
        None
    }

    /// Drops everything buffered (closing held descriptors); returns how many
    /// descriptors were closed.
    pub fn clear(&mut self) -> usize {
        let n = self.held_fds();
        *self = StreamReassembler::default();
        n
    }
}

/// Reassembles framed messages from records (SOCK_SEQPACKET, SOCK_DGRAM), where
/// each record is exactly one frame.
#[derive(Debug, Default)]
pub struct RecordReassembler {
    partial: Option<Partial>,
}

impl RecordReassembler {
    /// Takes one record; returns a message when it completes one.
    /// `dropped` says the kernel could not install all of the record's
    /// descriptors (`fds` are those it did): its message is dropped whole.
    pub fn push(
        &mut self,
        record: &[u8],
        fds: Vec<OwnedFd>,
        dropped: Option<Errno>,
        limits: Limits,
    ) -> Option<Result<Message>> {
        if record.len() < HEADER_LEN {
            self.partial = None;
            return Some(Err(Error::Protocol(format!(
                "a {}-byte record is shorter than a frame header",
                record.len()
            ))));
        }
        let header = match Header::decode(&record[..HEADER_LEN]) {
            Ok(h) => h,
            Err(e) => {
                self.partial = None;
                return Some(Err(e));
            }
        };
        let payload = &record[HEADER_LEN..];
        let fds_as_declared = match dropped {
            None => fds.len() == header.fds as usize,
            Some(_) => fds.len() < header.fds as usize,
        };
        if payload.len() != header.payload_len as usize || !fds_as_declared {
            self.partial = None;
            return Some(Err(Error::Protocol(format!(
                "a record declares {} bytes and {} descriptors but carried {} and {}; closed",
                header.payload_len,
                header.fds,
                payload.len(),
                fds.len()
            ))));
        }
        if header.refused {
            self.partial = None;
            return Some(Err(Error::PeerRefused));
        }
        if header.abort {
            self.partial = None;
            return None;
        }
        let partial = self.partial.get_or_insert_with(Partial::default);
        partial.admit(&header, limits);
        match dropped {
            None => {
                partial.append_fds(fds);
                partial.append_payload(payload);
            }
            Some(errno) => partial.reject(Error::DescriptorsDropped {
                arrived: fds.len(),
                errno,
            }),
        }
        if header.more {
            return None;
        }
        self.partial.take().map(Partial::finish)
    }

    pub fn mid_message(&self) -> bool {
        self.partial.is_some()
    }

    pub fn clear(&mut self) -> usize {
        let n = self.partial.as_ref().map_or(0, |p| p.msg.fds.len());
        self.partial = None;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMITS: Limits = Limits {
        max_fds: usize::MAX,
        max_bytes: usize::MAX,
    };

    #[test]
    fn header_round_trips() {
        let h = Header {
            more: true,
            abort: false,
            refused: false,
            fds: 253,
            payload_len: 0xdead_beef,
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn header_rejects_foreign_bytes() {
        let mut b = Header {
            more: false,
            abort: false,
            refused: false,
            fds: 0,
            payload_len: 1,
        }
        .encode();
        b[0] = b'X';
        assert!(matches!(Header::decode(&b), Err(Error::Protocol(_))));
        b[0] = b'F';
        b[2] = 9;
        assert!(matches!(Header::decode(&b), Err(Error::Protocol(_))));
    }

    #[test]
    fn encode_spreads_fds_and_payload() {
        let frames = encode(b"hello", 600, 253, None);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].fds, 0..253);
        assert_eq!(frames[1].fds, 253..506);
        assert_eq!(frames[2].fds, 506..600);
        assert_eq!(&frames[0].bytes[HEADER_LEN..], b"hello");
        assert!(Header::decode(&frames[0].bytes).unwrap().more);
        assert!(!Header::decode(&frames[2].bytes).unwrap().more);
        let empty = encode(b"", 0, 253, None);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].bytes.len(), HEADER_LEN);
    }

    #[test]
    fn encode_splits_payload_for_records() {
        let data = vec![7u8; 10];
        let frames = encode(&data, 0, 253, Some(4));
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames
                .iter()
                .map(|f| f.bytes.len() - HEADER_LEN)
                .sum::<usize>(),
            10
        );
    }

    #[test]
    fn stream_reassembles_across_byte_at_a_time_reads() {
        let mut wire = Vec::new();
        for f in encode(b"first", 0, 253, None)
            .into_iter()
            .chain(encode(b"second!", 0, 253, None))
        {
            wire.extend(f.bytes);
        }
        let mut r = StreamReassembler::default();
        let mut got = Vec::new();
        for byte in wire {
            r.push(&[byte], Vec::new(), None);
            while let Some(m) = r.next(NO_LIMITS) {
                got.push(m.unwrap().data);
            }
        }
        assert_eq!(got, vec![b"first".to_vec(), b"second!".to_vec()]);
        assert!(!r.mid_message());
    }

    #[test]
    fn stream_header_claiming_missing_fds_is_a_violation() {
        let frames = encode(b"x", 2, 253, None);
        let mut r = StreamReassembler::default();
        r.push(&frames[0].bytes, Vec::new(), None);
        assert!(matches!(r.next(NO_LIMITS), Some(Err(Error::Protocol(_)))));
    }

    #[test]
    fn record_rejects_count_mismatch() {
        let frames = encode(b"abc", 0, 253, None);
        let mut r = RecordReassembler::default();
        let mut short = frames[0].bytes.clone();
        short.pop();
        assert!(matches!(
            r.push(&short, Vec::new(), None, NO_LIMITS),
            Some(Err(Error::Protocol(_)))
        ));
        assert_eq!(
            r.push(&frames[0].bytes, Vec::new(), None, NO_LIMITS)
                .unwrap()
                .unwrap()
                .data,
            b"abc"
        );
    }

    #[test]
    fn over_limit_message_is_consumed_whole_and_reported() {
        let limits = Limits {
            max_fds: usize::MAX,
            max_bytes: 3,
        };
        let mut r = RecordReassembler::default();
        let frames = encode(b"abcdef", 0, 253, Some(2));
        let mut results = Vec::new();
        for f in &frames {
            if let Some(res) = r.push(&f.bytes, Vec::new(), None, limits) {
                results.push(res);
            }
        }
        assert_eq!(results.len(), 1);
        assert!(matches!(
            results[0],
            Err(Error::MessageTooLarge { size: 6, limit: 3 })
        ));
        assert!(!r.mid_message());
    }

    /// Feeds `wire` to a stream reassembler in `chunk`-byte reads; returns what
    /// came out and the largest buffer it held.
    fn feed_stream(wire: &[u8], chunk: usize, limits: Limits) -> (Vec<Result<Vec<u8>>>, usize) {
        let mut r = StreamReassembler::default();
        let mut out = Vec::new();
        let mut most = 0;
        for piece in wire.chunks(chunk) {
            r.push(piece, Vec::new(), None);
            most = most.max(r.buf.len());
            while let Some(m) = r.next(limits) {
                out.push(m.map(|m| m.data));
            }
        }
        assert!(!r.mid_message());
        (out, most)
    }

    #[test]
    fn an_abort_frame_discards_the_message_in_progress() {
        let frames = encode(b"abandoned", 0, 253, Some(3));
        let mut wire = Vec::new();
        wire.extend(&frames[0].bytes);
        wire.extend(&frames[1].bytes);
        wire.extend(Header::abort_frame());
        for f in encode(b"next", 0, 253, None) {
            wire.extend(f.bytes);
        }
        let (got, _) = feed_stream(&wire, 5, NO_LIMITS);
        assert_eq!(
            got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            vec![b"next".to_vec()]
        );

        let mut r = RecordReassembler::default();
        assert!(r
            .push(&frames[0].bytes, Vec::new(), None, NO_LIMITS)
            .is_none());
        assert!(r
            .push(&Header::abort_frame(), Vec::new(), None, NO_LIMITS)
            .is_none());
        assert!(!r.mid_message());
    }

    #[test]
    fn a_refusal_frame_ends_the_stream_with_peer_refused_and_carries_nothing() {
        let mut r = StreamReassembler::default();
        r.push(&Header::refused_frame(), Vec::new(), None);
        assert!(matches!(r.next(NO_LIMITS), Some(Err(Error::PeerRefused))));
        let mut records = RecordReassembler::default();
        assert!(matches!(
            records.push(&Header::refused_frame(), Vec::new(), None, NO_LIMITS),
            Some(Err(Error::PeerRefused))
        ));
        let mut with_payload = Header::refused_frame();
        with_payload[8] = 1;
        assert!(matches!(
            Header::decode(&with_payload),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn an_abort_frame_with_content_is_a_violation() {
        let mut b = Header::abort_frame();
        b[8] = 1;
        assert!(matches!(Header::decode(&b), Err(Error::Protocol(_))));
    }

    #[test]
    fn a_stream_message_over_max_bytes_is_discarded_as_it_arrives() {
        let big = vec![7u8; 1 << 20];
        let mut wire = Vec::new();
        for f in encode(&big, 0, 253, None)
            .into_iter()
            .chain(encode(b"small", 0, 253, None))
        {
            wire.extend(f.bytes);
        }
        let limits = Limits {
            max_fds: usize::MAX,
            max_bytes: 1024,
        };
        let (got, most) = feed_stream(&wire, 4096, limits);
        assert!(
            matches!(got[0], Err(Error::MessageTooLarge { size, limit: 1024 }) if size == big.len())
        );
        assert_eq!(got[1].as_ref().unwrap(), b"small");
        assert!(
            most <= 2 * 4096,
            "held {most} bytes of a rejected 1 MiB message"
        );
    }

    #[test]
    fn look_ahead_takes_only_whole_single_frame_messages_within_limits() {
        let frame = |data: &[u8], fds: usize, more: bool| {
            let header = Header {
                more,
                abort: false,
                refused: false,
                fds: fds as u16,
                payload_len: data.len() as u32,
            };
            [header.encode().as_slice(), data].concat()
        };
        let room = Limits {
            max_fds: 512,
            max_bytes: 64 * 1024,
        };
        let mut r = StreamReassembler::default();
        assert_eq!(r.look_ahead(NO_LIMITS, room), LookAhead::Incomplete);

        let whole = frame(b"hello", 0, false);
        r.push(&whole[..7], Vec::new(), None);
        assert_eq!(
            r.look_ahead(NO_LIMITS, room),
            LookAhead::Incomplete,
            "half a header"
        );
        r.push(&whole[7..14], Vec::new(), None);
        assert_eq!(
            r.look_ahead(NO_LIMITS, room),
            LookAhead::Incomplete,
            "half a payload"
        );
        r.push(&whole[14..], Vec::new(), None);
        assert_eq!(r.look_ahead(NO_LIMITS, room), LookAhead::Whole);
        let tight = Limits {
            max_fds: 0,
            max_bytes: 4,
        };
        assert_eq!(r.look_ahead(tight, room), LookAhead::Other, "over maxBytes");
        let small_room = Limits {
            max_fds: 512,
            max_bytes: HEADER_LEN + 4,
        };
        assert_eq!(
            r.look_ahead(NO_LIMITS, small_room),
            LookAhead::Other,
            "over the budget"
        );
        assert_eq!(r.next(NO_LIMITS).unwrap().unwrap().data, b"hello");

        r.push(&frame(b"part", 0, true), Vec::new(), None);
        assert_eq!(
            r.look_ahead(NO_LIMITS, room),
            LookAhead::Other,
            "a message of several frames"
        );
    }
}
