//! Pass open file descriptors between processes over Unix domain sockets
//! (SCM_RIGHTS), with every received descriptor owned from the moment the
//! kernel installs it.
//!
//! - [`Channel`] carries messages (bytes plus descriptors) in framed mode (one
//!   `send` is one message on every socket type; see PROTOCOL.md) or raw mode
//!   (one `sendmsg` / `recvmsg`, for peers with their own framing).
//! - [`Listener`] accepts channels on a filesystem path or Linux abstract name.
//! - All operations are non-blocking; `*_blocking` variants wait with poll(2).

mod channel;
mod error;
pub mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod listener;
pub mod sys;

pub use channel::{
    Channel, Readiness, RecvOptions, SendStatus, DEFAULT_MAX_BYTES, DEFAULT_RAW_MAX_BYTES,
};
pub use error::{Error, Result};

/// An empty descriptor list for `send` calls that carry only bytes.
pub const NO_FDS: [std::os::fd::RawFd; 0] = [];
pub use frame::Message;
pub use listener::{connect, connect_blocking, Address, ListenOptions, Listener};
pub use sys::{FdKind, PeerCredentials, HAS_ABSTRACT_NAMES, HAS_SEQPACKET, MAX_FDS_PER_SENDMSG};

/// The kind of Unix socket a channel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketType {
    Stream,
    SeqPacket,
    Datagram,
}

/// How messages map onto system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One `send` is one message on every socket type (PROTOCOL.md).
    Framed,
    /// One `sendmsg` / one `recvmsg`, as the kernel gives them.
    Raw,
}
