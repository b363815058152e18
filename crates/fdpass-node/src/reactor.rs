//! Hosts the waits on Node's own event loop: each socket that said EAGAIN is
//! watched by a `uv_poll_t`, whose callback calls JavaScript directly (in a
//! callback scope, as Node's own completions do). No thread is started and
//! none is blocked per pending operation. docs/WAITING.md records the
//! measurements behind this.

use std::cell::Cell;
use std::os::fd::BorrowedFd;
use std::rc::{Rc, Weak};

use fdpass::sys::uv::{HostHandle, JsCallback, Loop, Poll};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::OrThrow;

/// The wait host of one JavaScript environment. The facade makes one at load
/// and passes `wake(token * 4 + ready)` (one number, so a wake allocates
/// nothing on the JavaScript heap), which the reactor calls, from the loop,
/// once for each armed watch whose socket became ready. What keeps the
/// process alive is a started poll, exactly while someone waits.
#[napi]
pub struct Reactor {
    event_loop: Loop,
    /// Owned here, so the environment's finalization of the reactor releases
    /// it while the environment lives; watches only borrow it, and a watch
    /// outliving it (at teardown) wakes nobody.
    wake: Rc<JsCallback>,
}

#[napi]
impl Reactor {
    #[napi(
        constructor,
        ts_args_type = "wake: (tokenTimesFourPlusReady: number) => void"
    )]
    pub fn new(env: Env, wake: Function<f64, ()>) -> Result<Reactor> {
        let event_loop = Loop::from_host(env.get_uv_event_loop()?.cast()).ok_or_else(|| {
            crate::error::to_js(
                &env,
                fdpass::Error::Unsupported("this runtime has no libuv loop"),
            )
        })?;
        let handles = HostHandle::from_host(env.raw().cast())
            .zip(HostHandle::from_host(wake.value().value.cast()));
        let Some((env_handle, wake_handle)) = handles else {
            return Err(Error::from_reason("no Node-API environment or function"));
        };
        let wake = JsCallback::new(env_handle, wake_handle, "fdpass:wake").or_throw(&env)?;
        Ok(Reactor {
            event_loop,
            wake: Rc::new(wake),
        })
    }
}

/// One socket's watch: a one-shot wake on top of a level-triggered poll.
///
/// The poll stays started across a wake and until JavaScript answers it (it
/// always does, in the same turn): re-arming for the same events then costs no
/// system call, where stopping on every wake would re-register the descriptor
/// with epoll or kqueue twice per wait. Between the wake and the answer, a
/// still-ready socket only makes the callback return early. JavaScript names
/// each arming with a token of its choice, which the wake carries back.
pub struct Watch {
    poll: Poll,
    /// Set when armed, cleared by the wake it allows.
    owed: Rc<Cell<bool>>,
    /// The token of the current arming, read by the callback.
    token: Rc<Cell<u32>>,
}

impl Watch {
    fn new(reactor: &Reactor, fd: BorrowedFd<'_>) -> fdpass::Result<Watch> {
        let owed = Rc::new(Cell::new(false));
        let token = Rc::new(Cell::new(0));
        let (wake_owed, wake_token) = (Rc::clone(&owed), Rc::clone(&token));
        let wake: Weak<JsCallback> = Rc::downgrade(&reactor.wake);
        let poll = Poll::new(reactor.event_loop, fd, move |ready| {
            if wake_owed.replace(false) {
                if let Some(wake) = wake.upgrade() {
                    wake.call(f64::from(wake_token.get()) * 4.0 + f64::from(ready));
                }
            }
        })?;
        Ok(Watch { poll, owed, token })
    }

    /// Arms the watch for `events` (READABLE | WRITABLE bits) under `token`,
    /// or with 0 stops wanting wakes (the poll parks: see `Poll::park`, so
    /// arming again in the same turn costs no system call). Every wake must
    /// be answered by one of the two.
    fn set(&mut self, token: u32, events: u32) -> fdpass::Result<()> {
        if events == 0 {
            self.poll.park();
        } else {
            self.poll.start(events)?;
        }
        self.token.set(token);
        self.owed.set(events != 0);
        Ok(())
    }
}

/// The watch slot of a channel or listener, made on first use.
#[derive(Default)]
pub struct WatchSlot(Option<Watch>);

impl WatchSlot {
    /// Arms (or with `events` 0, disarms) the watch of `fd`: when it is ready,
    /// the reactor calls `wake(token * 4 + ready)` once.
    pub fn set(
        &mut self,
        env: &Env,
        reactor: &Reactor,
        fd: BorrowedFd<'_>,
        token: u32,
        events: u32,
    ) -> Result<()> {
        let watch = match self.0 {
            Some(ref mut watch) => watch,
            None if events == 0 => return Ok(()),
            None => self.0.insert(Watch::new(reactor, fd).or_throw(env)?),
        };
        watch.set(token, events).or_throw(env)
    }

    /// Closes the poll; call before the socket closes.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}
