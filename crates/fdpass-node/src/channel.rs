use std::os::fd::{AsFd, AsRawFd, IntoRawFd};

use fdpass::{Channel, Readiness, RecvOptions, SendStatus};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::OrThrow;
use crate::reactor::{Reactor, WatchSlot};
use crate::registry::Owner;
use crate::{closed_error, SocketType};

/// Payloads up to this size are copied into memory V8 owns. Larger ones are
/// handed over without a copy, as external memory that a finalizer frees;
/// Node runs those finalizers only between turns of the loop, so a receiver
/// that never has to wait would pile small messages up until it did.
const COPY_LIMIT: usize = 64 * 1024;

/// A connected socket carrying messages. Driven by the facade: non-blocking
/// calls first, waits only after EAGAIN.
#[napi]
pub struct NativeChannel {
    // Declared before `channel`: the poll must close before the socket does.
    watch: WatchSlot,
    channel: Option<Channel>,
    socket_type: SocketType,
}

impl NativeChannel {
    /// Wraps a channel whose socket nobody else in fdpass owns, and records it.
    pub fn wrap(channel: Channel) -> NativeChannel {
        crate::registry::own_socket(channel.as_raw_fd(), Owner::Channel);
        NativeChannel {
            watch: WatchSlot::default(),
            socket_type: channel.socket_type().into(),
            channel: Some(channel),
        }
    }

    fn open(&mut self, env: &Env) -> Result<&mut Channel> {
        self.channel.as_mut().ok_or_else(|| closed_error(env))
    }
}

/// Who is at the other end of a channel (see `fdpass::PeerCredentials`).
#[napi(object)]
pub struct PeerCredentials {
    /// Absent where the platform does not record it (FreeBSD).
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

#[napi]
impl NativeChannel {
    #[napi(getter)]
    pub fn socket_type(&self) -> SocketType {
        self.socket_type
    }

    /// The socket's descriptor number, or -1 once closed.
    #[napi(getter)]
    pub fn fd(&self) -> i32 {
        self.channel.as_ref().map_or(-1, |c| c.as_raw_fd())
    }

    /// The peer's credentials, recorded by the kernel when it connected.
    #[napi]
    pub fn peer(&mut self, env: &Env) -> Result<PeerCredentials> {
        let channel = self.open(env)?;
        let c = fdpass::sys::peer_credentials(channel.as_fd()).or_throw(env)?;
        Ok(PeerCredentials {
            pid: c.pid,
            uid: c.uid,
            gid: c.gid,
        })
    }

    /// True once a connect started by `connect` has completed.
    #[napi]
    pub fn poll_connect(&mut self, env: &Env) -> Result<bool> {
        self.open(env)?.poll_connect().or_throw(env)
    }

    /// Sends one message; true when it is all with the kernel, false when (part
    /// of) it waits in the queue: then wait writable and `flush`.
    /// The descriptors are the first `fd_count` of `fds` (the facade reuses one array).
    #[napi]
    pub fn send(&mut self, env: &Env, data: &[u8], fds: &[i32], fd_count: u32) -> Result<bool> {
        let fds = fds.get(..fd_count as usize).ok_or_else(|| {
            crate::error::to_js(
                env,
                fdpass::Error::InvalidArgument("fdCount exceeds fds".into()),
            )
        })?;
        let status = self.open(env)?.send(data, fds).or_throw(env)?;
        Ok(status == SendStatus::Sent)
    }

    /// Writes queued messages; returns how many completed.
    #[napi]
    pub fn flush(&mut self, env: &Env) -> Result<u32> {
        Ok(self.open(env)?.flush().or_throw(env)? as u32)
    }

    #[napi(getter)]
    pub fn has_queued(&self) -> bool {
        self.channel.as_ref().is_some_and(Channel::has_queued)
    }

    /// Whether part of a message is held and the rest has not come (see
    /// `Channel::receiving_message`); false once closed.
    #[napi(getter)]
    pub fn receiving_message(&self) -> bool {
        self.channel
            .as_ref()
            .is_some_and(Channel::receiving_message)
    }

