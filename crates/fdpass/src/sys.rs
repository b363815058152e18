//! The one place that talks to the kernel. Per-OS differences (close-on-exec on
//! receive, per-message descriptor limits, SOCK_SEQPACKET, MSG_EOR, accept flags)
//! live here behind `cfg`, so the rest of the crate reads the same everywhere.
//! Every `unsafe` block of the crate is in this file.
#![allow(unsafe_code)]

use std::io::IoSlice;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::libc;
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, SockaddrLike,
    UnixAddr,
};

use crate::error::{Error, Result};
use crate::SocketType;

/// Most descriptors one `sendmsg` may carry. Linux's `SCM_MAX_FD` is 253, musl
/// fails at 253 (HAProxy, haproxy@148d7a030), FreeBSD caps control data at
/// MCLBYTES (2 KiB) with about 24 bytes of kernel state per right
/// (CTSRD-CHERI/cheribsd#1461). macOS has no fixed cap; we keep Linux's so a
/// framed peer never needs more than the receiver sized for.
#[cfg(all(target_os = "linux", target_env = "musl"))]
pub const MAX_FDS_PER_SENDMSG: usize = 252;
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
pub const MAX_FDS_PER_SENDMSG: usize = 253;
#[cfg(target_os = "freebsd")]
pub const MAX_FDS_PER_SENDMSG: usize = 85;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub const MAX_FDS_PER_SENDMSG: usize = 253;

/// Whether this OS has SOCK_SEQPACKET on AF_UNIX (macOS does not).
pub const HAS_SEQPACKET: bool = cfg!(any(target_os = "linux", target_os = "freebsd"));

/// Whether Linux abstract socket names exist here.
pub const HAS_ABSTRACT_NAMES: bool = cfg!(any(target_os = "linux", target_os = "android"));

fn nix_socket_type(kind: SocketType) -> Result<SockType> {
    match kind {
        SocketType::Stream => Ok(SockType::Stream),
        SocketType::Datagram => Ok(SockType::Datagram),
        SocketType::SeqPacket if HAS_SEQPACKET => Ok(SockType::SeqPacket),
        SocketType::SeqPacket => Err(Error::Unsupported(
            "SOCK_SEQPACKET Unix sockets are not available on this operating system; use stream",
        )),
    }
}

/// Flags that make new descriptors close-on-exec and non-blocking atomically
/// where the OS can; elsewhere `finish_new_fd` sets them right after creation.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn atomic_sock_flags() -> SockFlag {
    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK
}
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn atomic_sock_flags() -> SockFlag {
    SockFlag::empty()
}

fn finish_new_fd(fd: OwnedFd) -> Result<OwnedFd> {
    if atomic_sock_flags().is_empty() {
        set_cloexec(fd.as_fd(), "fcntl")?;
        set_nonblocking(fd.as_fd(), true)?;
    }
    no_sigpipe(fd.as_fd())?;
    Ok(fd)
}

/// Makes a send to a closed peer fail with EPIPE instead of raising SIGPIPE,
/// where that is a socket option (Apple's SO_NOSIGPIPE); elsewhere every send
/// passes MSG_NOSIGNAL.
#[cfg(target_vendor = "apple")]
pub fn no_sigpipe(sock: BorrowedFd<'_>) -> Result<()> {
    set_socket_int_option(sock, libc::SOL_SOCKET, libc::SO_NOSIGPIPE, 1)
        .map_err(|e| Error::sys("setsockopt", e))
}
#[cfg(not(target_vendor = "apple"))]
pub fn no_sigpipe(_sock: BorrowedFd<'_>) -> Result<()> {
    Ok(())
}

pub fn new_socket(kind: SocketType) -> Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Unix,
        nix_socket_type(kind)?,
        atomic_sock_flags(),
        None,
    )
    .map_err(|e| Error::sys("socket", e))?;
    finish_new_fd(fd)
}

pub fn new_socket_pair(kind: SocketType) -> Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        nix_socket_type(kind)?,
        None,
        atomic_sock_flags(),
    )
    .map_err(|e| Error::sys("socketpair", e))?;
    Ok((finish_new_fd(a)?, finish_new_fd(b)?))
}

pub fn set_cloexec(fd: BorrowedFd<'_>, syscall: &'static str) -> Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| Error::sys(syscall, e))?;
    Ok(())
}

pub fn is_cloexec(fd: RawFd) -> Result<bool> {
    // SAFETY: F_GETFD only reads the descriptor table entry; an invalid number
    // yields EBADF and no other effect.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        return Err(Error::sys("fcntl", Errno::last()));
    }
    Ok(flags & libc::FD_CLOEXEC != 0)
}

/// Runs `f` on a descriptor given by number, without taking ownership; EBADF
/// when the number is not open.
pub fn with_raw<T>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> Result<T>) -> Result<T> {
    check_open(fd)?;
    // SAFETY: `fd` was just checked open and the borrow does not outlive `f`,
    // during which nothing in this thread closes it.
    f(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Sets or clears O_NONBLOCK. The flag belongs to the open file description,
/// so every process holding a copy of this descriptor sees the change.
pub fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> Result<()> {
    let current = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::sys("fcntl", e))?;
    let mut flags = OFlag::from_bits_truncate(current);
    flags.set(OFlag::O_NONBLOCK, nonblocking);
    if flags.bits() != current {
        fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::sys("fcntl", e))?;
    }
    Ok(())
}

/// `SO_PASSRIGHTS` (Linux 6.16): with it off, the kernel refuses any
/// `SCM_RIGHTS` sent to the socket (the sender's `sendmsg` fails with EPERM),
/// so no descriptor is ever installed here. The asm-generic value, which the
/// `libc` crate does not have yet; `None` where the option does not exist.
const SO_PASSRIGHTS: Option<libc::c_int> = if cfg!(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "s390x",
        target_arch = "powerpc64"
    )
)) {
    Some(83)
} else {
    None
};

/// Whether this kernel lets a socket refuse descriptors ([`set_accepts_fds`]).
pub fn can_refuse_fds() -> bool {
    static PROBED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBED.get_or_init(|| {
        socket::socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .is_ok_and(|(a, _b)| set_accepts_fds(a.as_fd(), true).is_ok())
    })
}

/// Makes a Unix socket accept descriptors, or refuse them in the kernel
/// (`SO_PASSRIGHTS`). A listening socket passes the setting on to the
/// connections it accepts, from the moment they connect. `Unsupported` where
/// the kernel has no such option.
pub fn set_accepts_fds(sock: BorrowedFd<'_>, accept: bool) -> Result<()> {
    let unsupported = Error::Unsupported(
        "this kernel cannot refuse descriptors (SO_PASSRIGHTS needs Linux 6.16); \
         receive with maxFds: 0 to close what arrives",
    );
    let Some(option) = SO_PASSRIGHTS else {
        return Err(unsupported);
    };
    match set_socket_int_option(sock, libc::SOL_SOCKET, option, accept.into()) {
        Ok(()) => Ok(()),
        Err(Errno::ENOPROTOOPT) => Err(unsupported),
        Err(e) => Err(Error::sys("setsockopt", e)),
    }
}

/// Turns off what would make every receive on `sock` bring more than its
/// message: credentials (Linux's SO_PASSCRED and SO_PASSSEC, FreeBSD's
/// LOCAL_CREDS) and descriptors (Linux 6.5's SO_PASSPIDFD, an SCM_PIDFD on
/// every receive). Whoever made a socket fdpass adopts may have set them, a
/// hostile sender included; with them on, that data would fill the control
/// buffer a receive sizes for its descriptors only. An option this kernel
/// lacks is already off.
pub fn clear_passing_options(sock: BorrowedFd<'_>) -> Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let options = [
        (libc::SOL_SOCKET, libc::SO_PASSCRED),
        (libc::SOL_SOCKET, libc::SO_PASSSEC),
        (libc::SOL_SOCKET, libc::SO_PASSPIDFD),
    ];
    #[cfg(target_os = "freebsd")]
    let options = [
        (libc::SOL_LOCAL, libc::LOCAL_CREDS),
        (libc::SOL_LOCAL, libc::LOCAL_CREDS_PERSISTENT),
    ];
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let options: [(libc::c_int, libc::c_int); 0] = [];
    for (level, option) in options {
        match set_socket_int_option(sock, level, option, 0) {
            Ok(()) | Err(Errno::ENOPROTOOPT | Errno::EINVAL | Errno::EOPNOTSUPP) => {}
            Err(e) => return Err(Error::sys("setsockopt", e)),
        }
    }
    Ok(())
}

