mod support;

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use fdpass::{
    sys, Address, Channel, Error, Mode, Readiness, RecvOptions, SendStatus, SocketType,
    MAX_FDS_PER_SENDMSG, NO_FDS,
};
use support::*;

const PEER: &str = "peer";

/// Entry point of the peer process (this binary re-executed); a no-op in a normal run.
#[test]
fn peer() {
    let Some((role, path)) = peer_role() else {
        return;
    };
    let kind = socket_type_from_env();
    let mode = mode_from_env();
    let mut ch = fdpass::connect_blocking(&Address::Path(path), kind, mode).unwrap();
    match role.as_str() {
        // Reads 4 bytes of the file, then sends it: the receiver continues at offset 4.
        "send-file" => {
            let mut f = std::fs::File::open(std::env::var("FDPASS_FILE").unwrap()).unwrap();
            let mut head = [0u8; 4];
            f.read_exact(&mut head).unwrap();
            ch.send_blocking(b"here is a file", &[f.as_fd()]).unwrap();
            let _ = ch.recv_blocking(RecvOptions::default());
        }
        "send-n" => {
            let n = env_usize("FDPASS_N");
            let payload = vec![
                b'p';
                std::env::var("FDPASS_BYTES")
                    .map(|b| b.parse().unwrap())
                    .unwrap_or(1)
            ];
            let fds: Vec<OwnedFd> = (0..n).map(|_| dev_null()).collect();
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            ch.send_blocking(&payload, &borrowed).unwrap();
            // Wait for the receiver's word before exiting, so nothing is in flight at exit.
            let _ = ch.recv_blocking(RecvOptions::default());
        }
        // Writes a frame header that promises a payload, with descriptors, then exits.
        "die-mid-message" => {
            let header = fdpass::frame::Header {
                fds: 2,
                payload_len: 100,
                ..Default::default()
            }
            .encode();
            let fds = [dev_null(), dev_null()];
            let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
            sys::send_with_fds(ch.as_fd(), kind, &header, &raw).unwrap();
        }
        other => panic!("unknown peer role {other}"),
    }
}

fn peer_env(kind: SocketType, mode: Mode) -> Vec<(&'static str, String)> {
    vec![
        (
            "FDPASS_PEER_TYPE",
            if kind == SocketType::SeqPacket {
                "seqpacket"
            } else {
                "stream"
            }
            .into(),
        ),
        (
            "FDPASS_PEER_MODE",
            if mode == Mode::Raw { "raw" } else { "framed" }.into(),
        ),
    ]
}

fn all_fds(max_fds: usize) -> RecvOptions {
    RecvOptions {
        max_fds,
        ..RecvOptions::default()
    }
}

#[test]
fn file_sent_by_another_process_shares_its_offset() {
    let _g = serial();
    let before = open_fds();
    let (path, _) = file_with(b"0123456789");
    let (listener, sock) = listen(SocketType::Stream);
    let mut env = peer_env(SocketType::Stream, Mode::Framed);
    env.push(("FDPASS_FILE", path.display().to_string()));
    let child = spawn_peer(PEER, "send-file", &sock, &env);
    let mut ch = listener.accept_blocking(Mode::Framed).unwrap();
    let msg = ch.recv_blocking(RecvOptions::default()).unwrap();
    assert_eq!(msg.data, b"here is a file");
    assert_eq!(msg.fds.len(), 1);
    assert!(sys::is_cloexec(msg.fds[0].as_raw_fd()).unwrap());
    let mut f = std::fs::File::from(msg.fds.into_iter().next().unwrap());
    let mut rest = String::new();
    f.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest, "456789",
        "the sender's read of 4 bytes moved the shared offset"
    );
    ch.send_blocking(b"done", &fdpass::NO_FDS).unwrap();
    wait_ok(child);
    drop((f, ch, listener));
    std::fs::remove_file(path).unwrap();
    assert!(
        !sock.exists(),
        "the listener removes its socket file on drop"
    );
    assert_eq!(open_fds(), before);
}

