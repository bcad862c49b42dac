//! Win32 behaviours and bad input, one test each (the "Bad input" list of the issue, and the semantics of
//! `reference/sync-objects.md` A.1).

use std::time::{Duration, Instant};

use iocomp_sync::{
    wait_all, wait_any, wait_one, Event, Mutex, MutexError, Semaphore, SemaphoreError, Thread,
    WaitError, WaitResult, Waitable, PANIC_EXIT_CODE,
};

use crate::util::{wait_for_waiters, Actor, LONG, POLL};

#[test]
fn releasing_a_mutex_you_do_not_own_is_an_error() {
    let owner = Actor::new();
    let m = owner.run(|| Mutex::new(true));
    assert_eq!(m.release(), Err(MutexError::NotOwner));
    assert_eq!(m.state().owner, Some(owner.id()));
    assert_eq!(m.state().count, 1);
}

#[test]
fn releasing_an_unowned_mutex_is_an_error() {
    let m = Mutex::new(false);
    assert_eq!(m.release(), Err(MutexError::NotOwner));
    assert_eq!(m.state().count, 0);
}

#[test]
fn mutex_recursion_counts_up_and_down() {
    let m = Mutex::new(true);
    for expected in 2..=5 {
        assert_eq!(m.wait(POLL), Ok(WaitResult::Signaled(0)));
        assert_eq!(m.state().count, expected);
    }
    for previous in (1..=5).rev() {
        assert_eq!(m.release(), Ok(previous));
    }
    assert_eq!(m.state().owner, None);
}

#[test]
fn mutex_recursion_overflow_is_an_error() {
    let m = Mutex::with_owner_count(u32::MAX);
    let e = Event::new(true, true);
    assert_eq!(m.wait(None), Err(WaitError::RecursionOverflow { index: 0 }));
    assert_eq!(
        wait_any(&[&e, &m], None),
        Err(WaitError::RecursionOverflow { index: 1 })
    );
    assert_eq!(m.state().count, u32::MAX);
    assert_eq!(m.release(), Ok(u32::MAX));
    assert_eq!(m.wait(POLL), Ok(WaitResult::Signaled(0)));
}

#[test]
fn mutex_is_abandoned_when_its_spawned_owner_returns() {
    let m = Mutex::new(false);
    let m2 = m.clone();
    let t = Thread::spawn(move || {
        assert_eq!(m2.wait(POLL), Ok(WaitResult::Signaled(0)));
        9
    });
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(9));
    assert!(m.state().abandoned);
    assert_eq!(m.wait(POLL), Ok(WaitResult::Abandoned(0)));
    assert_eq!(m.state().owner, Some(Thread::current().id()));
    assert_eq!(m.release(), Ok(1));
    assert_eq!(
        m.wait(POLL),
        Ok(WaitResult::Signaled(0)),
        "abandonment is reported once"
    );
    assert_eq!(m.release(), Ok(1));
}

#[test]
fn mutex_is_abandoned_when_a_std_thread_owner_exits() {
    let m = Mutex::new(false);
    let m2 = m.clone();
    let handle = std::thread::spawn(move || {
        assert_eq!(m2.wait(POLL), Ok(WaitResult::Signaled(0)));
        Thread::current()
    });
    let t = handle.join().unwrap();
    // std's join returns before thread-local destructors finish; the thread handle says when they did.
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(0));
    assert_eq!(m.wait(POLL), Ok(WaitResult::Abandoned(0)));
}

#[test]
fn mutex_is_abandoned_when_its_owner_panics() {
    let m = Mutex::new(false);
    let m2 = m.clone();
    let t = Thread::spawn(move || {
        assert_eq!(m2.wait(POLL), Ok(WaitResult::Signaled(0)));
        panic!("owner dies holding the mutex (expected in this test)");
    });
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(PANIC_EXIT_CODE));
    assert_eq!(m.wait(POLL), Ok(WaitResult::Abandoned(0)));
}

#[test]
fn abandonment_wakes_a_blocked_waiter() {
    let owner = Actor::new();
    let waiter = Actor::new();
    let m = owner.run(|| Mutex::new(true));
    let m2 = m.clone();
    let pending = waiter.start(move || m2.wait(Some(LONG)));
    wait_for_waiters(&m, 1);
    pending.assert_blocked();
    owner.exit();
    assert_eq!(pending.join(), Ok(WaitResult::Abandoned(0)));
    assert_eq!(m.state().owner, Some(waiter.id()));
}

