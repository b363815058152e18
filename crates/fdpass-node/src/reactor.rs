//! Hosts the waits on Node's own event loop: each socket that said EAGAIN is
//! watched by a `uv_poll_t`, and readiness reaches JavaScript through one relay
//! (a threadsafe function, called on the loop's own thread) per JavaScript
//! environment. No thread is started and none is blocked per
//! pending operation. docs/WAITING.md records the measurement behind this.

use std::cell::Cell;
use std::os::fd::BorrowedFd;
use std::rc::Rc;

use fdpass::sys::uv::{Loop, Poll};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::error::OrThrow;

/// `wake(token * 4 + ready)` in JavaScript: one number, so a wake allocates
/// nothing on the JavaScript heap. Weak: what keeps the process alive is a
/// started poll, exactly while someone waits.
type Relay = ThreadsafeFunction<f64, (), f64, Status, false, true>;

/// The wait host of one JavaScript environment. The facade makes one at load
/// and passes `wake(token * 4 + ready)`, which the reactor calls, on the
/// JavaScript thread, once for each armed watch whose socket became ready.
#[napi]
pub struct Reactor {
    event_loop: Loop,
    relay: Rc<Relay>,
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
        let relay = wake
            .build_threadsafe_function()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        Ok(Reactor {
            event_loop,
            relay: Rc::new(relay),
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
        let relay = Rc::clone(&reactor.relay);
        let poll = Poll::new(reactor.event_loop, fd, move |ready| {
            if wake_owed.replace(false) {
                let wake = f64::from(wake_token.get()) * 4.0 + f64::from(ready);
                // Fails only once the environment is tearing down; nobody waits then.
                let _ = relay.call(wake, ThreadsafeFunctionCallMode::NonBlocking);
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