#[test]
fn max_descriptors_in_one_message_across_processes() {
    for (kind, mode) in [
        (SocketType::Stream, Mode::Raw),
        (SocketType::Stream, Mode::Framed),
        (SocketType::SeqPacket, Mode::Raw),
        (SocketType::SeqPacket, Mode::Framed),
    ] {
        let _g = serial();
        let before = open_fds();
        let (listener, sock) = listen(kind);
        let mut env = peer_env(kind, mode);
        env.push(("FDPASS_N", MAX_FDS_PER_SENDMSG.to_string()));
        let child = spawn_peer(PEER, "send-n", &sock, &env);
        let mut ch = listener.accept_blocking(mode).unwrap();
        let msg = ch.recv_blocking(all_fds(MAX_FDS_PER_SENDMSG)).unwrap();
        assert_eq!(msg.fds.len(), MAX_FDS_PER_SENDMSG, "{kind:?} {mode:?}");
        assert!(msg
            .fds
            .iter()
            .all(|f| sys::is_cloexec(f.as_raw_fd()).unwrap()));
        drop(msg);
        ch.send_blocking(b"ok", &fdpass::NO_FDS).unwrap();
        wait_ok(child);
        drop((ch, listener));
        assert_eq!(open_fds(), before, "{kind:?} {mode:?}");
    }
}

#[test]
fn framed_mode_chunks_and_reassembles_a_thousand_descriptors() {
    for kind in [SocketType::Stream, SocketType::SeqPacket] {
        let _g = serial();
        let before = open_fds();
        let (listener, sock) = listen(kind);
        let mut env = peer_env(kind, Mode::Framed);
        env.push(("FDPASS_N", "1000".into()));
        env.push(("FDPASS_BYTES", "300000".into()));
        let child = spawn_peer(PEER, "send-n", &sock, &env);
        let mut ch = listener.accept_blocking(Mode::Framed).unwrap();
        let msg = ch.recv_blocking(all_fds(1000)).unwrap();
        assert_eq!(msg.fds.len(), 1000);
        assert_eq!(msg.data.len(), 300_000);
        assert!(msg.data.iter().all(|&b| b == b'p'));
        drop(msg);
        ch.send_blocking(b"ok", &fdpass::NO_FDS).unwrap();
        wait_ok(child);
        drop((ch, listener));
        assert_eq!(open_fds(), before);
    }
}

#[test]
fn over_the_platform_limit_is_refused_before_the_call_in_raw_mode() {
    let _g = serial();
    let (mut a, mut b) = pair(SocketType::Stream, Mode::Raw);
    let fds: Vec<OwnedFd> = (0..MAX_FDS_PER_SENDMSG + 1).map(|_| dev_null()).collect();
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let err = a.send(b"x", &borrowed).unwrap_err();
    assert!(
        matches!(err, Error::TooManyFds { count, limit, .. } if count == MAX_FDS_PER_SENDMSG + 1 && limit == MAX_FDS_PER_SENDMSG)
    );
    assert_eq!(err.code(), "ERR_FDPASS_TOO_MANY_FDS");
    assert!(
        b.try_recv(RecvOptions::default()).unwrap().is_none(),
        "nothing was sent"
    );
}