#[test]
fn wait_all_reports_the_lowest_abandoned_index() {
    let owner = Actor::new();
    let (m1, m2) = owner.run(|| (Mutex::new(true), Mutex::new(true)));
    let e = Event::new(true, true);
    owner.exit();
    assert_eq!(
        wait_all(&[&e, &m1, &m2], POLL),
        Ok(WaitResult::Abandoned(1))
    );
    assert_eq!(m1.state().owner, Some(Thread::current().id()));
    assert_eq!(m2.state().owner, Some(Thread::current().id()));
}

#[test]
fn abandonment_comes_before_the_thread_is_signalled() {
    // Wine's order: a wait on {thread, mutex} must see the mutex abandoned once the thread is signalled.
    for _ in 0..20 {
        let m = Mutex::new(false);
        let m2 = m.clone();
        let t = Thread::spawn(move || {
            assert_eq!(m2.wait(POLL), Ok(WaitResult::Signaled(0)));
            0
        });
        assert_eq!(
            wait_all(&[&t, &m], Some(LONG)),
            Ok(WaitResult::Abandoned(1))
        );
        assert_eq!(m.release(), Ok(1));
    }
}

#[test]
fn semaphore_release_past_max_changes_nothing() {
    let s = Semaphore::new(1, 3).unwrap();
    assert_eq!(
        s.release(3),
        Err(SemaphoreError::TooManyPosts {
            count: 1,
            max: 3,
            release: 3
        })
    );
    assert_eq!(s.count(), 1);
    assert_eq!(s.release(2), Ok(1));
    assert_eq!(s.count(), 3);
}

#[test]
fn semaphore_rejects_bad_counts() {
    assert_eq!(
        Semaphore::new(0, 0).err(),
        Some(SemaphoreError::ZeroMaximum)
    );
    assert_eq!(
        Semaphore::new(5, 4).err(),
        Some(SemaphoreError::InitialAboveMaximum { initial: 5, max: 4 })
    );
    let s = Semaphore::new(0, u32::MAX).unwrap();
    assert_eq!(s.release(0), Err(SemaphoreError::ZeroRelease));
    assert_eq!(s.release(u32::MAX), Ok(0));
    assert!(s.release(1).is_err(), "no wrap-around at u32::MAX");
    assert_eq!(s.count(), u32::MAX);
}

#[test]
fn semaphore_release_of_n_wakes_n_waiters() {
    let s = Semaphore::new(0, 10).unwrap();
    let actors: Vec<Actor> = (0..3).map(|_| Actor::new()).collect();
    let pending: Vec<_> = actors
        .iter()
        .map(|a| {
            let s = s.clone();
            a.start(move || s.wait(Some(LONG)))
        })
        .collect();
    wait_for_waiters(&s, 3);
    assert_eq!(s.release(2), Ok(0));
    wait_for_waiters(&s, 1); // two left with one count each
    assert_eq!(s.count(), 0);
    assert_eq!(s.release(1), Ok(0));
    for p in pending {
        assert_eq!(p.join(), Ok(WaitResult::Signaled(0)));
    }
    assert_eq!(s.count(), 0);
}

#[test]
fn waiting_on_an_empty_set_is_an_error() {
    assert_eq!(wait_any(&[], None), Err(WaitError::Empty));
    assert_eq!(wait_all(&[], POLL), Err(WaitError::Empty));
}

#[test]
fn waiting_on_duplicates_is_an_error_and_changes_nothing() {
    let e = Event::new(false, true);
    let s = Semaphore::new(1, 1).unwrap();
    assert_eq!(
        wait_any(&[&s, &e, &s], None),
        Err(WaitError::Duplicate {
            first: 0,
            second: 2
        })
    );
    assert_eq!(
        wait_all(&[&e, &s, &e], None),
        Err(WaitError::Duplicate {
            first: 0,
            second: 2
        })
    );
    // A large set takes the hashing path.
    let many: Vec<Event> = (0..40).map(|_| Event::new(true, true)).collect();
    let mut objs: Vec<&dyn Waitable> = many.iter().map(|e| e as &dyn Waitable).collect();
    objs.push(&many[7]);
    assert_eq!(
        wait_all(&objs, None),
        Err(WaitError::Duplicate {
            first: 7,
            second: 40
        })
    );
    assert!(e.is_set());
    assert_eq!(s.count(), 1);
}

