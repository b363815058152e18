//! Hosts the waits: one tokio reactor (a single worker thread for the whole
//! process) watches sockets whose non-blocking call said EAGAIN. No thread is
//! ever blocked per pending operation. See docs/WAITING.md.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use fdpass::sys::Locked;

use napi::bindgen_prelude::*;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

/// A socket registered with the reactor. Dropping the last `Arc` deregisters it
/// and then closes it, in that order, so a reused descriptor number is never
/// deregistered by mistake.
pub struct Watched<T> {
    io: AsyncFd<Locked<T>>,
    /// Bumped by `cancel_waits`; a wait started under an older value ends.
    generation: AtomicU64,
    cancelled: Notify,
    closed: AtomicBool,
}

impl<T: AsFd + Send + 'static> Watched<T> {
    pub fn new(inner: T) -> std::io::Result<Arc<Self>> {
        let io = within_runtime_if_available(|| fdpass::sys::register(inner))?;
        Ok(Arc::new(Watched {
            io,
            generation: AtomicU64::new(0),
            cancelled: Notify::new(),
            closed: AtomicBool::new(false),
        }))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.io.get_ref().lock()
    }

    /// A promise that resolves `true` once the socket may be ready for
    /// `interest` (the caller then retries its non-blocking call), or `false`
    /// when the wait was cancelled or the socket closed.
    pub fn wait<'env>(
        self: &Arc<Self>,
        env: &'env Env,
        interest: Interest,
    ) -> Result<PromiseRaw<'env, bool>> {
        let this = Arc::clone(self);
        // Read on the JS thread, before the task exists, so a cancel issued right
        // after this call is never missed.
        let started = self.generation.load(Ordering::Acquire);
        env.spawn_future(async move {
            let cancelled = this.cancelled.notified();
            tokio::pin!(cancelled);
            cancelled.as_mut().enable();
            if this.closed.load(Ordering::Acquire)
                || this.generation.load(Ordering::Acquire) != started
            {
                return Ok(false);
            }
            tokio::select! {
                ready = this.io.ready(interest) => {
                    if let Ok(mut guard) = ready {
                        // The JS side retries its call next; stale readiness would only
                        // cost one extra EAGAIN, while a missed edge would hang.
                        guard.clear_ready();
                    }
                    Ok(true)
                }
                _ = cancelled => Ok(false),
            }
        })
    }

    /// Ends every wait in progress (they resolve `false`).
    pub fn cancel_waits(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cancelled.notify_waiters();
    }

    /// Ends every wait and refuses new ones; the socket closes when the last
    /// wait lets go of it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.cancel_waits();
    }
}
