use nix::errno::Errno;

/// Every way an fdpass operation fails. System errors keep the errno and the
/// call that produced it; library conditions each have a stable `code()`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{syscall} failed: {}", .errno.desc())]
    Sys { syscall: &'static str, errno: Errno },

    #[error("{count} descriptors exceed the limit of {limit} {what}")]
    TooManyFds {
        count: usize,
        limit: usize,
        what: &'static str,
    },

    #[error(
        "the peer sent more descriptors than the receive buffer could hold; \
         the {arrived} that arrived were closed"
    )]
    ControlTruncated { arrived: usize },

    #[error(
        "the message carried more descriptors than the {limit} this receive accepts (maxFds); \
         the kernel installed no more than that, and the {arrived} it did were closed"
    )]
    FdsOverLimit { limit: usize, arrived: usize },

    #[error(
        "the kernel could not install the descriptors of a message ({}: {}); the message \
         was dropped whole and the {arrived} that did arrive were closed",
        errno_name(*.errno),
        .errno.desc()
    )]
    DescriptorsDropped { arrived: usize, errno: Errno },

    #[error("the message was longer than the {limit}-byte receive buffer and was cut; its {fds} descriptors were closed")]
    MessageTruncated { limit: usize, fds: usize },

    #[error("the message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },

    #[error("protocol violation: {0}")]
    Protocol(String),

    #[error("the channel is closed")]
    Closed,

    #[error("the peer closed the channel (end of stream)")]
    PeerClosed,

    #[error("the peer closed the channel in the middle of a message; {fds} descriptors of it were closed")]
    ClosedMidMessage { fds: usize },

    #[error("the listener refused this connection (its policy does not allow this peer)")]
    PeerRefused,

    #[error("{0}")]
    Unsupported(&'static str),

    #[error(
        "the kernel refused more descriptors in flight (ETOOMANYREFS): the sending user has \
         more descriptors queued in sockets than its RLIMIT_NOFILE; let the peer read first"
    )]
    TooManyInFlight,

    #[error("{0}")]
    InvalidArgument(String),

    #[error(
        "descriptor {fd} is owned by {owner} already; a second owner would close it twice \
         (the second time, whatever reused the number)"
    )]
    FdOwned { fd: i32, owner: &'static str },
}

impl Error {
    pub(crate) fn sys(syscall: &'static str, errno: Errno) -> Self {
        Error::Sys { syscall, errno }
    }

    /// The Node-style `code`: the errno name for system errors, `ERR_FDPASS_*`
    /// for library conditions.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Sys { errno, .. } => errno_name(*errno),
            Error::TooManyFds { .. } | Error::FdsOverLimit { .. } => "ERR_FDPASS_TOO_MANY_FDS",
            Error::ControlTruncated { .. } => "ERR_FDPASS_CONTROL_TRUNCATED",
            Error::DescriptorsDropped { errno, .. } => errno_name(*errno),
            Error::MessageTruncated { .. } => "ERR_FDPASS_MESSAGE_TRUNCATED",
            Error::MessageTooLarge { .. } => "ERR_FDPASS_MESSAGE_TOO_LARGE",
            Error::Protocol(_) => "ERR_FDPASS_PROTOCOL",
            Error::Closed | Error::PeerClosed => "ERR_FDPASS_CLOSED",
            Error::ClosedMidMessage { .. } => "ERR_FDPASS_PROTOCOL",
            Error::PeerRefused => "ERR_FDPASS_PEER_REFUSED",
            Error::Unsupported(_) => "ERR_FDPASS_UNSUPPORTED",
            Error::TooManyInFlight => "ETOOMANYREFS",
            Error::InvalidArgument(_) => "ERR_INVALID_ARG_VALUE",
            Error::FdOwned { .. } => "ERR_FDPASS_FD_OWNED",
        }
    }

    /// The errno and system call, for system errors.
    pub fn errno(&self) -> Option<(i32, &'static str)> {
        match self {
            Error::Sys { syscall, errno } => Some((*errno as i32, syscall)),
            Error::TooManyInFlight => Some((Errno::ETOOMANYREFS as i32, "sendmsg")),
            Error::DescriptorsDropped { errno, .. } => Some((*errno as i32, "recvmsg")),
            _ => None,
        }
    }

    /// Whether the channel can go on after this error (the failed message was
    /// dropped whole), or the stream is out of step and must be closed.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            Error::TooManyFds { .. }
                | Error::FdsOverLimit { .. }
                | Error::MessageTruncated { .. }
                | Error::DescriptorsDropped { .. }
                | Error::MessageTooLarge { .. }
                | Error::InvalidArgument(_)
                | Error::FdOwned { .. }
                | Error::TooManyInFlight
        ) || matches!(self, Error::Sys { errno, .. } if *errno == Errno::EBADF)
    }
}

fn errno_name(e: Errno) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    // Errno's Debug form is the C name ("EBADF"). Each is leaked once: the set
    // of errno values is small and fixed.
    static NAMES: OnceLock<Mutex<HashMap<i32, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    names
        .entry(e as i32)
        .or_insert_with(|| Box::leak(format!("{e:?}").into_boxed_str()))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