#[test]
fn raw_stream_message_with_descriptors_needs_a_data_byte() {
    let _g = serial();
    let (mut a, _b) = pair(SocketType::Stream, Mode::Raw);
    let f = dev_null();
    let err = a.send(b"", &[f.as_fd()]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    // Framed mode always has a header byte to carry them.
    let (mut c, mut d) = pair(SocketType::Stream, Mode::Framed);
    assert_eq!(c.send(b"", &[f.as_fd()]).unwrap(), SendStatus::Sent);
    let m = d.recv_blocking(RecvOptions::default()).unwrap();
    assert!(m.data.is_empty());
    assert_eq!(m.fds.len(), 1);
}

#[test]
fn closed_descriptor_gives_ebadf_and_sends_nothing() {
    let _g = serial();
    for mode in [Mode::Raw, Mode::Framed] {
        let (mut a, mut b) = pair(SocketType::Stream, mode);
        let f = dev_null();
        let stale = f.as_raw_fd();
        drop(f);
        let err = a.send(b"x", &[stale]).unwrap_err();
        assert_eq!(err.code(), "EBADF");
        assert_eq!(err.errno().unwrap().1, "sendmsg");
        assert!(
            b.try_recv(RecvOptions::default()).unwrap().is_none(),
            "nothing was sent"
        );
        // The channel still works.
        a.send_blocking(b"after", &fdpass::NO_FDS).unwrap();
        assert_eq!(
            b.recv_blocking(RecvOptions::default()).unwrap().data,
            b"after"
        );
    }
}

#[test]
fn a_raw_receive_gives_the_kernel_room_for_max_fds_only_and_closes_those() {
    let _g = serial();
    let before = open_fds();
    let (listener, sock) = listen(SocketType::Stream);
    let mut env = peer_env(SocketType::Stream, Mode::Raw);
    env.push(("FDPASS_N", "200".into()));
    let child = spawn_peer(PEER, "send-n", &sock, &env);
    let mut ch = listener.accept_blocking(Mode::Raw).unwrap();
    let err = loop {
        match ch.try_recv(all_fds(2)) {
            Ok(None) => sys::wait_ready(ch.as_fd(), false).unwrap(),
            Ok(Some(m)) => panic!("got a message with {} fds", m.fds.len()),
            Err(e) => break e,
        }
    };
    // 200 were sent; the kernel installed the 2 there was room for and released the rest.
    assert!(
        matches!(err, Error::FdsOverLimit { limit: 2, arrived } if arrived <= 2),
        "{err:?}"
    );
    assert_eq!(err.code(), "ERR_FDPASS_TOO_MANY_FDS");
    ch.send_blocking(b"ok", &fdpass::NO_FDS).unwrap();
    wait_ok(child);
    drop((ch, listener));
    assert_eq!(open_fds(), before);
}

#[test]
fn more_descriptors_than_asked_are_closed() {
    let _g = serial();
    let before = open_fds();
    // CMSG_SPACE rounding on LP64 would have room for 2 when 1 is asked
    // (standard-ai/sendfd#14): the buffer is sized so it has not.
    let (mut a, mut b) = pair(SocketType::Datagram, Mode::Raw);
    let fds = [dev_null(), dev_null()];
    a.send_blocking(b"two", &[fds[0].as_fd(), fds[1].as_fd()])
        .unwrap();
    let err = b.recv_blocking(all_fds(1)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FdsOverLimit {
                limit: 1,
                arrived: 1
            }
        ),
        "{err:?}"
    );
    // Framed: the whole over-limit message is consumed and the next one arrives intact.
    let (mut c, mut d) = pair(SocketType::Stream, Mode::Framed);
    c.send_blocking(b"three", &[fds[0].as_fd(), fds[1].as_fd(), fds[0].as_fd()])
        .unwrap();
    c.send_blocking(b"next", &[fds[1].as_fd()]).unwrap();
    let err = d.recv_blocking(all_fds(2)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyFds {
                count: 3,
                limit: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let next = d.recv_blocking(all_fds(2)).unwrap();
    assert_eq!((next.data.as_slice(), next.fds.len()), (&b"next"[..], 1));
    drop((next, fds, a, b, c, d));
    assert_eq!(open_fds(), before);
}

#[test]
fn record_truncation_is_an_error_and_closes_its_descriptors() {
    let _g = serial();
    let before = open_fds();
    for kind in [SocketType::Datagram, SocketType::SeqPacket] {
        let (mut a, mut b) = pair(kind, Mode::Raw);
        let f = dev_null();
        a.send_blocking(&[1u8; 100], &[f.as_fd()]).unwrap();
        let err = b
            .recv_blocking(RecvOptions {
                max_fds: 4,
                max_bytes: 10,
            })
            .unwrap_err();
        assert!(
            matches!(err, Error::MessageTruncated { limit: 10, fds: 1 }),
            "{kind:?}: {err:?}"
        );
    }
    assert_eq!(open_fds(), before);
}

#[test]
fn framed_messages_keep_boundaries_and_fds_on_every_socket_type() {
    let _g = serial();
    let before = open_fds();
    for kind in [
        SocketType::Stream,
        SocketType::SeqPacket,
        SocketType::Datagram,
    ] {
        let (mut a, mut b) = pair(kind, Mode::Framed);
        let (path, file) = file_with(b"content");
        a.send_blocking(b"one", &[file.as_fd()]).unwrap();
        a.send_blocking(b"", &fdpass::NO_FDS).unwrap();
        a.send_blocking(&vec![9u8; 200_000], &[file.as_fd(), file.as_fd()])
            .unwrap();
        let m1 = b.recv_blocking(RecvOptions::default()).unwrap();
        let m2 = b.recv_blocking(RecvOptions::default()).unwrap();
        let m3 = b.recv_blocking(RecvOptions::default()).unwrap();
        assert_eq!(
            (m1.data.as_slice(), m1.fds.len()),
            (&b"one"[..], 1),
            "{kind:?}"
        );
        assert_eq!(read_all(&m1.fds[0]), b"content");
        assert_eq!((m2.data.len(), m2.fds.len()), (0, 0), "{kind:?}");
        assert_eq!((m3.data.len(), m3.fds.len()), (200_000, 2), "{kind:?}");
        std::fs::remove_file(path).unwrap();
    }
    assert_eq!(open_fds(), before);
}

/// Interrupts `thread` with SIGUSR1 until `done`; with a handler installed,
/// each signal makes a blocked poll(2) return EINTR. True if any was caught.
fn interrupt_until(
    thread: std::os::unix::thread::RawPthread,
    done: &std::sync::atomic::AtomicBool,
) -> bool {
    use std::sync::atomic::Ordering;
    // std hands out an integer; musl's pthread_t is a pointer, glibc's the same integer.
    #[allow(clippy::unnecessary_cast)]
    let thread = thread as nix::sys::pthread::Pthread;
    let caught = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let id = signal_hook::flag::register(signal_hook::consts::SIGUSR1, caught.clone()).unwrap();
    while !done.load(Ordering::Acquire) {
        // The thread may finish between the check and the signal (ESRCH).
        let _ = nix::sys::pthread::pthread_kill(thread, nix::sys::signal::Signal::SIGUSR1);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    signal_hook::low_level::unregister(id);
    caught.load(Ordering::Acquire)
}

#[test]
fn blocking_receive_and_send_retry_after_signals_interrupt_the_wait() {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _g = serial();
    let before = open_fds();
    let (mut a, mut b) = pair(SocketType::Stream, Mode::Framed);

    // A receive blocked in poll(2) is interrupted again and again, then gets its message.
    let done = Arc::new(AtomicBool::new(false));
    let receiver_done = Arc::clone(&done);
    let receiver = std::thread::spawn(move || {
        let got = b.recv_blocking(RecvOptions::default());
        receiver_done.store(true, Ordering::Release);
        (got.map(|m| m.data), b)
    });
    let thread = receiver.as_pthread_t();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        a.send_blocking(b"after the signals", &fdpass::NO_FDS)
            .unwrap();
        a
    });
    let caught = interrupt_until(thread, &done);
    let (got, mut b) = receiver.join().unwrap();
    let mut a = sender.join().unwrap();
    assert_eq!(got.unwrap(), b"after the signals");
    assert!(caught, "signals reached the waiting thread");

    // A send blocked on a full socket is interrupted too, then completes.
    let big = vec![1u8; 4 * 1024 * 1024];
    let done = Arc::new(AtomicBool::new(false));
    let sender_done = Arc::clone(&done);
    let sender = std::thread::spawn(move || {
        let sent = a.send_blocking(&big, &fdpass::NO_FDS);
        sender_done.store(true, Ordering::Release);
        sent
    });
    let thread = sender.as_pthread_t();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        b.recv_blocking(RecvOptions::default())
            .map(|m| m.data.len())
    });
    let caught = interrupt_until(thread, &done);
    sender.join().unwrap().unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), 4 * 1024 * 1024);
    assert!(caught, "signals reached the sending thread");
    assert_eq!(open_fds(), before);
}

