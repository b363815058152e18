//! Received descriptors JavaScript holds but has not claimed, so that what
//! is left when a JavaScript environment ends (a worker exits or is
//! terminated) is closed, which a `FinalizationRegistry` never gets to do.
//!
//! Held per thread, because Node runs each environment (the main one, each
//! worker) on a thread of its own, and reached through plain functions: a
//! call on a class instance costs several times more in napi-rs (type-tag
//! check, borrow tracking), and closing a descriptor is the hottest call a
//! receiver makes.

use std::cell::RefCell;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::OrThrow;

/// One bit per descriptor number. Numbers are allocated lowest first, so the
/// set is no longer than the process's peak descriptor count, in bits.
#[derive(Default)]
struct HeldSet {
    bits: Vec<u64>,
    count: usize,
}

impl HeldSet {
    /// Adds `fd`; false if it was there already (or is negative).
    fn insert(&mut self, fd: i32) -> bool {
        let Ok(fd) = usize::try_from(fd) else {
            return false;
        };
        let (word, bit) = (fd / 64, 1u64 << (fd % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit != 0 {
            return false;
        }
        self.bits[word] |= bit;
        self.count += 1;
        true
    }

    fn remove(&mut self, fd: i32) -> bool {
        let Ok(fd) = usize::try_from(fd) else {
            return false;
        };
        let (word, bit) = (fd / 64, 1u64 << (fd % 64));
        match self.bits.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                self.count -= 1;
                true
            }
            _ => false,
        }
    }

    fn drain(&mut self) -> Vec<i32> {
        let mut fds = Vec::with_capacity(self.count);
        for (word, bits) in self.bits.iter().enumerate() {
            for bit in 0..64 {
                if bits & (1 << bit) != 0 {
                    fds.push((word * 64 + bit) as i32);
                }
            }
        }
        *self = HeldSet::default();
        fds
    }
}

thread_local! {
    static HELD: RefCell<HeldSet> = RefCell::new(HeldSet::default());
}

/// Takes ownership of received descriptors on behalf of JavaScript.
pub(crate) fn hold(fds: impl IntoIterator<Item = i32>) {
    HELD.with_borrow_mut(|held| {
        for fd in fds {
            held.insert(fd);
        }
    });
}

/// Closes what this thread's environment still holds when it ends. The facade
/// calls this once at load.
#[napi]
pub fn close_held_at_teardown(env: Env) -> Result<()> {
    env.add_env_cleanup_hook((), |()| {
        for fd in HELD.with_borrow_mut(HeldSet::drain) {
            let _ = fdpass::sys::close_raw(fd);
        }
    })?;
    Ok(())
}

/// Takes a descriptor this process already has (inherited at exec, say) into
/// JavaScript's keeping, as if received: close-on-exec is set on it first, as
/// on every received one, so this process's own children do not inherit it.
/// Returns false, changing nothing, when it is held already: two owners would
/// each close it, the second closing whatever reused the number.
#[napi]
pub fn hold_inherited(env: &Env, fd: i32) -> Result<bool> {
    fdpass::sys::with_raw(fd, |borrowed| fdpass::sys::set_cloexec(borrowed, "fcntl"))
        .or_throw(env)?;
    Ok(HELD.with_borrow_mut(|held| held.insert(fd)))
}

/// Hands `fd` over to the caller; it is no longer closed at teardown.
#[napi]
pub fn release_held(fd: i32) -> bool {
    HELD.with_borrow_mut(|held| held.remove(fd))
}

/// Closes a held descriptor. Returns false if it was not held.
#[napi]
pub fn close_held(env: &Env, fd: i32) -> Result<bool> {
    if !release_held(fd) {
        return Ok(false);
    }
    fdpass::sys::close_raw(fd).or_throw(env)?;
    Ok(true)
}

/// Closes every held descriptor among the first `count` of `fds` in one call
/// (numbers not held are skipped), all of them even if one fails; then
/// reports the first failure.
#[napi]
pub fn close_held_many(env: &Env, fds: &[i32], count: u32) -> Result<()> {
    let mut first_error = None;
    for &fd in fds.iter().take(count as usize) {
        if release_held(fd) {
            if let Err(e) = fdpass::sys::close_raw(fd) {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), |e| Err(e).or_throw(env))
}

#[cfg(test)]
mod tests {
    use super::HeldSet;

    #[test]
    fn held_set_counts_each_number_once_and_drains_all() {
        let mut set = HeldSet::default();
        for fd in [3, 64, 200, 3, -1] {
            set.insert(fd);
        }
        assert_eq!(set.count, 3);
        assert!(set.remove(64));
        assert!(!set.remove(64));
        assert!(!set.remove(100_000));
        assert!(!set.remove(-1));
        assert_eq!(set.drain(), vec![3, 200]);
        assert_eq!(set.count, 0);
    }
}
