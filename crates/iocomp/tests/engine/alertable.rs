//! The alertable port wait (`GetQueuedCompletionStatusEx` with `fAlertable`:
//! [`Port::get_alertable`], [`Port::get_many_alertable`]), on both backends,
//! as Windows documents it: "if no entries are available, the function
//! performs an alertable wait", which returns `WAIT_IO_COMPLETION`
//! ([`GetError::Alerted`]) after the thread's queued APCs ran. A
//! non-alertable wait runs none.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use iocomp::{Backend, GetError, Pool, Timeout};
use iocomp_sync::Thread;

use crate::harness::{backends, port_on, until, T};

/// An APC that counts itself in `ran` and checks that it runs on `on`.
fn counting_apc(
    ran: &Arc<AtomicUsize>,
    on: thread::ThreadId,
) -> impl FnOnce() + std::marker::Send + 'static {
    let ran = ran.clone();
    move || {
        assert_eq!(thread::current().id(), on, "an APC ran on another thread");
        ran.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn an_apc_queued_before_the_call_runs_and_the_wait_reports_alerted() {
    for b in backends() {
        let port = port_on(b);
        let ran = Arc::new(AtomicUsize::new(0));
        let me = thread::current().id();
        Thread::current().queue_apc(counting_apc(&ran, me)).unwrap();
        Thread::current().queue_apc(counting_apc(&ran, me)).unwrap();
        assert_eq!(port.get_alertable(T).err(), Some(GetError::Alerted), "{b}");
        assert_eq!(ran.load(Ordering::SeqCst), 2, "{b}: every queued APC runs");
        // Nothing left: a zero-timeout alertable poll times out.
        assert_eq!(
            port.get_alertable(Some(Duration::ZERO)).err(),
            Some(GetError::TimedOut),
            "{b}"
        );
        // A zero timeout with an APC queued runs it.
        Thread::current().queue_apc(counting_apc(&ran, me)).unwrap();
        assert_eq!(
            port.get_alertable(Some(Duration::ZERO)).err(),
            Some(GetError::Alerted),
            "{b}"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 3, "{b}");
    }
}

/// Another thread queues an APC while this one is blocked in the port (in
/// `io_uring_enter` or `epoll_wait`): the wait wakes, runs it here, and
/// reports `Alerted` long before its timeout.
fn apc_from_another_thread_wakes(b: Backend, many: bool) {
    let port = port_on(b);
    let ran = Arc::new(AtomicUsize::new(0));
    let me = Thread::current();
    let apc = counting_apc(&ran, thread::current().id());
    let queuer = {
        let port = port.clone();
        thread::spawn(move || {
            // Once this thread is parked in the port.
            assert!(until(Duration::from_secs(60), || port.waiters() == 1));
            me.queue_apc(apc).unwrap();
        })
    };
    let r = if many {
        let mut out = Vec::new();
        port.get_many_alertable(&mut out, 8, Some(Duration::from_secs(600)))
            .map(|_| ())
    } else {
        port.get_alertable(Some(Duration::from_secs(600)))
            .map(|_| ())
    };
    assert_eq!(r.err(), Some(GetError::Alerted), "{b}");
    assert_eq!(ran.load(Ordering::SeqCst), 1, "{b}");
    queuer.join().unwrap();
    // The alerted thread left the waiters (that a later APC does not
    // disturb a plain get is checked by
    // `an_apc_queued_after_an_alertable_get_waits_for_the_next_alertable_wait`).
    assert_eq!(
        port.waiters(),
        0,
        "{b}: the alerted thread left the waiters"
    );
}

#[test]
fn an_apc_from_another_thread_wakes_a_blocked_alertable_get() {
    for b in backends() {
        apc_from_another_thread_wakes(b, false);
    }
}

#[test]
fn an_apc_from_another_thread_wakes_a_blocked_alertable_get_many() {
    for b in backends() {
        apc_from_another_thread_wakes(b, true);
    }
}

#[test]
fn a_non_alertable_get_runs_no_apc() {
    for b in backends() {
        let port = port_on(b);
        let ran = Arc::new(AtomicUsize::new(0));
        let me = thread::current().id();
        Thread::current().queue_apc(counting_apc(&ran, me)).unwrap();
        assert_eq!(
            port.get(Some(Duration::from_millis(50))).err(),
            Some(GetError::TimedOut),
            "{b}"
        );
        let mut out = Vec::new();
        assert_eq!(
            port.get_many(&mut out, 4, Some(Duration::ZERO)).err(),
            Some(GetError::TimedOut),
            "{b}"
        );
        // Queued from another thread during a non-alertable wait: not run,
        // and the wait goes on to its timeout.
        let handle = Thread::current();
        let apc = counting_apc(&ran, me);
        let queuer = {
            let port = port.clone();
            thread::spawn(move || {
                assert!(until(Duration::from_secs(60), || port.waiters() == 1));
                handle.queue_apc(apc).unwrap();
            })
        };
        assert_eq!(
            port.get(Some(Duration::from_millis(300))).err(),
            Some(GetError::TimedOut),
            "{b}"
        );
        queuer.join().unwrap();
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "{b}: a non-alertable wait ran an APC"
        );
        assert_eq!(Thread::current().pending_apcs(), 2, "{b}");
        // They stay queued for the next alertable wait.
        assert_eq!(port.get_alertable(T).err(), Some(GetError::Alerted), "{b}");
        assert_eq!(ran.load(Ordering::SeqCst), 2, "{b}");
    }
}