#[test]
fn a_send_that_fails_midway_delivers_nothing_and_the_channel_goes_on() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let _g = serial();
    let before = open_fds();
    let (mut a, mut b) = pair(SocketType::Stream, Mode::Framed);
    let f = dev_null();
    let fds: Vec<BorrowedFd<'_>> = vec![f.as_fd(); 2 * MAX_FDS_PER_SENDMSG];
    // The first frame (all the payload and the first descriptors) is written
    // in part; the second must wait in the queue, which needs duplicates of
    // its descriptors: a descriptor limit just above what is open makes that fail.
    let big = vec![3u8; 8 * 1024 * 1024];
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(
        Resource::RLIMIT_NOFILE,
        (open_fds() + 8) as nix::libc::rlim_t,
        hard,
    )
    .unwrap();
    let failed = a.send(&big, &fds);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    assert!(
        matches!(
            failed,
            Err(Error::Sys {
                errno: nix::errno::Errno::EMFILE,
                ..
            })
        ),
        "{failed:?}"
    );
    a.send(b"after", &[f.as_fd()]).unwrap();
    let reader = std::thread::spawn(move || {
        let m = b.recv_blocking(all_fds(2 * MAX_FDS_PER_SENDMSG)).unwrap();
        (m.data, m.fds.len(), b)
    });
    while a.has_queued() {
        sys::wait_ready(a.as_fd(), true).unwrap();
        a.flush().unwrap();
    }
    // The peer discarded the half it had (closing its descriptors) and got
    // the next message intact.
    let (data, nfds, b) = reader.join().unwrap();
    assert_eq!((data.len(), nfds), (5, 1), "not the next message whole");
    assert_eq!(data, b"after");
    drop((a, b, f));
    assert_eq!(open_fds(), before);
}

