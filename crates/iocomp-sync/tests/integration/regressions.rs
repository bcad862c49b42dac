//! Bugs found in other implementations of these semantics, one test each, named after the issue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iocomp_sync::{wait_all, Event, Semaphore, Thread, WaitResult, Waitable};

use crate::util::{LONG, POLL};

/// See: https://github.com/neosmart/pevents/issues/5 — a wait-all with timeout 0 on 63 signalled events returned
/// `WAIT_TIMEOUT`.
#[test]
fn pevents_5_wait_all_zero_timeout_on_all_signalled() {
    for manual in [false, true] {
        let events: Vec<Event> = (0..63).map(|_| Event::new(manual, true)).collect();
        let objs: Vec<&dyn Waitable> = events.iter().map(|e| e as &dyn Waitable).collect();
        assert_eq!(wait_all(&objs, POLL), Ok(WaitResult::Signaled(0)));
        assert!(events.iter().all(|e| e.is_set() == manual));
    }
}

/// See: https://github.com/neosmart/pevents/issues/9 and the `AtomicWaitAll.cpp` test of its PR #20 — wait-all
/// consumed auto-reset events before all were set, and kept them on timeout.
#[test]
fn pevents_9_wait_all_is_atomic() {
    let events = [
        Event::new(false, true),
        Event::new(false, false),
        Event::new(false, true),
    ];
    let objs: Vec<&dyn Waitable> = events.iter().map(|e| e as &dyn Waitable).collect();
    assert_eq!(wait_all(&objs, POLL), Ok(WaitResult::TimedOut));
    assert!(
        events[0].is_set() && events[2].is_set(),
        "nothing consumed on timeout"
    );
    assert_eq!(
        wait_all(&objs, Some(Duration::from_millis(20))),
        Ok(WaitResult::TimedOut)
    );
    assert!(events[0].is_set() && events[2].is_set());
    events[1].set();
    assert_eq!(wait_all(&objs, POLL), Ok(WaitResult::Signaled(0)));
    assert!(
        events.iter().all(|e| !e.is_set()),
        "all three consumed together"
    );
}

/// See: https://github.com/neosmart/pevents/issues/18 (test `EventContention.cpp`) — `WaitForEvent(0)` on a signalled
/// event returned `WAIT_TIMEOUT` under lock contention, because the zero timeout used `trylock`.
#[test]
fn pevents_18_zero_timeout_under_contention() {
    const POLLS: usize = 5_000;
    let event = Event::new(true, true);
    let stop = Arc::new(AtomicBool::new(false));
    // Contenders keep the event's lock busy with sets and state reads.
    let contenders: Vec<Thread> = (0..2)
        .map(|_| {
            let (event, stop) = (event.clone(), Arc::clone(&stop));
            Thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    event.set();
                    let _ = event.is_set();
                }
                0
            })
        })
        .collect();
    let pollers: Vec<Thread> = (0..2)
        .map(|_| {
            let event = event.clone();
            Thread::spawn(move || {
                for _ in 0..POLLS {
                    if event.wait(POLL) != Ok(WaitResult::Signaled(0)) {
                        return 1;
                    }
                }
                0
            })
        })
        .collect();
    let objs: Vec<&dyn Waitable> = pollers.iter().map(|t| t as &dyn Waitable).collect();
    assert_eq!(wait_all(&objs, Some(LONG)), Ok(WaitResult::Signaled(0)));
    stop.store(true, Ordering::Relaxed);
    let objs: Vec<&dyn Waitable> = contenders.iter().map(|t| t as &dyn Waitable).collect();
    assert_eq!(wait_all(&objs, Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert!(
        pollers.iter().all(|t| t.exit_code() == Some(0)),
        "a poll timed out"
    );
}

/// See: https://github.com/neosmart/pevents/issues/2 ("Lost Wake-Up Problem", closed as "by design") — a count given
/// to a waiter whose timeout fired at the same moment was lost. Here a timed-out waiter never took a count, and a
/// waiter that took one reports success: releases = successful waits + what is left.
#[test]
fn pevents_2_timeout_racing_a_wake_keeps_the_count() {
    const ROUNDS: u64 = 300;
    let sem = Semaphore::new(0, u32::MAX).unwrap();
    let acquired = Arc::new(AtomicU64::new(0));
    let waiter = {
        let (sem, acquired) = (sem.clone(), Arc::clone(&acquired));
        Thread::spawn(move || {
            for i in 0..ROUNDS {
                // Timeouts of 0–49 µs land right on the releases below.
                match sem.wait(Some(Duration::from_micros(i % 50))) {
                    Ok(WaitResult::Signaled(0)) => {
                        acquired.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(WaitResult::TimedOut) => {}
                    _ => return 1,
                }
            }
            0
        })
    };
    let mut released = 0u64;
    while waiter.wait(POLL) == Ok(WaitResult::TimedOut) {
        sem.release(1).unwrap();
        released += 1;
        std::thread::yield_now();
    }
    assert_eq!(waiter.exit_code(), Some(0));
    assert_eq!(
        acquired.load(Ordering::SeqCst) + u64::from(sem.count()),
        released,
        "a count was created or lost"
    );
}