/// `setsockopt(level, option)` with an int value, for the options nix has
/// no wrapper for (SO_PASSRIGHTS, SO_PASSPIDFD, Apple's SO_NOSIGPIPE).
fn set_socket_int_option(
    sock: BorrowedFd<'_>,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> std::result::Result<(), Errno> {
    // SAFETY: `sock` is an open descriptor for the call; the kernel reads a
    // c_int through the pointer and length given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            option,
            std::ptr::from_ref(&value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// Fails with EBADF when `fd` is not an open descriptor of this process.
pub fn check_open(fd: RawFd) -> Result<()> {
    // SAFETY: F_GETFD only reads the descriptor table entry; an invalid number
    // yields EBADF and no other effect.
    let rc = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if rc == -1 {
        return Err(Error::sys("fcntl", Errno::last()));
    }
    Ok(())
}

/// A close-on-exec duplicate, so a queued send stays valid after the caller
/// closes or reuses its own descriptor number.
pub fn dup_cloexec(fd: RawFd) -> Result<OwnedFd> {
    dup_cloexec_at_least(fd, 0)
}

/// [`dup_cloexec`] to the lowest free number that is at least `lowest`.
pub fn dup_cloexec_at_least(fd: RawFd, lowest: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the table entry of `fd`; an invalid
    // number yields EBADF and no other effect.
    let raw = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, lowest) };
    if raw == -1 {
        return Err(Error::sys("fcntl", Errno::last()));
    }
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Takes ownership of a descriptor number handed in from outside Rust (an
/// inherited socket, a number from JavaScript). Such numbers carry no Rust
/// ownership proof; the public APIs that call this document that they take the
/// descriptor over, and it is checked open first.
pub fn adopt(fd: RawFd) -> Result<OwnedFd> {
    check_open(fd)?;
    // SAFETY: the number is open (checked above) and the caller's contract hands
    // it to us; nothing else in Rust owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn close_raw(fd: RawFd) -> Result<()> {
    // SAFETY: the caller gives up `fd`; closing by number is what it asked
    // for. A number that is not open gives EBADF and closes nothing. EINTR is
    // not retried: Linux releases the descriptor even when close reports it.
    if unsafe { libc::close(fd) } == -1 {
        let errno = Errno::last();
        if errno != Errno::EINTR {
            return Err(Error::sys("close", errno));
        }
    }
    Ok(())
}

/// The message type of a socket fdpass can carry messages on: a Unix socket
/// that is stream, seqpacket or datagram, and not listening.
pub fn socket_type_of(fd: BorrowedFd<'_>) -> Result<SocketType> {
    match socket_kind(fd)? {
        FdKind::UnixStream | FdKind::UnixDgram | FdKind::UnixSeqPacket => {}
        FdKind::UnixStreamListener => {
            return Err(Error::InvalidArgument(
                "the descriptor is a listening socket; accept connections with a Server".into(),
            ))
        }
        _ => {
            return Err(Error::Unsupported(
                "the descriptor is not a Unix domain socket; descriptors travel only over AF_UNIX",
            ))
        }
    }
    match socket::getsockopt(&fd, sockopt::SockType).map_err(|e| Error::sys("getsockopt", e))? {
        SockType::Stream => Ok(SocketType::Stream),
        SockType::Datagram => Ok(SocketType::Datagram),
        SockType::SeqPacket => Ok(SocketType::SeqPacket),
        _ => Err(Error::Unsupported(
            "the descriptor is a socket of a type fdpass cannot carry messages on",
        )),
    }
}

// ---------------------------------------------------------------------------
// Descriptor kinds

/// What a descriptor is, found with fstat and getsockopt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    File,
    Directory,
    Fifo,
    Tty,
    CharDevice,
    Tcp,
    TcpListener,
    Udp,
    UnixStream,
    UnixStreamListener,
    UnixDgram,
    UnixSeqPacket,
    Other,
}

impl FdKind {
    pub fn name(self) -> &'static str {
        match self {
            FdKind::File => "file",
            FdKind::Directory => "directory",
            FdKind::Fifo => "fifo",
            FdKind::Tty => "tty",
            FdKind::CharDevice => "char-device",
            FdKind::Tcp => "tcp",
            FdKind::TcpListener => "tcp-listener",
            FdKind::Udp => "udp",
            FdKind::UnixStream => "unix-stream",
            FdKind::UnixStreamListener => "unix-stream-listener",
            FdKind::UnixDgram => "unix-dgram",
            FdKind::UnixSeqPacket => "unix-seqpacket",
            FdKind::Other => "other",
        }
    }
}

pub fn fd_kind(fd: BorrowedFd<'_>) -> Result<FdKind> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| Error::sys("fstat", e))?;
    let fmt = st.st_mode & libc::S_IFMT;
    Ok(match fmt {
        libc::S_IFREG => FdKind::File,
        libc::S_IFDIR => FdKind::Directory,
        libc::S_IFIFO => FdKind::Fifo,
        libc::S_IFCHR => {
            if nix::unistd::isatty(fd).unwrap_or(false) {
                FdKind::Tty
            } else {
                FdKind::CharDevice
            }
        }
        libc::S_IFSOCK => socket_kind(fd)?,
        _ => FdKind::Other,
    })
}

fn socket_kind(fd: BorrowedFd<'_>) -> Result<FdKind> {
    let ty = socket::getsockopt(&fd, sockopt::SockType).map_err(|e| Error::sys("getsockopt", e))?;
    let family = socket_family(fd)?;
    let listening = socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    Ok(match (family, ty) {
        (Some(AddressFamily::Inet | AddressFamily::Inet6), SockType::Stream) if listening => {
            FdKind::TcpListener
        }
        (Some(AddressFamily::Inet | AddressFamily::Inet6), SockType::Stream) => FdKind::Tcp,
        (Some(AddressFamily::Inet | AddressFamily::Inet6), SockType::Datagram) => FdKind::Udp,
        (Some(AddressFamily::Unix), SockType::Stream) if listening => FdKind::UnixStreamListener,
        (Some(AddressFamily::Unix), SockType::Stream) => FdKind::UnixStream,
        (Some(AddressFamily::Unix), SockType::Datagram) => FdKind::UnixDgram,
        (Some(AddressFamily::Unix), SockType::SeqPacket) => FdKind::UnixSeqPacket,
        _ => FdKind::Other,
    })
}

/// Who is at the other end of a connected Unix socket, as the kernel recorded
/// it when the connection was made (by `connect`, or `socketpair`): a later
/// `setuid` or `exec` in the peer does not change it. `pid` is `None` where
/// the platform does not record it (FreeBSD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

/// `SO_PEERCRED` on Linux; `getpeereid` elsewhere, with `LOCAL_PEERPID` for
/// the pid on macOS.
pub fn peer_credentials(sock: BorrowedFd<'_>) -> Result<PeerCredentials> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let c = socket::getsockopt(&sock, sockopt::PeerCredentials)
            .map_err(|e| Error::sys("getsockopt", e))?;
        // A socket connected by connect(2) on a datagram socket has no
        // recorded peer: Linux answers pid 0 and uid/gid -1.
        if c.pid() == 0 && c.uid() == u32::MAX {
            return Err(Error::Sys {
                syscall: "getsockopt",
                errno: Errno::ENOTCONN,
            });
        }
        Ok(PeerCredentials {
            pid: Some(c.pid()),
            uid: c.uid(),
            gid: c.gid(),
        })
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let (uid, gid) = nix::unistd::getpeereid(sock).map_err(|e| Error::sys("getpeereid", e))?;
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        let pid = socket::getsockopt(&sock, sockopt::LocalPeerPid).ok();
        #[cfg(not(any(target_os = "macos", target_os = "ios")))]
        let pid = None;
        Ok(PeerCredentials {
            pid,
            uid: uid.as_raw(),
            gid: gid.as_raw(),
        })
    }
}

