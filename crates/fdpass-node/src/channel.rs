use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::Arc;

use fdpass::{Channel, RecvOptions, SendStatus};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::io::Interest;

use crate::error::OrThrow;
use crate::registry::FdRegistry;
use crate::watch::Watched;
use crate::{closed_error, SocketType};

/// A connected socket carrying messages. Driven by the facade: non-blocking
/// calls first, waits only after EAGAIN.
#[napi]
pub struct NativeChannel {
    watched: Option<Arc<Watched<Channel>>>,
    socket_type: SocketType,
}

impl NativeChannel {
    pub fn wrap(env: &Env, channel: Channel) -> Result<NativeChannel> {
        let socket_type = channel.socket_type().into();
        let watched = Watched::new(channel).map_err(|e| crate::io_error(env, e))?;
        Ok(NativeChannel {
            watched: Some(watched),
            socket_type,
        })
    }

    fn open(&self, env: &Env) -> Result<&Arc<Watched<Channel>>> {
        self.watched.as_ref().ok_or_else(|| closed_error(env))
    }
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
        self.watched.as_ref().map_or(-1, |w| w.lock().as_raw_fd())
    }

    /// True once a connect started by `connect` has completed.
    #[napi]
    pub fn poll_connect(&self, env: &Env) -> Result<bool> {
        self.open(env)?.lock().poll_connect().or_throw(env)
    }

    /// Sends one message; true when it is all with the kernel, false when (part
    /// of) it waits in the queue: then wait writable and `flush`.
    #[napi]
    pub fn send(&self, env: &Env, data: &[u8], fds: &[i32]) -> Result<bool> {
        let status = self.open(env)?.lock().send(data, fds).or_throw(env)?;
        Ok(status == SendStatus::Sent)
    }

    /// Writes queued messages; returns how many completed.
    #[napi]
    pub fn flush(&self, env: &Env) -> Result<u32> {
        Ok(self.open(env)?.lock().flush().or_throw(env)? as u32)
    }

    #[napi(getter)]
    pub fn has_queued(&self) -> bool {
        self.watched.as_ref().is_some_and(|w| w.lock().has_queued())
    }

    /// One message if one is ready, else null. The descriptors pass to
    /// JavaScript, held in `registry`, only once the whole result exists; on any
    /// failure before that they are closed here.
    #[napi(ts_return_type = "{ data: Buffer; fds: number[] } | null")]
    pub fn try_recv<'env>(
        &self,
        env: &'env Env,
        registry: &FdRegistry,
        max_fds: u32,
        max_bytes: f64,
    ) -> Result<Option<Object<'env>>> {
        let opts = RecvOptions {
            max_fds: max_fds as usize,
            max_bytes: max_bytes as usize,
        };
        let Some(msg) = self.open(env)?.lock().try_recv(opts).or_throw(env)? else {
            return Ok(None);
        };
        let mut obj = Object::new(env)?;
        let numbers: Vec<i32> = msg.fds.iter().map(|f| f.as_raw_fd()).collect();
        obj.set("fds", numbers)?;
        obj.set("data", Buffer::from(msg.data))?;
        // Owned by the registry (and the JS objects it backs) from here on.
        registry.hold(msg.fds.into_iter().map(|fd| fd.into_raw_fd()));
        Ok(Some(obj))
    }

    #[napi]
    pub fn wait_readable<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, bool>> {
        self.open(env)?.wait(env, Interest::READABLE)
    }

    #[napi]
    pub fn wait_writable<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, bool>> {
        self.open(env)?.wait(env, Interest::WRITABLE)
    }

    /// Resolves every wait in progress with false.
    #[napi]
    pub fn cancel_waits(&self) {
        if let Some(w) = &self.watched {
            w.cancel_waits();
        }
    }

    /// Closes the socket. Queued messages are dropped and their descriptor
    /// copies closed; so is every descriptor of a partly received message.
    #[napi]
    pub fn close(&mut self) {
        if let Some(w) = self.watched.take() {
            w.close();
        }
    }
}

impl Drop for NativeChannel {
    fn drop(&mut self) {
        self.close();
    }
}
