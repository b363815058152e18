use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

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
    /// Permission bits for the socket file (filesystem paths only), applied
    /// after bind and before listen, so no peer can connect in between.
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
    /// The file this listener created, with its identity, so that closing
    /// removes it only while it is still ours (a successor may have replaced it;
    /// nodejs/node#19729).
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
        let addr = opts.address.to_unix_addr("bind")?;
        sys::bind(sock.as_fd(), &addr)?;
        let mut created = None;
        if let Address::Path(path) = &opts.address {
            let (dev, ino) = sys::file_identity(path)?;
            created = Some((path.clone(), dev, ino));
            if let Some(mode) = opts.mode {
                let perm = nix::sys::stat::Mode::from_bits_truncate(mode as _);
                if let Err(e) = nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    path.as_path(),
                    perm,
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                ) {
                    let _ = std::fs::remove_file(path);
                    return Err(Error::Sys {
                        syscall: "chmod",
                        errno: e,
                    });
                }
            }
        }
        let listening = Listener {
            sock,
            socket_type: opts.socket_type,
            created,
        };
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
            if sys::file_identity(&path).ok() == Some((dev, ino)) {
                let _ = std::fs::remove_file(&path);
            }
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
