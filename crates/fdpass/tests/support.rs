//! Shared by the integration tests: descriptor counting, temp paths, and a peer
//! process (this test binary re-executed) that plays the other side.
#![allow(dead_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use fdpass::{Address, Channel, ListenOptions, Listener, Mode, SocketType};

/// Descriptor counts are process-wide, so tests that compare them run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or_else(|_| {
            std::fs::read_dir("/dev/fd")
                .expect("no /proc/self/fd or /dev/fd")
                .count()
        })
}

pub fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("fdpass-test-{}-{tag}-{n}", std::process::id()))
}

pub fn file_with(content: &[u8]) -> (PathBuf, std::fs::File) {
    let path = temp_path("file");
    std::fs::write(&path, content).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    (path, f)
}

pub fn dev_null() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

pub fn listen(kind: SocketType) -> (Listener, PathBuf) {
    let path = temp_path("sock");
    let l = Listener::bind(&ListenOptions {
        address: Address::Path(path.clone()),
        socket_type: kind,
        mode: None,
        backlog: 16,
        accept_fds: true,
    })
    .unwrap();
    (l, path)
}

/// Runs this test binary as a peer: `role` selects what it does (see peer.rs),
/// connecting to the socket at `path`.
pub fn spawn_peer(
    test_binary_entry: &str,
    role: &str,
    path: &std::path::Path,
    extra: &[(&str, String)],
) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("--exact")
        .arg(test_binary_entry)
        .arg("--nocapture")
        .arg("--test-threads=1")
        .env("FDPASS_PEER_ROLE", role)
        .env("FDPASS_PEER_SOCKET", path);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

pub fn wait_ok(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "peer failed: {status}");
}

pub fn peer_role() -> Option<(String, PathBuf)> {
    let role = std::env::var("FDPASS_PEER_ROLE").ok()?;
    let path = std::env::var("FDPASS_PEER_SOCKET").ok()?;
    Some((role, PathBuf::from(path)))
}

pub fn env_usize(name: &str) -> usize {
    std::env::var(name).unwrap().parse().unwrap()
}

pub fn socket_type_from_env() -> SocketType {
    match std::env::var("FDPASS_PEER_TYPE").as_deref() {
        Ok("seqpacket") => SocketType::SeqPacket,
        _ => SocketType::Stream,
    }
}

pub fn mode_from_env() -> Mode {
    match std::env::var("FDPASS_PEER_MODE").as_deref() {
        Ok("raw") => Mode::Raw,
        _ => Mode::Framed,
    }
}

/// Reads what a received descriptor refers to, from its start.
pub fn read_all(fd: &OwnedFd) -> Vec<u8> {
    use std::io::Read;
    let mut f = std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap());
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

pub fn pair(kind: SocketType, mode: Mode) -> (Channel, Channel) {
    Channel::pair(kind, mode).unwrap()
}
