//! The one registry of every descriptor fdpass owns in this process: the
//! sockets of channels and servers, and received descriptors JavaScript
//! holds but has not claimed. It refuses a second owner for a number (two
//! owners would each close it, the second closing whatever reused the
//! number), and closes what is left when a JavaScript environment ends (a
//! worker exits or is terminated), which a `FinalizationRegistry` never
//! gets to do.
//!
//! Process-wide, because descriptor numbers are: a worker must not adopt a
//! number the main thread's channel owns. Received descriptors are held for
//! the thread (environment) that received them, which closes them at its
//! teardown. Reached through plain functions: a call on a class instance
//! costs several times more in napi-rs (type-tag check, borrow tracking),
//! and closing a descriptor is the hottest call a receiver makes.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::OrThrow;

/// Who owns a descriptor number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A received (or adopted) descriptor JavaScript holds, in this thread's environment.
    Held(ThreadId),
    /// A channel's socket.
    Channel,
    /// A server's listening socket.
    Server,
}

impl Owner {
    fn name(self) -> &'static str {
        match self {
            Owner::Held(_) => "a ReceivedFd",
            Owner::Channel => "a Channel",
            Owner::Server => "a Server",
        }
    }
}

static OWNERS: LazyLock<Mutex<HashMap<i32, Owner>>> = LazyLock::new(Default::default);

fn owners() -> MutexGuard<'static, HashMap<i32, Owner>> {
    OWNERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The owner received descriptors of this thread's environment have.
pub(crate) fn held_here() -> Owner {
    Owner::Held(std::thread::current().id())
}

/// The error for a number fdpass owns already.
pub(crate) fn owned_error(env: &Env, fd: i32, owner: Owner) -> Error {
    crate::error::to_js(
        env,
        fdpass::Error::FdOwned {
            fd,
            owner: owner.name(),
        },
    )
}

/// Who owns `fd`, if fdpass does.
pub(crate) fn owner_of(fd: i32) -> Option<Owner> {
    owners().get(&fd).copied()
}

/// Records a socket a channel or server has just taken (from the kernel, or
/// adopted after [`owner_of`] said nobody here owned it).
pub(crate) fn own_socket(fd: i32, owner: Owner) {
    owners().insert(fd, owner);
}

/// Forgets a socket its channel or server is about to close.
pub(crate) fn disown_socket(fd: i32, owner: Owner) {
    let mut owners = owners();
    if owners.get(&fd) == Some(&owner) {
        owners.remove(&fd);
    }
}

/// Who owns `fd` in fdpass ("a Channel", "a Server", "a ReceivedFd"), or null.
#[napi]
pub fn fd_owner(fd: i32) -> Option<&'static str> {
    owner_of(fd).map(Owner::name)
}

/// Takes ownership of received descriptors on behalf of JavaScript. The
/// kernel just installed them, so any entry left under their numbers is
/// stale (its descriptor was closed behind fdpass's back) and is replaced.
pub(crate) fn hold(fds: impl IntoIterator<Item = i32>) {
    let owner = held_here();
    let mut owners = owners();
    for fd in fds {
        owners.insert(fd, owner);
    }
}

/// Closes what this thread's environment still holds when it ends. The facade
/// calls this once at load.
#[napi]
pub fn close_held_at_teardown(env: Env) -> Result<()> {
    env.add_env_cleanup_hook((), |()| {
        let owner = held_here();
        let mut closing = Vec::new();
        owners().retain(|&fd, o| {
            let mine = *o == owner;
            if mine {
                closing.push(fd);
            }
            !mine
        });
        for fd in closing {
            let _ = fdpass::sys::close_raw(fd);
        }
    })?;
    Ok(())
}

/// Takes a descriptor this process already has (inherited at exec, say) into
/// JavaScript's keeping, as if received: close-on-exec is set on it first, as
/// on every received one, so this process's own children do not inherit it.
/// Throws ERR_FDPASS_FD_OWNED, changing nothing, when fdpass owns it
/// already (a channel's or server's socket, or a ReceivedFd's).
#[napi]
pub fn hold_inherited(env: &Env, fd: i32) -> Result<()> {
    fdpass::sys::check_open(fd).or_throw(env)?;
    let mut owners = owners();
    if let Some(&owner) = owners.get(&fd) {
        return Err(owned_error(env, fd, owner));
    }
    fdpass::sys::with_raw(fd, |borrowed| fdpass::sys::set_cloexec(borrowed, "fcntl"))
        .or_throw(env)?;
    owners.insert(fd, held_here());
    Ok(())
}

/// Hands `fd` over to the caller; it is no longer closed at teardown.
#[napi]
pub fn release_held(fd: i32) -> bool {
    let mut owners = owners();
    if owners.get(&fd) == Some(&held_here()) {
        owners.remove(&fd);
        return true;
    }
    false
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
    let owner = held_here();
    let mut releasing = Vec::with_capacity(count as usize);
    {
        let mut owners = owners();
        for &fd in fds.iter().take(count as usize) {
            if owners.get(&fd) == Some(&owner) {
                owners.remove(&fd);
                releasing.push(fd);
            }
        }
    }
    let mut first_error = None;
    for fd in releasing {
        if let Err(e) = fdpass::sys::close_raw(fd) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), |e| Err(e).or_throw(env))
}
