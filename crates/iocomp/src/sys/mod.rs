//! The kernel-facing layer. Everything above `sys/` is portable IOCP logic; what
//! is here talks to Linux, through one of two backends chosen when a port is
//! created: io_uring (`uring/`) or, where io_uring is not allowed or too old,
//! epoll (`epoll/`). `common.rs` holds what both use (the transmit steps,
//! address conversion), `slab.rs` the table of operations in flight,
//! `queue.rs` a socket's queue of operations in one direction.
//!
//! # The contract every backend meets
//!
//! A backend provides, per consumer thread (a thread that calls
//! [`Port::get`](crate::Port::get)), one [`Ring`] — an io_uring, or an epoll
//! instance — and a [`RingShared`] that other threads may touch:
//!
//! 1. **Submission.** `Ring::submit_local` takes an [`Op`](crate::Op) by value,
//!    keeps it (and every buffer and address the kernel may touch) at a stable
//!    address until its completion, and returns its [`OpId`](crate::OpId). A
//!    synchronous failure returns the op and produces no packet (C8). An op
//!    that completes during submission (epoll tries the system call at once)
//!    still comes back only from `Ring::reap`.
//! 2. **Exactly one packet per op** (C8): success, failure or cancellation, the op
//!    comes back once, by value, from `Ring::reap`. Multi-step operations (a send
//!    continued after a short write, a transmit) complete once, at the end.
//! 3. **Same results.** An op means the same on every backend: a receive
//!    appends what one `recv` returns (a pooled one at most 4 KiB, holding no
//!    buffer while it waits), a send sends everything or fails with the bytes
//!    sent so far, an accept hands back a non-blocking close-on-exec socket and
//!    the peer, a timer succeeds at its deadline, a transmit sends head, file
//!    range and tail in turns of at most 2 MiB with cold pages copied instead
//!    of `sendfile`d. A positional read (`ReadAt`) fills the buffer's spare
//!    capacity from its offset, stopping early only at end of file; a
//!    positional write (`WriteAt`) writes everything or fails with the bytes
//!    written; neither takes a lane (no order between positional ops) and
//!    neither waits for readiness (epoll: `preadv2(RWF_NOWAIT)` inline, else
//!    the blocking pool; a cancel takes back a job the pool has not started,
//!    one it runs completes with its real result). `Recv`/`Send` on a stream
//!    that is no socket use `read`/`write` once `recv`/`send` said ENOTSOCK.
//!    A vectored send (`SendVectored`) is a send of its buffers joined, each
//!    step a `sendmsg` (or `writev`) of what is left. A datagram receive
//!    (`RecvFrom`) appends one datagram and fills in its sender; a datagram
//!    cut to the room fails with `EMSGSIZE` and the bytes that fit; a
//!    datagram send (`SendTo`) is one `sendmsg` to its address. Their message
//!    headers live on the heap with the op (`common::Msg`).
//!    Errors are the kernel's errno; a cancel is `ECANCELED`.
//! 4. **Foreign threads.** Any thread may insert an op with
//!    `RingShared::submit_remote`, ask for a cancel with `RingShared::cancel` or
//!    read `RingShared::progress`; all answer at once, and the first two wake
//!    the owner, which does the kernel work on its own thread (io_uring ties
//!    requests to the submitting task; epoll readiness is per instance).
//! 5. **Parking.** `Ring::park` sleeps until an own completion may be ready, the
//!    [`Waker`] is woken, or the timeout passes; a wake before the park is not
//!    lost. Spurious returns are allowed: the port calls `reap` after each.
//! 6. **Draining.** `Ring::drain` cancels everything in flight and returns the
//!    packets; the ring is dropped only when the kernel holds no reference to
//!    memory of ours. A thread never exits with operations in flight.
//!
//! The contract is code in `shared.rs`: each backend's ring implements
//! `RingOps` (points 1, 2, 5 and 6), its op state `OpSlot`, and point 4 is
//! written once for both, as `Shared` (the wake-up eventfd and the slab).
//! The port holds one [`Anchor`] (the backend chosen, plus what its rings share)
//! and dispatches through the enums below: a `match` per call whose arms are
//! the same code, no trait objects.
//!
//! # Unsafe code
//!
//! This module is the only place in the crate where `unsafe` is allowed (the
//! crate root denies `unsafe_code`): system calls, the memory the kernel
//! shares with us (io_uring's queues and buffer ring), and descriptors taken
//! over from a call. Plain calls go through one helper, `syscall!`, as in
//! mio's `src/sys/unix/mod.rs`: a negative return becomes the thread's
//! `errno`. Every `unsafe` block, and every `syscall!`, carries its own
//! `SAFETY` argument: what the call reads and writes of our memory, and why
//! that memory is valid for the whole call.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::op::Op;
use crate::packet::{OpId, Packet};
use crate::port::Backend;