/// The address family of a socket, from its local address: `None` for one
/// the platform cannot name.
pub fn socket_family(fd: BorrowedFd<'_>) -> Result<Option<AddressFamily>> {
    let addr: socket::SockaddrStorage =
        socket::getsockname(fd.as_raw_fd()).map_err(|e| Error::sys("getsockname", e))?;
    Ok(addr.family())
}

// ---------------------------------------------------------------------------
// Addresses, listening, connecting

pub fn unix_addr(path: &[u8], abstract_name: bool, syscall: &'static str) -> Result<UnixAddr> {
    if abstract_name {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            return UnixAddr::new_abstract(path).map_err(|e| Error::sys(syscall, e));
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            return Err(Error::Unsupported(
                "abstract socket names exist only on Linux; use a filesystem path",
            ));
        }
    }
    UnixAddr::new(std::ffi::OsStr::from_bytes(path)).map_err(|e| Error::sys(syscall, e))
}

pub fn bind(fd: BorrowedFd<'_>, addr: &UnixAddr) -> Result<()> {
    socket::bind(fd.as_raw_fd(), addr).map_err(|e| Error::sys("bind", e))
}

pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> Result<()> {
    let backlog = socket::Backlog::new(backlog).map_err(|e| Error::sys("listen", e))?;
    socket::listen(&fd, backlog).map_err(|e| Error::sys("listen", e))
}

/// The socket file a socket was bound to, as found right after `bind`: its
/// identity (device and inode) and permission bits and, on Linux, an `O_PATH`
/// descriptor of it, so that setting its mode acts on this file and not on
/// whatever the path names by then.
#[derive(Debug)]
pub struct BoundFile {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    file: OwnedFd,
    pub dev: u64,
    pub ino: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

/// Gives the socket, before `bind`, the permission bits its file is to have.
/// Linux keeps them on the socket's inode, and `bind` creates the file with
/// them less the umask, in one step: the file is never more open than asked.
/// Elsewhere a socket has no mode to carry over (FreeBSD's and macOS's
/// `bind` create the file `0o777` less the umask): nothing to do here, and
/// [`chmod_bound_file`] sets the mode after `bind`, before `listen`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn set_mode_before_bind(sock: BorrowedFd<'_>, mode: u32) -> Result<()> {
    nix::sys::stat::fchmod(sock, nix::sys::stat::Mode::from_bits_truncate(mode as _))
        .map_err(|e| Error::sys("fchmod", e))
}
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn set_mode_before_bind(_sock: BorrowedFd<'_>, _mode: u32) -> Result<()> {
    Ok(())
}

/// The socket file `sock` was just bound to at `path`, or `None` if `path` no
/// longer names a socket file of this user (another process of another user
/// who may write the directory replaced it, with a symlink say). Never
/// follows a symlink at `path`. Linux: the file the kernel bound
/// (`SIOCUNIXFILE`, which needs `CAP_NET_ADMIN`), else `path` opened with
/// `O_PATH | O_NOFOLLOW`; elsewhere `lstat`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn bound_socket_file(
    sock: BorrowedFd<'_>,
    path: &std::path::Path,
) -> Result<Option<BoundFile>> {
    let file = match kernel_bound_file(sock) {
        Some(file) => file,
        None => match nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(file) => file,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(Error::sys("open", e)),
        },
    };
    let st = nix::sys::stat::fstat(&file).map_err(|e| Error::sys("fstat", e))?;
    Ok(own_socket_file(&st).map(|(dev, ino, mode)| BoundFile {
        file,
        dev,
        ino,
        mode,
    }))
}
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn bound_socket_file(
    _sock: BorrowedFd<'_>,
    path: &std::path::Path,
) -> Result<Option<BoundFile>> {
    match nix::sys::stat::lstat(path) {
        Ok(st) => Ok(own_socket_file(&st).map(|(dev, ino, mode)| BoundFile { dev, ino, mode })),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(Error::sys("lstat", e)),
    }
}

/// Linux's `SIOCUNIXFILE` (`linux/un.h`): an `O_PATH | O_CLOEXEC` descriptor of
/// the file a socket is bound to, whatever its path names now. `None` where
/// the kernel refuses (without `CAP_NET_ADMIN`) or predates it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn kernel_bound_file(sock: BorrowedFd<'_>) -> Option<OwnedFd> {
    const SIOCUNIXFILE: u32 = 0x89E0; // SIOCPROTOPRIVATE + 0
                                      // SAFETY: SIOCUNIXFILE takes no argument; it returns a new descriptor or -1
                                      // and touches no memory of ours.
    let fd = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCUNIXFILE as _) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just installed `fd` for us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Device, inode and permission bits of `st` if it is a socket file (not a
/// symlink) owned by this process's effective user.
fn own_socket_file(st: &libc::stat) -> Option<(u64, u64, u32)> {
    socket_file(st).filter(|_| st.st_uid == nix::unistd::geteuid().as_raw())
}

/// Device, inode and permission bits of `st` if it is a socket file. Their C
/// types differ by OS.
#[allow(clippy::unnecessary_cast)]
fn socket_file(st: &libc::stat) -> Option<(u64, u64, u32)> {
    let is_socket = (st.st_mode as u32) & (libc::S_IFMT as u32) == libc::S_IFSOCK as u32;
    is_socket.then_some((
        st.st_dev as u64,
        st.st_ino as u64,
        (st.st_mode as u32) & 0o7777,
    ))
}

/// Sets the permission bits of a bound socket file to `mode`, following no
/// symlink. Linux: through its descriptor (`chmod` of `/proc/self/fd/N`, a
/// name of that very file, as glibc's `fchmodat(AT_SYMLINK_NOFOLLOW)` does;
/// `ENOENT` without /proc). Elsewhere: `fchmodat(AT_SYMLINK_NOFOLLOW)` on
/// `path`, which changes a symlink put there meanwhile, not what it points to.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn chmod_bound_file(file: &BoundFile, _path: &std::path::Path, mode: u32) -> Result<()> {
    let name = format!("/proc/self/fd/{}", file.file.as_raw_fd());
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        name.as_str(),
        nix::sys::stat::Mode::from_bits_truncate(mode as _),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| Error::sys("chmod", e))
}
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn chmod_bound_file(_file: &BoundFile, path: &std::path::Path, mode: u32) -> Result<()> {
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        nix::sys::stat::Mode::from_bits_truncate(mode as _),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::sys("chmod", e))
}

