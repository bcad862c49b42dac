//! loom models of the wake hand-off and of wait-all contention: loom runs each closure under every interleaving of
//! its threads (up to the preemption bound), with the crate's locks, atomics, parking and thread-locals replaced by
//! loom's (`src/sync.rs`), and reports a deadlock if a wake-up is ever lost.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target-loom \
//!     cargo test -p iocomp-sync --release --test loom
//! ```
//!
//! Only polls and infinite waits appear: loom has no clock, and a timed park is modelled as a yield.
#![cfg(loom)]

use std::time::Duration;

use iocomp_sync::{wait_all, wait_any, Event, Mutex, Semaphore, WaitResult, Waitable};

const POLL: Option<Duration> = Some(Duration::ZERO);

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(f);
}

/// An auto-reset event set while a waiter is registering: the waiter must wake (no lost wake-up) and consume the set.
#[test]
fn set_vs_waiter_registering() {
    model(|| {
        let ev = Event::new(false, false);
        let ev2 = ev.clone();
        let waiter = loom::thread::spawn(move || ev2.wait(None));
        assert!(!ev.set());
        assert_eq!(waiter.join().unwrap(), Ok(WaitResult::Signaled(0)));
        assert!(!ev.is_set());
    });
}

/// A semaphore released while another thread polls: the permit is taken exactly once or stays, never lost or doubled.
#[test]
fn release_vs_poll_conserves_the_count() {
    model(|| {
        let sem = Semaphore::new(0, 1).unwrap();
        let sem2 = sem.clone();
        let poller = loom::thread::spawn(move || sem2.wait(POLL));
        assert_eq!(sem.release(1), Ok(0));
        let got = poller.join().unwrap();
        match got {
            Ok(WaitResult::Signaled(0)) => assert_eq!(sem.count(), 0),
            Ok(WaitResult::TimedOut) => assert_eq!(sem.count(), 1),
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// Two blocked wait-any waiters on one semaphore, two releases from two threads: both waiters wake, each with one
/// permit.
#[test]
fn two_releases_wake_two_waiters() {
    model(|| {
        let sem = Semaphore::new(0, 2).unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = sem.clone();
                loom::thread::spawn(move || s.wait(None))
            })
            .collect();
        let s = sem.clone();
        let releaser = loom::thread::spawn(move || s.release(1).map(drop));
        assert!(sem.release(1).is_ok());
        assert_eq!(releaser.join().unwrap(), Ok(()));
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(WaitResult::Signaled(0)));
        }
        assert_eq!(sem.count(), 0);
    });
}

/// A wait-all on {semaphore, event} against a wait-any poll that takes the semaphore and gives it back: the wait-all
/// must still complete (the release escalates to the wait-all lock and wakes it), and every permit is accounted for.
#[test]
fn wait_all_vs_wait_any_contention() {
    model(|| {
        let sem = Semaphore::new(1, 1).unwrap();
        let ev = Event::new(false, true);
        let (s2, e2) = (sem.clone(), ev.clone());
        let all = loom::thread::spawn(move || wait_all(&[&s2, &e2], None));
        let s3 = sem.clone();
        let any = loom::thread::spawn(move || {
            let r = wait_any(&[&s3], POLL);
            if r == Ok(WaitResult::Signaled(0)) {
                assert_eq!(s3.release(1), Ok(0));
            }
            r
        });
        let any_result = any.join().unwrap();
        assert!(matches!(
            any_result,
            Ok(WaitResult::Signaled(0)) | Ok(WaitResult::TimedOut)
        ));
        assert_eq!(all.join().unwrap(), Ok(WaitResult::Signaled(0)));
        assert_eq!(sem.count(), 0);
        assert!(!ev.is_set());
    });
}

/// A wait-all on two events set by two threads at once: it completes, consuming both, and never half of the set.
#[test]
fn wait_all_vs_concurrent_sets() {
    model(|| {
        let a = Event::new(false, false);
        let b = Event::new(false, false);
        let (a2, b2) = (a.clone(), b.clone());
        let all = loom::thread::spawn(move || wait_all(&[&a2, &b2], None));
        let b3 = b.clone();
        let setter = loom::thread::spawn(move || b3.set());
        assert!(!a.set());
        assert!(!setter.join().unwrap());
        assert_eq!(all.join().unwrap(), Ok(WaitResult::Signaled(0)));
        assert!(!a.is_set() && !b.is_set());
    });
}

