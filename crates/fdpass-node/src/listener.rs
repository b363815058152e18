use std::os::fd::{AsFd, AsRawFd};

use fdpass::{Listener, Mode};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::channel::NativeChannel;
use crate::closed_error;
use crate::error::OrThrow;
use crate::reactor::{Reactor, WatchSlot};
use crate::registry::Owner;

/// A listening socket; accepted connections become channels.
#[napi]
pub struct NativeListener {
    // Declared before `listener`: the poll must close before the socket does.
    watch: WatchSlot,
    listener: Option<Listener>,
    mode: Mode,
}

impl NativeListener {
    pub fn wrap(listener: Listener, mode: Mode) -> NativeListener {
        crate::registry::own_socket(listener.as_raw_fd(), Owner::Server);
        NativeListener {
            watch: WatchSlot::default(),
            listener: Some(listener),
            mode,
        }
    }
}

#[napi]
impl NativeListener {
    #[napi(getter)]
    pub fn fd(&self) -> i32 {
        self.listener.as_ref().map_or(-1, |l| l.as_raw_fd())
    }

    /// One pending connection as a channel, or null when none is waiting.
    #[napi]
    pub fn try_accept(&self, env: &Env) -> Result<Option<NativeChannel>> {
        let listener = self.listener.as_ref().ok_or_else(|| closed_error(env))?;
        let accepted = listener.try_accept(self.mode).or_throw(env)?;
        Ok(accepted.map(NativeChannel::wrap))
    }

    /// As `NativeChannel.watch`: 1 arms for a pending connection, 0 disarms.
    #[napi]
    pub fn watch(&mut self, env: &Env, reactor: &Reactor, token: u32, events: u32) -> Result<()> {
        let listener = self.listener.as_ref().ok_or_else(|| closed_error(env))?;
        self.watch
            .set(env, reactor, listener.as_fd(), token, events)
    }

    /// Stops listening and removes the socket file if it is still this one.
    #[napi]
    pub fn close(&mut self) {
        self.watch.clear();
        if let Some(listener) = self.listener.take() {
            crate::registry::disown_socket(listener.as_raw_fd(), Owner::Server);
        }
    }
}