/// Removes `path` if it names, not through a symlink, the socket file `dev`,
/// `ino`; returns whether it did. The check and the removal are made in one
/// directory, opened once, so that a directory on the path swapped for a
/// symlink meanwhile cannot turn the removal to a file elsewhere.
pub fn remove_socket_file(path: &std::path::Path, dev: u64, ino: u64) -> Result<bool> {
    let Some(name) = path.file_name() else {
        return Ok(false);
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let access = OFlag::O_PATH;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let access = OFlag::O_RDONLY;
    let dir = nix::fcntl::open(
        parent,
        access | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open", e))?;
    let st = match nix::sys::stat::fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(Error::sys("stat", e)),
    };
    if socket_file(&st).map(|(d, i, _)| (d, i)) != Some((dev, ino)) {
        return Ok(false);
    }
    nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
        .map_err(|e| Error::sys("unlink", e))?;
    Ok(true)
}

/// Non-blocking connect. `Ok(false)` means the connection is in progress
/// (EINPROGRESS) or the listener's backlog is full (EAGAIN on Linux): wait for
/// writability and call `connect_result` or retry.
pub fn connect(fd: BorrowedFd<'_>, addr: &UnixAddr) -> Result<bool> {
    loop {
        match socket::connect(fd.as_raw_fd(), addr) {
            Ok(()) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(Errno::EINPROGRESS | Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(Error::sys("connect", e)),
        }
    }
}

/// Whether a pending non-blocking connect finished, from SO_ERROR.
pub fn connect_result(fd: BorrowedFd<'_>) -> Result<()> {
    let err =
        socket::getsockopt(&fd, sockopt::SocketError).map_err(|e| Error::sys("getsockopt", e))?;
    if err == 0 {
        Ok(())
    } else {
        Err(Error::sys("connect", Errno::from_raw(err)))
    }
}

/// Accepts one connection as a close-on-exec, non-blocking descriptor;
/// `Ok(None)` when none is pending.
pub fn accept(fd: BorrowedFd<'_>) -> Result<Option<OwnedFd>> {
    loop {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        let r = socket::accept4(fd.as_raw_fd(), atomic_sock_flags());
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        let r = socket::accept(fd.as_raw_fd());
        match r {
            Ok(raw) => {
                // SAFETY: accept returned a new descriptor that nothing else owns.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                return finish_new_fd(owned).map(Some);
            }
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(Error::sys("accept", e)),
        }
    }
}

/// Waits until `fd` is readable or writable, for the blocking convenience API.
pub fn wait_ready(fd: BorrowedFd<'_>, writable: bool) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let events = if writable {
        PollFlags::POLLOUT
    } else {
        PollFlags::POLLIN
    };
    let mut fds = [PollFd::new(fd, events)];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll", e)),
        }
    }
}

// ---------------------------------------------------------------------------
// sendmsg

/// Outcome of one non-blocking `sendmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// This many bytes went out; descriptors, if any, went with the first.
    Bytes(usize),
    /// Nothing was sent (EAGAIN, or EMSGSIZE under macOS backpressure).
    WouldBlock,
}

/// One `sendmsg` with all `fds` in a single SCM_RIGHTS control message (one
/// cmsg: several are platform-dependent, see nix's `ControlMessage::ScmRights`).
/// With no descriptors no control buffer is passed at all (macOS rejects an
/// empty non-NULL one, nix-rust/nix#623). EINTR is retried here.
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    kind: SocketType,
    data: &[u8],
    fds: &[RawFd],
) -> Result<Sent> {
    debug_assert!(fds.len() <= MAX_FDS_PER_SENDMSG);
    let iov = [IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let flags = send_flags(kind);
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None) {
            Ok(n) => return Ok(Sent::Bytes(n)),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(Sent::WouldBlock),
            // macOS reports a full socket buffer as EMSGSIZE when descriptors ride along.
            #[cfg(target_vendor = "apple")]
            Err(Errno::EMSGSIZE) if !fds.is_empty() => return Ok(Sent::WouldBlock),
            Err(Errno::ETOOMANYREFS) => return Err(Error::TooManyInFlight),
            Err(e) => return Err(Error::sys("sendmsg", e)),
        }
    }
}

/// Smallest record limit a Linux socket can have, rounded down: SOCK_MIN_SNDBUF
/// (2 × (2048 + an sk_buff): 4,608 bytes on 64-bit kernels, less on 32-bit
/// ones) less the 32 bytes `unix_dgram_sendmsg` keeps back.
const SMALLEST_RECORD_LIMIT: usize = 4096 - 32;

/// The most bytes one record (seqpacket, datagram) may hold on `sock` when
/// that could be fewer than `record_len`: on Linux, SO_SNDBUF - 32 (a larger
/// record fails with EMSGSIZE). `None` when any socket takes such a record:
/// one that fits the smallest buffer, or on other kernels, where the
/// protocol's record size already fits the default buffers.
pub fn record_limit(sock: BorrowedFd<'_>, record_len: usize) -> Result<Option<usize>> {
    if !cfg!(any(target_os = "linux", target_os = "android")) || record_len <= SMALLEST_RECORD_LIMIT
    {
        return Ok(None);
    }
    let sndbuf =
        socket::getsockopt(&sock, sockopt::SndBuf).map_err(|e| Error::sys("getsockopt", e))?;
    Ok(Some(sndbuf.saturating_sub(32)))
}

fn send_flags(kind: SocketType) -> MsgFlags {
    // A send to a closed peer must fail with EPIPE, not kill the process with
    // SIGPIPE. Apple has no MSG_NOSIGNAL: `no_sigpipe` sets SO_NOSIGPIPE on
    // each socket instead.
    #[cfg(not(target_vendor = "apple"))]
    #[allow(unused_mut)]
    let mut flags = MsgFlags::MSG_NOSIGNAL;
    #[cfg(target_vendor = "apple")]
    let flags = MsgFlags::empty();
    // FreeBSD 15 needs MSG_EOR to delimit seqpacket records (tokio-seqpacket 0.8.1).
    #[cfg(target_os = "freebsd")]
    if kind == SocketType::SeqPacket {
        flags |= MsgFlags::MSG_EOR;
    }
    let _ = kind;
    flags
}

// ---------------------------------------------------------------------------
// recvmsg

/// Most descriptors one `recvmsg` can bring: Linux's `SCM_MAX_FD` (whatever
/// the libc: musl's lower limit is on sending), and elsewhere all that XNU
/// and FreeBSD take in their 2 KiB (MCLBYTES) of control data. No receive
/// asks the kernel for more, however many it accepts over a whole message.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const MAX_FDS_PER_RECVMSG: usize = 253;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const MAX_FDS_PER_RECVMSG: usize = 2048 / size_of::<RawFd>();

/// Why a receive got fewer descriptors than its message carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdsCut {
    /// The message carried more than the receive had room for. Linux and
    /// FreeBSD installed none past the room and released the rest; XNU
    /// installs all of them first, and those past the room were closed here.
    NoRoom,
    /// The kernel could not install the rest and released them (Linux,
    /// EMFILE: `get_unused_fd_flags`' error; a security module refusing one
    /// is the only other cause).
    NotInstalled(Errno),
}

/// What one `recvmsg` delivered. Every descriptor is owned from the moment the
/// kernel installed it.
#[derive(Debug)]
pub struct Received {
    pub bytes: usize,
    /// At most the room the receive asked for.
    pub fds: Vec<OwnedFd>,
    /// MSG_TRUNC: a datagram or record was longer than the buffer.
    pub data_truncated: bool,
    /// Set when the message carried more descriptors than `fds` holds.
    pub fds_cut: Option<FdsCut>,
}

impl Received {
    /// No bytes and no descriptors, not even cut ones: end of stream on
    /// stream and seqpacket sockets.
    pub fn carried_nothing(&self) -> bool {
        self.bytes == 0 && self.fds.is_empty() && self.fds_cut.is_none()
    }

    /// Whether any descriptor came with it, delivered or cut.
    pub fn carried_fds(&self) -> bool {
        !self.fds.is_empty() || self.fds_cut.is_some()
    }
}

/// Outcome of one non-blocking `recvmsg`.
#[derive(Debug)]
pub enum Recv {
    Got(Received),
    WouldBlock,
}

/// Bytes of control buffer a receive with room for `room` descriptors
/// passes to the kernel; 0 passes none at all, and then Linux and FreeBSD
/// install no descriptor (a message that carried some comes back with
/// MSG_CTRUNC). On Linux exactly `CMSG_LEN`: `scm_detach_fds` installs
/// `(msg_controllen - sizeof(cmsghdr)) / 4`, so `CMSG_SPACE`'s rounding
/// would let one more in. FreeBSD truncates a buffer sized with `CMSG_LEN`
/// (python/cpython#111675), so `CMSG_SPACE` there. XNU installs every
/// descriptor of a message in this process before it cuts the control data
/// down to the buffer, and what it cuts leaves no trace (python/cpython#80931):
/// there every receive has room for all it can install, and the caller's
/// room is applied after.
fn control_bytes_for(room: usize) -> usize {
    let room = if cfg!(target_vendor = "apple") {
        MAX_FDS_PER_RECVMSG
    } else {
        room.min(MAX_FDS_PER_RECVMSG)
    };
    if room == 0 {
        return 0;
    }
    let fds_bytes = (room * size_of::<RawFd>()) as libc::c_uint;
    if cfg!(any(target_os = "linux", target_os = "android")) {
        // SAFETY: CMSG_LEN is pure arithmetic on its argument.
        unsafe { libc::CMSG_LEN(fds_bytes) as usize }
    } else {
        // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
        unsafe { libc::CMSG_SPACE(fds_bytes) as usize }
    }
}