#[test]
fn packets_come_before_apcs() {
    for b in backends() {
        let port = port_on(b);
        let ran = Arc::new(AtomicUsize::new(0));
        let me = thread::current().id();
        port.post(5, 6, 7).unwrap();
        port.post(8, 9, 10).unwrap();
        Thread::current().queue_apc(counting_apc(&ran, me)).unwrap();
        let p = port.get_alertable(T).unwrap();
        assert_eq!((p.key, p.bytes), (5, 6), "{b}");
        let mut out = Vec::new();
        assert_eq!(port.get_many_alertable(&mut out, 4, T), Ok(1), "{b}");
        assert_eq!(out[0].key, 8, "{b}");
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "{b}: the APC waits while packets are there"
        );
        assert_eq!(port.get_alertable(T).err(), Some(GetError::Alerted), "{b}");
        assert_eq!(ran.load(Ordering::SeqCst), 1, "{b}");
    }
}

#[test]
fn an_alertable_get_times_out_with_nothing_to_do() {
    for b in backends() {
        let port = port_on(b);
        assert_eq!(
            port.get_alertable(Some(Duration::from_millis(100))).err(),
            Some(GetError::TimedOut),
            "{b}"
        );
        let mut out = Vec::new();
        assert_eq!(
            port.get_many_alertable(&mut out, 4, Some(Duration::from_millis(100)))
                .err(),
            Some(GetError::TimedOut),
            "{b}"
        );
        assert!(out.is_empty());
        // And a packet posted from elsewhere still ends it.
        let poster = {
            let port = port.clone();
            thread::spawn(move || {
                assert!(until(Duration::from_secs(60), || port.waiters() == 1));
                port.post(3, 0, 0).unwrap();
            })
        };
        assert_eq!(port.get_alertable(T).unwrap().key, 3, "{b}");
        poster.join().unwrap();
    }
}