/// Calls the libc function `$fn` with the given arguments inside `unsafe`, and
/// turns a negative return into `Err(errno)`. The caller states, in a `SAFETY`
/// comment on the invocation, why the call is sound.
///
/// Each argument is evaluated first, in order, into a local of its own
/// (outside the `unsafe` block: an argument expression can never hide an
/// unsafe operation of its own); only the call itself is `unsafe`. Macro
/// hygiene keeps the locals, all spelled `arg`, apart.
///
/// Because each argument is bound to a local by `let arg = …;`, a temporary
/// made inside an argument expression is dropped at the end of that `let`,
/// *before* the call: bind such values (a buffer, an address) to a named
/// local of the caller first, and pass a pointer into it.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)? ) ) => {
        syscall!(@bind $fn [] $($arg,)*)
    };
    (@bind $fn: ident [$($bound: ident)*] $head: expr, $($rest: expr,)*) => {{
        let arg = $head;
        syscall!(@bind $fn [$($bound)* arg] $($rest,)*)
    }};
    (@bind $fn: ident [$($bound: ident)*]) => {{
        // SAFETY: the invocation's own SAFETY comment argues for this call.
        let res = unsafe { libc::$fn($($bound),*) };
        if res < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

mod common;
pub(crate) use common::{fd_kind, open_dev_null, retire_fd, set_nonblocking, FdKind};
#[macro_use]
mod shared;
use shared::RingOps;
mod epoll;
mod queue;
pub(crate) use queue::MAX_RINGS;
mod slab;
mod uring;

/// The backend a port runs on, and what its threads' rings share.
pub(crate) enum Anchor {
    /// io_uring: the first ring, whose kernel worker pool later rings attach to.
    Uring(Box<uring::WqAnchor>),
    /// epoll: nothing is shared between threads.
    Epoll,
}

impl Anchor {
    /// Opens the backend `requested` (never `Auto` here: the port resolves the
    /// environment first). `Auto` tries io_uring and falls back to epoll when
    /// io_uring is refused or lacks an opcode we use; the second value then
    /// says why.
    pub(crate) fn open(requested: Backend) -> io::Result<(Anchor, Option<String>)> {
        match requested {
            Backend::Epoll => Ok((Anchor::Epoll, None)),
            Backend::Uring => match uring::WqAnchor::probe() {
                Ok(a) => Ok((Anchor::Uring(Box::new(a)), None)),
                Err((e, step)) => Err(io::Error::new(
                    e.kind(),
                    format!("io_uring is unavailable: {step}: {e}"),
                )),
            },
            Backend::Auto => match uring::WqAnchor::probe() {
                Ok(a) => Ok((Anchor::Uring(Box::new(a)), None)),
                Err((e, step)) if falls_back(&e) => {
                    Ok((Anchor::Epoll, Some(format!("{step}: {e}"))))
                }
                Err((e, step)) => Err(io::Error::new(e.kind(), format!("{step}: {e}"))),
            },
        }
    }

    /// Which backend this is.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Anchor::Uring(_) => Backend::Uring,
            Anchor::Epoll => Backend::Epoll,
        }
    }
}

/// Errors of io_uring's set-up that mean "not here", not "something broke":
/// denied (seccomp, `io_uring_disabled`, an LSM), absent (old kernel), out of
/// locked memory, flags or opcodes unknown to the kernel.
fn falls_back(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::ENOSYS | libc::ENOMEM | libc::EINVAL)
    ) || e.kind() == io::ErrorKind::Unsupported
}