#[test]
fn zero_timeout_polls() {
    let e = Event::new(false, false);
    let start = Instant::now();
    assert_eq!(e.wait(POLL), Ok(WaitResult::TimedOut));
    assert_eq!(wait_any(&[&e], POLL), Ok(WaitResult::TimedOut));
    assert_eq!(wait_all(&[&e], POLL), Ok(WaitResult::TimedOut));
    assert!(start.elapsed() < LONG);
    e.set();
    assert_eq!(e.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(e.waiter_count(), 0, "a poll leaves nothing queued");
}

#[test]
fn finite_timeout_expires() {
    let e = Event::new(true, false);
    let start = Instant::now();
    assert_eq!(
        e.wait(Some(Duration::from_millis(50))),
        Ok(WaitResult::TimedOut)
    );
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(e.waiter_count(), 0);
}

#[test]
fn huge_timeouts_do_not_overflow() {
    let s = Semaphore::new(1, 1).unwrap();
    for huge in [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 2),
        Duration::from_secs(1 << 40),
    ] {
        assert_eq!(s.wait(Some(huge)), Ok(WaitResult::Signaled(0)));
        // Signalled later by another thread: the huge wait blocks, then wakes.
        let waiter = Actor::new();
        let s2 = s.clone();
        let pending = waiter.start(move || wait_any(&[&s2], Some(huge)));
        wait_for_waiters(&s, 1);
        assert_eq!(s.release(1), Ok(0));
        assert_eq!(pending.join(), Ok(WaitResult::Signaled(0)));
        assert_eq!(s.release(1), Ok(0));
    }
}

#[test]
fn waiting_on_your_own_thread_with_a_timeout_times_out() {
    let me = Thread::current();
    assert_eq!(me.wait(POLL), Ok(WaitResult::TimedOut));
    assert_eq!(
        me.wait(Some(Duration::from_millis(10))),
        Ok(WaitResult::TimedOut)
    );
    assert_eq!(me.exit_code(), None);
}

#[test]
fn waiting_forever_on_your_own_thread_is_would_deadlock() {
    let me = Thread::current();
    let e = Event::new(true, true);
    assert_eq!(me.wait(None), Err(WaitError::WouldDeadlock));
    assert_eq!(
        wait_one(&me, Some(Duration::MAX)),
        Err(WaitError::WouldDeadlock)
    );
    assert_eq!(wait_any(&[&me], None), Err(WaitError::WouldDeadlock));
    assert_eq!(wait_all(&[&e, &me], None), Err(WaitError::WouldDeadlock));
    // Another object can end a wait-any that includes our own thread: allowed.
    assert_eq!(wait_any(&[&me, &e], None), Ok(WaitResult::Signaled(1)));
}

#[test]
fn wait_any_reports_the_lowest_signalled_index_and_leaves_the_rest() {
    let events: Vec<Event> = (0..6).map(|_| Event::new(false, false)).collect();
    for i in [4, 2, 5] {
        events[i].set();
    }
    let objs: Vec<&dyn Waitable> = events.iter().map(|e| e as &dyn Waitable).collect();
    assert_eq!(wait_any(&objs, POLL), Ok(WaitResult::Signaled(2)));
    let set: Vec<bool> = events.iter().map(Event::is_set).collect();
    assert_eq!(set, [false, false, false, false, true, true]);
    assert_eq!(wait_any(&objs, POLL), Ok(WaitResult::Signaled(4)));
    assert_eq!(wait_any(&objs, POLL), Ok(WaitResult::Signaled(5)));
    assert_eq!(wait_any(&objs, POLL), Ok(WaitResult::TimedOut));
}