/// Control buffer words: room for [`MAX_FDS_PER_RECVMSG`] descriptors and
/// a header, with margin for alignment.
const CONTROL_WORDS: usize = (MAX_FDS_PER_RECVMSG * size_of::<RawFd>() + 64).div_ceil(8);

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
const RECV_FLAGS: libc::c_int = libc::MSG_CMSG_CLOEXEC;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
const RECV_FLAGS: libc::c_int = 0;

/// Whether received descriptors still need FD_CLOEXEC by fcntl. macOS has no
/// MSG_CMSG_CLOEXEC; FreeBSD has it, but uds and Go's stdlib report it without
/// effect, so FreeBSD gets both until a FreeBSD CI run proves the flag alone.
const CLOEXEC_BY_FCNTL: bool = !cfg!(any(target_os = "linux", target_os = "android"));

/// One non-blocking `recvmsg` into `buf` that lets the kernel install at
/// most `fd_room` descriptors (and never more than [`MAX_FDS_PER_RECVMSG`]):
/// with room for none it passes no control buffer, so a message with
/// descriptors installs nothing here and comes back with `fds_cut`. Walks
/// every control message itself (nix's `cmsgs()` refuses to on MSG_CTRUNC,
/// nix-rust/nix#2413), owning each descriptor as it is found; descriptors of
/// other control messages than SCM_RIGHTS (Linux's SCM_PIDFD) are closed at
/// once. EINTR is retried.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], fd_room: usize) -> Result<Recv> {
    let room = fd_room.min(MAX_FDS_PER_RECVMSG);
    let mut control = [0u64; CONTROL_WORDS];
    let control_capacity = control_bytes_for(room);
    debug_assert!(control_capacity <= size_of_val(&control));
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
        let mut hdr: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if control_capacity > 0 {
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = control_capacity as _;
        }
        // SAFETY: `hdr` points at `iov` and, when given, `control`, both live
        // and writable for the lengths given; the kernel writes at most those.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, RECV_FLAGS) };
        if n < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                Errno::EAGAIN => return Ok(Recv::WouldBlock),
                e => return Err(Error::sys("recvmsg", e)),
            }
        }
        // SAFETY: any bytes are valid u8s; the view covers the first
        // `control_capacity` bytes of `control`, which the kernel is done
        // writing, and lives no longer than it.
        let control_bytes =
            unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), control_capacity) };
        let written = control_len(&hdr).min(control_capacity);
        let truncated = hdr.msg_flags & libc::MSG_CTRUNC != 0;
        let (mut fds, mut fds_cut) = match adopt_received(control_bytes, written, truncated) {
            ControlOutcome::Whole(fds) => (fds, None),
            ControlOutcome::NotInstalled(fds) => (fds, Some(FdsCut::NotInstalled(Errno::EMFILE))),
            ControlOutcome::NoRoom(fds) => (fds, Some(FdsCut::NoRoom)),
        };
        if fds.len() > room {
            // XNU installed them all, or the buffer's rounding let more in
            // than asked: those past the room close here.
            fds.truncate(room);
            fds_cut = Some(FdsCut::NoRoom);
        }
        if CLOEXEC_BY_FCNTL {
            for fd in &fds {
                // On failure `fds` drops here, closing every descriptor of the message.
                set_cloexec(fd.as_fd(), "fcntl")?;
            }
        }
        return Ok(Recv::Got(Received {
            bytes: n as usize,
            fds,
            data_truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
            fds_cut,
        }));
    }
}

/// Bytes waiting in a socket's receive queue (FIONREAD): on Linux the next
/// datagram's length on a datagram socket, everything queued on stream and
/// seqpacket sockets; everything queued elsewhere. So never less than the
/// next record, when one is queued.
pub fn queued_bytes(sock: BorrowedFd<'_>) -> Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is live
    // and writable for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::FIONREAD as _, &mut queued) };
    if rc == -1 {
        return Err(Error::sys("ioctl", Errno::last()));
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// Whether anything waits to be read (bytes, an empty record, or end of
/// stream), without taking it or any descriptor: a one-byte MSG_PEEK with no
/// control buffer. Linux then installs nothing and the queued descriptors
/// stay with their message.
pub fn anything_queued(sock: BorrowedFd<'_>) -> Result<bool> {
    let mut byte = [0u8; 1];
    loop {
        match socket::recv(
            sock.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(Error::sys("recvmsg", e)),
        }
    }
}

/// What the control data of one `recvmsg` held, by the rules of
/// [`adopt_received`].
#[derive(Debug)]
pub enum ControlOutcome {
    /// Every descriptor of the message.
    Whole(Vec<OwnedFd>),
    /// MSG_CTRUNC with room left in the buffer (Linux): the kernel failed to
    /// install the rest and released them. These are the ones it did.
    NotInstalled(Vec<OwnedFd>),
    /// MSG_CTRUNC because the buffer was full (or absent): these are the
    /// ones that fit.
    NoRoom(Vec<OwnedFd>),
}

/// Takes ownership of the descriptors in the first `written` bytes of
/// `control` (a control buffer the kernel just filled, `msg_controllen`
/// bytes of it used) and judges a MSG_CTRUNC (`truncated`): on Linux, a
/// buffer with room for another descriptor after the last one means the
/// kernel stopped for a reason other than room (`scm_detach_fds` installs up
/// to `(room - sizeof(cmsghdr)) / 4` and stops at the first it cannot
/// install). Other kernels report such failures differently, so there every
/// MSG_CTRUNC is a lack of room. Descriptors in other control messages
/// (SCM_PIDFD) are owned too, and closed before this returns.
///
/// The descriptor slots must hold descriptors the kernel installed for this
/// process, as after `recvmsg`; each is owned from here on.
pub(crate) fn adopt_received(control: &[u8], written: usize, truncated: bool) -> ControlOutcome {
    let used = &control[..written.min(control.len())];
    let slots = fd_slots(used);
    let adopt = |at: &usize| {
        let raw = read_fd_slot(used, *at);
        // SAFETY: the kernel installed this descriptor for us just now and
        // nothing else in the process knows its number yet (the caller's
        // contract); negative slots are not descriptors.
        (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
    };
    drop(slots.unasked.iter().filter_map(adopt).collect::<Vec<_>>());
    let fds: Vec<OwnedFd> = slots.rights.iter().filter_map(adopt).collect();
    if !truncated {
        return ControlOutcome::Whole(fds);
    }
    let next_slot = match slots.rights.last() {
        Some(&at) => at + size_of::<RawFd>(),
        None => used.len().next_multiple_of(cmsg_align()) + cmsg_data_offset(),
    };
    if INSTALL_FAILURE_SETS_CTRUNC && next_slot + size_of::<RawFd>() <= control.len() {
        ControlOutcome::NotInstalled(fds)
    } else {
        ControlOutcome::NoRoom(fds)
    }
}

/// Whether a descriptor the kernel fails to install shows as MSG_CTRUNC with
/// room left (Linux's `scm_detach_fds`).
const INSTALL_FAILURE_SETS_CTRUNC: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Linux's SCM_PIDFD (6.5): a pidfd of the sender, installed on every
/// receive while the socket has SO_PASSPIDFD; the `libc` crate lacks it.
const SCM_PIDFD: libc::c_int = 0x04;

fn read_fd_slot(control: &[u8], at: usize) -> RawFd {
    let mut raw = [0u8; size_of::<RawFd>()];
    raw.copy_from_slice(&control[at..at + size_of::<RawFd>()]);
    RawFd::from_ne_bytes(raw)
}

/// Offset of a control message's data from its header: `CMSG_LEN(0)` of the
/// target libc (never hand-rolled: macOS aligns to 4 bytes, Linux to 8,
/// rust-vmm/vmm-sys-util#245).
fn cmsg_data_offset() -> usize {
    // SAFETY: CMSG_LEN is pure arithmetic on its argument.
    unsafe { libc::CMSG_LEN(0) as usize }
}

/// Alignment of control messages in the buffer: `CMSG_ALIGN(1)`, as
/// `CMSG_SPACE(1) - CMSG_SPACE(0)` (libc exports no CMSG_ALIGN).
fn cmsg_align() -> usize {
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    unsafe { (libc::CMSG_SPACE(1) - libc::CMSG_SPACE(0)) as usize }
}

/// Where descriptors sit in a filled control buffer: byte offsets, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FdSlots {
    /// SCM_RIGHTS: the message's descriptors.
    pub rights: Vec<usize>,
    /// Other control messages that carry one (SCM_PIDFD): never asked for.
    pub unasked: Vec<usize>,
}

/// Byte offsets of every descriptor slot in `control` (the `msg_controllen`
/// bytes a `recvmsg` filled). Works on the bytes alone, with every length
/// checked, rather than with the CMSG_NXTHDR pointer walk, whose arithmetic
/// overflows on a hostile `cmsg_len` (unix-ancillary's fuzzing found that).
/// Each `cmsg_len` is clamped to the buffer: XNU leaves it untruncated on
/// MSG_CTRUNC (bytecodealliance/rustix#1683). Control messages that carry
/// no descriptor (credentials) are stepped over.
pub fn fd_slots(control: &[u8]) -> FdSlots {
    const HEADER: usize = size_of::<libc::cmsghdr>();
    let mut slots = FdSlots::default();
    let mut at = 0usize;
    while let Some(header_bytes) = at
        .checked_add(HEADER)
        .and_then(|header_end| control.get(at..header_end))
    {
        // SAFETY: `header_bytes` is exactly one cmsghdr long; cmsghdr is plain
        // integers, valid for any bytes; read_unaligned needs no alignment.
        let header: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(header_bytes.as_ptr().cast()) };
        #[allow(clippy::unnecessary_cast)] // socklen_t on the BSDs and musl, size_t on glibc
        let claimed = header.cmsg_len as usize;
        if claimed < HEADER {
            break; // malformed: no next header can be found from it
        }
        let data_start = at + cmsg_data_offset();
        let data_end = at.saturating_add(claimed).min(control.len());
        let list = match (header.cmsg_level, header.cmsg_type) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => Some(&mut slots.rights),
            // Other systems number other messages 4 (FreeBSD's SCM_BINTIME).
            (libc::SOL_SOCKET, SCM_PIDFD)
                if cfg!(any(target_os = "linux", target_os = "android")) =>
            {
                Some(&mut slots.unasked)
            }
            _ => None,
        };
        if let Some(list) = list {
            let mut slot = data_start;
            while slot + size_of::<RawFd>() <= data_end {
                list.push(slot);
                slot += size_of::<RawFd>();
            }
        }
        match claimed
            .checked_next_multiple_of(cmsg_align())
            .and_then(|step| at.checked_add(step))
        {
            Some(next) => at = next,
            None => break,
        }
    }
    slots
}