    /// The next message, or null when none is ready (see
    /// `Channel::try_recv_paced`: judged by these limits, and the kernel is
    /// never given room for more descriptors than they accept). In one
    /// buffer, little-endian: an i32 message count, then per message an i32
    /// descriptor count, the descriptor numbers (i32 each), a u32 payload
    /// length and the payload. One allocation and no JavaScript object per
    /// message; the facade reads the numbers and slices the payloads off.
    /// The descriptors pass to JavaScript, held in this thread's registry,
    /// only once the whole result exists; on any failure before that they are
    /// closed here. `woken` says the socket was just reported readable;
    /// without it, a channel whose reads before waiting keep finding nothing
    /// may skip the read and give null (see `Readiness`).
    #[napi(ts_return_type = "Buffer | null")]
    pub fn try_recv<'env>(
        &mut self,
        env: &'env Env,
        max_fds: u32,
        max_bytes: f64,
        woken: bool,
    ) -> Result<Option<Either<BufferSlice<'env>, Buffer>>> {
        let opts = RecvOptions {
            max_fds: max_fds as usize,
            max_bytes: max_bytes as usize,
        };
        let readiness = if woken {
            Readiness::Reported
        } else {
            Readiness::Unknown
        };
        let Some(message) = self
            .open(env)?
            .try_recv_paced(opts, readiness)
            .or_throw(env)?
        else {
            return Ok(None);
        };
        let messages = [message];
        let size: usize = messages
            .iter()
            .map(|m| 8 + 4 * m.fds.len() + m.data.len())
            .sum();
        let mut packed = Vec::with_capacity(4 + size);
        packed.extend_from_slice(&(messages.len() as i32).to_le_bytes());
        for m in &messages {
            packed.extend_from_slice(&(m.fds.len() as i32).to_le_bytes());
            for fd in &m.fds {
                packed.extend_from_slice(&fd.as_raw_fd().to_le_bytes());
            }
            let len = u32::try_from(m.data.len()).map_err(|_| {
                crate::error::to_js(
                    env,
                    fdpass::Error::MessageTooLarge {
                        size: m.data.len(),
                        limit: u32::MAX as usize,
                    },
                )
            })?;
            packed.extend_from_slice(&len.to_le_bytes());
            packed.extend_from_slice(&m.data);
        }
        let result = if packed.len() <= COPY_LIMIT {
            Either::A(BufferSlice::copy_from(env, &packed)?)
        } else {
            Either::B(Buffer::from(packed))
        };
        // Owned by the registry (and the JS objects it backs) from here on.
        crate::registry::hold(
            messages
                .into_iter()
                .flat_map(|m| m.fds)
                .map(IntoRawFd::into_raw_fd),
        );
        Ok(Some(result))
    }

    /// Arms the socket's watch for `events` (1 readable, 2 writable, 3 both),
    /// or disarms it with 0: when ready, `reactor` calls `wake(token * 4 + ready)`
    /// once. Every wake must be answered by arming again or disarming.
    #[napi]
    pub fn watch(&mut self, env: &Env, reactor: &Reactor, token: u32, events: u32) -> Result<()> {
        let channel = self.channel.as_ref().ok_or_else(|| closed_error(env))?;
        self.watch.set(env, reactor, channel.as_fd(), token, events)
    }

    /// Refuses the connection and closes it (see `Channel::refuse`).
    #[napi]
    pub fn refuse(&mut self) {
        self.watch.clear();
        if let Some(channel) = self.channel.take() {
            crate::registry::disown_socket(channel.as_raw_fd(), Owner::Channel);
            channel.refuse();
        }
    }

    /// Closes the socket. Queued messages are dropped and their descriptor
    /// copies closed; so is every descriptor of a partly received message.
    #[napi]
    pub fn close(&mut self) {
        self.watch.clear();
        if let Some(channel) = self.channel.take() {
            crate::registry::disown_socket(channel.as_raw_fd(), Owner::Channel);
        }
    }
}

impl Drop for NativeChannel {
    fn drop(&mut self) {
        self.close();
    }
}
