//! The kernel-facing layer. Everything above `sys/` is portable IOCP logic; what
//! is here talks to Linux.
//!
//! # The contract every backend meets
//!
//! A backend provides, per consumer thread (a thread that calls
//! [`Port::get`](crate::Port::get)), one [`Ring`]:
//!
//! 1. **Submission.** `Ring::submit_local` takes an [`Op`](crate::Op) by value,
//!    keeps it (and every buffer and address the kernel may touch) at a stable
//!    address until its completion, and returns its [`OpId`](crate::OpId). A
//!    synchronous failure returns the op and produces no packet (C8).
//! 2. **Exactly one packet per op** (C8): success, failure or cancellation, the op
//!    comes back once, by value, from `Ring::reap`. Multi-step operations (a send
//!    continued after a short write, a transmit) complete once, at the end.
//! 3. **Foreign threads.** Any thread may insert an op with
//!    `RingShared::submit_remote` or ask for a cancel with `RingShared::cancel`;
//!    both answer at once and wake the owner, which does the kernel work on its own
//!    thread (io_uring ties requests to the submitting task).
//! 4. **Parking.** `Ring::park` sleeps until an own completion arrives, the
//!    [`Waker`] is woken, or the timeout passes; a wake before the park is not lost.
//! 5. **Draining.** `Ring::drain` cancels everything in flight and returns the
//!    packets; the ring is dropped only when the kernel holds no reference to
//!    memory of ours. A thread never exits with operations in flight.
//!
//! Only io_uring exists today; the epoll fallback will meet the same contract.

pub(crate) mod uring;

pub(crate) use uring::{Ring, RingShared, Waker, WqAnchor};
