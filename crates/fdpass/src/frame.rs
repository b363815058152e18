//! The framed protocol (PROTOCOL.md, version 1): one `send` is one message on
//! every socket type, with its descriptors paired to it.
//!
//! A message is one or more frames. Each frame is a 12-byte header and a
//! payload; a frame's descriptors ride on the `sendmsg` that carries the
//! header's first byte. All but the last frame of a message set `MORE`. A
//! sender that cannot finish a message it started sends an `ABORT` frame, and
//! the receiver discards that message whole.

use std::os::fd::OwnedFd;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::sys::{FdsCut, MAX_FDS_PER_RECVMSG};

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

/// The descriptors one read brought, and the room it gave the kernel for them.
#[derive(Debug, Default)]
pub struct Arrival {
    pub fds: Vec<OwnedFd>,
    /// Set when the message carried more than `fds` (see [`FdsCut`]).
    pub cut: Option<FdsCut>,
    /// How many descriptors the read let the kernel install.
    pub room: usize,
}

impl Arrival {
    /// What a read that gave no room and got none brings.
    pub const NONE: Arrival = Arrival {
        fds: Vec::new(),
        cut: None,
        room: 0,
    };

    fn carried_fds(&self) -> bool {
        !self.fds.is_empty() || self.cut.is_some()
    }
}

/// A frame's descriptors, judged against the count its header declares.
enum Claim {
    Fds(Vec<OwnedFd>),
    /// It carried more than the read had room for: over what the receive
    /// accepts (the room is what it still accepts), so the message is refused.
    OverRoom,
    /// The kernel could not install some of them and released them.
    Dropped {
        arrived: usize,
        errno: Errno,
    },
}

/// Judges the descriptors that came with a frame's header against the count
/// it declares. A mismatch the kernel's limits cannot explain is a protocol
/// violation: descriptors the header does not claim are never handed on with
/// another frame. `arrival`'s descriptors are closed unless claimed.
fn claim(declared: usize, arrival: Arrival) -> Result<Claim> {
    let Arrival { fds, cut, room } = arrival;
    let arrived = fds.len();
    match cut {
        None if arrived == declared => Ok(Claim::Fds(fds)),
        Some(FdsCut::NoRoom) if declared > room => Ok(Claim::OverRoom),
        Some(FdsCut::NotInstalled(errno)) if arrived < declared => {
            Ok(Claim::Dropped { arrived, errno })
        }
        None => Err(Error::Protocol(format!(
            "a frame declares {declared} descriptors but {arrived} arrived with it; they were closed"
        ))),
        Some(_) => Err(Error::Protocol(format!(
            "more descriptors arrived with a frame than the {declared} it declares; they were closed"
        ))),
    }
}

/// Adds a frame's judged descriptors to the message under assembly.
fn take_claim(partial: &mut Partial, claim: Claim, declared: usize, limits: Limits) {
    match claim {
        Claim::Fds(fds) => partial.append_fds(fds),
        Claim::Dropped { arrived, errno } => {
            partial.reject(Error::DescriptorsDropped { arrived, errno })
        }
        // `admit` refused the message for its count already; the room is what
        // the receive still accepts, so this only restates it.
        Claim::OverRoom => partial.reject(Error::TooManyFds {
            count: partial.fds_seen.max(declared),
            limit: limits.max_fds,
            what: "this receive accepts (maxFds)",
        }),
    }
}

/// Judges a frame's header and the descriptors that came with it, and
/// starts or continues the message under assembly (`partial`) with them:
/// `Ok(None)` for an abort frame (the message in progress is dropped whole),
/// `Err` for a refusal or a protocol violation.
fn begin_frame<'p>(
    partial: &'p mut Option<Partial>,
    header: &Header,
    arrival: Arrival,
    limits: Limits,
) -> Result<Option<&'p mut Partial>> {
    let declared = header.fds as usize;
    if declared > MAX_FDS_PER_RECVMSG {
        return Err(Error::Protocol(format!(
            "a frame declares {declared} descriptors; one frame carries at most {MAX_FDS_PER_RECVMSG}"
        )));
    }
    let claimed = claim(declared, arrival)?;
    if header.refused {
        return Err(Error::PeerRefused);
    }
    if header.abort {
        // The sender gave up on the message in progress: drop it whole.
        *partial = None;
        return Ok(None);
    }
    let partial = partial.get_or_insert_with(Partial::default);
    partial.admit(header, limits);
    take_claim(partial, claimed, declared, limits);
    Ok(Some(partial))
}