#[test]
fn descriptors_the_kernel_cannot_install_drop_their_message_and_the_channel_goes_on() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let _g = serial();
    let before = open_fds();
    let f = dev_null();
    let cases = [
        (SocketType::Stream, Mode::Framed),
        (SocketType::SeqPacket, Mode::Framed),
        (SocketType::Datagram, Mode::Framed),
        (SocketType::Stream, Mode::Raw),
        (SocketType::SeqPacket, Mode::Raw),
    ];
    for (kind, mode) in cases {
        let (mut a, mut b) = pair(kind, mode);
        a.send(b"six descriptors", &[f.as_fd(); 6]).unwrap();
        a.send(b"after", &[f.as_fd()]).unwrap();
        // Room for three more descriptors: the receive installs three of six.
        let lowest_free = dev_null().as_raw_fd() as nix::libc::rlim_t;
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, lowest_free + 3, hard).unwrap();
        let dropped = b.try_recv(all_fds(16));
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
        match dropped {
            Err(ref e @ Error::DescriptorsDropped { arrived, errno }) => {
                assert_eq!(errno, nix::errno::Errno::EMFILE, "{kind:?} {mode:?}");
                assert!(arrived < 6, "{kind:?} {mode:?}: {arrived} arrived");
                assert_eq!(e.code(), "EMFILE");
                assert!(e.is_recoverable());
            }
            other => panic!("{kind:?} {mode:?}: {other:?}"),
        }
        let next = b.recv_blocking(all_fds(16));
        if (kind, mode) == (SocketType::Stream, Mode::Raw) {
            // No framing tells the lost write's bytes from others: the stream ends.
            assert!(matches!(next, Err(Error::PeerClosed)), "{next:?}");
            continue;
        }
        let next = next.unwrap();
        assert_eq!(
            (&next.data[..], next.fds.len()),
            (&b"after"[..], 1),
            "{kind:?} {mode:?}"
        );
    }
    drop(f);
    assert_eq!(open_fds(), before);
}

#[test]
fn partial_writes_resend_the_rest_without_control_data() {
    let _g = serial();
    let before = open_fds();
    let (mut a, mut b) = pair(SocketType::Stream, Mode::Framed);
    let big = vec![5u8; 8 * 1024 * 1024];
    let f = dev_null();
    // Far more than the socket buffer: the first sendmsg is partial.
    assert_eq!(
        a.send(&big, &[f.as_fd(), f.as_fd()]).unwrap(),
        SendStatus::Queued
    );
    a.send(b"second", &[f.as_fd()]).unwrap();
    drop(f); // queued sends hold their own duplicates
    let reader = std::thread::spawn(move || {
        let large = RecvOptions {
            max_bytes: 16 * 1024 * 1024,
            ..RecvOptions::default()
        };
        let m1 = b.recv_blocking(large).unwrap();
        let m2 = b.recv_blocking(large).unwrap();
        (m1.data.len(), m1.fds.len(), m2.data, m2.fds.len())
    });
    while a.has_queued() {
        sys::wait_ready(a.as_fd(), true).unwrap();
        a.flush().unwrap();
    }
    let (len1, fds1, data2, fds2) = reader.join().unwrap();
    assert_eq!(
        (len1, fds1, data2.as_slice(), fds2),
        (big.len(), 2, &b"second"[..], 1)
    );
    drop(a);
    assert_eq!(open_fds(), before);
}

