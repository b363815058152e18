use std::os::fd::AsRawFd;
use std::sync::Arc;

use fdpass::{Listener, Mode};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::io::Interest;

use crate::channel::NativeChannel;
use crate::closed_error;
use crate::error::OrThrow;
use crate::watch::Watched;

/// A listening socket; accepted connections become channels.
#[napi]
pub struct NativeListener {
    watched: Option<Arc<Watched<Listener>>>,
    mode: Mode,
}

impl NativeListener {
    pub fn wrap(env: &Env, listener: Listener, mode: Mode) -> Result<NativeListener> {
        let watched = Watched::new(listener).map_err(|e| crate::io_error(env, e))?;
        Ok(NativeListener {
            watched: Some(watched),
            mode,
        })
    }

    fn open(&self, env: &Env) -> Result<&Arc<Watched<Listener>>> {
        self.watched.as_ref().ok_or_else(|| closed_error(env))
    }
}

#[napi]
impl NativeListener {
    #[napi(getter)]
    pub fn fd(&self) -> i32 {
        self.watched.as_ref().map_or(-1, |w| w.lock().as_raw_fd())
    }

    /// One pending connection as a channel, or null when none is waiting.
    #[napi]
    pub fn try_accept(&self, env: &Env) -> Result<Option<NativeChannel>> {
        let accepted = self.open(env)?.lock().try_accept(self.mode).or_throw(env)?;
        accepted.map(|c| NativeChannel::wrap(env, c)).transpose()
    }

    #[napi]
    pub fn wait_readable<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, bool>> {
        self.open(env)?.wait(env, Interest::READABLE)
    }

    #[napi]
    pub fn cancel_waits(&self) {
        if let Some(w) = &self.watched {
            w.cancel_waits();
        }
    }

    /// Stops listening and removes the socket file if it is still this one.
    #[napi]
    pub fn close(&mut self) {
        if let Some(w) = self.watched.take() {
            w.close();
        }
    }
}

impl Drop for NativeListener {
    fn drop(&mut self) {
        self.close();
    }
}
