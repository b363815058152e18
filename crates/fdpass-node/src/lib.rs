//! Node-API binding of the fdpass core: JS <-> core types, error mapping, and
//! hosting the waits. No protocol logic lives here.

mod channel;
mod error;
mod listener;
mod reactor;
mod registry;

use std::path::PathBuf;

use fdpass::{Address, Channel, ListenOptions, Listener, Mode};
use napi::bindgen_prelude::*;
use napi_derive::napi;

pub use channel::NativeChannel;
use error::OrThrow;
pub use listener::NativeListener;
pub use reactor::Reactor;
pub use registry::{
    close_held, close_held_at_teardown, close_held_many, hold_inherited, release_held,
};

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketType {
    #[napi(value = "stream")]
    Stream,
    #[napi(value = "seqpacket")]
    SeqPacket,
    #[napi(value = "dgram")]
    Datagram,
}

impl From<fdpass::SocketType> for SocketType {
    fn from(t: fdpass::SocketType) -> Self {
        match t {
            fdpass::SocketType::Stream => SocketType::Stream,
            fdpass::SocketType::SeqPacket => SocketType::SeqPacket,
            fdpass::SocketType::Datagram => SocketType::Datagram,
        }
    }
}

impl From<SocketType> for fdpass::SocketType {
    fn from(t: SocketType) -> Self {
        match t {
            SocketType::Stream => fdpass::SocketType::Stream,
            SocketType::SeqPacket => fdpass::SocketType::SeqPacket,
            SocketType::Datagram => fdpass::SocketType::Datagram,
        }
    }
}

#[napi(string_enum)]
#[derive(Debug, PartialEq, Eq)]
pub enum ChannelMode {
    #[napi(value = "framed")]
    Framed,
    #[napi(value = "raw")]
    Raw,
}

impl From<ChannelMode> for Mode {
    fn from(m: ChannelMode) -> Self {
        match m {
            ChannelMode::Framed => Mode::Framed,
            ChannelMode::Raw => Mode::Raw,
        }
    }
}

fn closed_error(env: &Env) -> Error {
    error::to_js(env, fdpass::Error::Closed)
}

fn address(path: String, abstract_name: bool) -> Address {
    if abstract_name {
        Address::Abstract(path.into_bytes())
    } else {
        Address::Path(PathBuf::from(path))
    }
}

/// What this platform allows.
#[napi(object)]
pub struct PlatformLimits {
    /// Most descriptors one system-level message carries here.
    pub max_fds_per_message: u32,
    pub has_seqpacket: bool,
    pub has_abstract_names: bool,
    /// Whether sockets can refuse descriptors in the kernel (SO_PASSRIGHTS).
    pub can_refuse_fds: bool,
}

#[napi]
pub fn platform_limits() -> PlatformLimits {
    PlatformLimits {
        max_fds_per_message: fdpass::MAX_FDS_PER_SENDMSG as u32,
        has_seqpacket: fdpass::HAS_SEQPACKET,
        has_abstract_names: fdpass::HAS_ABSTRACT_NAMES,
        can_refuse_fds: fdpass::sys::can_refuse_fds(),
    }
}

#[napi]
pub fn socket_pair(
    env: &Env,
    socket_type: SocketType,
    mode: ChannelMode,
) -> Result<Vec<NativeChannel>> {
    let (a, b) = Channel::pair(socket_type.into(), mode.into()).or_throw(env)?;
    Ok(vec![NativeChannel::wrap(a), NativeChannel::wrap(b)])
}

/// Takes over a connected Unix socket by number. `held`: the number is a
/// ReceivedFd's of this thread, which hands it over; otherwise fdpass must
/// not own it at all (ERR_FDPASS_FD_OWNED). On error the number is left open
/// and with its owner.
#[napi]
pub fn adopt_channel(env: &Env, fd: i32, mode: ChannelMode, held: bool) -> Result<NativeChannel> {
    match registry::owner_of(fd) {
        Some(owner) if held && owner == registry::held_here() => {}
        Some(owner) => return Err(registry::owned_error(env, fd, owner)),
        None if held => {
            let message = format!("descriptor {fd} is not held by a ReceivedFd here");
            return Err(error::to_js(env, fdpass::Error::InvalidArgument(message)));
        }
        None => {}
    }
    let channel = Channel::adopt_raw(fd, mode.into()).or_throw(env)?;
    Ok(NativeChannel::wrap(channel))
}