/// Room a read that may start a frame gives the kernel: what the receive
/// still accepts for the message under assembly, none once it was refused,
/// and never more than one `recvmsg` can bring.
fn fd_room(partial: Option<&Partial>, limits: Limits) -> usize {
    match partial {
        Some(p) if p.rejected.is_some() => 0,
        Some(p) => limits.max_fds.saturating_sub(p.fds_seen),
        None => limits.max_fds,
    }
    .min(MAX_FDS_PER_RECVMSG)
}

/// Checks the first bytes of a frame header as they arrive, so bytes that
/// can start no frame fail at once rather than wait for the rest (a peer
/// could hold this side's descriptors forever behind one bad byte).
fn check_header_prefix(prefix: &[u8]) -> Result<()> {
    // Every field after the prefix accepts the value a default header has
    // there, so the prefix can begin a frame exactly when this decodes.
    let mut whole = Header::default().encode();
    whole[..prefix.len()].copy_from_slice(prefix);
    Header::decode(&whole).map(drop)
}

/// What the next read from a framed stream may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// Bytes to ask for: never past the end of the frame being read, so no
    /// read takes bytes, or descriptors, of the frame after it.
    pub bytes: usize,
    /// Descriptors the read may bring: only a read that starts a frame
    /// header can carry any (its sender's `sendmsg` began with that header),
    /// and no more than the receive still accepts.
    pub fd_room: usize,
}

/// Bytes asked of the kernel per read of a frame's payload.
const PAYLOAD_READ_CHUNK: usize = 64 * 1024;

/// Where a stream reassembler is within the frame it reads.
#[derive(Debug)]
enum StreamAt {
    /// In a header: the bytes of it so far, and what came with the first.
    Header {
        bytes: [u8; HEADER_LEN],
        len: usize,
        arrival: Arrival,
    },
    /// In a payload: `remaining` bytes of the frame `header` begins still
    /// to come (to keep, or to discard when the message was refused).
    Payload { header: Header, remaining: usize },
}

impl Default for StreamAt {
    fn default() -> Self {
        StreamAt::Header {
            bytes: [0; HEADER_LEN],
            len: 0,
            arrival: Arrival::NONE,
        }
    }
}

/// Reassembles framed messages from a byte stream with descriptors attached.
///
/// The stream is read one frame at a time ([`StreamReassembler::next_read`]):
/// a read never reaches past the frame it is in, so on a stream, where the
/// kernel hands a `sendmsg`'s descriptors to the read that takes its first
/// byte, only a read that starts a header can bring descriptors, and they
/// are that frame's. Descriptors on any other read, or more or fewer than
/// the header declares, are a protocol violation and are closed. Nothing is
/// buffered but the message under assembly, and no descriptor is installed
/// for a message no receive has asked for yet.
#[derive(Debug, Default)]
pub struct StreamReassembler {
    at: StreamAt,
    partial: Option<Partial>,
}

impl StreamReassembler {
    /// What the next read may take, for a receive with `limits`.
    pub fn next_read(&self, limits: Limits) -> ReadPlan {
        match &self.at {
            StreamAt::Header { len: 0, .. } => ReadPlan {
                bytes: HEADER_LEN,
                fd_room: fd_room(self.partial.as_ref(), limits),
            },
            StreamAt::Header { len, .. } => ReadPlan {
                bytes: HEADER_LEN - len,
                fd_room: 0,
            },
            StreamAt::Payload { remaining, .. } => ReadPlan {
                bytes: (*remaining).min(PAYLOAD_READ_CHUNK),
                fd_room: 0,
            },
        }
    }

    /// Takes what one read planned by [`next_read`](Self::next_read)
    /// returned (at least one byte): its bytes and the descriptors that came
    /// with them. Returns a message when it completes one; `Some(Err)` is a
    /// message dropped for breaking `limits` or losing descriptors
    /// (recoverable), or a protocol violation (the stream is out of step).
    /// A message over `limits` is known from its frame headers and its
    /// payload discarded as it arrives, so a peer announcing a huge payload
    /// never makes this side buffer it.
    pub fn push(
        &mut self,
        bytes: &[u8],
        arrival: Arrival,
        limits: Limits,
    ) -> Option<Result<Message>> {
        let r = self.take(bytes, arrival, limits);
        if matches!(&r, Some(Err(e)) if !e.is_recoverable()) {
            self.clear();
        }
        r
    }

