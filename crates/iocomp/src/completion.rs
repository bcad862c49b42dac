//! The four ways an overlapped operation reports its completion (seed 000).
//!
//! | Win32                                              | iocomp                                  |
//! |----------------------------------------------------|-----------------------------------------|
//! | `GetOverlappedResult(h, &ov, &n, TRUE/FALSE)`      | [`Port::submit_waitable`] → [`Overlapped::wait`] / [`Overlapped::result`] |
//! | `OVERLAPPED.hEvent` + `WaitForMultipleObjects`     | [`Port::submit_with_event`] → the event is set, the packet waits in the [`Overlapped`] |
//! | `ReadFileEx` / `WriteFileEx` + `SleepEx(.., TRUE)` | [`Port::submit_ex`] → the routine runs as an APC on the issuing thread |
//! | `CreateIoCompletionPort` + `GetQueuedCompletionStatus` | [`Port::submit`] → [`Port::get`] (the default) |
//!
//! Every accepted operation still yields exactly one [`Packet`], delivered in
//! exactly one of these ways; a cancelled one ([`Port::cancel`],
//! [`Overlapped::cancel`]) yields its `ECANCELED` packet the same way.
//!
//! The operation's packet is produced by whichever of the port's threads owns
//! the operation (a thread in [`Port::get`], such as a [`Pool`](crate::Pool)
//! worker): the first three modes never hand a packet to the port's queue,
//! they only need the port to have a thread that waits on it. So that the
//! issuing thread is free to block — on the [`Overlapped`], on the event, or in
//! an alertable wait — these modes always give the operation to *another*
//! thread of the port, never to the caller's own ring.
//!
//! [`Port::submit_waitable`]: crate::Port::submit_waitable
//! [`Port::submit_with_event`]: crate::Port::submit_with_event
//! [`Port::submit_ex`]: crate::Port::submit_ex
//! [`Port::submit`]: crate::Port::submit
//! [`Port::get`]: crate::Port::get
//! [`Port::cancel`]: crate::Port::cancel

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use iocomp_sync::{Event, Thread};

use crate::packet::{OpId, Packet};
use crate::port::Port;

/// How an operation reports its completion (see [`Op::completion`](crate::Op::completion);
/// each operation keeps one, private). It is set by the call that submits the operation —
/// [`Port::submit`](crate::Port::submit) (post to the port, the default),
/// [`Port::submit_waitable`](crate::Port::submit_waitable),
/// [`Port::submit_with_event`](crate::Port::submit_with_event) or
/// [`Port::submit_ex`](crate::Port::submit_ex) — and is back at the default in
/// the operation a packet hands back, so the operation can be submitted again
/// any way.
///
/// One pointer wide: `None` (the port) costs the hot path one branch.
#[derive(Default)]
pub struct Completion(pub(crate) Option<Box<Route>>);

/// Where a packet goes, when not to the port's queue (mode 4).
pub(crate) enum Route {
    /// An [`Overlapped`] (modes 1 and 2).
    Overlapped(Arc<Shared>),
    /// A completion routine, queued as an APC to the issuing thread (mode 3).
    Routine {
        thread: Thread,
        routine: Box<dyn FnOnce(Packet) + std::marker::Send>,
    },
}

impl Completion {
    /// True unless the packet goes to the port's queue.
    #[inline]
    pub(crate) fn is_routed(&self) -> bool {
        self.0.is_some()
    }

