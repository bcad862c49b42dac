//! Waitable threads: exit codes, suspension, ids, handles for foreign threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iocomp_sync::{wait_all, wait_any, Event, Thread, WaitResult, Waitable};

use crate::util::{LONG, POLL};

#[test]
fn exit_code_is_none_while_running_then_the_returned_value() {
    let go = Event::new(true, false);
    let go2 = go.clone();
    let t = Thread::spawn(move || {
        assert_eq!(go2.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        259 // STILL_ACTIVE on Windows: unambiguous here
    });
    assert_eq!(t.exit_code(), None);
    assert_eq!(t.wait(POLL), Ok(WaitResult::TimedOut));
    go.set();
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(259));
    assert_eq!(t.wait(POLL), Ok(WaitResult::Signaled(0)), "stays signalled");
}

#[test]
fn suspended_thread_does_not_run_until_resumed() {
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = Arc::clone(&ran);
    let t = Thread::spawn_suspended(move || {
        ran2.store(true, Ordering::SeqCst);
        3
    });
    assert_eq!(
        t.wait(Some(Duration::from_millis(30))),
        Ok(WaitResult::TimedOut)
    );
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(t.exit_code(), None);
    assert_eq!(t.resume(), 1);
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(t.exit_code(), Some(3));
    assert_eq!(t.resume(), 0);
}

#[test]
fn resume_of_a_running_thread_returns_zero() {
    let t = Thread::spawn(|| 0);
    assert_eq!(t.resume(), 0);
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(Thread::current().resume(), 0);
}

#[test]
fn thread_ids_are_unique_and_never_reused() {
    let mut ids = Vec::new();
    for _ in 0..50 {
        let t = Thread::spawn(|| 0);
        assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        ids.push(t.id());
    }
    for _ in 0..10 {
        ids.push(
            std::thread::spawn(|| Thread::current().id())
                .join()
                .unwrap(),
        );
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "an id was reused");
    assert!(ids.iter().all(|id| id.as_u64() != 0));
}

#[test]
fn current_thread_handle_is_stable_and_visible_from_inside() {
    let a = Thread::current();
    let b = Thread::current();
    assert_eq!(a, b);
    assert_eq!(a.id(), b.id());
    let (tx, rx) = std::sync::mpsc::channel();
    let t = Thread::spawn(move || {
        tx.send(Thread::current()).unwrap();
        0
    });
    let inside = rx.recv_timeout(LONG).unwrap();
    assert_eq!(inside, t);
    assert_eq!(inside.id(), t.id());
    assert_ne!(t.id(), a.id());
}

#[test]
fn threads_mix_with_other_objects_in_waits() {
    let e = Event::new(true, false);
    let t = Thread::spawn(|| 5);
    assert_eq!(wait_any(&[&e, &t], Some(LONG)), Ok(WaitResult::Signaled(1)));
    e.set();
    assert_eq!(wait_all(&[&t, &e], Some(LONG)), Ok(WaitResult::Signaled(0)));
    let t2 = Thread::spawn(|| 6);
    let t3 = Thread::spawn(|| 7);
    assert_eq!(
        wait_all(&[&t, &t2, &t3], Some(LONG)),
        Ok(WaitResult::Signaled(0))
    );
    assert_eq!(
        (t.exit_code(), t2.exit_code(), t3.exit_code()),
        (Some(5), Some(6), Some(7))
    );
}

#[test]
fn a_std_thread_handle_is_signalled_when_it_exits() {
    let (tx, rx) = std::sync::mpsc::channel();
    let go = Event::new(true, false);
    let go2 = go.clone();
    let h = std::thread::spawn(move || {
        tx.send(Thread::current()).unwrap();
        assert_eq!(go2.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    });
    let t = rx.recv_timeout(LONG).unwrap();
    assert_eq!(t.wait(POLL), Ok(WaitResult::TimedOut));
    go.set();
    h.join().unwrap();
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(0));
}
