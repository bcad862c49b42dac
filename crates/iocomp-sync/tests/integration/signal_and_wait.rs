//! `signal_and_wait` (`SignalObjectAndWait`): the signal and the start of the wait are one atomic step, so an answer
//! to the signal that only reaches waits already queued (a pulse) is never missed.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use iocomp_sync::{
    signal_and_wait, signal_and_wait_alertable, Event, Mutex, MutexError, Semaphore,
    SemaphoreError, SignalAndWaitError, Thread, WaitError, WaitResult, Waitable,
};

use crate::util::{answer_with_pulses, wait_for_waiters, LONG, POLL};

/// The responder answers each request with a pulse of `reply`: a pulse releases only waits queued at that moment, so
/// the requester must already be waiting when the request becomes visible. Any gap would lose a round and the
/// requester would time out.
fn pulse_answer_is_always_seen(manual_reply: bool) {
    const ROUNDS: u32 = 3000;
    let request = Event::new(false, false);
    let reply = Event::new(manual_reply, false);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU32::new(0));
    let responder = {
        let (request, reply, stop, answered) = (
            request.clone(),
            reply.clone(),
            stop.clone(),
            answered.clone(),
        );
        Thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if request.wait(Some(LONG)) == Ok(WaitResult::Signaled(0)) {
                    answered.fetch_add(1, Ordering::SeqCst);
                    reply.pulse();
                }
            }
            0
        })
    };
    for round in 0..ROUNDS {
        assert_eq!(
            signal_and_wait(&request, &reply, Some(LONG)),
            Ok(WaitResult::Signaled(0)),
            "round {round}: the pulse answering the signal was missed"
        );
    }
    stop.store(true, Ordering::SeqCst);
    request.set();
    assert_eq!(responder.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert!(answered.load(Ordering::SeqCst) >= ROUNDS);
}

#[test]
fn pulse_answer_to_the_signal_is_always_seen_auto_reset() {
    pulse_answer_is_always_seen(false);
}

#[test]
fn pulse_answer_to_the_signal_is_always_seen_manual_reset() {
    pulse_answer_is_always_seen(true);
}

#[test]
fn releasing_a_mutex_hands_it_to_a_waiter_then_waits() {
    let m = Mutex::new(true);
    let ev = Event::new(false, false);
    let t = {
        let m = m.clone();
        Thread::spawn(move || {
            let r = m.wait(Some(LONG));
            let _ = m.release();
            u32::from(r == Ok(WaitResult::Signaled(0)))
        })
    };
    wait_for_waiters(&m, 1);
    assert_eq!(signal_and_wait(&m, &ev, POLL), Ok(WaitResult::TimedOut));
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(1));
    assert_eq!(m.release(), Err(MutexError::NotOwner), "released once");
}

#[test]
fn failed_signal_neither_signals_nor_waits() {
    let ev = Event::new(false, true);
    let m = Mutex::new(false);
    assert_eq!(
        signal_and_wait(&m, &ev, POLL),
        Err(SignalAndWaitError::Mutex(MutexError::NotOwner))
    );
    assert!(ev.is_set(), "the event was not consumed by a wait");
    let full = Semaphore::new(1, 1).unwrap();
    assert!(matches!(
        signal_and_wait(&full, &ev, POLL),
        Err(SignalAndWaitError::Semaphore(
            SemaphoreError::TooManyPosts { .. }
        ))
    ));
    assert!(ev.is_set());
    assert_eq!(full.count(), 1);
}

#[test]
fn semaphore_signal_and_same_object() {
    let s = Semaphore::new(0, 2).unwrap();
    let ev = Event::new(false, false);
    assert_eq!(signal_and_wait(&s, &ev, POLL), Ok(WaitResult::TimedOut));
    assert_eq!(s.count(), 1);
    // Signal and wait on one object: the wait takes what the signal gave.
    assert_eq!(signal_and_wait(&s, &s, POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(s.count(), 1);
    assert_eq!(signal_and_wait(&ev, &ev, POLL), Ok(WaitResult::Signaled(0)));
    assert!(!ev.is_set());
}

#[test]
fn alertable_form_runs_apcs_after_signalling() {
    let sig = Event::new(true, false);
    let never = Event::new(false, false);
    let ran = Arc::new(AtomicBool::new(false));
    let me = Thread::current();
    {
        let ran = ran.clone();
        me.queue_apc(move || ran.store(true, Ordering::SeqCst))
            .unwrap();
    }
    assert_eq!(
        signal_and_wait_alertable(&sig, &never, Some(LONG)),
        Ok(WaitResult::Alerted)
    );
    assert!(ran.load(Ordering::SeqCst));
    assert!(sig.is_set(), "the signal was made");
    // Non-alertable: the APC would stay queued; an infinite wait on one's own thread is refused before signalling.
    let s2 = Event::new(false, false);
    assert_eq!(
        signal_and_wait(&s2, &me, None),
        Err(SignalAndWaitError::Wait(WaitError::WouldDeadlock))
    );
    assert!(!s2.is_set());
}

/// A thread that, `rounds` times, waits for `req` and answers with a pulse of `ack`: a pulse releases only waits
/// already in place, so every round of `signal_and_wait(req, ack)` ends only if the signal and the start of the
/// wait were one step.
fn pulse_answerer(req: Event, ack: Event, rounds: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || answer_with_pulses(&req, &ack, rounds))
}

#[test]
fn named_objects_signal_and_wait_atomically_in_every_combination() {
    const ROUNDS: usize = 300;
    for (named_req, named_ack) in [(true, false), (false, true), (true, true)] {
        let make = |named: bool, what: &str| {
            if named {
                Event::create_named(&crate::named::unique(what), false, false)
                    .unwrap()
                    .0
            } else {
                Event::new(false, false)
            }
        };
        let (req, ack) = (make(named_req, "saw-req"), make(named_ack, "saw-ack"));
        let answerer = pulse_answerer(req.clone(), ack.clone(), ROUNDS);
        for round in 0..ROUNDS {
            assert_eq!(
                signal_and_wait(&req, &ack, Some(LONG)),
                Ok(WaitResult::Signaled(0)),
                "named req {named_req}, named ack {named_ack}, round {round}"
            );
        }
        answerer.join().unwrap();
    }
}

#[test]
fn named_signal_failures_neither_signal_nor_wait() {
    use iocomp_sync::{Mutex, MutexError, Semaphore, SemaphoreError};
    let (m, _) = Mutex::create_named(&crate::named::unique("saw-m"), false).unwrap();
    let (s, _) = Semaphore::create_named(&crate::named::unique("saw-s"), 1, 1).unwrap();
    let (e, _) = Event::create_named(&crate::named::unique("saw-e"), true, true).unwrap();
    assert_eq!(
        signal_and_wait(&m, &e, POLL),
        Err(SignalAndWaitError::Mutex(MutexError::NotOwner))
    );
    assert_eq!(
        signal_and_wait(&s, &e, POLL),
        Err(SignalAndWaitError::Semaphore(
            SemaphoreError::TooManyPosts {
                count: 1,
                max: 1,
                release: 1
            }
        ))
    );
    assert_eq!(e.waiter_count(), 0, "no wait was registered");
    // Releasing a named mutex one level and waiting on it again (the same object) reacquires it.
    assert_eq!(m.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(signal_and_wait(&m, &m, POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(m.release(), Ok(1));
    // Signal a named semaphore, wait on a named manual-reset event that is set.
    assert_eq!(s.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(signal_and_wait(&s, &e, POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(
        s.release(1),
        Err(SemaphoreError::TooManyPosts {
            count: 1,
            max: 1,
            release: 1
        })
    );
}