/// An APC and a packet race for a blocked alertable wait, many times: every
/// round ends, and in the end the packet was returned once and the APC ran
/// once, whatever won.
#[test]
fn an_apc_racing_a_packet_loses_neither() {
    for b in backends() {
        let port = port_on(b);
        let me = thread::current().id();
        for round in 0..200u64 {
            let ran = Arc::new(AtomicUsize::new(0));
            let handle = Thread::current();
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let apc = counting_apc(&ran, me);
            let p2 = port.clone();
            let racer = thread::spawn(move || {
                go_rx.recv().unwrap();
                if round % 2 == 0 {
                    handle.queue_apc(apc).unwrap();
                    p2.post(round, 0, 0).unwrap();
                } else {
                    p2.post(round, 0, 0).unwrap();
                    handle.queue_apc(apc).unwrap();
                }
            });
            go_tx.send(()).unwrap();
            let (mut packets, mut alerts) = (0, 0);
            while packets == 0 || ran.load(Ordering::SeqCst) == 0 {
                match port.get_alertable(T) {
                    Ok(p) => {
                        assert_eq!(p.key, round, "{b}");
                        packets += 1;
                    }
                    Err(GetError::Alerted) => alerts += 1,
                    Err(e) => panic!("{b}: round {round}: {e}"),
                }
            }
            racer.join().unwrap();
            assert_eq!((packets, alerts), (1, 1), "{b}: round {round}");
            assert_eq!(ran.load(Ordering::SeqCst), 1, "{b}");
            assert_eq!(
                port.get_alertable(Some(Duration::ZERO)).err(),
                Some(GetError::TimedOut),
                "{b}"
            );
        }
    }
}

/// `ReadFileEx` + `GetQueuedCompletionStatusEx(.., TRUE)`: a completion
/// routine ([`Port::submit_ex`]) runs in the issuing thread's alertable port
/// wait.
#[test]
fn a_completion_routine_runs_in_an_alertable_port_wait() {
    for b in backends() {
        let port = port_on(b);
        let _worker = Pool::new(&port, 1, |_, _| {}).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        let me = thread::current().id();
        port.submit_ex(Timeout::new(Duration::from_millis(10), 42), move |p| {
            assert_eq!(thread::current().id(), me);
            assert_eq!(p.key, 42);
            assert!(p.status.is_ok());
            r2.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|(e, _)| e)
        .unwrap();
        let mut alerted = false;
        while !alerted {
            match port.get_alertable(T) {
                Err(GetError::Alerted) => alerted = true,
                other => panic!("{b}: {other:?}"),
            }
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1, "{b}");
    }
}

/// Corner cases of the alertable wait: an APC that itself waits alertably
/// on the port (nested: the APC queued behind it still runs exactly once),
/// two ports on one thread, and — the waker is removed when an alertable
/// wait returns — an APC queued while the thread is in a plain `get` after
/// an alertable one neither runs nor ends that `get`, and runs at the next
/// alertable wait (on any port).
#[test]
fn an_apc_queued_after_an_alertable_get_waits_for_the_next_alertable_wait() {
    for b in backends() {
        let port = port_on(b);
        let other = port_on(b);
        let ran = Arc::new(AtomicUsize::new(0));
        let me = Thread::current();
        {
            let (p2, r) = (port.clone(), ran.clone());
            me.queue_apc(move || {
                r.fetch_add(1, Ordering::SeqCst);
                let inner = p2.get_alertable(Some(Duration::ZERO));
                assert!(matches!(inner, Err(GetError::Alerted)), "inner {inner:?}");
            })
            .unwrap();
            let r = ran.clone();
            me.queue_apc(move || {
                r.fetch_add(10, Ordering::SeqCst);
            })
            .unwrap();
        }
        assert_eq!(port.get_alertable(T).err(), Some(GetError::Alerted), "{b}");
        assert_eq!(ran.load(Ordering::SeqCst), 11, "{b}");
        assert_eq!(
            other.get_alertable(Some(Duration::ZERO)).err(),
            Some(GetError::TimedOut),
            "{b}"
        );
        let (me2, r) = (me.clone(), ran.clone());
        let queuer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            me2.queue_apc(move || {
                r.fetch_add(100, Ordering::SeqCst);
            })
            .unwrap();
        });
        // A plain get: not ended by the APC, which does not run.
        let g = port.get(Some(Duration::from_secs(1)));
        queuer.join().unwrap();
        assert_eq!(g.err(), Some(GetError::TimedOut), "{b}");
        assert_eq!(ran.load(Ordering::SeqCst), 11, "{b}");
        assert_eq!(other.get_alertable(T).err(), Some(GetError::Alerted), "{b}");
        assert_eq!(ran.load(Ordering::SeqCst), 111, "{b}");
    }
}
