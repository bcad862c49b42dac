//! The hand-off between threads that queue work for a ring's owner (an
//! operation submitted from elsewhere, a cancel, a file read the blocking pool
//! finished) and the owner, which does the work on its own thread.
//!
//! The work itself waits in a queue behind a mutex; what this module adds is
//! the flag that says "look at the queue" and the wake primitive that ends the
//! owner's park (an eventfd the ring reads, or the one epoll watches). The
//! order that keeps a wake-up from being lost is:
//!
//! - the notifier queues its work, sets the flag, then signals;
//! - the owner first consumes the signal it saw, then takes the flag.
//!
//! A signal sent after the owner took the flag is then never consumed
//! unseen: it stays pending and ends the owner's next park. (Taking the flag
//! first and consuming the signal afterwards loses the wake-up of a notifier
//! that comes in between: issue 14, item 2.)
//!
//! The wake primitive is a trait so that a loom model can stand in for the
//! eventfd (`tests/loom.rs`).

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, Ordering};

/// Something that ends a thread's park: wakes it if parked, or makes its next
/// park return at once.
pub trait Wake {
    /// Signals the owner. Signals are counted or sticky: one sent before the
    /// owner parks still ends that park.
    fn wake(&self);
}

/// A wake primitive whose pending signal the owner can consume (an eventfd).
pub trait WakeSource: Wake {
    /// Consumes every signal sent so far: the next park waits for a new one.
    fn clear(&self);
}

/// The flag and the wake primitive of one ring (see the module documentation).
pub struct Handoff<W> {
    pending: AtomicBool,
    wake: W,
}

impl<W: WakeSource> Handoff<W> {
    /// A hand-off with no work pending.
    pub fn new(wake: W) -> Handoff<W> {
        Handoff {
            pending: AtomicBool::new(false),
            wake,
        }
    }

    /// The wake primitive.
    pub fn primitive(&self) -> &W {
        &self.wake
    }

    /// Called by a notifier after it queued work (and released the queue's
    /// lock): sets the flag, then wakes the owner.
    pub fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// Wakes the owner without work for it (the control plane handed it a
    /// packet, or the port closed).
    pub fn wake(&self) {
        self.wake.wake();
    }

    /// Called by the owner: whether work was queued since the last call.
    /// `fired` says the owner saw the wake primitive signalled since it last
    /// consumed it: the signal is consumed first, then the flag is taken.
    pub fn take(&self, fired: bool) -> bool {
        if fired {
            self.wake.clear();
        }
        self.take_flag()
    }

    /// Takes the flag: a load first (the common case, nothing pending, costs
    /// no locked instruction), then a swap that resets it. The swap reads the
    /// newest store, so it synchronizes with every notifier whose flag it
    /// resets: their queued work is visible to the owner's next look at the
    /// queue.
    fn take_flag(&self) -> bool {
        if !self.pending.load(Ordering::Acquire) {
            return false;
        }
        self.pending.swap(false, Ordering::AcqRel);
        true
    }

    /// The order used before issue 14 (the flag taken, then the signal
    /// consumed), kept only so that the loom model can show that it loses
    /// wake-ups.
    #[cfg(loom)]
    pub fn take_flag_first(&self, fired: bool) -> bool {
        let took = self.take_flag();
        if fired {
            self.wake.clear();
        }
        took
    }
}