    fn take(&mut self, bytes: &[u8], arrival: Arrival, limits: Limits) -> Option<Result<Message>> {
        if bytes.is_empty() {
            // On a stream the kernel attaches descriptors to bytes; a read of
            // none that brings some has no frame to give them to.
            return arrival.carried_fds().then(|| {
                Err(Error::Protocol(
                    "descriptors arrived without a byte to carry them; they were closed".into(),
                ))
            });
        }
        match &mut self.at {
            StreamAt::Header {
                bytes: header_bytes,
                len,
                arrival: first,
            } => {
                if *len == 0 {
                    *first = arrival;
                } else if arrival.carried_fds() {
                    return Some(Err(Error::Protocol(
                        "descriptors arrived inside a frame header; they were closed".into(),
                    )));
                }
                let n = bytes.len().min(HEADER_LEN - *len);
                header_bytes[*len..*len + n].copy_from_slice(&bytes[..n]);
                *len += n;
                if let Err(e) = check_header_prefix(&header_bytes[..*len]) {
                    return Some(Err(e));
                }
                if *len < HEADER_LEN {
                    return None;
                }
                let header = match Header::decode(header_bytes) {
                    Ok(h) => h,
                    Err(e) => return Some(Err(e)),
                };
                let first = std::mem::take(first);
                self.at = StreamAt::default();
                self.start_frame(header, first, limits)
            }
            StreamAt::Payload { header, remaining } => {
                if arrival.carried_fds() {
                    return Some(Err(Error::Protocol(
                        "descriptors arrived on the payload bytes of a frame; they were closed"
                            .into(),
                    )));
                }
                let (header, n) = (*header, bytes.len().min(*remaining));
                *remaining -= n;
                let done = *remaining == 0;
                if let Some(partial) = self.partial.as_mut() {
                    partial.append_payload(&bytes[..n]);
                }
                if done {
                    self.at = StreamAt::default();
                    return self.end_frame(header);
                }
                None
            }
        }
    }

    /// Judges a header and what came with it, and moves to its payload.
    fn start_frame(
        &mut self,
        header: Header,
        arrival: Arrival,
        limits: Limits,
    ) -> Option<Result<Message>> {
        match begin_frame(&mut self.partial, &header, arrival, limits) {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        }
        if header.payload_len == 0 {
            return self.end_frame(header);
        }
        self.at = StreamAt::Payload {
            header,
            remaining: header.payload_len as usize,
        };
        None
    }

    fn end_frame(&mut self, header: Header) -> Option<Result<Message>> {
        if header.more {
            return None;
        }
        let done = self.partial.take().unwrap_or_default();
        Some(done.finish())
    }

    /// Whether a message is partly read (bytes or descriptors held).
    pub fn mid_message(&self) -> bool {
        self.partial.is_some() || !matches!(self.at, StreamAt::Header { len: 0, .. })
    }

    /// Descriptors held for a message not yet complete.
    pub fn held_fds(&self) -> usize {
        let in_header = match &self.at {
            StreamAt::Header { arrival, .. } => arrival.fds.len(),
            StreamAt::Payload { .. } => 0,
        };
        in_header + self.partial.as_ref().map_or(0, |p| p.msg.fds.len())
    }

    /// Drops everything held (closing its descriptors); returns how many
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
    /// Room the next record's read gives the kernel for descriptors: what
    /// a receive with `limits` still accepts for the message under assembly.
    pub fn fd_room(&self, limits: Limits) -> usize {
        fd_room(self.partial.as_ref(), limits)
    }

    /// Takes one record, read with the room [`fd_room`](Self::fd_room)
    /// gave; returns a message when it completes one.
    pub fn push(
        &mut self,
        record: &[u8],
        arrival: Arrival,
        limits: Limits,
    ) -> Option<Result<Message>> {
        let r = self.take(record, arrival, limits);
        if matches!(&r, Some(Err(_))) {
            self.partial = None;
        }
        r
    }