/// `msg_controllen` is `usize` on Linux and `socklen_t` on the BSDs and macOS.
#[allow(clippy::unnecessary_cast)]
fn control_len(hdr: &libc::msghdr) -> usize {
    hdr.msg_controllen as usize
}

// ---------------------------------------------------------------------------
// Waiting on the host's libuv loop

/// `uv_poll_t` on the event loop of the process that loaded this library (Node's
/// own loop): readiness arrives on the loop's thread with no thread of ours and
/// no hop between threads. docs/WAITING.md records why this and not a reactor
/// thread.
///
/// libuv's functions are looked up in the running process at first use rather
/// than linked, so this crate builds and tests without libuv, and a host that
/// lacks them (a runtime that only imitates Node-API) gets `Unsupported`
/// instead of a crash. Handle memory is sized by `uv_handle_size`, so nothing
/// here depends on the layout of libuv's structs.
#[cfg(feature = "uv")]
pub mod uv {
    use std::ffi::{c_char, c_int, c_void, CStr};
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::ptr::NonNull;
    use std::sync::OnceLock;

    use nix::errno::Errno;
    use nix::libc;

    use crate::error::{Error, Result};

    /// Readiness bits, as libuv numbers them (`UV_READABLE`, `UV_WRITABLE`).
    pub const READABLE: u32 = 1;
    pub const WRITABLE: u32 = 2;
    /// `UV_POLL` in libuv's `uv_handle_type`, fixed for libuv 1.x.
    const UV_POLL: c_int = 8;

    type PollCallback = unsafe extern "C" fn(*mut c_void, c_int, c_int);
    type CloseCallback = unsafe extern "C" fn(*mut c_void);

    // The libuv 1.x functions used here, with their C signatures from uv.h.
    type HandleSize = unsafe extern "C" fn(c_int) -> usize;
    type PollInit = unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int;
    type PollStart = unsafe extern "C" fn(*mut c_void, c_int, PollCallback) -> c_int;
    type PollStop = unsafe extern "C" fn(*mut c_void) -> c_int;
    type Ref = unsafe extern "C" fn(*mut c_void);
    type Close = unsafe extern "C" fn(*mut c_void, CloseCallback);
    type SetData = unsafe extern "C" fn(*mut c_void, *mut c_void);
    type GetData = unsafe extern "C" fn(*const c_void) -> *mut c_void;

    struct Api {
        handle_size: HandleSize,
        poll_init: PollInit,
        poll_start: PollStart,
        poll_stop: PollStop,
        ref_handle: Ref,
        unref_handle: Ref,
        close: Close,
        set_data: SetData,
        get_data: GetData,
    }

