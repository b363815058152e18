//! Fuzz harnesses: the cargo-fuzz targets in `fuzz/` call these, and
//! `cargo test --features fuzzing` replays the corpus in `fuzz/corpus/`
//! through them. Beyond "no panic", each checks ownership: every descriptor
//! handed to the code under test comes back exactly once or is closed by it.

use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use arbitrary::{Arbitrary, Unstructured};
use nix::errno::Errno;

use crate::frame::{self, Arrival, Limits, Message, RecordReassembler, StreamReassembler};
use crate::sys::{self, ControlOutcome, FdsCut};

/// Descriptors made for one run, handed to the code under test, and checked
/// at the end: once everything is dropped, none may be open. Numbers rise
/// within a run and are never reused, so a descriptor closed twice, or one
/// left open, cannot hide behind a later one that got the same number. The
/// harnesses share the process's descriptor table: run one at a time.
struct Tracker {
    template: OwnedFd,
    made: Vec<RawFd>,
}

/// Where a run's numbers start: above what a test process has open.
const FIRST_NUMBER: RawFd = 64;

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            template: std::fs::File::open("/dev/null")
                .expect("open /dev/null")
                .into(),
            made: Vec::new(),
        }
    }

    fn make(&mut self) -> OwnedFd {
        let lowest = self.made.last().map_or(FIRST_NUMBER, |&last| last + 1);
        let fd = sys::dup_cloexec_at_least(self.template.as_raw_fd(), lowest).expect("dup");
        self.made.push(fd.as_raw_fd());
        fd
    }

    fn make_n(&mut self, n: usize) -> Vec<OwnedFd> {
        (0..n).map(|_| self.make()).collect()
    }

    /// Call only after dropping everything that came back: an open one is a leak.
    fn assert_all_closed(&self) {
        for &fd in &self.made {
            assert!(sys::check_open(fd).is_err(), "descriptor {fd} leaked");
        }
    }
}

/// Checks that each returned descriptor is open and owned once.
fn assert_owned_once<'a>(fds: impl IntoIterator<Item = &'a OwnedFd>, seen: &mut HashSet<RawFd>) {
    for fd in fds {
        let raw = fd.as_raw_fd();
        assert!(
            sys::check_open(raw).is_ok(),
            "descriptor {raw} returned closed"
        );
        assert!(seen.insert(raw), "descriptor {raw} returned twice");
    }
}

/// Most control bytes one run takes: about 250 descriptor slots, under any
/// descriptor limit a fuzzing process runs with.
const MAX_CONTROL: usize = 1024;

/// Control-message walker and the MSG_CTRUNC judgement, on arbitrary bytes.
/// Input: a flags byte (bit 0: MSG_CTRUNC), `msg_controllen` (u16 LE, taken
/// modulo the buffer), then the control buffer. Every slot the walker finds
/// is filled with a real descriptor, as the kernel would, before adoption.
pub fn control(data: &[u8]) {
    let [flags, len_lo, len_hi, buffer @ ..] = data else {
        return;
    };
    let mut buffer = buffer[..buffer.len().min(MAX_CONTROL)].to_vec();
    let truncated = flags & 1 != 0;
    let written = usize::from(u16::from_le_bytes([*len_lo, *len_hi])) % (buffer.len() + 1);

    let found = sys::fd_slots(&buffer[..written]);
    let slots = found.rights.clone();
    for pair in slots.windows(2) {
        assert!(
            pair[0] + 4 <= pair[1],
            "slots overlap or go backwards: {slots:?}"
        );
    }
    if let Some(&last) = slots.last() {
        assert!(
            last + 4 <= written,
            "slot {last} beyond msg_controllen {written}"
        );
    }

    let mut tracker = Tracker::new();
    let mut handed = Vec::with_capacity(slots.len());
    for &at in &slots {
        let raw = tracker.make().into_raw_fd();
        buffer[at..at + 4].copy_from_slice(&raw.to_ne_bytes());
        handed.push(raw);
    }
    // Descriptors of other control messages (SCM_PIDFD) are closed, never returned.
    for &at in &found.unasked {
        let raw = tracker.make().into_raw_fd();
        buffer[at..at + 4].copy_from_slice(&raw.to_ne_bytes());
    }
    let outcome = sys::adopt_received(&buffer, written, truncated);
    if truncated && cfg!(any(target_os = "linux", target_os = "android")) {
        let installed_fewer_than_fit =
            fds_that_fit(&slots, written, buffer.len()).map(|fit| slots.len() < fit);
        if let Some(expected) = installed_fewer_than_fit {
            let got = matches!(outcome, ControlOutcome::NotInstalled(_));
            assert_eq!(
                got,
                expected,
                "MSG_CTRUNC judged wrongly for {slots:?} in {written}/{}",
                buffer.len()
            );
        }
    }
    if !truncated {
        assert!(
            matches!(outcome, ControlOutcome::Whole(_)),
            "a cut reported without MSG_CTRUNC"
        );
    }
    let (ControlOutcome::Whole(fds)
    | ControlOutcome::NotInstalled(fds)
    | ControlOutcome::NoRoom(fds)) = outcome;
    let got: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    assert_eq!(
        got, handed,
        "descriptors not returned exactly once, in order"
    );
    assert_owned_once(&fds, &mut HashSet::new());
    drop(fds);
    tracker.assert_all_closed();
}

