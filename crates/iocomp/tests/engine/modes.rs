//! The four ways an overlapped operation reports its completion (seed 000):
//! `GetOverlappedResult`, `OVERLAPPED.hEvent`, `ReadFileEx`/`WriteFileEx`
//! completion routines, and the port — on real loopback sockets and timers.
//! Each test is named after the Win32 call it mirrors. The backend is the one
//! `IOCOMP_BACKEND` picks: CI runs this file with `epoll` and with `uring`.
//!
//! Strict mode (C18–C20 on I/O packets): every completion goes through the
//! port's queue, so the newest waiter gets the oldest completion even when
//! another thread's ring produced it, once the thread that owns it enters
//! the port.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use iocomp::{Op, Packet, Pool, Port, Recv, Send, Timeout};
use iocomp_sync::{sleep_alertable, wait_any, Event, SleepResult, Thread, WaitResult, Waitable};

use crate::harness::{pair, recv_buf, wait_until, T};

/// A port with one worker that counts the packets it gets from the port's
/// queue (mode 4): the other modes must never reach it.
struct Fixture {
    port: Port,
    pool: Pool,
    queued: Arc<AtomicUsize>,
}

impl Fixture {
    fn new() -> Fixture {
        let port = Port::builder().concurrency(2).build().unwrap();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let pool = Pool::new(&port, 1, move |_, _p: Packet| {
            q.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        Fixture { port, pool, queued }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.pool.shutdown();
    }
}

#[test]
fn get_overlapped_result_without_wait_is_incomplete_then_with_wait_returns_the_packet() {
    let f = Fixture::new();
    let (ours, mut peer) = pair();
    let h = f.port.associate(ours, 5);
    let ov = f
        .port
        .submit_waitable(Recv::new(&h, Vec::with_capacity(64)))
        .map_err(|(e, _)| e)
        .unwrap();
    // ERROR_IO_INCOMPLETE: nothing has arrived.
    assert!(ov.result(false).is_none());
    assert!(!ov.is_complete());
    peer.write_all(b"overlapped").unwrap();
    let p = ov.result(true).expect("the packet");
    assert!(p.status.is_ok());
    assert_eq!((p.key, p.bytes, p.id), (5, 10, ov.id()));
    assert!(ov.is_complete());
    assert_eq!(recv_buf(p), b"overlapped");
    // Handed out once; the port's queue never saw it.
    assert!(ov.result(true).is_none());
    assert_eq!(f.queued.load(Ordering::SeqCst), 0);
    assert_eq!(f.port.queued(), 0);
}

#[test]
fn get_overlapped_result_ex_times_out_then_cancel_io_ex_aborts() {
    let f = Fixture::new();
    let (ours, _peer) = pair();
    let h = f.port.associate(ours, 6);
    let ov = f
        .port
        .submit_waitable(Recv::new(&h, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .unwrap();
    let t0 = Instant::now();
    assert!(ov.wait(Some(Duration::from_millis(50))).is_none());
    assert!(t0.elapsed() >= Duration::from_millis(50));
    ov.cancel().unwrap();
    let p = ov.wait(T).expect("the aborted packet");
    assert!(p.is_aborted(), "{:?}", p.status);
    assert_eq!(recv_buf(p).len(), 0);
    assert_eq!(f.queued.load(Ordering::SeqCst), 0);
}

#[test]
fn get_overlapped_result_of_a_timer_from_a_thread_that_never_waits_on_the_port() {
    let f = Fixture::new();
    let t0 = Instant::now();
    let ov = f
        .port
        .submit_waitable(Timeout::new(Duration::from_millis(30), 9))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = ov.wait(T).expect("the timer's packet");
    assert!(p.status.is_ok());
    assert_eq!(p.key, 9);
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert!(matches!(p.op, Op::Timeout(_)));
}

#[test]
fn wait_for_multiple_objects_on_overlapped_events_reports_the_completed_one() {
    let f = Fixture::new();
    let (a, _pa) = pair();
    let (b, mut pb) = pair();
    let (ha, hb) = (f.port.associate(a, 1), f.port.associate(b, 2));
    let (ea, eb) = (Event::new(true, false), Event::new(true, false));
    let ova = f
        .port
        .submit_with_event(Recv::new(&ha, Vec::with_capacity(16)), &ea)
        .map_err(|(e, _)| e)
        .unwrap();
    let ovb = f
        .port
        .submit_with_event(Recv::new(&hb, Vec::with_capacity(16)), &eb)
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(
        wait_any(&[&ea, &eb], Some(Duration::from_millis(20))),
        Ok(WaitResult::TimedOut)
    );
    pb.write_all(b"second").unwrap();
    assert_eq!(wait_any(&[&ea, &eb], T), Ok(WaitResult::Signaled(1)));
    // The event is signalled only once the packet is there to take.
    let p = ovb.result(false).expect("signalled, so complete");
    assert_eq!((p.key, p.bytes), (2, 6));
    assert_eq!(recv_buf(p), b"second");
    assert!(ova.result(false).is_none());
    assert!(!ea.is_set());
    assert!(ovb.event().is_some_and(|e| e.is_set()));
    ova.cancel().unwrap();
    assert_eq!(ea.wait(T), Ok(WaitResult::Signaled(0)));
    assert!(ova.result(false).unwrap().is_aborted());
    assert_eq!(f.queued.load(Ordering::SeqCst), 0);
}

#[test]
fn write_file_resets_the_overlapped_event_when_the_operation_starts() {
    let f = Fixture::new();
    let ev = Event::new(true, true);
    let ov = f
        .port
        .submit_with_event(Timeout::new(Duration::from_millis(40), 3), &ev)
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(!ev.is_set(), "reset at submission, as Windows does");
    assert_eq!(ev.wait(T), Ok(WaitResult::Signaled(0)));
    assert!(ov.result(false).unwrap().status.is_ok());
}

#[test]
fn write_file_ex_completion_routine_runs_on_the_issuing_thread_in_sleep_ex() {
    let f = Fixture::new();
    let (ours, mut peer) = pair();
    let h = f.port.associate(ours, 8);
    let me = std::thread::current().id();
    let (tx, rx) = mpsc::channel();
    f.port
        .submit_ex(Send::new(&h, b"by routine".to_vec()), move |p| {
            tx.send((
                std::thread::current().id(),
                p.key,
                p.bytes,
                p.status.is_ok(),
            ))
            .unwrap();
        })
        .map_err(|(e, _)| e)
        .unwrap();
    let mut got = [0u8; 10];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"by routine");
    // The send is done, but the routine waits for an alertable wait.
    wait_until("the APC is queued", || {
        Thread::current().pending_apcs() == 1
    });
    assert!(rx.try_recv().is_err());
    assert_eq!(
        sleep_alertable(Duration::from_secs(20)),
        SleepResult::Alerted
    );
    assert_eq!(rx.try_recv().unwrap(), (me, 8, 10, true));
    assert_eq!(f.queued.load(Ordering::SeqCst), 0);
}

#[test]
fn read_file_ex_routines_run_in_wait_for_single_object_ex_and_get_their_buffers_back() {
    let f = Fixture::new();
    let (ours, mut peer) = pair();
    let h = f.port.associate(ours, 4);
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    f.port
        .submit_ex(Recv::new(&h, Vec::with_capacity(32)), move |p| {
            g.lock().unwrap().extend(recv_buf(p));
        })
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"apc").unwrap();
    let never = Event::new(true, false);
    assert_eq!(never.wait_alertable(T), Ok(WaitResult::Alerted));
    assert_eq!(*got.lock().unwrap(), b"apc");
}

#[test]
fn cancel_io_ex_yields_one_aborted_completion_routine() {
    let f = Fixture::new();
    let (ours, _peer) = pair();
    let h = f.port.associate(ours, 4);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let id = f
        .port
        .submit_ex(Recv::new(&h, Vec::with_capacity(32)), move |p| {
            assert!(p.is_aborted());
            r.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|(e, _)| e)
        .unwrap();
    f.port.cancel(id).unwrap();
    assert_eq!(
        sleep_alertable(Duration::from_secs(20)),
        SleepResult::Alerted
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Exactly one: nothing more arrives, here or on the port.
    assert_eq!(
        sleep_alertable(Duration::from_millis(30)),
        SleepResult::Elapsed
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(f.queued.load(Ordering::SeqCst), 0);
}

#[test]
fn read_file_ex_routine_of_an_exited_thread_is_dropped_unrun_as_on_windows() {
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let f = Fixture::new();
    let dropped = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let (port, d, r) = (f.port.clone(), dropped.clone(), ran.clone());
    let t = Thread::spawn(move || {
        let guard = Dropped(d);
        port.submit_ex(Timeout::new(Duration::from_millis(30), 1), move |_| {
            let _g = guard;
            r.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|(e, _)| e)
        .unwrap();
        0
    });
    assert_eq!(t.wait(T), Ok(WaitResult::Signaled(0)));
    wait_until("the routine is dropped", || {
        dropped.load(Ordering::SeqCst) == 1
    });
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(f.queued.load(Ordering::SeqCst), 0);
}

#[test]
fn get_queued_completion_status_still_gets_the_default_mode_alongside_the_others() {
    let f = Fixture::new();
    let ov = f
        .port
        .submit_waitable(Timeout::new(Duration::from_millis(5), 1))
        .map_err(|(e, _)| e)
        .unwrap();
    f.port
        .submit(Timeout::new(Duration::from_millis(5), 2))
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(ov.wait(T).unwrap().status.is_ok());
    wait_until("the port's packet is handled", || {
        f.queued.load(Ordering::SeqCst) == 1
    });
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(f.queued.load(Ordering::SeqCst), 1);
}

#[test]
fn overlapped_modes_need_another_thread_on_the_port_and_hand_the_op_back() {
    let port = Port::builder().concurrency(1).build().unwrap();
    // No thread at all.
    let (e, op) = port
        .submit_waitable(Timeout::new(Duration::from_millis(1), 1))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected);
    assert!(matches!(op, Op::Timeout(_)) && format!("{:?}", op.completion().unwrap()) == "Port");
    // Only the caller: it could not drive the op while blocked on it.
    port.attach().unwrap();
    let (e, _) = port
        .submit_ex(Timeout::new(Duration::from_millis(1), 1), |_| {})
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected);
    // Posted packets have no completion mode.
    let (e, _) = port.submit_waitable(Op::Posted { token: 1 }).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn a_worker_may_issue_waitable_operations_to_the_other_workers() {
    // A pool worker blocks on an Overlapped it issued: the op runs on the other
    // worker's ring, so this cannot deadlock.
    let port = Port::builder().concurrency(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let mut pool = Pool::new(&port, 2, move |port, p: Packet| {
        if p.is_posted() {
            let ov = port
                .submit_waitable(Timeout::new(Duration::from_millis(10), 7))
                .map_err(|(e, _)| e)
                .unwrap();
            let q = ov.wait(T).unwrap();
            tx.lock().unwrap().send(q.key).unwrap();
        }
    })
    .unwrap();
    port.post(0, 0, 0).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(7));
    pool.shutdown();
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
        wait_until("the waiter to park", || port.waiters() == (i + 1) as usize);
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
    wait_until("B to park", || port.waiters() == 1);
    // The timer completes in B's ring (the only parked ring gets hand-overs only
    // if it is chosen; either way the packet must wait in the queue).
    timer(&port, 7);
    wait_until("the completion to reach the queue", || port.queued() == 1);
    assert!(b_rx.try_recv().is_err(), "B was not released at the limit");
    assert_eq!(port.waiters(), 1);
    go_tx.send(()).unwrap();
    assert_eq!(
        a_rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        7,
        "the running thread takes it"
    );
    a.join().unwrap();
    wait_until("A to detach", || port.running() == 0);
    port.post(9, 0, 0).unwrap();
    assert_eq!(b_rx.recv_timeout(Duration::from_secs(20)).unwrap(), 9);
    b.join().unwrap();
}

/// Item 6: what strict mode guarantees with a busy thread. An operation's
/// completion reaches the port's queue (and so an idle thread) when the
/// thread that owns it next enters the port — here `may_run_long`, as a
/// handler about to block says — not while that thread runs user code. Once
/// there, the idle (newest) waiter takes it.
#[test]
fn strict_a_busy_threads_completion_reaches_an_idle_thread_when_it_enters_the_port() {
    let port = Port::builder().concurrency(2).strict(true).build().unwrap();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 8);
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let idle = {
        let port = port.clone();
        std::thread::spawn(move || {
            let p = port.get(T);
            let _ = got_tx.send(());
            p.map(|p| (p.key, p.bytes))
        })
    };
    while port.waiters() == 0 {
        std::thread::yield_now();
    }
    // This thread is busy (not in `get`) with a receive in its own ring.
    port.attach().unwrap();
    port.submit(Recv::new(&h, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"busy").unwrap();
    // Entering the port (here: declaring it may run long) hands what its ring
    // completed to the queue; repeated until the receive has completed.
    let start = std::time::Instant::now();
    loop {
        port.may_run_long();
        if got_rx.recv_timeout(Duration::from_millis(10)).is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never reached the idle thread"
        );
    }
    assert_eq!(idle.join().unwrap(), Ok((8, 4)));
}
