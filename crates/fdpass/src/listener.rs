use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::sys;
use crate::{Channel, Mode, SocketType};

/// Where a Unix socket lives: a filesystem path or a Linux abstract name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Path(PathBuf),
    /// Linux only; the name without its leading NUL.
    Abstract(Vec<u8>),
}

impl Address {
    /// The socket address; an error names `syscall`, the call it is for.
    fn to_unix_addr(&self, syscall: &'static str) -> Result<nix::sys::socket::UnixAddr> {
        match self {
            Address::Path(p) => {
                use std::os::unix::ffi::OsStrExt;
                sys::unix_addr(p.as_os_str().as_bytes(), false, syscall)
            }
            Address::Abstract(name) => sys::unix_addr(name, true, syscall),
        }
    }
}

/// How to listen.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    pub address: Address,
    pub socket_type: SocketType,
    /// Permission bits for the socket file (filesystem paths only). The file
    /// is never more open than this and no step follows a symlink: on Linux
    /// the socket carries the bits into `bind`, which creates the file with
    /// them less the umask, and bits the umask took are added back through a
    /// descriptor of that file; elsewhere they are set after `bind` with
    /// `AT_SYMLINK_NOFOLLOW`. All before `listen`, so no peer can connect
    /// before the mode is final.
    pub mode: Option<u32>,
    pub backlog: i32,
    /// False refuses descriptors on every accepted connection, in the kernel
    /// and from the moment it connects ([`sys::set_accepts_fds`]).
    pub accept_fds: bool,
}

/// A listening Unix socket that accepts channels.
#[derive(Debug)]
pub struct Listener {
    sock: OwnedFd,
    socket_type: SocketType,
    /// The file this listener created, with its identity (device, inode), so
    /// that closing removes it only while the path still names it, not
    /// through a symlink: a successor may have replaced it (nodejs/node#19729),
    /// or another user who may write the directory.
    created: Option<(PathBuf, u64, u64)>,
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Listener {
    pub fn bind(opts: &ListenOptions) -> Result<Listener> {
        if opts.socket_type == SocketType::Datagram {
            return Err(Error::Unsupported(
                "datagram sockets do not listen; use socketPair or a connected datagram socket",
            ));
        }
        if matches!(opts.address, Address::Abstract(_)) && opts.mode.is_some() {
            return Err(Error::InvalidArgument(
                "mode applies to filesystem sockets; abstract names have no permissions".into(),
            ));
        }
        let sock = sys::new_socket(opts.socket_type)?;
        if !opts.accept_fds {
            sys::set_accepts_fds(sock.as_fd(), false)?;
        }
        let path = match &opts.address {
            Address::Path(path) => Some(path),
            Address::Abstract(_) => None,
        };
        if let (Some(_), Some(mode)) = (path, opts.mode) {
            sys::set_mode_before_bind(sock.as_fd(), mode)?;
        }
        let addr = opts.address.to_unix_addr("bind")?;
        sys::bind(sock.as_fd(), &addr)?;
        // From here on an early return drops the listener, which removes the
        // file it created (if the path still names it).
        let mut listening = Listener {
            sock,
            socket_type: opts.socket_type,
            created: None,
        };
        if let Some(path) = path {
            let bound = sys::bound_socket_file(listening.sock.as_fd(), path)?;
            if let Some(file) = &bound {
                listening.created = Some((path.clone(), file.dev, file.ino));
            }
            match (opts.mode, &bound) {
                (Some(mode), Some(file)) if file.mode != mode => {
                    sys::chmod_bound_file(file, path, mode)?
                }
                // Replaced before its mode could be made sure: the path no
                // longer names the socket, which nobody could reach there.
                (Some(_), None) => return Err(Error::sys("chmod", Errno::ENOENT)),
                _ => {}
            }
        }
        sys::listen(listening.sock.as_fd(), opts.backlog)?;
        Ok(listening)
    }

    pub fn socket_type(&self) -> SocketType {
        self.socket_type
    }

    /// Accepts one pending connection without blocking.
    pub fn try_accept(&self, mode: Mode) -> Result<Option<Channel>> {
        Ok(sys::accept(self.sock.as_fd())?.map(|fd| Channel::new(fd, self.socket_type, mode)))
    }

    /// Blocking accept, waiting with poll.
    pub fn accept_blocking(&self, mode: Mode) -> Result<Channel> {
        loop {
            if let Some(c) = self.try_accept(mode)? {
                return Ok(c);
            }
            sys::wait_ready(self.sock.as_fd(), false)?;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = self.created.take() {
            let _ = sys::remove_socket_file(&path, dev, ino);
        }
    }
}

/// Starts connecting to `address` without blocking. The channel may still be
/// connecting: then wait until it is writable and call `Channel::poll_connect`.
pub fn connect(address: &Address, socket_type: SocketType, mode: Mode) -> Result<Channel> {
    let addr = address.to_unix_addr("connect")?;
    let sock = sys::new_socket(socket_type)?;
    let done = sys::connect(sock.as_fd(), &addr)?;
    let mut channel = Channel::new(sock, socket_type, mode);
    if !done {
        channel.set_connecting(addr);
    }
    Ok(channel)
}

/// Blocking connect convenience.
pub fn connect_blocking(address: &Address, socket_type: SocketType, mode: Mode) -> Result<Channel> {
    let mut channel = connect(address, socket_type, mode)?;
    while !channel.poll_connect()? {
        sys::wait_ready(channel.as_fd(), true)?;
    }
    Ok(channel)
}