/// A mutex released by its owner while another thread is registering its wait: ownership passes exactly once.
#[test]
fn mutex_release_hands_off_ownership() {
    model(|| {
        let m = Mutex::new(true);
        let m2 = m.clone();
        let waiter = loom::thread::spawn(move || {
            let r = m2.wait(None);
            let owner = m2.state().owner;
            assert_eq!(m2.release(), Ok(1));
            (r, owner)
        });
        assert_eq!(m.release(), Ok(1));
        let (r, owner) = waiter.join().unwrap();
        assert_eq!(r, Ok(WaitResult::Signaled(0)));
        assert!(owner.is_some());
        assert_eq!(m.state().count, 0);
    });
}

/// A thread that exits owning a mutex (its thread-local record is destroyed) while another waits on it: the waiter
/// gets it, abandoned.
#[test]
fn owner_exit_abandons_to_a_waiter() {
    model(|| {
        let m = Mutex::new(false);
        let m2 = m.clone();
        let owner = loom::thread::spawn(move || m2.wait(POLL));
        let got = m.wait(None);
        let owner_result = owner.join().unwrap();
        match owner_result {
            // The other thread got it first and died holding it.
            Ok(WaitResult::Signaled(0)) => assert_eq!(got, Ok(WaitResult::Abandoned(0))),
            // We got it first; its poll failed.
            Ok(WaitResult::TimedOut) => assert_eq!(got, Ok(WaitResult::Signaled(0))),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(m.release(), Ok(1));
    });
}

// Fast paths (the fast word of `object.rs`): each races a lock-free operation against the slow path's inflation, the
// deflation at unlock, or another fast operation.

/// Uncontended acquire + release on the fast word against a second thread that may have to queue (inflate) and be
/// handed the mutex: ownership is exclusive and both acquisitions succeed.
#[test]
fn fast_mutex_acquire_vs_queued_waiter() {
    model(|| {
        let m = Mutex::new(false);
        let m2 = m.clone();
        let other = loom::thread::spawn(move || {
            let r = m2.wait(None);
            let owned = m2.state().owned_by_caller;
            assert_eq!(m2.release(), Ok(1));
            (r, owned)
        });
        assert_eq!(m.wait(None), Ok(WaitResult::Signaled(0)));
        assert!(m.state().owned_by_caller);
        assert_eq!(m.release(), Ok(1));
        let (r, owned) = other.join().unwrap();
        assert_eq!(r, Ok(WaitResult::Signaled(0)));
        assert!(owned);
        let st = m.state();
        assert_eq!((st.owner, st.count), (None, 0));
    });
}

/// A fast signal (no waiter queued yet) against a waiter inflating to queue, and a fast poll: the single permit is
/// taken exactly once and nobody hangs.
#[test]
fn fast_release_vs_inflating_waiter_and_poll() {
    model(|| {
        let sem = Semaphore::new(0, 1).unwrap();
        let (s2, s3) = (sem.clone(), sem.clone());
        let poller = loom::thread::spawn(move || s3.wait(POLL));
        let releaser = loom::thread::spawn(move || s2.release(1));
        let polled = poller.join().unwrap();
        assert_eq!(releaser.join().unwrap(), Ok(0));
        match polled {
            Ok(WaitResult::Signaled(0)) => assert_eq!(sem.count(), 0),
            Ok(WaitResult::TimedOut) => {
                assert_eq!(sem.wait(None), Ok(WaitResult::Signaled(0)));
                assert_eq!(sem.count(), 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// Two fast wait-alls over overlapping sets (opposite orders) while neither object has a waiter: both complete (the
/// busy words never deadlock them), each holding both mutexes alone.
#[test]
fn fast_wait_alls_overlap() {
    model(|| {
        let a = Mutex::new(false);
        let b = Mutex::new(false);
        let (a2, b2) = (a.clone(), b.clone());
        let t = loom::thread::spawn(move || {
            let r = wait_all(&[&b2, &a2], None);
            let both = a2.state().owned_by_caller && b2.state().owned_by_caller;
            assert_eq!(a2.release(), Ok(1));
            assert_eq!(b2.release(), Ok(1));
            (r, both)
        });
        assert_eq!(wait_all(&[&a, &b], None), Ok(WaitResult::Signaled(0)));
        assert!(a.state().owned_by_caller && b.state().owned_by_caller);
        assert_eq!(a.release(), Ok(1));
        assert_eq!(b.release(), Ok(1));
        let (r, both) = t.join().unwrap();
        assert_eq!(r, Ok(WaitResult::Signaled(0)));
        assert!(both);
    });
}

/// A fast wait-all poll holding the words busy against a signal that must then wait it out on the slow path: the
/// poll takes both or neither, and the set is not lost.
#[test]
fn fast_wait_all_poll_vs_signal() {
    model(|| {
        let sem = Semaphore::new(1, 1).unwrap();
        let ev = Event::new(false, false);
        let (s2, e2) = (sem.clone(), ev.clone());
        let poll = loom::thread::spawn(move || wait_all(&[&s2, &e2], POLL));
        assert!(!ev.set());
        match poll.join().unwrap() {
            Ok(WaitResult::Signaled(0)) => assert!(sem.count() == 0 && !ev.is_set()),
            Ok(WaitResult::TimedOut) => assert!(sem.count() == 1 && ev.is_set()),
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// A thread's wait record is reused by its next wait: two waits in a row on two events, each set once by another
/// thread, both wake (a late unpark from the first wait cannot confuse the second).
#[test]
fn reused_wait_record_second_wait() {
    model(|| {
        let a = Event::new(false, false);
        let b = Event::new(false, false);
        let (a2, b2) = (a.clone(), b.clone());
        let waiter = loom::thread::spawn(move || (a2.wait(None), b2.wait(None)));
        a.set();
        b.set();
        let (ra, rb) = waiter.join().unwrap();
        assert_eq!(ra, Ok(WaitResult::Signaled(0)));
        assert_eq!(rb, Ok(WaitResult::Signaled(0)));
        assert!(!a.is_set() && !b.is_set());
    });
}

/// A single-object wait on a semaphore that finds it empty goes straight to the queue, queueing and checking under one
/// hold of the object lock: a release racing with it is neither lost nor counted twice.
#[test]
fn semaphore_wait_queues_in_one_hold_vs_release() {
    model(|| {
        let sem = Semaphore::new(0, 1).unwrap();
        let sem2 = sem.clone();
        let waiter = loom::thread::spawn(move || sem2.wait(None));
        assert_eq!(sem.release(1), Ok(0));
        assert_eq!(waiter.join().unwrap(), Ok(WaitResult::Signaled(0)));
        assert_eq!(sem.count(), 0);
    });
}

/// A wait-any queues on each object and checks it under one hold of its lock, in index order: with both events set
/// by another thread while it queues, it wakes (no lost wake-up) and consumes exactly one of them.
#[test]
fn wait_any_queue_and_check_per_object_vs_sets() {
    model(|| {
        let a = Event::new(false, false);
        let b = Event::new(false, false);
        let (a2, b2) = (a.clone(), b.clone());
        let waiter = loom::thread::spawn(move || wait_any(&[&a2, &b2], None));
        b.set();
        a.set();
        let got = waiter.join().unwrap();
        match got {
            Ok(WaitResult::Signaled(0)) => assert!(!a.is_set() && b.is_set()),
            Ok(WaitResult::Signaled(1)) => assert!(a.is_set() && !b.is_set()),
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// Two threads ping-pong through two auto-reset events (the wake round trip of `bench/sync`), each wait going
/// straight to the queue when the event is not set: every set wakes exactly one wait, and no wake-up is lost.
#[test]
fn event_ping_pong() {
    model(|| {
        let ping = Event::new(false, false);
        let pong = Event::new(false, false);
        let (ping2, pong2) = (ping.clone(), pong.clone());
        let peer = loom::thread::spawn(move || {
            let r = ping2.wait(None);
            pong2.set();
            r
        });
        ping.set();
        assert_eq!(pong.wait(None), Ok(WaitResult::Signaled(0)));
        assert_eq!(peer.join().unwrap(), Ok(WaitResult::Signaled(0)));
        assert!(!ping.is_set() && !pong.is_set());
    });
}

/// A thread's wait-any record is rearmed in place for its second wait while the waker of its first wait (another
/// thread) may still hold it, and two threads release the two semaphores: each wait takes exactly one unit, and a late
/// waker of the first wait never satisfies the second.
#[test]
fn rearmed_wait_any_record_with_a_late_waker_takes_one_unit_per_wait() {
    model(|| {
        let s1 = Semaphore::new(0, 1).unwrap();
        let s2 = Semaphore::new(0, 1).unwrap();
        let (a, b) = (s1.clone(), s2.clone());
        let waiter =
            loom::thread::spawn(move || (wait_any(&[&a, &b], None), wait_any(&[&a, &b], None)));
        let s1b = s1.clone();
        let w1 = loom::thread::spawn(move || s1b.release(1));
        assert_eq!(s2.release(1), Ok(0));
        assert_eq!(w1.join().unwrap(), Ok(0));
        let (r1, r2) = waiter.join().unwrap();
        let mut got = [r1.unwrap(), r2.unwrap()];
        got.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(got, [WaitResult::Signaled(0), WaitResult::Signaled(1)]);
        assert_eq!((s1.count(), s2.count()), (0, 0));
    });
}

/// A single-object semaphore wait (straight to the queue) then a wait-any reusing the same record, racing a release
/// and a set: each wait gets its own object, nothing is left signalled.
#[test]
fn single_wait_then_wait_any_reuse_one_record() {
    model(|| {
        let s = Semaphore::new(0, 1).unwrap();
        let e = Event::new(false, false);
        let (s2, e2) = (s.clone(), e.clone());
        let waiter = loom::thread::spawn(move || (s2.wait(None), wait_any(&[&e2, &s2], None)));
        assert_eq!(s.release(1), Ok(0));
        e.set();
        let (r1, r2) = waiter.join().unwrap();
        assert_eq!(r1, Ok(WaitResult::Signaled(0)));
        assert_eq!(r2, Ok(WaitResult::Signaled(0)));
        assert_eq!(s.count(), 0);
        assert!(!e.is_set());
    });
}

/// Polls racing a blocked waiter on the same objects: whenever the poll finds a waiter queued (so it cannot complete
/// lock-free) it takes the queueing path, and it must still never reach the park step (the loom `park_timeout`
/// panics on a zero timeout: a poll would park for nothing but a futex call and the timer slack).
#[test]
fn poll_behind_a_queued_waiter_never_parks() {
    model(|| {
        let e = Event::new(false, false);
        let s = Semaphore::new(0, 1).unwrap();
        let (e2, s2) = (e.clone(), s.clone());
        let waiter = loom::thread::spawn(move || wait_any(&[&e2, &s2], None));
        let (e3, s3) = (e.clone(), s.clone());
        let poller = loom::thread::spawn(move || (e3.wait(POLL), wait_any(&[&s3, &e3], POLL)));
        assert_eq!(
            poller.join().unwrap(),
            (Ok(WaitResult::TimedOut), Ok(WaitResult::TimedOut))
        );
        e.set();
        assert_eq!(waiter.join().unwrap(), Ok(WaitResult::Signaled(0)));
        assert!(!e.is_set());
    });
}

/// A single-object wait on an unset event or semaphore spins on the fast word before it queues (under loom: one more
/// fast-path attempt after a yield). Two such waits and two releases from two threads, with a poll racing them: every
/// unit is taken exactly once, by a spinning wait, a queued one or the poll, and no waiter is left asleep with a unit
/// available (the poll gives back what it took).
#[test]
fn spinning_waits_vs_releases_and_poll_take_each_unit_once() {
    model(|| {
        let sem = Semaphore::new(0, 2).unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = sem.clone();
                loom::thread::spawn(move || s.wait(None))
            })
            .collect();
        let s = sem.clone();
        let releaser = loom::thread::spawn(move || s.release(1).map(drop));
        let polled = sem.wait(POLL);
        assert!(sem.release(1).is_ok());
        if polled == Ok(WaitResult::Signaled(0)) {
            assert!(sem.release(1).is_ok());
        }
        assert_eq!(releaser.join().unwrap(), Ok(()));
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(WaitResult::Signaled(0)));
        }
        assert_eq!(sem.count(), 0);
    });
}