    fn api() -> Result<&'static Api> {
        static API: OnceLock<Option<Api>> = OnceLock::new();
        API.get_or_init(load).as_ref().ok_or(Error::Unsupported(
            "this runtime does not provide libuv's uv_poll",
        ))
    }

    fn symbol(name: &CStr) -> Option<*mut c_void> {
        // SAFETY: dlsym only reads the NUL-terminated name; RTLD_DEFAULT searches
        // the objects already loaded into the process.
        let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        (!address.is_null()).then_some(address)
    }

    /// The exported function `$name` of the running process as `$signature`,
    /// or `None` (returned from the enclosing function) when it is missing.
    macro_rules! host_function {
        ($name:literal as $signature:ty) => {
            // SAFETY: the address is the exported function of that name, and
            // `$signature` is its C signature from uv.h or node_api.h, which
            // libuv 1.x and Node-API keep stable.
            unsafe { std::mem::transmute::<*mut c_void, $signature>(symbol($name)?) }
        };
    }

    fn load() -> Option<Api> {
        // The handle data accessors exist since libuv 1.19 (Node 10); an older
        // libuv lacks them and gets `Unsupported`.
        Some(Api {
            handle_size: host_function!(c"uv_handle_size" as HandleSize),
            poll_init: host_function!(c"uv_poll_init" as PollInit),
            poll_start: host_function!(c"uv_poll_start" as PollStart),
            poll_stop: host_function!(c"uv_poll_stop" as PollStop),
            ref_handle: host_function!(c"uv_ref" as Ref),
            unref_handle: host_function!(c"uv_unref" as Ref),
            close: host_function!(c"uv_close" as Close),
            set_data: host_function!(c"uv_handle_set_data" as SetData),
            get_data: host_function!(c"uv_handle_get_data" as GetData),
        })
    }

    /// The libuv loop of the calling thread, as the host hands it out
    /// (`napi_get_uv_event_loop`). Not `Send`: a loop is only ever touched from
    /// its own thread.
    #[derive(Clone, Copy)]
    pub struct Loop(NonNull<c_void>);

    impl Loop {
        /// `raw` must be the running loop of this thread as the host reported
        /// it; the binding passes exactly what Node-API returned. (Any other
        /// pointer would be undefined behaviour in libuv; this is safe only by
        /// that contract, which keeps `unsafe` out of the binding.)
        pub fn from_host(raw: *mut c_void) -> Option<Loop> {
            NonNull::new(raw).map(Loop)
        }
    }

    /// What the handle's data pointer owns; freed by the close callback, since
    /// libuv may call back until the handle is closed.
    struct State {
        /// `Fn`, called through a shared reference: it may run JavaScript,
        /// which may start, park or drop this same poll.
        on_ready: Box<dyn Fn(u32)>,
        /// The handle's memory, in 16-byte units so it is aligned for any field.
        memory: *mut [u128],
        /// Events the handle is started for; 0 when stopped, including when
        /// libuv stopped it itself after an error on the descriptor.
        started: std::cell::Cell<u32>,
        /// Started but unwanted (see `Poll::park`): unreferenced, and stopped
        /// by the first readiness it sees instead of calling `on_ready`.
        parked: std::cell::Cell<bool>,
    }

    /// One socket watched on the loop. Dropping it closes the handle; the
    /// socket must stay open until then (owners drop the poll first): libuv
    /// aborts the process if the kernel reports a watched descriptor closed.
    pub struct Poll {
        handle: NonNull<c_void>,
        state: NonNull<State>,
        api: &'static Api,
    }

    impl Poll {
        /// Watches `fd` on `event_loop`. While started, `on_ready` runs on the
        /// loop's thread with the ready bits on every loop turn that finds the
        /// socket ready (level-triggered): the caller must make the socket
        /// not ready (read until EAGAIN) or stop the poll. An error on the
        /// descriptor reports both bits, so the caller's retry meets it.
        pub fn new(
            event_loop: Loop,
            fd: BorrowedFd<'_>,
            on_ready: impl Fn(u32) + 'static,
        ) -> Result<Poll> {
            let api = api()?;
            // SAFETY: plain query of a size; UV_POLL is a valid handle type.
            let size = unsafe { (api.handle_size)(UV_POLL) };
            let memory: *mut [u128] =
                Box::into_raw(vec![0u128; size.div_ceil(16)].into_boxed_slice());
            let handle = memory.cast::<c_void>();
            // SAFETY: `handle` is zeroed memory of the size libuv asked for, and
            // the loop is this thread's running loop (see `Loop::from_host`).
            let rc = unsafe { (api.poll_init)(event_loop.0.as_ptr(), handle, fd.as_raw_fd()) };
            if rc < 0 {
                // SAFETY: libuv did not take the handle; the memory is still ours.
                drop(unsafe { Box::from_raw(memory) });
                return Err(Error::Sys {
                    syscall: "uv_poll_init",
                    errno: Errno::from_raw(-rc),
                });
            }
            let state = NonNull::from(Box::leak(Box::new(State {
                on_ready: Box::new(on_ready),
                memory,
                started: std::cell::Cell::new(0),
                parked: std::cell::Cell::new(false),
            })));
            // SAFETY: the handle is initialised; its data pointer is ours to set,
            // and the close callback takes the box back.
            unsafe { (api.set_data)(handle, state.as_ptr().cast()) };
            Ok(Poll {
                // `memory` came from a Box, so it is never null.
                handle: NonNull::new(handle).ok_or(Error::Closed)?,
                state,
                api,
            })
        }

        fn state(&self) -> &State {
            // SAFETY: the State lives until `on_close`, which runs only after
            // Drop; shared with the callback on this same thread, through Cells.
            unsafe { self.state.as_ref() }
        }

        /// Watches for `events` (READABLE, WRITABLE or both). A started poll
        /// keeps the loop alive. Starting again for the events it is already
        /// started (or parked) for costs no system call; other changes
        /// re-register the descriptor with the kernel.
        pub fn start(&mut self, events: u32) -> Result<()> {
            if self.state().parked.replace(false) {
                // SAFETY: the handle is initialised and not closed (we own it until Drop).
                unsafe { (self.api.ref_handle)(self.handle.as_ptr()) };
            }
            if self.state().started.get() == events {
                return Ok(());
            }
            // SAFETY: as above.
            let rc =
                unsafe { (self.api.poll_start)(self.handle.as_ptr(), events as c_int, on_poll) };
            if rc < 0 {
                self.state().started.set(0);
                return Err(Error::Sys {
                    syscall: "uv_poll_start",
                    errno: Errno::from_raw(-rc),
                });
            }
            self.state().started.set(events);
            Ok(())
        }

        /// Stops wanting readiness without stopping the poll: it no longer
        /// keeps the loop alive nor calls `on_ready`, and the first readiness
        /// it sees stops it. A `start` for the same events before then costs
        /// nothing. Stopping outright would make libuv remove the descriptor
        /// from epoll and add it back on the next start: two system calls
        /// per wait for a caller that waits again in the same turn, as one
        /// awaiting receive after another does.
        pub fn park(&mut self) {
            let state = self.state();
            if state.started.get() != 0 && !state.parked.replace(true) {
                // SAFETY: the handle is initialised and not closed (we own it until Drop).
                unsafe { (self.api.unref_handle)(self.handle.as_ptr()) };
            }
        }
    }

    impl Drop for Poll {
        fn drop(&mut self) {
            // SAFETY: the handle is initialised and closed exactly once, here;
            // libuv stops it and later calls `on_close`, which frees it.
            unsafe { (self.api.close)(self.handle.as_ptr(), on_close) };
        }
    }

    unsafe extern "C" fn on_poll(handle: *mut c_void, status: c_int, events: c_int) {
        let Ok(api) = api() else { return };
        // SAFETY: libuv passes the live handle whose data is the State set in
        // `Poll::new`; it is freed only in `on_close`, after the last callback.
        // The loop's thread is the only one touching it. Shared: `on_ready`
        // may reach `Poll::start`/`park`, which read it too (through Cells).
        let state = unsafe { &*(api.get_data)(handle).cast::<State>() };
        if state.parked.replace(false) {
            state.started.set(0);
            // SAFETY: the live handle libuv passed; stopping it from its own
            // callback is allowed, and it is referenced again for its next start.
            unsafe {
                (api.poll_stop)(handle);
                (api.ref_handle)(handle);
            }
            return;
        }
        let ready = if status < 0 {
            // libuv has stopped the handle; the next start must really start it.
            state.started.set(0);
            READABLE | WRITABLE
        } else {
            events as u32 & (READABLE | WRITABLE)
        };
        (state.on_ready)(ready);
    }

    unsafe extern "C" fn on_close(handle: *mut c_void) {
        let Ok(api) = api() else { return };
        // SAFETY: libuv will not touch the handle again; the State box and the
        // handle memory were leaked by `Poll::new` for exactly this moment.
        unsafe {
            let state = Box::from_raw((api.get_data)(handle).cast::<State>());
            drop(Box::from_raw(state.memory));
        }
    }

    // The Node-API functions used to call JavaScript from a loop callback,
    // with their C signatures from node_api.h (Node-API 1 and 3). Opaque
    // handles are pointers; `napi_status` is a C enum, 0 for `napi_ok`.
    type Status = c_int;
    type Env = *mut c_void;
    type Value = *mut c_void;
    type Reference = *mut c_void;
    type Scope = *mut c_void;
    type AsyncContext = *mut c_void;
    const NAPI_OK: Status = 0;

    type OpenHandleScope = unsafe extern "C" fn(Env, *mut Scope) -> Status;
    type CloseHandleScope = unsafe extern "C" fn(Env, Scope) -> Status;
    type CreateReference = unsafe extern "C" fn(Env, Value, u32, *mut Reference) -> Status;
    type DeleteReference = unsafe extern "C" fn(Env, Reference) -> Status;
    type GetReferenceValue = unsafe extern "C" fn(Env, Reference, *mut Value) -> Status;
    type CreateObject = unsafe extern "C" fn(Env, *mut Value) -> Status;
    type CreateStringUtf8 = unsafe extern "C" fn(Env, *const c_char, usize, *mut Value) -> Status;
    type CreateDouble = unsafe extern "C" fn(Env, f64, *mut Value) -> Status;
    type AsyncInit = unsafe extern "C" fn(Env, Value, Value, *mut AsyncContext) -> Status;
    type AsyncDestroy = unsafe extern "C" fn(Env, AsyncContext) -> Status;
    type MakeCallback = unsafe extern "C" fn(
        Env,
        AsyncContext,
        Value,
        Value,
        usize,
        *const Value,
        *mut Value,
    ) -> Status;
    type IsExceptionPending = unsafe extern "C" fn(Env, *mut bool) -> Status;
    type GetAndClearLastException = unsafe extern "C" fn(Env, *mut Value) -> Status;
    type FatalException = unsafe extern "C" fn(Env, Value) -> Status;

    struct NodeApi {
        open_handle_scope: OpenHandleScope,
        close_handle_scope: CloseHandleScope,
        create_reference: CreateReference,
        delete_reference: DeleteReference,
        get_reference_value: GetReferenceValue,
        create_object: CreateObject,
        create_string_utf8: CreateStringUtf8,
        create_double: CreateDouble,
        async_init: AsyncInit,
        async_destroy: AsyncDestroy,
        make_callback: MakeCallback,
        is_exception_pending: IsExceptionPending,
        get_and_clear_last_exception: GetAndClearLastException,
        fatal_exception: FatalException,
    }

    fn node_api() -> Result<&'static NodeApi> {
        static API: OnceLock<Option<NodeApi>> = OnceLock::new();
        API.get_or_init(load_node_api)
            .as_ref()
            .ok_or(Error::Unsupported("this runtime lacks napi_make_callback"))
    }

    fn load_node_api() -> Option<NodeApi> {
        Some(NodeApi {
            open_handle_scope: host_function!(c"napi_open_handle_scope" as OpenHandleScope),
            close_handle_scope: host_function!(c"napi_close_handle_scope" as CloseHandleScope),
            create_reference: host_function!(c"napi_create_reference" as CreateReference),
            delete_reference: host_function!(c"napi_delete_reference" as DeleteReference),
            get_reference_value: host_function!(c"napi_get_reference_value" as GetReferenceValue),
            create_object: host_function!(c"napi_create_object" as CreateObject),
            create_string_utf8: host_function!(c"napi_create_string_utf8" as CreateStringUtf8),
            create_double: host_function!(c"napi_create_double" as CreateDouble),
            async_init: host_function!(c"napi_async_init" as AsyncInit),
            async_destroy: host_function!(c"napi_async_destroy" as AsyncDestroy),
            make_callback: host_function!(c"napi_make_callback" as MakeCallback),
            is_exception_pending: host_function!(
                c"napi_is_exception_pending" as IsExceptionPending
            ),
            get_and_clear_last_exception: host_function!(
                c"napi_get_and_clear_last_exception" as GetAndClearLastException
            ),
            fatal_exception: host_function!(c"napi_fatal_exception" as FatalException),
        })
    }

    /// A Node-API handle (`napi_env`, `napi_value`) exactly as the host
    /// handed it to the binding; see `JsCallback::new` for the contract.
    #[derive(Clone, Copy)]
    pub struct HostHandle(NonNull<c_void>);

    impl HostHandle {
        pub fn from_host(raw: *mut c_void) -> Option<HostHandle> {
            NonNull::new(raw).map(HostHandle)
        }
    }

    /// A JavaScript function that loop callbacks call directly, as Node calls
    /// back when an fs or net operation completes: through
    /// `napi_make_callback`, which runs the microtasks and `process.nextTick`
    /// callbacks queued by the call before it returns, in an async context of
    /// its own (so async hooks see each call as one operation of the
    /// resource named at creation). Relaying through a threadsafe function
    /// instead costs an eventfd write, one more loop turn and an eventfd read
    /// per call (docs/WAITING.md). Not `Send`: it belongs to the JavaScript
    /// thread that made it, and must be dropped there while its environment
    /// lives (the binding keeps it in an object that environment finalizes).
    pub struct JsCallback {
        env: Env,
        function: Reference,
        /// The async resource, also the `this` of each call.
        resource: Reference,
        context: AsyncContext,
        api: &'static NodeApi,
    }

    impl JsCallback {
        /// `env` must be the Node-API environment of the current call and
        /// `function` a JavaScript function value valid in its current scope,
        /// both exactly as Node-API handed them to the binding (`Env::raw`,
        /// the argument's raw value). As with `Loop::from_host`, this is safe
        /// only by that contract, which keeps `unsafe` out of the binding.
        pub fn new(env: HostHandle, function: HostHandle, name: &str) -> Result<JsCallback> {
            let api = node_api()?;
            let (env, function) = (env.0.as_ptr(), function.0.as_ptr());
            let failed = |what| Error::Sys {
                syscall: what,
                errno: Errno::EINVAL,
            };
            let mut resource = std::ptr::null_mut();
            let mut name_value = std::ptr::null_mut();
            let mut callback = JsCallback {
                env,
                function: std::ptr::null_mut(),
                resource: std::ptr::null_mut(),
                context: std::ptr::null_mut(),
                api,
            };
            // SAFETY: `env` is the live environment of this call on its own
            // thread (the contract above), and every out-pointer is a local.
            // A failure leaves the fields made so far for Drop to release.
            unsafe {
                if (api.create_reference)(env, function, 1, &mut callback.function) != NAPI_OK {
                    return Err(failed("napi_create_reference"));
                }
                if (api.create_object)(env, &mut resource) != NAPI_OK
                    || (api.create_reference)(env, resource, 1, &mut callback.resource) != NAPI_OK
                {
                    return Err(failed("napi_create_reference"));
                }
                if (api.create_string_utf8)(env, name.as_ptr().cast(), name.len(), &mut name_value)
                    != NAPI_OK
                    || (api.async_init)(env, resource, name_value, &mut callback.context) != NAPI_OK
                {
                    return Err(failed("napi_async_init"));
                }
            }
            Ok(callback)
        }

        /// Calls the function with one number, from a loop callback (never
        /// from inside JavaScript). An exception it throws goes to Node's
        /// uncaught-exception handling, as for any callback Node makes. While
        /// the environment is shutting down the call does not happen.
        pub fn call(&self, argument: f64) {
            let (api, env) = (self.api, self.env);
            let mut scope = std::ptr::null_mut();
            // SAFETY: `env` lives while `self` does (the contract of `new`), and
            // this runs on its thread from a loop callback, outside JavaScript,
            // where opening a handle scope and making a callback is allowed.
            // The values made live in the scope, which is closed last.
            unsafe {
                if (api.open_handle_scope)(env, &mut scope) != NAPI_OK {
                    return;
                }
                let (mut function, mut this, mut arg, mut result) = (
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
                if (api.get_reference_value)(env, self.function, &mut function) == NAPI_OK
                    && (api.get_reference_value)(env, self.resource, &mut this) == NAPI_OK
                    && (api.create_double)(env, argument, &mut arg) == NAPI_OK
                    && (api.make_callback)(env, self.context, this, function, 1, &arg, &mut result)
                        != NAPI_OK
                {
                    let mut pending = false;
                    let mut error = std::ptr::null_mut();
                    if (api.is_exception_pending)(env, &mut pending) == NAPI_OK
                        && pending
                        && (api.get_and_clear_last_exception)(env, &mut error) == NAPI_OK
                    {
                        (api.fatal_exception)(env, error);
                    }
                }
                (api.close_handle_scope)(env, scope);
            }
        }
    }

    impl Drop for JsCallback {
        fn drop(&mut self) {
            let (api, env) = (self.api, self.env);
            // SAFETY: dropped on the environment's thread while it lives (the
            // type's contract); each handle was made by `new` and is released
            // once, here; null ones were never made.
            unsafe {
                if !self.context.is_null() {
                    (api.async_destroy)(env, self.context);
                }
                for reference in [self.function, self.resource] {
                    if !reference.is_null() {
                        (api.delete_reference)(env, reference);
                    }
                }
            }
        }
    }
}
