//! Per-socket lanes: which ring runs a socket's receives, or its writes,
//! while some are in flight, so that later ones queue behind them in call
//! order whichever thread issues them. Exposed under `--cfg loom` for the
//! models in `tests/loom.rs`.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// One direction of a socket's operations (its receives, or its sends and
/// transmits): how many are in flight or queued, and on which ring.
///
/// Windows fills a stream socket's pending receives, and sends its
/// `WSASend`s, in the order they were issued, whichever threads issued them.
/// Here each ring keeps one socket's ops of one direction in order (one in
/// the kernel at a time, the rest queued behind it), and the lane makes every
/// op issued while earlier ones are still in flight go to the same ring,
/// through its remote-submit queue (FIFO), whichever thread issues it. When
/// the count falls to 0 the lane is free for any ring: the next op runs where
/// it is issued. The common case (one op at a time per socket and direction)
/// costs one compare-and-swap to enter and one atomic subtraction to leave.
///
/// The lane only routes: order between two ops on one ring is kept by that
/// ring, under its slab lock. Two calls that overlap in time have no order to
/// keep, so any interleaving of `enter`s is fine; a call that happens after
/// another's return enters after it and so sees its count.
pub struct Lane(AtomicU64);

/// Low 32 bits of a lane: the count; bits 32..48: the owning ring's index.
const COUNT: u64 = 0xffff_ffff;

impl Default for Lane {
    fn default() -> Lane {
        Lane::new()
    }
}

impl Lane {
    /// A free lane (no op in flight).
    pub fn new() -> Lane {
        Lane(AtomicU64::new(0))
    }

    /// Counts one more op and returns the ring it must run on: `mine` if the
    /// lane was free (it becomes `mine`'s), else the lane's owner.
    pub fn enter(&self, mine: u16) -> u16 {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let (owner, n) = ((cur >> 32) as u16, cur & COUNT);
            let (next, to) = if n == 0 {
                ((u64::from(mine) << 32) | 1, mine)
            } else {
                (cur + 1, owner)
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return to,
                Err(c) => cur = c,
            }
        }
    }

    /// The ring `from` that owned the lane is gone (its thread detached; its
    /// ops were cancelled): the lane moves to `to`, unless it has moved already.
    pub fn adopt(&self, from: u16, to: u16) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                ((cur >> 32) as u16 == from).then_some((u64::from(to) << 32) | (cur & COUNT))
            });
    }

    /// One op of the lane completed (its packet exists) or was refused.
    pub fn leave(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur & COUNT > 0).then_some(cur - 1)
            });
    }
}