pub use registry::fd_owner;

/// What `listen` needs, as the facade validated it.
#[napi(object)]
pub struct NativeListenOptions {
    pub path: String,
    pub abstract_name: bool,
    pub socket_type: SocketType,
    /// Permission bits of the socket file.
    pub file_mode: Option<u32>,
    pub backlog: i32,
    pub mode: ChannelMode,
    /// False refuses descriptors on every accepted connection (SO_PASSRIGHTS).
    pub accept_fds: bool,
}

#[napi]
pub fn listen(env: &Env, options: NativeListenOptions) -> Result<NativeListener> {
    let listener = Listener::bind(&ListenOptions {
        address: address(options.path, options.abstract_name),
        socket_type: options.socket_type.into(),
        mode: options.file_mode,
        backlog: options.backlog,
        accept_fds: options.accept_fds,
    })
    .or_throw(env)?;
    Ok(NativeListener::wrap(listener, options.mode.into()))
}

/// Starts a non-blocking connect; call `pollConnect` after each writable wake.
#[napi]
pub fn connect(
    env: &Env,
    path: String,
    abstract_name: bool,
    socket_type: SocketType,
    mode: ChannelMode,
) -> Result<NativeChannel> {
    let channel = fdpass::connect(
        &address(path, abstract_name),
        socket_type.into(),
        mode.into(),
    )
    .or_throw(env)?;
    Ok(NativeChannel::wrap(channel))
}

/// Closes a descriptor the caller owns (EBADF if it is not open); refuses
/// one fdpass owns (ERR_FDPASS_FD_OWNED): its owner closes it.
#[napi]
pub fn close_fd(env: &Env, fd: i32) -> Result<()> {
    if let Some(owner) = registry::owner_of(fd) {
        return Err(registry::owned_error(env, fd, owner));
    }
    fdpass::sys::close_raw(fd).or_throw(env)
}

/// What a descriptor is: "file", "tcp-listener", "unix-stream", ...
#[napi]
pub fn fd_kind(env: &Env, fd: i32) -> Result<String> {
    fdpass::sys::with_raw(fd, fdpass::sys::fd_kind)
        .map(|k| k.name().to_owned())
        .or_throw(env)
}

/// A socket's address family: "inet", "inet6", "unix" or "other" (what
/// `dgram.createSocket` needs to know to adopt a UDP socket).
#[napi]
pub fn socket_family(env: &Env, fd: i32) -> Result<String> {
    use nix::sys::socket::AddressFamily;
    let family = fdpass::sys::with_raw(fd, fdpass::sys::socket_family).or_throw(env)?;
    Ok(match family {
        Some(AddressFamily::Inet) => "inet",
        Some(AddressFamily::Inet6) => "inet6",
        Some(AddressFamily::Unix) => "unix",
        _ => "other",
    }
    .to_owned())
}

#[napi]
pub fn is_close_on_exec(env: &Env, fd: i32) -> Result<bool> {
    fdpass::sys::is_cloexec(fd).or_throw(env)
}

/// Makes a Unix socket accept or refuse descriptors in the kernel
/// (SO_PASSRIGHTS; ERR_FDPASS_UNSUPPORTED where the kernel lacks it).
#[napi]
pub fn set_accepts_fds(env: &Env, fd: i32, accept: bool) -> Result<()> {
    fdpass::sys::with_raw(fd, |b| fdpass::sys::set_accepts_fds(b, accept)).or_throw(env)
}

/// Sets or clears O_NONBLOCK (shared by every holder of the open file).
#[napi]
pub fn set_blocking(env: &Env, fd: i32, blocking: bool) -> Result<()> {
    fdpass::sys::with_raw(fd, |b| fdpass::sys::set_nonblocking(b, !blocking)).or_throw(env)
}