    /// The mode's name, as in the Win32 call it mirrors.
    fn name(&self) -> &'static str {
        match self.0.as_deref() {
            None => "Port",
            Some(Route::Overlapped(s)) if s.event.is_some() => "Event",
            Some(Route::Overlapped(_)) => "Overlapped",
            Some(Route::Routine { .. }) => "Routine",
        }
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Sends every packet of `out[start..]` whose operation chose another mode than
/// the port to its destination, keeping the others in order. Called on every
/// batch a ring reaps or drains; costs one branch per packet in the default
/// mode.
pub(crate) fn route(out: &mut VecDeque<Packet>, start: usize) {
    let mut i = start;
    while i < out.len() {
        if out[i].op.is_routed() {
            if let Some(p) = out.remove(i) {
                deliver(p);
            }
        } else {
            i += 1;
        }
    }
}

/// Delivers one packet of a routed operation.
fn deliver(mut p: Packet) {
    let Some(route) = p.op.completion_mut().and_then(|c| c.0.take()) else {
        return;
    };
    match *route {
        Route::Overlapped(shared) => {
            shared.complete(p);
            // If nobody holds the Overlapped any more (now, or by the time
            // this reference goes: its owner may drop it at any moment), the
            // packet is dropped with the last reference, but not here (the
            // reaping thread holds its consumer borrow).
            crate::defer::later(shared);
        }
        Route::Routine { thread, routine } => {
            // If the issuing thread has exited its APCs are discarded, as on
            // Windows: the routine and the packet (buffers included) are
            // dropped, by `Apc`'s Drop, outside the engine.
            let apc = Apc(Some((routine, p)));
            let _ = thread.queue_apc(move || apc.run());
        }
    }
}

/// A completion routine with its packet, queued as an APC. Dropped without
/// running (its thread exited), it hands both to `defer`: the routine is user
/// code, and so may be the packet's context's Drop.
struct Apc(Option<(Routine, Packet)>);

/// A completion routine (mode 3).
type Routine = Box<dyn FnOnce(Packet) + std::marker::Send>;

impl Apc {
    fn run(mut self) {
        if let Some((routine, p)) = self.0.take() {
            routine(p);
        }
    }
}

impl Drop for Apc {
    fn drop(&mut self) {
        if let Some(v) = self.0.take() {
            crate::defer::later(v);
        }
    }
}

/// What an [`Overlapped`] and the thread completing its operation share.
pub(crate) struct Shared {
    state: Mutex<State>,
    done: Condvar,
    /// The caller's event (mode 2), set after the packet is stored.
    event: Option<Event>,
}

enum State {
    Pending,
    Done(Packet),
    Taken,
}

impl Shared {
    pub(crate) fn new(event: Option<Event>) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::Pending),
            done: Condvar::new(),
            event,
        })
    }

    fn complete(&self, p: Packet) {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            *st = State::Done(p);
        }
        self.done.notify_all();
        if let Some(e) = &self.event {
            e.set();
        }
    }
}

/// An operation submitted with [`Port::submit_waitable`](crate::Port::submit_waitable)
/// or [`Port::submit_with_event`](crate::Port::submit_with_event): its packet
/// waits here instead of on the port's queue, for [`result`](Overlapped::result)
/// or [`wait`](Overlapped::wait) to take it (`GetOverlappedResult`).
///
/// Dropping an `Overlapped` does not cancel the operation; its packet (with its
/// buffers) is dropped when it completes.
pub struct Overlapped {
    id: OpId,
    port: Port,
    shared: Arc<Shared>,
}

impl Overlapped {
    pub(crate) fn new(id: OpId, port: Port, shared: Arc<Shared>) -> Overlapped {
        Overlapped { id, port, shared }
    }

    /// The operation's id (the `OVERLAPPED*` of Win32), for
    /// [`Port::cancel`](crate::Port::cancel) and `progress`.
    pub fn id(&self) -> OpId {
        self.id
    }

    /// The event given to [`Port::submit_with_event`](crate::Port::submit_with_event),
    /// set when the operation completes; `None` for
    /// [`Port::submit_waitable`](crate::Port::submit_waitable).
    pub fn event(&self) -> Option<&Event> {
        self.shared.event.as_ref()
    }

    /// Whether the operation has completed (`HasOverlappedIoCompleted`); stays
    /// true after the packet is taken.
    pub fn is_complete(&self) -> bool {
        !matches!(*self.lock(), State::Pending)
    }

    /// `GetOverlappedResult(h, &ov, &n, wait)`: the packet if the operation has
    /// completed; with `wait`, waits for it first. `None` when it has not
    /// completed and `wait` is false (`ERROR_IO_INCOMPLETE`), or when the
    /// packet was already taken: it is handed out once.
    pub fn result(&self, wait: bool) -> Option<Packet> {
        self.wait(if wait { None } else { Some(Duration::ZERO) })
    }

    /// `GetOverlappedResultEx`: waits up to `timeout` (`None`: for ever) for the
    /// operation to complete and takes its packet. `None` on timeout, or if the
    /// packet was already taken. Does not depend on the event of
    /// [`submit_with_event`](crate::Port::submit_with_event), which others may
    /// reset.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<Packet> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = self.lock();
        loop {
            match std::mem::replace(&mut *st, State::Taken) {
                State::Done(p) => return Some(p),
                State::Taken => return None,
                State::Pending => *st = State::Pending,
            }
            st = match (timeout, deadline) {
                (None, _) | (Some(_), None) => {
                    self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner())
                }
                (Some(_), Some(d)) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.shared
                        .done
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Asks for the operation to be cancelled (`CancelIoEx(h, &ov)`): see
    /// [`Port::cancel`](crate::Port::cancel). Its `ECANCELED` packet (or its
    /// real result, if it finished first) arrives here as any other.
    pub fn cancel(&self) -> io::Result<()> {
        self.port.cancel(self.id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Overlapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overlapped")
            .field("id", &self.id)
            .field("complete", &self.is_complete())
            .field("event", &self.shared.event.is_some())
            .finish()
    }
}