#[test]
fn peer_exit_mid_message_is_reported_and_leaks_nothing() {
    let _g = serial();
    let before = open_fds();
    let (listener, sock) = listen(SocketType::Stream);
    let child = spawn_peer(
        PEER,
        "die-mid-message",
        &sock,
        &peer_env(SocketType::Stream, Mode::Framed),
    );
    let mut ch = listener.accept_blocking(Mode::Framed).unwrap();
    wait_ok(child);
    let err = ch.recv_blocking(RecvOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ClosedMidMessage { fds: 2 }), "{err:?}");
    assert!(matches!(
        ch.recv_blocking(RecvOptions::default()),
        Err(Error::PeerClosed)
    ));
    drop((ch, listener));
    assert_eq!(open_fds(), before);
}

#[test]
fn orderly_close_ends_the_channel() {
    let _g = serial();
    for kind in [SocketType::Stream, SocketType::SeqPacket] {
        for mode in [Mode::Raw, Mode::Framed] {
            let (a, mut b) = pair(kind, mode);
            drop(a);
            assert!(
                matches!(
                    b.recv_blocking(RecvOptions::default()),
                    Err(Error::PeerClosed)
                ),
                "{kind:?} {mode:?}"
            );
        }
    }
}

fn payload(message: Option<fdpass::Message>) -> Option<Vec<u8>> {
    message.map(|m| m.data)
}

#[test]
fn receives_that_keep_finding_nothing_wait_for_readiness() {
    let _g = serial();
    for kind in [SocketType::Stream, SocketType::SeqPacket] {
        for mode in [Mode::Raw, Mode::Framed] {
            let (mut a, mut b) = pair(kind, mode);
            let opts = RecvOptions::default();
            // Request/response: nothing is there twice in a row before waiting.
            for _ in 0..2 {
                assert!(b
                    .try_recv_paced(opts, Readiness::Unknown)
                    .unwrap()
                    .is_none());
            }
            a.send(b"x", &NO_FDS).unwrap();
            // Predicted empty, so no read: the caller would wait for readiness...
            assert!(
                b.try_recv_paced(opts, Readiness::Unknown)
                    .unwrap()
                    .is_none(),
                "{kind:?} {mode:?}"
            );
            // ...which reports the socket readable, and that receive reads.
            let got = b.try_recv_paced(opts, Readiness::Reported).unwrap();
            assert_eq!(payload(got), Some(b"x".to_vec()), "{kind:?} {mode:?}");

            // A sender running ahead is noticed without any readiness report.
            a.send(b"y", &NO_FDS).unwrap();
            let found = (0..8).find_map(|_| b.try_recv_paced(opts, Readiness::Unknown).unwrap());
            assert_eq!(payload(found), Some(b"y".to_vec()), "{kind:?} {mode:?}");
        }
    }
}

#[test]
fn foreign_bytes_on_a_framed_stream_are_a_protocol_error() {
    let _g = serial();
    let before = open_fds();
    let (mut raw, framed_fd) = pair(SocketType::Stream, Mode::Raw);
    let mut framed = Channel::from_fd(framed_fd.into_fd(), Mode::Framed).unwrap();
    let f = dev_null();
    raw.send_blocking(b"GET / HTTP/1.1\r\n", &[f.as_fd()])
        .unwrap();
    let err = framed.recv_blocking(RecvOptions::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_FDPASS_PROTOCOL");
    drop((raw, framed, f));
    assert_eq!(open_fds(), before);
}

#[test]
fn abstract_names_connect_on_linux() {
    let _g = serial();
    let name = format!("fdpass-test-{}", std::process::id()).into_bytes();
    let opts = fdpass::ListenOptions {
        address: Address::Abstract(name.clone()),
        socket_type: SocketType::Stream,
        mode: None,
        backlog: 4,
        accept_fds: true,
    };
    if !fdpass::HAS_ABSTRACT_NAMES {
        assert_eq!(
            fdpass::Listener::bind(&opts).unwrap_err().code(),
            "ERR_FDPASS_UNSUPPORTED"
        );
        return;
    }
    let listener = fdpass::Listener::bind(&opts).unwrap();
    let mut client =
        fdpass::connect_blocking(&Address::Abstract(name), SocketType::Stream, Mode::Framed)
            .unwrap();
    let mut server = listener.accept_blocking(Mode::Framed).unwrap();
    client.send_blocking(b"hi", &fdpass::NO_FDS).unwrap();
    assert_eq!(
        server.recv_blocking(RecvOptions::default()).unwrap().data,
        b"hi"
    );
}

#[test]
fn socket_file_mode_is_applied_before_listening() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    let path = temp_path("mode");
    let l = fdpass::Listener::bind(&fdpass::ListenOptions {
        address: Address::Path(path.clone()),
        socket_type: SocketType::Stream,
        mode: Some(0o600),
        backlog: 4,
        accept_fds: true,
    })
    .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(l);
}

