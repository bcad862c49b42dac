//! The one place that picks the concurrency primitives: std's normally, loom's under `--cfg loom`.
//!
//! Everything that takes part in the wake hand-off (object locks, the wait-all lock, the waiter's slot, thread-locals,
//! parking) goes through this module, so the loom models in `tests/loom.rs` check the same code that ships. The
//! thread-id counter is the one plain std atomic left outside: it only hands out unique numbers and has no protocol to
//! check.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: no code of this crate panics while it holds one of its locks, and a user closure
/// (an APC) never runs under one, so a poisoned lock still guards a consistent state.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(not(loom))]
static WAIT_ALL_LOCK: Mutex<()> = Mutex::new(());

#[cfg(loom)]
loom::lazy_static! {
    static ref WAIT_ALL_LOCK: Mutex<()> = Mutex::new(());
}

/// The process-wide lock that serialises every wait-all (ntsync's `wait_all_lock`). Lock order: this lock first, then
/// object locks; only a holder of this lock may hold more than one object lock at a time.
pub(crate) fn wait_all_lock() -> MutexGuard<'static, ()> {
    lock(&WAIT_ALL_LOCK)
}

/// Thread handles, parking and spawning.
pub(crate) mod thread {
    #[cfg(loom)]
    use std::time::Duration;

    #[cfg(loom)]
    pub(crate) use loom::thread::{current, park, yield_now, Thread};
    #[cfg(not(loom))]
    pub(crate) use std::thread::{current, yield_now, Thread};
    #[cfg(all(not(loom), not(test)))]
    pub(crate) use std::thread::{park, park_timeout};

    /// loom has no timed park; the models only use polls and infinite waits, so a timed park with a real timeout never
    /// runs there. If one did, yielding keeps it correct (a spurious wake-up that the wait loop tolerates). A zero
    /// timeout must never reach a park at all (a poll parks for nothing but a futex call and the timer slack): the
    /// models check that.
    #[cfg(loom)]
    pub(crate) fn park_timeout(d: Duration) {
        assert!(!d.is_zero(), "a zero-timeout wait reached the park step");
        loom::thread::yield_now();
    }

    #[cfg(all(not(loom), test))]
    std::thread_local! {
        static PARKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Unit tests: how many times this thread parked (timed or not) so far.
    #[cfg(all(not(loom), test))]
    pub(crate) fn parks() -> usize {
        PARKS.with(std::cell::Cell::get)
    }

    /// `std::thread::park`, counted (unit tests).
    #[cfg(all(not(loom), test))]
    pub(crate) fn park() {
        PARKS.with(|c| c.set(c.get() + 1));
        std::thread::park();
    }

    /// `std::thread::park_timeout`, counted (unit tests).
    #[cfg(all(not(loom), test))]
    pub(crate) fn park_timeout(d: std::time::Duration) {
        PARKS.with(|c| c.set(c.get() + 1));
        std::thread::park_timeout(d);
    }

    /// Starts an OS thread (a loom thread under loom) running `f`.
    pub(crate) fn spawn<F: FnOnce() + Send + 'static>(f: F) -> std::io::Result<()> {
        #[cfg(not(loom))]
        {
            std::thread::Builder::new().spawn(f).map(drop)
        }
        #[cfg(loom)]
        {
            drop(loom::thread::spawn(f));
            Ok(())
        }
    }
}
