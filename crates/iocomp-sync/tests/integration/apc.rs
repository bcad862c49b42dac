//! APCs and alertable waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use iocomp_sync::{
    sleep_alertable, wait_all_alertable, wait_any, wait_any_alertable, ApcError, Event, Semaphore,
    SleepResult, Thread, WaitResult, Waitable,
};

use crate::util::{wait_until, Actor, LONG, POLL};

#[test]
fn apc_runs_on_a_foreign_thread_in_sleep_alertable() {
    // The test harness's thread was not made by Thread::spawn.
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let me = Thread::current();
    let id = me.id();
    me.queue_apc(move || {
        assert_eq!(Thread::current().id(), id);
        r.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0, "not run at queue time");
    assert_eq!(sleep_alertable(LONG), SleepResult::Alerted);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn apcs_run_in_fifo_order_all_at_once() {
    let log = Arc::new(StdMutex::new(Vec::new()));
    let me = Thread::current();
    for i in 0..5 {
        let log = Arc::clone(&log);
        me.queue_apc(move || log.lock().unwrap().push(i)).unwrap();
    }
    assert_eq!(sleep_alertable(Duration::ZERO), SleepResult::Alerted);
    assert_eq!(*log.lock().unwrap(), [0, 1, 2, 3, 4]);
    assert_eq!(me.pending_apcs(), 0);
    assert_eq!(sleep_alertable(Duration::ZERO), SleepResult::Elapsed);
}

#[test]
fn an_apc_queued_by_an_apc_runs_in_the_same_wait() {
    let runs = Arc::new(AtomicUsize::new(0));
    let me = Thread::current();
    let (r, me2) = (Arc::clone(&runs), me.clone());
    me.queue_apc(move || {
        let r2 = Arc::clone(&r);
        me2.queue_apc(move || {
            r2.fetch_add(10, Ordering::SeqCst);
        })
        .unwrap();
        r.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(sleep_alertable(Duration::ZERO), SleepResult::Alerted);
    assert_eq!(runs.load(Ordering::SeqCst), 11);
    assert_eq!(sleep_alertable(Duration::ZERO), SleepResult::Elapsed);
}

#[test]
fn apcs_do_not_run_in_non_alertable_waits() {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let me = Thread::current();
    me.queue_apc(move || {
        r.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let e = Event::new(true, false);
    assert_eq!(
        e.wait(Some(Duration::from_millis(10))),
        Ok(WaitResult::TimedOut)
    );
    assert_eq!(wait_any(&[&e], POLL), Ok(WaitResult::TimedOut));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(me.pending_apcs(), 1);
    assert_eq!(e.wait_alertable(POLL), Ok(WaitResult::Alerted));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn signalled_objects_win_over_queued_apcs() {
    let me = Thread::current();
    me.queue_apc(|| {}).unwrap();
    let e = Event::new(true, true);
    assert_eq!(e.wait_alertable(None), Ok(WaitResult::Signaled(0)));
    assert_eq!(wait_all_alertable(&[&e], None), Ok(WaitResult::Signaled(0)));
    assert_eq!(me.pending_apcs(), 1, "the APC stays queued");
    assert_eq!(sleep_alertable(Duration::ZERO), SleepResult::Alerted);
}

#[test]
fn apc_ends_a_blocked_alertable_wait_on_another_thread() {
    let w = Actor::new();
    let e = Event::new(true, false);
    let s = Semaphore::new(0, 1).unwrap();
    let (e2, s2) = (e.clone(), s.clone());
    let pending = w.start(move || wait_any_alertable(&[&e2, &s2], None));
    wait_until("the waiter to queue", || e.waiter_count() == 1);
    pending.assert_blocked();
    let ran_on = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran_on);
    w.thread()
        .queue_apc(move || r.store(Thread::current().id().as_u64() as usize, Ordering::SeqCst))
        .unwrap();
    assert_eq!(pending.join(), Ok(WaitResult::Alerted));
    assert_eq!(ran_on.load(Ordering::SeqCst), w.id().as_u64() as usize);
}

#[test]
fn alertable_sleep_on_another_thread_is_woken_by_an_apc() {
    let w = Actor::new();
    let pending = w.start(|| sleep_alertable(Duration::MAX));
    let t = w.thread().clone();
    // The sleeping thread is queued on its own alert event, which tests cannot see; the APC is queued either before
    // or during the sleep, and both must end it.
    t.queue_apc(|| {}).unwrap();
    assert_eq!(pending.join(), SleepResult::Alerted);
}

#[test]
fn infinite_alertable_wait_on_your_own_thread_is_allowed_and_ended_by_an_apc() {
    let w = Actor::new();
    let pending = w.start(|| {
        let me = Thread::current();
        wait_any_alertable(&[&me], None)
    });
    w.thread().queue_apc(|| {}).unwrap();
    assert_eq!(pending.join(), Ok(WaitResult::Alerted));
}

#[test]
fn queueing_an_apc_to_a_finished_thread_is_an_error() {
    let t = Thread::spawn(|| 0);
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    let dropped = Arc::new(AtomicUsize::new(0));
    let guard = DropCounter(Arc::clone(&dropped));
    assert_eq!(
        t.queue_apc(move || drop(guard)),
        Err(ApcError::ThreadExited)
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the rejected APC was dropped"
    );
}

#[test]
fn apcs_still_queued_at_exit_are_dropped_unrun() {
    let go = Event::new(true, false);
    let go2 = go.clone();
    let t = Thread::spawn(move || {
        assert_eq!(go2.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        0
    });
    let dropped = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let (guard, r) = (DropCounter(Arc::clone(&dropped)), Arc::clone(&runs));
    t.queue_apc(move || {
        r.fetch_add(1, Ordering::SeqCst);
        drop(guard);
    })
    .unwrap();
    go.set();
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn alerted_wait_all_acquires_nothing() {
    let s = Semaphore::new(1, 1).unwrap();
    let e = Event::new(false, false);
    Thread::current().queue_apc(|| {}).unwrap();
    assert_eq!(
        wait_all_alertable(&[&s, &e], Some(LONG)),
        Ok(WaitResult::Alerted)
    );
    assert_eq!(s.count(), 1);
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
