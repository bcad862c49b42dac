//! The fast paths (issue 20): a wait that can be satisfied at once, a poll that cannot, and a signal with no waiter
//! allocate nothing — counted per thread by `allocation_counter` (which installs a counting global allocator in this
//! test binary). The loom models in `tests/loom.rs` check their races.

use iocomp_sync::{wait_all, wait_any, Event, Mutex, Semaphore, WaitResult, Waitable};

use crate::util::{LONG, POLL};

#[test]
fn uncontended_waits_and_signals_allocate_nothing() {
    let m = Mutex::new(false);
    let auto = Event::new(false, false);
    let manual = Event::new(true, true);
    let sem = Semaphore::new(0, 10).unwrap();
    let (a, b) = (Mutex::new(false), Mutex::new(false));
    let round = || {
        assert_eq!(m.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        assert_eq!(m.wait(Some(LONG)), Ok(WaitResult::Signaled(0))); // recursion
        assert_eq!(m.release(), Ok(2));
        assert_eq!(m.release(), Ok(1));
        assert!(!auto.set());
        assert_eq!(auto.wait(POLL), Ok(WaitResult::Signaled(0)));
        assert_eq!(auto.wait(POLL), Ok(WaitResult::TimedOut));
        assert!(!auto.pulse());
        assert_eq!(manual.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        assert_eq!(sem.release(2), Ok(0));
        assert_eq!(sem.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        assert_eq!(
            wait_any(&[&auto, &sem], Some(LONG)),
            Ok(WaitResult::Signaled(1))
        );
        assert_eq!(wait_any(&[&auto, &sem], POLL), Ok(WaitResult::TimedOut));
        assert_eq!(
            wait_all(&[&a, &b, &manual], Some(LONG)),
            Ok(WaitResult::Signaled(0))
        );
        assert_eq!(wait_all(&[&sem, &a], POLL), Ok(WaitResult::TimedOut));
        assert_eq!(a.release(), Ok(1));
        assert_eq!(b.release(), Ok(1));
    };
    round(); // the thread's record and its list of owned mutexes are made on first use
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            round();
        }
    });
    assert_eq!(
        info.count_total, 0,
        "allocations on the fast paths: {info:?}"
    );
}