/// The part of a thread's ring other threads may touch.
pub(crate) enum RingShared {
    Uring(Arc<uring::RingShared>),
    Epoll(Arc<epoll::RingShared>),
}

/// What control-plane code wakes: a ring owner.
pub(crate) type Waker = RingShared;

impl crate::handoff::Wake for RingShared {
    fn wake(&self) {
        RingShared::wake(self);
    }
}

/// Runs `$e` on the backend behind `$self` (a [`RingShared`]), bound to `$s`:
/// both backends' shared parts are a [`shared::Shared`], so each arm is the
/// same code.
macro_rules! on_shared {
    ($self: expr, $s: ident => $e: expr) => {
        match $self {
            RingShared::Uring($s) => $e,
            RingShared::Epoll($s) => $e,
        }
    };
}

impl RingShared {
    /// Wakes the owner if it is parked (or makes its next park return at once).
    pub(crate) fn wake(&self) {
        on_shared!(self, s => s.wake())
    }

    /// Inserts an operation from a thread that does not own this ring.
    pub(crate) fn submit_remote(&self, op: Op) -> Result<OpId, (io::Error, Op)> {
        on_shared!(self, s => s.submit_remote(op))
    }

    /// Asks for `id` to be cancelled. `NotFound` if it is not in flight here.
    pub(crate) fn cancel(&self, id: OpId) -> io::Result<()> {
        on_shared!(self, s => s.cancel(id))
    }

    /// Asks for every operation on `h` in flight here to be cancelled;
    /// returns how many there were.
    /// With `count`, the ids are noted on `h` (see [`Handle::close`](crate::Handle::close)).
    pub(crate) fn cancel_handle(&self, h: &crate::handle::Handle, count: bool) -> usize {
        on_shared!(self, s => s.cancel_handle(h, count))
    }

    /// Bytes an operation in flight has moved so far; `None` if it is not in
    /// flight here.
    pub(crate) fn progress(&self, id: OpId) -> Option<u64> {
        on_shared!(self, s => s.progress(id))
    }

    /// This ring's index in its port's ring table.
    pub(crate) fn index(&self) -> u16 {
        on_shared!(self, s => s.index())
    }
}

/// Runs `$e` on the backend behind `$imp` (a ring's [`Imp`]), bound to `$r`:
/// each backend's ring meets the contract as a [`RingOps`], so each arm is
/// the same code, and each call static (no trait object).
macro_rules! on_ring {
    ($imp: expr, $r: ident => $e: expr) => {
        match $imp {
            Imp::Uring($r) => $e,
            Imp::Epoll($r) => $e,
        }
    };
}

/// One consumer thread's ring, owned by that thread.
pub(crate) struct Ring {
    imp: Imp,
    shared: Arc<RingShared>,
}

// One per consumer thread, never moved after creation: the size difference
// between the variants costs nothing worth a box on the hot path.
#[allow(clippy::large_enum_variant)]
enum Imp {
    Uring(uring::Ring),
    Epoll(epoll::Ring),
}

impl Ring {
    /// A ring of the anchor's backend, at `index` in the port's ring table,
    /// whose slots continue from the generations `gens` that the previous
    /// ring at this index left ([`Ring::gens`]), so that no id repeats.
    pub(crate) fn new(anchor: &Anchor, index: u16, gens: Vec<u32>) -> io::Result<Ring> {
        Ok(match anchor {
            Anchor::Uring(a) => {
                let r = uring::Ring::new(a, index, gens)?;
                let shared = Arc::new(RingShared::Uring(r.shared().clone()));
                Ring {
                    imp: Imp::Uring(r),
                    shared,
                }
            }
            Anchor::Epoll => {
                let r = epoll::Ring::new(index, gens)?;
                let shared = Arc::new(RingShared::Epoll(r.shared().clone()));
                Ring {
                    imp: Imp::Epoll(r),
                    shared,
                }
            }
        })
    }