    fn take(&mut self, record: &[u8], arrival: Arrival, limits: Limits) -> Option<Result<Message>> {
        if record.len() < HEADER_LEN {
            return Some(Err(Error::Protocol(format!(
                "a {}-byte record is shorter than a frame header",
                record.len()
            ))));
        }
        let header = match Header::decode(&record[..HEADER_LEN]) {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        let payload = &record[HEADER_LEN..];
        if payload.len() != header.payload_len as usize {
            return Some(Err(Error::Protocol(format!(
                "a record declares {} payload bytes but carried {}; its descriptors were closed",
                header.payload_len,
                payload.len()
            ))));
        }
        match begin_frame(&mut self.partial, &header, arrival, limits) {
            Ok(Some(partial)) => partial.append_payload(payload),
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
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

    fn dev_nulls(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect()
    }

    fn with_fds(n: usize, room: usize) -> Arrival {
        Arrival {
            fds: dev_nulls(n),
            cut: None,
            room,
        }
    }

    /// Feeds `wire` (no descriptors) to a stream reassembler as its reads
    /// plan them, each cut to at most `most` bytes; returns what came out and
    /// the most payload bytes it held at once.
    fn feed_stream(wire: &[u8], most: usize, limits: Limits) -> (Vec<Result<Vec<u8>>>, usize) {
        let mut r = StreamReassembler::default();
        let (mut out, mut held, mut at) = (Vec::new(), 0, 0);
        while at < wire.len() {
            let plan = r.next_read(limits);
            let n = plan.bytes.min(most).min(wire.len() - at);
            assert!(n > 0, "a read of nothing was planned");
            let got = r.push(&wire[at..at + n], Arrival::NONE, limits);
            at += n;
            held = held.max(r.partial.as_ref().map_or(0, |p| p.msg.data.len()));
            out.extend(got.map(|m| m.map(|m| m.data)));
        }
        assert!(!r.mid_message());
        (out, held)
    }

    fn wire_of(messages: &[&[u8]]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|m| encode(m, 0, 253, None))
            .flat_map(|f| f.bytes)
            .collect()
    }

    #[test]
    fn stream_reassembles_across_byte_at_a_time_reads() {
        let wire = wire_of(&[b"first", b"second!", b""]);
        for most in [1, 5, usize::MAX] {
            let (got, _) = feed_stream(&wire, most, NO_LIMITS);
            let got: Vec<Vec<u8>> = got.into_iter().map(Result::unwrap).collect();
            assert_eq!(got, vec![b"first".to_vec(), b"second!".to_vec(), vec![]]);
        }
    }

    #[test]
    fn reads_never_reach_past_the_frame_they_are_in() {
        let frames = encode(&[9u8; 200_000], 0, 253, Some(70_000));
        let mut r = StreamReassembler::default();
        for f in &frames {
            let mut at = 0;
            while at < f.bytes.len() {
                let plan = r.next_read(NO_LIMITS);
                assert!(
                    at + plan.bytes <= f.bytes.len(),
                    "a read planned past the frame's end"
                );
                assert_eq!(
                    plan.fd_room > 0,
                    at == 0,
                    "room for descriptors only at a header's start"
                );
                r.push(&f.bytes[at..at + plan.bytes], Arrival::NONE, NO_LIMITS);
                at += plan.bytes;
            }
        }
        assert!(!r.mid_message());
    }

    #[test]
    fn stream_header_claiming_missing_fds_is_a_violation() {
        let frames = encode(b"x", 2, 253, None);
        let mut r = StreamReassembler::default();
        let got = r.push(&frames[0].bytes[..HEADER_LEN], with_fds(0, 253), NO_LIMITS);
        assert!(matches!(got, Some(Err(Error::Protocol(_)))));
    }

    #[test]
    fn stray_descriptors_never_reach_another_frame() {
        // A header that claims none but came with two, then a frame with its own.
        let mut r = StreamReassembler::default();
        let lying = encode(b"", 0, 253, None).remove(0).bytes;
        let got = r.push(&lying, with_fds(2, 253), NO_LIMITS);
        assert!(
            matches!(&got, Some(Err(Error::Protocol(m))) if m.contains("declares 0 descriptors but 2"))
        );
        assert_eq!(r.held_fds(), 0);
        assert!(!r.mid_message(), "the violation clears the stream");
    }

    #[test]
    fn descriptors_on_payload_bytes_are_a_violation() {
        let frame = encode(b"payload", 0, 253, None).remove(0).bytes;
        let mut r = StreamReassembler::default();
        assert!(r
            .push(&frame[..HEADER_LEN], Arrival::NONE, NO_LIMITS)
            .is_none());
        assert_eq!(r.next_read(NO_LIMITS).fd_room, 0);
        let got = r.push(
            &frame[HEADER_LEN..HEADER_LEN + 1],
            with_fds(3, 0),
            NO_LIMITS,
        );
        assert!(matches!(&got, Some(Err(Error::Protocol(m))) if m.contains("payload")));
        let cut = Arrival {
            fds: Vec::new(),
            cut: Some(FdsCut::NoRoom),
            room: 0,
        };
        let mut r = StreamReassembler::default();
        r.push(&frame[..HEADER_LEN], Arrival::NONE, NO_LIMITS);
        assert!(
            matches!(
                r.push(&frame[HEADER_LEN..], cut, NO_LIMITS),
                Some(Err(Error::Protocol(_)))
            ),
            "descriptors the kernel held back (no room) count as sent"
        );
    }

    #[test]
    fn bytes_that_can_start_no_frame_fail_at_once() {
        for prefix in [&b"X"[..], b"FX", b"FD\x07", b"FD\x01\x80"] {
            let mut r = StreamReassembler::default();
            let got = r.push(prefix, with_fds(1, 253), NO_LIMITS);
            assert!(matches!(got, Some(Err(Error::Protocol(_)))), "{prefix:?}");
            assert_eq!(r.held_fds(), 0);
        }
        let mut r = StreamReassembler::default();
        assert!(
            r.push(b"FD\x01", with_fds(1, 253), NO_LIMITS).is_none(),
            "a valid prefix waits"
        );
        assert_eq!(r.next_read(NO_LIMITS).bytes, HEADER_LEN - 3);
    }

    #[test]
    fn descriptors_past_the_room_refuse_the_message_and_the_stream_goes_on() {
        let limits = Limits {
            max_fds: 2,
            max_bytes: usize::MAX,
        };
        let mut r = StreamReassembler::default();
        assert_eq!(r.next_read(limits).fd_room, 2);
        let five = encode(b"five", 5, 253, None).remove(0).bytes;
        let cut = Arrival {
            fds: dev_nulls(2),
            cut: Some(FdsCut::NoRoom),
            room: 2,
        };
        assert!(r.push(&five[..HEADER_LEN], cut, limits).is_none());
        let got = r.push(&five[HEADER_LEN..], Arrival::NONE, limits);
        assert!(matches!(
            got,
            Some(Err(Error::TooManyFds {
                count: 5,
                limit: 2,
                ..
            }))
        ));
        let (got, _) = feed_stream(&wire_of(&[b"next"]), usize::MAX, limits);
        assert_eq!(got[0].as_ref().unwrap(), b"next");
        // With no room at all, the kernel installs none.
        let none = Limits {
            max_fds: 0,
            max_bytes: usize::MAX,
        };
        assert_eq!(StreamReassembler::default().next_read(none).fd_room, 0);
    }

    #[test]
    fn record_rejects_count_mismatch() {
        let frames = encode(b"abc", 0, 253, None);
        let mut r = RecordReassembler::default();
        let mut short = frames[0].bytes.clone();
        short.pop();
        assert!(matches!(
            r.push(&short, Arrival::NONE, NO_LIMITS),
            Some(Err(Error::Protocol(_)))
        ));
        assert!(matches!(
            r.push(&frames[0].bytes, with_fds(1, 253), NO_LIMITS),
            Some(Err(Error::Protocol(_)))
        ));
        assert_eq!(
            r.push(&frames[0].bytes, Arrival::NONE, NO_LIMITS)
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
            if let Some(res) = r.push(&f.bytes, Arrival::NONE, limits) {
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

    #[test]
    fn an_abort_frame_discards_the_message_in_progress() {
        let frames = encode(b"abandoned", 0, 253, Some(3));
        let mut wire = Vec::new();
        wire.extend(&frames[0].bytes);
        wire.extend(&frames[1].bytes);
        wire.extend(Header::abort_frame());
        wire.extend(wire_of(&[b"next"]));
        let (got, _) = feed_stream(&wire, 5, NO_LIMITS);
        assert_eq!(
            got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            vec![b"next".to_vec()]
        );

        let mut r = RecordReassembler::default();
        assert!(r.push(&frames[0].bytes, Arrival::NONE, NO_LIMITS).is_none());
        assert!(r
            .push(&Header::abort_frame(), Arrival::NONE, NO_LIMITS)
            .is_none());
        assert!(!r.mid_message());
    }

    #[test]
    fn a_refusal_frame_ends_the_stream_with_peer_refused_and_carries_nothing() {
        let mut r = StreamReassembler::default();
        assert!(matches!(
            r.push(&Header::refused_frame(), Arrival::NONE, NO_LIMITS),
            Some(Err(Error::PeerRefused))
        ));
        let mut records = RecordReassembler::default();
        assert!(matches!(
            records.push(&Header::refused_frame(), Arrival::NONE, NO_LIMITS),
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
        let wire = wire_of(&[&big, b"small"]);
        let limits = Limits {
            max_fds: usize::MAX,
            max_bytes: 1024,
        };
        let (got, held) = feed_stream(&wire, 4096, limits);
        assert!(
            matches!(got[0], Err(Error::MessageTooLarge { size, limit: 1024 }) if size == big.len())
        );
        assert_eq!(got[1].as_ref().unwrap(), b"small");
        assert_eq!(held, 0, "held nothing of a rejected 1 MiB message");
    }
}
