//! Handles: descriptors associated with a port, each with its completion key.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A socket or file associated with a [`Port`](crate::Port), carrying its
/// completion key (`CreateIoCompletionPort(handle, port, key, 0)`).
///
/// A `Handle` is a shared reference: every operation in flight on it holds a
/// clone, so the descriptor is closed only when the last user and the last
/// operation are done with it. It can never be closed or reused under the kernel.
#[derive(Clone)]
pub struct Handle(pub(crate) Arc<HandleInner>);

pub(crate) struct HandleInner {
    pub(crate) fd: OwnedFd,
    pub(crate) key: u64,
    pub(crate) port: u64,
    /// `O_NONBLOCK` is known to be set (so it is not checked again per op).
    pub(crate) nonblocking: std::sync::atomic::AtomicBool,
    /// The socket's receives (`[0]`) and writes (`[1]`) in flight: which ring
    /// runs them, so that later ones queue behind them in call order.
    pub(crate) lanes: [Lane; 2],
}

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
pub(crate) struct Lane(AtomicU64);

/// Low 32 bits of a lane: the count; bits 32..48: the owning ring's index.
const COUNT: u64 = 0xffff_ffff;

impl Lane {
    pub(crate) fn new() -> Lane {
        Lane(AtomicU64::new(0))
    }

    /// Counts one more op and returns the ring it must run on: `mine` if the
    /// lane was free (it becomes `mine`'s), else the lane's owner.
    pub(crate) fn enter(&self, mine: u16) -> u16 {
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
    pub(crate) fn adopt(&self, from: u16, to: u16) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                ((cur >> 32) as u16 == from).then_some((u64::from(to) << 32) | (cur & COUNT))
            });
    }

    /// One op of the lane completed (its packet exists) or was refused.
    pub(crate) fn leave(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur & COUNT > 0).then_some(cur - 1)
            });
    }
}

/// The lane an op belongs to, if it moves a byte stream.
pub(crate) fn lane_of(op: &crate::op::Op) -> Option<&Lane> {
    use crate::op::Op;
    match op {
        Op::Recv(r) => Some(&r.handle.0.lanes[0]),
        Op::Send(s) => Some(&s.handle.0.lanes[1]),
        Op::TransmitFile(t) => Some(&t.socket.0.lanes[1]),
        _ => None,
    }
}

/// Leaves the lane of the op a refused submission hands back.
pub(crate) fn unlane<T>(
    r: Result<T, (std::io::Error, crate::op::Op)>,
) -> Result<T, (std::io::Error, crate::op::Op)> {
    r.map_err(|(e, op)| {
        if let Some(l) = lane_of(&op) {
            l.leave();
        }
        (e, op)
    })
}

impl Handle {
    /// Puts the descriptor in non-blocking mode once; later calls cost an
    /// atomic load.
    pub(crate) fn ensure_nonblocking(&self) -> std::io::Result<()> {
        if !self.0.nonblocking.load(Ordering::Relaxed) {
            crate::sys::set_nonblocking(self.as_raw_fd())?;
            self.0.nonblocking.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The completion key every packet for this handle carries.
    pub fn key(&self) -> u64 {
        self.0.key
    }

    /// Shuts down part of a full-duplex connection (`shutdown(2)`), synchronously.
    pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        let how = match how {
            std::net::Shutdown::Read => libc::SHUT_RD,
            std::net::Shutdown::Write => libc::SHUT_WR,
            std::net::Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown(2) takes a descriptor we own for the whole call and
        // touches no memory of ours.
        let rc = unsafe { libc::shutdown(self.0.fd.as_raw_fd(), how) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("fd", &self.as_raw_fd())
            .field("key", &self.0.key)
            .finish()
    }
}