#[test]
fn wait_all_changes_nothing_on_timeout() {
    let s = Semaphore::new(2, 2).unwrap();
    let auto = Event::new(false, true);
    let m = Mutex::new(false);
    let off = Event::new(true, false);
    assert_eq!(
        wait_all(&[&s, &auto, &m, &off], Some(Duration::from_millis(20))),
        Ok(WaitResult::TimedOut)
    );
    assert_eq!(s.count(), 2);
    assert!(auto.is_set());
    assert_eq!(m.state().owner, None);
    off.set();
    assert_eq!(
        wait_all(&[&s, &auto, &m, &off], POLL),
        Ok(WaitResult::Signaled(0))
    );
    assert_eq!((s.count(), auto.is_set(), m.state().count), (1, false, 1));
}

#[test]
fn wait_all_is_satisfied_only_when_all_are_signalled_at_once() {
    let a = Event::new(false, false);
    let b = Event::new(false, false);
    let waiter = Actor::new();
    let (a2, b2) = (a.clone(), b.clone());
    let pending = waiter.start(move || wait_all(&[&a2, &b2], Some(LONG)));
    wait_for_waiters(&a, 1);
    a.set();
    pending.assert_not_done();
    assert!(a.reset(), "a was not consumed by the incomplete wait-all");
    b.set();
    pending.assert_blocked();
    assert!(b.is_set());
    a.set();
    assert_eq!(pending.join(), Ok(WaitResult::Signaled(0)));
    assert!(!a.is_set() && !b.is_set());
}

#[test]
fn auto_reset_event_set_without_waiter_stays_set() {
    let e = Event::new(false, false);
    e.set();
    let waiter = Actor::new();
    let e2 = e.clone();
    assert_eq!(
        waiter.run(move || e2.wait(POLL)),
        Ok(WaitResult::Signaled(0))
    );
    assert!(!e.is_set());
}

#[test]
fn auto_reset_sets_coalesce() {
    let e = Event::new(false, false);
    assert!(!e.set());
    assert!(e.set());
    assert_eq!(e.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(e.wait(POLL), Ok(WaitResult::TimedOut));
}

#[test]
fn auto_reset_set_releases_one_of_several_waiters() {
    let e = Event::new(false, false);
    let actors: Vec<Actor> = (0..3).map(|_| Actor::new()).collect();
    let pending: Vec<_> = actors
        .iter()
        .map(|a| {
            let e = e.clone();
            a.start(move || e.wait(Some(LONG)))
        })
        .collect();
    wait_for_waiters(&e, 3);
    for left in [2, 1, 0] {
        assert!(!e.set());
        wait_for_waiters(&e, left); // exactly one waiter left per set
        assert!(!e.is_set(), "the released waiter consumed the set");
    }
    for p in pending {
        assert_eq!(p.join(), Ok(WaitResult::Signaled(0)));
    }
}

#[test]
fn manual_reset_set_releases_every_waiter() {
    let e = Event::new(true, false);
    let actors: Vec<Actor> = (0..3).map(|_| Actor::new()).collect();
    let pending: Vec<_> = actors
        .iter()
        .map(|a| {
            let e = e.clone();
            a.start(move || e.wait(Some(LONG)))
        })
        .collect();
    wait_for_waiters(&e, 3);
    e.set();
    for p in pending {
        assert_eq!(p.join(), Ok(WaitResult::Signaled(0)));
    }
    assert!(e.is_set());
}

#[test]
fn pulse_with_no_waiter_does_nothing() {
    for manual in [false, true] {
        let e = Event::new(manual, false);
        assert!(!e.pulse());
        assert!(!e.is_set());
        assert_eq!(e.wait(POLL), Ok(WaitResult::TimedOut));
    }
}

#[test]
fn pulse_releases_the_current_waiters() {
    for (manual, left) in [(true, 0), (false, 1)] {
        let e = Event::new(manual, false);
        let actors: Vec<Actor> = (0..2).map(|_| Actor::new()).collect();
        let pending: Vec<_> = actors
            .iter()
            .map(|a| {
                let e = e.clone();
                a.start(move || e.wait(Some(LONG)))
            })
            .collect();
        wait_for_waiters(&e, 2);
        assert!(!e.pulse());
        assert!(!e.is_set());
        wait_for_waiters(&e, left); // manual: both released; auto: one
        if left == 1 {
            assert!(!e.set()); // release the other
        }
        for p in pending {
            assert_eq!(p.join(), Ok(WaitResult::Signaled(0)), "manual = {manual}");
        }
    }
}
