//! The backend contract as code: what every backend's ring offers
//! ([`RingOps`], points 1, 2, 5 and 6 of the contract in `sys/mod.rs`), what
//! its per-op state offers ([`OpSlot`]), and the part of a ring that other
//! threads may touch ([`Shared`], point 4), written once for both backends:
//! the wake-up eventfd, the remote-work flag and the slab of operations in
//! flight, behind a mutex that only the owner takes on the hot path.

use std::collections::VecDeque;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::common::EventFd;
use super::slab::{InFlight, Slab};
use crate::handoff::Handoff;
use crate::op::Op;
use crate::packet::{OpId, Packet};

/// An operation's in-flight state as a backend keeps it in its slab: the op
/// itself (buffers and all) plus whatever the backend needs to run it.
pub(crate) trait OpSlot: Sized {
    /// Checks an op and builds its in-flight state (the synchronous part of
    /// submit). A refusal hands the op back and yields no packet (point 1).
    fn prepare(op: Op) -> Result<Box<Self>, (io::Error, Op)>;
    /// The operation.
    fn op(&self) -> &Op;
    /// Gives the operation back (a refused insertion).
    fn into_op(self: Box<Self>) -> Op;
    /// The cancel-requested flag.
    fn cancel_flag(&mut self) -> &mut bool;
    /// Whether a cancel was asked for.
    fn cancel_asked(&self) -> bool;
    /// Bytes the operation has moved so far.
    fn progress(&self) -> u64;
}

/// Implements [`OpSlot`] for a backend's `OpState`, which keeps the op in a
/// field `op` and the cancel flag in a field `cancel`, with its `prepare`
/// and `progress` functions.
macro_rules! op_slot {
    ($t: ty, prepare: $prepare: path, progress: $progress: path) => {
        impl $crate::sys::shared::OpSlot for $t {
            fn prepare(op: Op) -> Result<Box<Self>, (io::Error, Op)> {
                $prepare(op)
            }
            fn op(&self) -> &Op {
                &self.op
            }
            fn into_op(self: Box<Self>) -> Op {
                self.op
            }
            fn cancel_flag(&mut self) -> &mut bool {
                &mut self.cancel
            }
            fn cancel_asked(&self) -> bool {
                self.cancel
            }
            fn progress(&self) -> u64 {
                $progress(self)
            }
        }
    };
}

impl<T: OpSlot> InFlight for T {
    fn mark_cancel(&mut self) {
        *self.cancel_flag() = true;
    }
    fn cancelled(&self) -> bool {
        self.cancel_asked()
    }
    fn handle_closing(&self) -> bool {
        self.op().handle().is_some_and(|h| h.is_closing())
    }
}

/// The owner's side of a backend (a ring, or an epoll instance): what the
/// port calls on the thread that owns it. See the contract in `sys/mod.rs`.
pub(crate) trait RingOps {
    /// The generations of this ring's slots, for the next ring at its index
    /// (call after `drain`).
    fn gens(&self) -> Vec<u32>;
    /// Submits an operation issued on the owning thread (points 1 and 2).
    fn submit_local(&mut self, op: Op) -> Result<OpId, (io::Error, Op)>;
    /// The packet of `id`, just submitted with `submit_local`, if it
    /// completed during submission; `None` leaves it in flight.
    fn take_inline(&mut self, id: OpId) -> Option<Packet>;
    /// Collects finished operations into `out` without blocking (point 2).
    fn reap(&mut self, out: &mut VecDeque<Packet>);
    /// Sleeps until a completion, a wake-up, or `timeout` (point 5).
    fn park(&mut self, timeout: Option<Duration>);
    /// Cancels everything in flight and returns the packets (point 6).
    fn drain(&mut self) -> VecDeque<Packet>;
}

/// The part of a thread's backend other threads may touch: its wake-up
/// eventfd (with the remote-work flag, see `crate::handoff`) and its slab.
pub(crate) struct Shared<S> {
    /// This ring's index in its port's ring table.
    pub(super) index: u16,
    /// The remote-work flag and the eventfd (see `crate::handoff`).
    pub(super) handoff: Handoff<EventFd>,
    slab: Mutex<Slab<S>>,
}

impl<S: OpSlot> Shared<S> {
    /// The shared part of the ring at `index`, whose slots continue from the
    /// generations `gens`, woken through `eventfd`.
    pub(super) fn new(index: u16, eventfd: EventFd, gens: Vec<u32>) -> Shared<S> {
        Shared {
            index,
            handoff: Handoff::new(eventfd),
            slab: Mutex::new(Slab::with_gens(gens)),
        }
    }

    /// The slab, locked (a poisoned lock is taken over: the slab's own
    /// invariants hold between its calls).
    pub(super) fn lock(&self) -> MutexGuard<'_, Slab<S>> {
        self.slab.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This ring's index in its port's ring table.
    pub(crate) fn index(&self) -> u16 {
        self.index
    }

    /// Wakes the owner if it is parked (or makes its next park return at once).
    pub(crate) fn wake(&self) {
        self.handoff.wake();
    }

    /// Inserts an operation from a thread that does not own this ring.
    pub(crate) fn submit_remote(&self, op: Op) -> Result<OpId, (io::Error, Op)> {
        let st = S::prepare(op)?;
        let id = self
            .lock()
            .hand_over(self.index, st)
            .map_err(|(e, st)| (e, st.into_op()))?;
        self.handoff.notify();
        Ok(id)
    }

    /// Asks for every operation on `h` in flight here to be cancelled;
    /// returns how many there were.
    /// With `count` (for [`Handle::close`](crate::Handle::close)), the ids
    /// are noted on `h`: only their packets count down to its retirement.
    pub(crate) fn cancel_handle(&self, h: &crate::handle::Handle, count: bool) -> usize {
        let (n, wake) = self.lock().request_cancel_where(self.index, |st, id| {
            let on = crate::handle::is_on(st.op(), h);
            if on && count {
                h.note_counted(id);
            }
            on
        });
        if wake {
            self.handoff.notify();
        }
        n
    }

    /// Asks for `id` to be cancelled. `NotFound` if it is not in flight here.
    pub(crate) fn cancel(&self, id: OpId) -> io::Result<()> {
        if self.lock().request_cancel(id)? {
            self.handoff.notify();
        }
        Ok(())
    }

    /// Bytes an operation in flight has moved so far; `None` if it is not in
    /// flight here.
    pub(crate) fn progress(&self, id: OpId) -> Option<u64> {
        self.lock().get(id).map(|st| st.progress())
    }
}
