//! C18–C20 on I/O packets, in strict mode: every completion goes through the
//! port's queue, so the newest waiter gets the oldest completion even when
//! another thread's ring produced it.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use iocomp::{Port, Timeout};

const T: Option<Duration> = Some(Duration::from_secs(20));

fn until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        thread::yield_now();
    }
}

fn strict(n: usize) -> Port {
    Port::builder().concurrency(n).strict(true).build().unwrap()
}

/// Submits a 1 ms timer from this (non-waiting) thread; it is handed to one of
/// the waiting threads' rings.
fn timer(port: &Port, key: u64) {
    port.submit(Timeout::new(Duration::from_millis(1), key))
        .map_err(|(e, _)| e)
        .unwrap();
}

#[test]
fn c18_strict_io_completions_go_to_the_newest_waiter() {
    let port = strict(3);
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for i in 0..3u64 {
        let p = port.clone();
        let tx = tx.clone();
        threads.push(thread::spawn(move || {
            let pk = p.get(T).unwrap();
            tx.send((i, pk.key)).unwrap();
        }));
        until("the waiter to park", || port.waiters() == (i + 1) as usize);
    }
    for (expect, key) in [(2, 100), (1, 101), (0, 102)] {
        timer(&port, key);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(20)).unwrap(),
            (expect, key)
        );
    }
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn c19_c20_strict_io_completion_waits_at_the_limit_and_the_runner_takes_it() {
    let port = strict(1);
    // A takes a posted packet and keeps running.
    port.post(0, 0, 0).unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (a_tx, a_rx) = mpsc::channel();
    let pa = port.clone();
    let a = thread::spawn(move || {
        a_tx.send(pa.get(T).unwrap().key).unwrap();
        go_rx.recv().unwrap();
        a_tx.send(pa.get(T).unwrap().key).unwrap();
    });
    assert_eq!(a_rx.recv().unwrap(), 0);
    let (b_tx, b_rx) = mpsc::channel();
    let pb = port.clone();
    let b = thread::spawn(move || b_tx.send(pb.get(T).unwrap().key).unwrap());
    until("B to park", || port.waiters() == 1);
    // The timer completes in B's ring (the only parked ring gets hand-overs only
    // if it is chosen; either way the packet must wait in the queue).
    timer(&port, 7);
    until("the completion to reach the queue", || port.queued() == 1);
    assert!(b_rx.try_recv().is_err(), "B was not released at the limit");
    assert_eq!(port.waiters(), 1);
    go_tx.send(()).unwrap();
    assert_eq!(
        a_rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        7,
        "the running thread takes it"
    );
    a.join().unwrap();
    until("A to detach", || port.running() == 0);
    port.post(9, 0, 0).unwrap();
    assert_eq!(b_rx.recv_timeout(Duration::from_secs(20)).unwrap(), 9);
    b.join().unwrap();
}