/// How many descriptors Linux's `scm_detach_fds` would have installed into a
/// `capacity`-byte buffer, had the message carried enough, for the rights
/// message that holds `slots` (or, with none, one that would follow the
/// `written` bytes): `(capacity - offset - sizeof(cmsghdr)) / 4`. `None` when
/// the slots are not one message's (then there is no one rights header).
fn fds_that_fit(slots: &[usize], written: usize, capacity: usize) -> Option<usize> {
    let header = std::mem::size_of::<nix::libc::cmsghdr>();
    let rights_at = match slots.first() {
        Some(&first) => {
            let contiguous = slots.windows(2).all(|w| w[1] == w[0] + 4);
            if !contiguous {
                return None;
            }
            first - header
        }
        None => written.next_multiple_of(std::mem::align_of::<nix::libc::cmsghdr>()),
    };
    Some(capacity.saturating_sub(rights_at + header) / 4)
}

/// Receive limits a run uses: small, so that limits are hit often.
#[derive(Debug, Clone, Copy, Arbitrary)]
struct FuzzLimits {
    max_fds: u8,
    max_bytes: u16,
}

impl FuzzLimits {
    fn get(self) -> Limits {
        Limits {
            max_fds: usize::from(self.max_fds % 24),
            max_bytes: usize::from(self.max_bytes),
        }
    }
}

/// One `sendmsg` of a hostile peer: any bytes, descriptors attached to
/// them, and maybe a kernel that fails to install some of them.
#[derive(Debug, Arbitrary)]
struct HostileRead {
    bytes: Vec<u8>,
    fds: u8,
    dropped: bool,
}

/// A message an fdpass sender sends.
#[derive(Debug, Arbitrary)]
struct SentMessage {
    len: u16,
    fds: u8,
}

/// What an fdpass sender writes, framed as `frame::encode` frames it, with
/// the kernel failing to install part of one frame's descriptors (EMFILE).
#[derive(Debug, Arbitrary)]
struct HonestWire {
    messages: Vec<SentMessage>,
    fds_per_frame: u8,
    payload_per_frame: u16,
    /// Most bytes each read finds queued, used in turn (the peer's writes
    /// arriving in pieces).
    read_sizes: Vec<u16>,
    /// (n, k): the nth frame that carries descriptors keeps only k of them.
    drop_in_frame: Option<(u8, u8)>,
}

#[derive(Debug, Arbitrary)]
enum Wire {
    Hostile(Vec<HostileRead>),
    Honest(HonestWire),
}

#[derive(Debug, Arbitrary)]
struct ReassemblyInput {
    limits: FuzzLimits,
    wire: Wire,
}

/// One `sendmsg`: its bytes and its descriptors.
#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// Descriptors the kernel will fail to install (from the end).
    lose: usize,
}

/// Installs a `sendmsg`'s descriptors as Linux's `scm_detach_fds` does for a
/// read with room for `room`: in order, until the room is full or one fails
/// to install (the last `lose`, as at EMFILE); the rest it releases. Says
/// what the read reports.
fn install(chunk: &mut Chunk, room: usize) -> Arrival {
    let mut fds = std::mem::take(&mut chunk.fds);
    let total = fds.len();
    let fit = room.min(total);
    let installed = fit.min(total - chunk.lose);
    fds.truncate(installed); // the rest: released by the kernel
    let cut = match installed < total {
        false => None,
        true if installed < fit => Some(FdsCut::NotInstalled(Errno::EMFILE)),
        true => Some(FdsCut::NoRoom),
    };
    Arrival { fds, cut, room }
}

/// A stream socket's receive queue, read as Linux's
/// `unix_stream_read_generic` reads it: up to the bytes asked for, across
/// `sendmsg`s; a `sendmsg`'s descriptors go to the read that first takes
/// any of its bytes, and that read stops at its end.
struct KernelStream {
    queue: VecDeque<(Chunk, usize)>,
}

impl KernelStream {
    fn new(chunks: Vec<Chunk>) -> KernelStream {
        let queue = chunks
            .into_iter()
            .filter(|c| !c.bytes.is_empty()) // an empty stream sendmsg sends nothing
            .map(|c| (c, 0))
            .collect();
        KernelStream { queue }
    }