    pub(crate) fn shared(&self) -> &Arc<RingShared> {
        &self.shared
    }

    /// The generations of this ring's slots (call after `drain`).
    pub(crate) fn gens(&self) -> Vec<u32> {
        on_ring!(&self.imp, r => r.gens())
    }

    /// Submits an operation issued on the owning thread.
    pub(crate) fn submit_local(&mut self, op: Op) -> Result<OpId, (io::Error, Op)> {
        on_ring!(&mut self.imp, r => r.submit_local(op))
    }

    /// The packet of `id`, just submitted here with `submit_local`, if it
    /// completed during submission; `None` leaves it in flight (its packet
    /// comes from `reap` as usual). A packet taken here leaves its lane as
    /// reaped ones do, and is never routed (the caller has it).
    pub(crate) fn take_inline(&mut self, id: OpId) -> Option<Packet> {
        let p = on_ring!(&mut self.imp, r => r.take_inline(id))?;
        let one = VecDeque::from([p]);
        leave_lanes(&one, 0);
        one.into_iter().next()
    }

    /// Collects finished operations into `out` without blocking.
    /// Packets of operations submitted in another completion mode than the
    /// port's queue go to their destination here instead
    /// ([`completion::route`](crate::completion::route)).
    pub(crate) fn reap(&mut self, out: &mut VecDeque<Packet>) {
        let start = out.len();
        on_ring!(&mut self.imp, r => r.reap(out));
        if out.len() > start {
            leave_lanes(out, start);
            crate::completion::route(out, start);
        }
    }

    /// Sleeps until a completion, a wake-up, or `timeout`.
    pub(crate) fn park(&mut self, timeout: Option<Duration>) {
        on_ring!(&mut self.imp, r => r.park(timeout))
    }

    /// Cancels everything in flight and returns the packets.
    /// Routed as in [`Ring::reap`].
    pub(crate) fn drain(&mut self) -> VecDeque<Packet> {
        let mut out = on_ring!(&mut self.imp, r => r.drain());
        // No receive of this ring completes any more: the buffers its
        // pooled receives parked on this thread go (a thread never keeps
        // spares it has no ring to use them on).
        common::free_spare_bufs();
        leave_lanes(&out, 0);
        crate::completion::route(&mut out, 0);
        out
    }
}

/// The ops of the packets from `start` on are done: each leaves its socket's
/// lane ([`crate::handle::Lane`]) before anyone can see its packet, so that
/// whoever handles it and issues the next op finds the lane free.
///
/// An op of a handle being closed ([`Handle::close`](crate::Handle::close))
/// counts down to the moment its descriptor is retired.
fn leave_lanes(out: &VecDeque<Packet>, start: usize) {
    use std::sync::atomic::Ordering;
    for p in out.range(start..) {
        if let Some(l) = crate::handle::lane_of(&p.op) {
            l.leave();
        }
        if let Some(h) = p.op.handle() {
            // Only the ops close's scan counted count down: a packet made
            // before the scan (waiting for the next reap) was not counted.
            if h.0.closing.load(Ordering::Acquire) && h.take_counted(p.id) {
                h.closing_op_done();
            }
        }
    }
}

/// Takes over a descriptor that a successful call just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful call that creates a
    // descriptor (the caller checked), and nothing else owns it; the
    // `OwnedFd` takes it over and closes it once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A new stream socket of `family`: non-blocking and close-on-exec.
pub(crate) fn stream_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) with integer arguments touches no memory of ours and
    // returns a new descriptor or -1.
    syscall!(socket(family, ty, 0)).map(owned)
}

/// `shutdown(2)` of a socket, synchronously.
pub(crate) fn shutdown(fd: BorrowedFd<'_>, how: std::net::Shutdown) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let how = match how {
        std::net::Shutdown::Read => libc::SHUT_RD,
        std::net::Shutdown::Write => libc::SHUT_WR,
        std::net::Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown(2) takes a descriptor borrowed (so open) for the whole
    // call and touches no memory of ours.
    syscall!(shutdown(fd.as_raw_fd(), how)).map(drop)
}
