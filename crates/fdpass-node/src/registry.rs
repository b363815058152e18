use std::collections::HashSet;
use std::sync::Mutex;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::OrThrow;

/// Received descriptors JavaScript holds but has not claimed. One per
/// JavaScript environment (the facade makes it at load); when the environment
/// ends (a worker exits or is terminated) its finalizer closes what is left,
/// which a `FinalizationRegistry` would never get to do.
#[napi]
pub struct FdRegistry {
    held: Mutex<HashSet<i32>>,
}

impl FdRegistry {
    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn hold(&self, fds: impl IntoIterator<Item = i32>) {
        self.held().extend(fds);
    }
}

#[napi]
impl FdRegistry {
    #[napi(constructor)]
    pub fn new() -> Self {
        FdRegistry {
            held: Mutex::new(HashSet::new()),
        }
    }

    /// Hands `fd` over to the caller; it is no longer closed at teardown.
    #[napi]
    pub fn release(&self, fd: i32) -> bool {
        self.held().remove(&fd)
    }

    /// Closes a held descriptor. Returns false if it was not held here.
    #[napi]
    pub fn close(&self, env: &Env, fd: i32) -> Result<bool> {
        if !self.held().remove(&fd) {
            return Ok(false);
        }
        fdpass::sys::close_raw(fd).or_throw(env)?;
        Ok(true)
    }

    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.held().len() as u32
    }
}

impl Default for FdRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FdRegistry {
    fn drop(&mut self) {
        for fd in self.held().drain() {
            let _ = fdpass::sys::close_raw(fd);
        }
    }
}