    /// One read of at most `len` bytes (and `queued`, what has arrived so
    /// far) with room for `room` descriptors; `None` when nothing is queued.
    fn read(&mut self, len: usize, queued: usize, room: usize) -> Option<(Vec<u8>, Arrival)> {
        self.queue.front()?;
        let (mut bytes, mut arrival) = (Vec::new(), Arrival::NONE);
        arrival.room = room;
        let mut left = len.min(queued).max(1);
        while let Some((chunk, at)) = self.queue.front_mut() {
            if left == 0 {
                break;
            }
            let first_touch = *at == 0;
            let n = left.min(chunk.bytes.len() - *at);
            bytes.extend_from_slice(&chunk.bytes[*at..*at + n]);
            *at += n;
            left -= n;
            let carried = first_touch && (!chunk.fds.is_empty() || chunk.lose > 0);
            if carried {
                arrival = install(chunk, room);
            }
            if *at == chunk.bytes.len() {
                self.queue.pop_front();
            }
            if carried {
                break;
            }
        }
        Some((bytes, arrival))
    }
}

/// What the receiver must report for one sent message.
#[derive(Debug)]
enum Expected {
    Delivered {
        data: Vec<u8>,
        fds: Vec<RawFd>,
    },
    /// Any of these errors (a drop and a limit may both apply; the first
    /// frame to break one decides).
    Failed(Vec<&'static str>),
}

/// Frames `messages` into chunks and says what each must turn into under
/// `limits`. Payload bytes are distinct per message so a mix-up shows.
fn frame_messages(
    wire: &HonestWire,
    limits: Limits,
    record_payload: Option<usize>,
    tracker: &mut Tracker,
) -> (Vec<Chunk>, Vec<Expected>) {
    let fds_per_frame = usize::from(wire.fds_per_frame % 8) + 1;
    // At least 16 bytes a frame: smaller only multiplies frames (and time per run).
    let payload_per_frame = record_payload
        .unwrap_or(usize::MAX)
        .min(usize::from(wire.payload_per_frame).max(16));
    let mut chunks = Vec::new();
    let mut expected = Vec::new();
    let mut fd_frames_seen = 0usize;
    for (i, m) in wire.messages.iter().take(8).enumerate() {
        let data: Vec<u8> = (0..usize::from(m.len % 1024))
            .map(|j| (i * 31 + j) as u8)
            .collect();
        let fds = tracker.make_n(usize::from(m.fds % 24));
        let numbers: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let mut fds = fds.into_iter();
        let mut lost_any = false;
        for f in frame::encode(&data, numbers.len(), fds_per_frame, Some(payload_per_frame)) {
            let frame_fds: Vec<OwnedFd> = fds.by_ref().take(f.fds.len()).collect();
            let mut lose = 0;
            if !frame_fds.is_empty() {
                if let Some((n, keep)) = wire.drop_in_frame {
                    if usize::from(n) == fd_frames_seen {
                        lose = frame_fds.len() - usize::from(keep) % frame_fds.len();
                        lost_any = true;
                    }
                }
                fd_frames_seen += 1;
            }
            chunks.push(Chunk {
                bytes: f.bytes,
                fds: frame_fds,
                lose,
            });
        }
        let mut codes = Vec::new();
        if numbers.len() > limits.max_fds {
            codes.push("ERR_FDPASS_TOO_MANY_FDS");
        }
        if data.len() > limits.max_bytes {
            codes.push("ERR_FDPASS_MESSAGE_TOO_LARGE");
        }
        if lost_any {
            codes.push("EMFILE");
        }
        expected.push(if codes.is_empty() {
            Expected::Delivered { data, fds: numbers }
        } else {
            Expected::Failed(codes)
        });
    }
    (chunks, expected)
}

fn check_against(got: Vec<crate::Result<Message>>, expected: &[Expected]) {
    assert_eq!(got.len(), expected.len(), "messages lost or invented");
    for (i, (got, want)) in got.iter().zip(expected).enumerate() {
        match (got, want) {
            (Ok(m), Expected::Delivered { data, fds }) => {
                assert_eq!(&m.data, data, "message {i}: payload differs");
                let numbers: Vec<RawFd> = m.fds.iter().map(AsRawFd::as_raw_fd).collect();
                assert_eq!(&numbers, fds, "message {i}: descriptors differ");
            }
            (Err(e), Expected::Failed(codes)) => {
                assert!(codes.contains(&e.code()), "message {i}: {e} ({})", e.code());
                assert!(e.is_recoverable(), "message {i}: {e} ends the stream");
            }
            (got, want) => panic!("message {i}: got {got:?}, want {want:?}"),
        }
    }
}

/// A hostile peer's `sendmsg`s as chunks: any bytes, 0 to 7 descriptors,
/// some of which the kernel may fail to install.
fn hostile_chunks(reads: &[HostileRead], tracker: &mut Tracker) -> Vec<Chunk> {
    reads
        .iter()
        .take(64)
        .map(|read| {
            let fds = tracker.make_n(usize::from(read.fds % 8));
            let lose = if read.dropped {
                fds.len().div_ceil(2)
            } else {
                0
            };
            Chunk {
                bytes: read.bytes.clone(),
                fds,
                lose,
            }
        })
        .collect()
}

/// Framed-mode reassembly from a stream socket as Linux queues a peer's
/// `sendmsg`s: a hostile peer's (any bytes, descriptors on any of them), or
/// an fdpass sender's, arriving in pieces and with descriptors lost to
/// EMFILE. Reads are made as the reassembler plans them; checked: no read
/// is given room for more descriptors than the receive accepts, no message
/// breaks the limits, every descriptor is returned once or closed, and an
/// honest sender's messages come out exactly as sent.
pub fn stream(data: &[u8]) {
    let Ok(input) = ReassemblyInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let limits = input.limits.get();
    let mut tracker = Tracker::new();
    let mut r = StreamReassembler::default();
    let (chunks, expected, sizes) = match &input.wire {
        Wire::Hostile(reads) => (hostile_chunks(reads, &mut tracker), None, Vec::new()),
        Wire::Honest(wire) => {
            let (chunks, expected) = frame_messages(wire, limits, None, &mut tracker);
            let sizes = wire
                .read_sizes
                .iter()
                .map(|&s| usize::from(s) + 1)
                .collect();
            (chunks, Some(expected), sizes)
        }
    };
    let mut kernel = KernelStream::new(chunks);
    let mut queued = sizes.iter().copied().cycle();
    let (mut got, mut kept, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
    loop {
        let plan = r.next_read(limits);
        assert!(
            plan.fd_room <= limits.max_fds,
            "room for more than the receive accepts"
        );
        let Some((bytes, arrival)) = kernel.read(
            plan.bytes,
            queued.next().unwrap_or(usize::MAX),
            plan.fd_room,
        ) else {
            break;
        };
        match r.push(&bytes, arrival, limits) {
            None => {}
            Some(Ok(m)) if expected.is_none() => keep(m, limits, &mut kept, &mut seen),
            Some(Err(e)) if expected.is_none() && !e.is_recoverable() => break,
            Some(result) => got.push(result),
        }
    }
    if let Some(expected) = expected {
        assert!(
            !r.mid_message(),
            "everything sent was read, yet a message is pending"
        );
        check_against(got, &expected);
    }
    drop((kept, kernel));
    r.clear();
    tracker.assert_all_closed();
}

/// Holds a message a hostile run got until the run ends, after checking it
/// keeps within `limits` and owns each of its descriptors once.
fn keep(m: Message, limits: Limits, kept: &mut Vec<Message>, seen: &mut HashSet<RawFd>) {
    assert!(m.fds.len() <= limits.max_fds && m.data.len() <= limits.max_bytes);
    assert_owned_once(&m.fds, seen);
    kept.push(m);
}

/// Framed-mode reassembly from records (seqpacket, datagram): hostile records
/// with any bytes and descriptors, or an fdpass sender's frames with
/// descriptors lost to EMFILE; each read with the room the reassembler gives.
pub fn records(data: &[u8]) {
    let Ok(input) = ReassemblyInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let limits = input.limits.get();
    let mut tracker = Tracker::new();
    let mut r = RecordReassembler::default();
    let (chunks, expected) = match &input.wire {
        Wire::Hostile(records) => (hostile_chunks(records, &mut tracker), None),
        Wire::Honest(wire) => {
            let (chunks, expected) = frame_messages(wire, limits, Some(512), &mut tracker);
            (chunks, Some(expected))
        }
    };
    let (mut got, mut kept, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
    for mut c in chunks {
        let room = r.fd_room(limits);
        assert!(
            room <= limits.max_fds,
            "room for more than the receive accepts"
        );
        let arrival = install(&mut c, room);
        match r.push(&c.bytes, arrival, limits) {
            None => {}
            Some(Ok(m)) if expected.is_none() => keep(m, limits, &mut kept, &mut seen),
            Some(Err(_)) if expected.is_none() => {}
            Some(result) => got.push(result),
        }
    }
    if let Some(expected) = expected {
        assert!(
            !r.mid_message(),
            "every record was read, yet a message is pending"
        );
        check_against(got, &expected);
    }
    drop(kept);
    r.clear();
    tracker.assert_all_closed();
}
