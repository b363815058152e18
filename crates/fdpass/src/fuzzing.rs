//! Fuzz harnesses: the cargo-fuzz targets in `fuzz/` call these, and
//! `cargo test --features fuzzing` replays the corpus in `fuzz/corpus/`
//! through them. Beyond "no panic", each checks ownership: every descriptor
//! handed to the code under test comes back exactly once or is closed by it.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use arbitrary::{Arbitrary, Unstructured};
use nix::errno::Errno;

use crate::frame::{self, Limits, LookAhead, Message, RecordReassembler, StreamReassembler};
use crate::sys::{self, ControlOutcome};

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

    let slots = sys::rights_slots(&buffer[..written]);
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
    match outcome {
        ControlOutcome::Whole(fds) | ControlOutcome::NotInstalled(fds) => {
            let got: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
            assert_eq!(
                got, handed,
                "descriptors not returned exactly once, in order"
            );
            assert_owned_once(&fds, &mut HashSet::new());
        }
        ControlOutcome::Truncated { arrived } => {
            assert!(truncated, "truncation reported without MSG_CTRUNC");
            assert_eq!(arrived, handed.len());
        }
    }
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

/// One read as a hostile peer's writes may arrive: any bytes, descriptors
/// attached to them, and maybe a kernel that failed to install the rest.
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
    /// Stream read sizes, used in turn.
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

/// One `sendmsg` of an honest sender: a frame and its descriptors.
#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// Descriptors the kernel will fail to install (dropped from the end).
    lose: usize,
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
        let over_fds = numbers.len() > limits.max_fds;
        let over_bytes = data.len() > limits.max_bytes;
        let mut codes = Vec::new();
        if over_fds {
            codes.push("ERR_FDPASS_TOO_MANY_FDS");
        }
        if over_bytes {
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

/// Takes the descriptors of a chunk as the kernel delivers them: the ones it
/// fails to install it releases (closes) itself.
fn deliver(chunk: &mut Chunk) -> (Vec<OwnedFd>, Option<Errno>) {
    let mut fds = std::mem::take(&mut chunk.fds);
    if chunk.lose == 0 {
        return (fds, None);
    }
    fds.truncate(fds.len() - chunk.lose);
    (fds, Some(Errno::EMFILE))
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

/// Framed-mode reassembly from a byte stream with descriptors attached at
/// arbitrary offsets (hostile), or from what an fdpass sender writes, read
/// back in arbitrary pieces and with descriptors lost to EMFILE (honest).
pub fn stream(data: &[u8]) {
    let Ok(input) = ReassemblyInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let limits = input.limits.get();
    let mut tracker = Tracker::new();
    let mut r = StreamReassembler::default();
    match input.wire {
        Wire::Hostile(reads) => {
            let mut kept = Vec::new();
            let mut seen = HashSet::new();
            for read in reads.iter().take(64) {
                let fds = tracker.make_n(usize::from(read.fds % 8));
                r.push(&read.bytes, fds, read.dropped.then_some(Errno::EMFILE));
                if !drain_stream(&mut r, limits, &mut kept, &mut seen) {
                    break;
                }
            }
            drop(kept);
            r.clear();
        }
        Wire::Honest(wire) => {
            let (mut chunks, expected) = frame_messages(&wire, limits, None, &mut tracker);
            let mut got = Vec::new();
            let sizes: Vec<usize> = wire
                .read_sizes
                .iter()
                .map(|&s| usize::from(s) + 1)
                .collect();
            let mut next_size = sizes.iter().copied().cycle();
            let (mut chunk, mut offset) = (0, 0);
            while chunk < chunks.len() {
                // One read: up to `size` bytes, ending with the first chunk that
                // carries descriptors (its descriptors come with its first byte).
                let mut room = next_size.next().unwrap_or(usize::MAX);
                let (mut bytes, mut fds, mut dropped) = (Vec::new(), Vec::new(), None);
                while room > 0 && chunk < chunks.len() {
                    let c = &mut chunks[chunk];
                    let carries_fds = offset == 0 && (!c.fds.is_empty() || c.lose > 0);
                    let n = room.min(c.bytes.len() - offset);
                    bytes.extend_from_slice(&c.bytes[offset..offset + n]);
                    if carries_fds {
                        (fds, dropped) = deliver(c);
                    }
                    room -= n;
                    offset += n;
                    if offset == c.bytes.len() {
                        (chunk, offset) = (chunk + 1, 0);
                    }
                    if carries_fds {
                        break;
                    }
                }
                r.push(&bytes, fds, dropped);
                while let Some(m) = r.next(limits) {
                    got.push(m);
                }
            }
            assert!(
                !r.mid_message(),
                "everything sent was read, yet a message is pending"
            );
            check_against(got, &expected);
        }
    }
    tracker.assert_all_closed();
}

/// Holds a message a hostile run got until the run ends, after checking it
/// keeps within `limits` and owns each of its descriptors once.
fn keep(m: Message, limits: Limits, kept: &mut Vec<Message>, seen: &mut HashSet<RawFd>) {
    assert!(m.fds.len() <= limits.max_fds && m.data.len() <= limits.max_bytes);
    assert_owned_once(&m.fds, seen);
    kept.push(m);
}

/// Takes every message `r` holds; false once the stream is out of step.
fn drain_stream(
    r: &mut StreamReassembler,
    limits: Limits,
    kept: &mut Vec<Message>,
    seen: &mut HashSet<RawFd>,
) -> bool {
    loop {
        let predicted_whole = r.look_ahead(limits, Limits::UNBOUNDED) == LookAhead::Whole;
        match r.next(limits) {
            None => {
                assert!(!predicted_whole, "look_ahead promised a whole message");
                return true;
            }
            Some(Ok(m)) => keep(m, limits, kept, seen),
            Some(Err(e)) => {
                assert!(!predicted_whole, "look_ahead promised a whole message: {e}");
                if !e.is_recoverable() {
                    r.clear();
                    return false;
                }
            }
        }
    }
}

/// Framed-mode reassembly from records (seqpacket, datagram): hostile records
/// with any bytes and descriptors, or an fdpass sender's frames with
/// descriptors lost to EMFILE.
pub fn records(data: &[u8]) {
    let Ok(input) = ReassemblyInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let limits = input.limits.get();
    let mut tracker = Tracker::new();
    let mut r = RecordReassembler::default();
    match input.wire {
        Wire::Hostile(records) => {
            let mut kept = Vec::new();
            let mut seen = HashSet::new();
            for record in records.iter().take(64) {
                let fds = tracker.make_n(usize::from(record.fds % 8));
                let dropped = record.dropped.then_some(Errno::EMFILE);
                if let Some(Ok(m)) = r.push(&record.bytes, fds, dropped, limits) {
                    keep(m, limits, &mut kept, &mut seen);
                }
            }
            drop(kept);
            r.clear();
        }
        Wire::Honest(wire) => {
            let (chunks, expected) = frame_messages(&wire, limits, Some(512), &mut tracker);
            let mut got = Vec::new();
            for mut c in chunks {
                let (fds, dropped) = deliver(&mut c);
                if let Some(m) = r.push(&c.bytes, fds, dropped, limits) {
                    got.push(m);
                }
            }
            assert!(
                !r.mid_message(),
                "every record was read, yet a message is pending"
            );
            check_against(got, &expected);
        }
    }
    tracker.assert_all_closed();
}