#[test]
fn seqpacket_support_is_reported_per_platform() {
    let _g = serial();
    let r = Channel::pair(SocketType::SeqPacket, Mode::Framed);
    if fdpass::HAS_SEQPACKET {
        assert!(r.is_ok());
    } else {
        assert_eq!(r.unwrap_err().code(), "ERR_FDPASS_UNSUPPORTED");
    }
}

#[test]
fn received_descriptors_are_close_on_exec_in_an_execd_child() {
    let _g = serial();
    let (mut a, mut b) = pair(SocketType::Stream, Mode::Framed);
    let (path, file) = file_with(b"x");
    a.send_blocking(b"f", &[file.as_fd()]).unwrap();
    let msg = b.recv_blocking(RecvOptions::default()).unwrap();
    let number = msg.fds[0].as_raw_fd();
    // The child inherits every descriptor that lacks FD_CLOEXEC; ask it which are open.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "if [ -e /dev/fd/{number} ]; then echo open; else echo closed; fi"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "closed");
    // Control: the same check sees a descriptor that is inheritable.
    let inheritable = file.as_raw_fd();
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "if [ -e /dev/fd/{inheritable} ]; then echo open; else echo closed; fi"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "open");
    std::fs::remove_file(path).unwrap();
    let mut f = std::fs::File::from(msg.fds.into_iter().next().unwrap());
    f.seek(SeekFrom::Start(0)).unwrap();
}

#[test]
fn kinds_are_detected() {
    let _g = serial();
    let (a, _b) = pair(SocketType::Stream, Mode::Framed);
    assert_eq!(sys::fd_kind(a.as_fd()).unwrap().name(), "unix-stream");
    let (l, _p) = listen(SocketType::Stream);
    assert_eq!(
        sys::fd_kind(l.as_fd()).unwrap().name(),
        "unix-stream-listener"
    );
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(sys::fd_kind(tcp.as_fd()).unwrap().name(), "tcp-listener");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(sys::fd_kind(udp.as_fd()).unwrap().name(), "udp");
    assert_eq!(
        sys::fd_kind(dev_null().as_fd()).unwrap().name(),
        "char-device"
    );
    let (path, f) = file_with(b"");
    assert_eq!(sys::fd_kind(f.as_fd()).unwrap().name(), "file");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn peer_credentials_name_this_process_and_refuse_sockets_without_a_peer_record() {
    let _g = serial();
    let (a, _b) = pair(SocketType::Stream, Mode::Framed);
    let me = sys::peer_credentials(a.as_fd()).unwrap();
    assert_eq!(me.uid, nix::unistd::getuid().as_raw());
    assert_eq!(me.gid, nix::unistd::getgid().as_raw());
    if cfg!(target_os = "linux") {
        assert_eq!(me.pid, Some(std::process::id() as i32));
    }

    // A datagram socket connected with connect(2) has no peer the kernel recorded.
    let there = temp_path("dgram-there");
    let here = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let _bound = std::os::unix::net::UnixDatagram::bind(&there).unwrap();
    here.connect(&there).unwrap();
    let got = sys::peer_credentials(here.as_fd());
    std::fs::remove_file(&there).unwrap();
    if cfg!(target_os = "linux") {
        assert!(
            matches!(got, Err(Error::Sys { errno, .. }) if errno == nix::errno::Errno::ENOTCONN),
            "{got:?}"
        );
    } else {
        assert!(got.is_err(), "{got:?}");
    }
}
