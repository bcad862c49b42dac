//! Threads, pools and user code inside the engine: ids stay unique across
//! detach and new threads; a socket used by a thread that exited serves
//! others; a packet handed to a thread that exits, or dropped by a closing
//! port or a pool worker, runs its context's `Drop` (which may call the port)
//! without deadlock; a waiting thread running user `Drop` code is not
//! counted as parked; a pool dropped from its own handler shuts down, and
//! one that fails to start leaves the port open. A test that could hang runs
//! in a child process that the parent kills after a bound.

use std::collections::HashSet;
use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use iocomp::{GetError, Pool, Port, Recv, Timeout};

use crate::harness::{in_child, pair, port, recv_buf, test_name, T};

/// Item 3: an id names one operation for the life of the port, even when the
/// thread that issued it detached and a new thread took its place.
#[test]
fn op_ids_are_never_reused_after_a_thread_detaches() {
    let port = Port::builder().concurrency(2).build().unwrap();
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let port2 = port.clone();
        let ids = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for _ in 0..3 {
                let id = port2
                    .submit(Timeout::new(Duration::from_secs(3600), 0))
                    .or_else(|_| {
                        port2.attach().unwrap();
                        port2.submit(Timeout::new(Duration::from_secs(3600), 0))
                    })
                    .map_err(|(e, _)| e)
                    .unwrap();
                port2.cancel(id).unwrap();
                let p = port2.get(T).unwrap();
                assert_eq!(p.id, id);
                ids.push(id);
            }
            port2.detach();
            ids
        })
        .join()
        .unwrap();
        for id in ids {
            assert!(seen.insert(id), "{id:?} was handed out twice");
        }
    }
}

/// A socket whose receive was in flight on a thread that then exited (its
/// operation aborted) takes new receives from another thread: the order
/// kept across threads does not tie the socket to the gone thread.
#[test]
fn a_socket_used_by_an_exited_thread_takes_receives_from_another() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 1);
    let gone = {
        let (port, h) = (port.clone(), h.clone());
        std::thread::spawn(move || {
            port.attach().unwrap();
            port.submit(Recv::new(&h, Vec::with_capacity(8)))
                .map_err(|(e, _)| e)
                .unwrap()
            // The thread exits: its ring drains, the receive is aborted.
        })
        .join()
        .unwrap()
    };
    let p = port.get(T).unwrap();
    assert_eq!(p.id, gone);
    assert!(p.is_aborted(), "{:?}", p.status);
    // From a thread that is not attached (handed over), then from this one.
    let handed = {
        let (port, h) = (port.clone(), h.clone());
        std::thread::spawn(move || {
            port.submit(Recv::new(&h, Vec::with_capacity(1)))
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .join()
        .unwrap()
    };
    let own = port
        .submit(Recv::new(&h, Vec::with_capacity(1)))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"ab").unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{:?}", p.status);
        got.push((p.id, recv_buf(p)));
    }
    got.sort_by_key(|(id, _)| if *id == handed { 0 } else { 1 });
    assert_eq!(got, vec![(handed, b"a".to_vec()), (own, b"b".to_vec())]);
}

/// A context whose `Drop` calls back into the port: posts, submits, polls.
/// It records that it ran to the end.
struct Reentrant {
    port: Port,
    done: std::sync::mpsc::Sender<()>,
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        let _ = self.port.post(9, 9, 9);
        let _ = self
            .port
            .submit(Timeout::new(Duration::from_millis(1), 9))
            .map(|id| self.port.cancel(id));
        let _ = self.port.get(Some(Duration::ZERO));
        let _ = self.done.send(());
    }
}

/// Item 7: a packet dropped by the port itself (the port closed while the
/// packet waited in a thread's own queue) runs the context's `Drop` outside
/// every engine lock and borrow: it may post, submit and call `get`.
#[test]
fn a_context_dropped_by_a_closing_port_may_call_the_port() {
    // In a child process: a deadlocked Drop holds engine locks that the
    // unwinding test would then wait for, so a regression would hang the
    // whole run instead of failing this test.
    if in_child(
        &test_name!(a_context_dropped_by_a_closing_port_may_call_the_port),
        &[],
        Duration::from_secs(60),
    ) {
        return;
    }
    let port = port();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = {
        let port = port.clone();
        std::thread::spawn(move || {
            port.attach().unwrap();
            let mut t = Timeout::new(Duration::ZERO, 1);
            t.ctx = Some(Box::new(Reentrant {
                port: port.clone(),
                done: tx,
            }));
            port.submit(t).map_err(|(e, _)| e).unwrap();
            // Let the timer complete in the ring, then close before reaping.
            std::thread::sleep(Duration::from_millis(50));
            port.close();
            port.get(T).map(|p| p.key)
        })
    };
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the context's Drop never finished (deadlock)");
    assert!(matches!(worker.join().unwrap(), Err(GetError::Abandoned)));
}

/// Item 7: the packet of an operation whose `Overlapped` was dropped is
/// dropped by the pool worker that completes it; its context's `Drop` may
/// call the port, and the worker goes on serving.
#[test]
fn a_context_dropped_on_a_pool_worker_may_call_the_port() {
    let port = Port::builder().concurrency(1).build().unwrap();
    let (htx, hrx) = std::sync::mpsc::channel();
    let htx = std::sync::Mutex::new(htx);
    let pool = Pool::new(&port, 1, move |_, p| {
        let _ = htx.lock().unwrap().send(p.key);
    })
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut t = Timeout::new(Duration::from_millis(10), 1);
    t.ctx = Some(Box::new(Reentrant {
        port: port.clone(),
        done: tx,
    }));
    drop(port.submit_waitable(t).map_err(|(e, _)| e).unwrap());
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        // A stuck or dead worker cannot be joined: leave the pool behind.
        std::mem::forget(pool);
        panic!("the context's Drop never finished");
    }
    // The worker is alive: a posted packet reaches the handler.
    port.post(77, 0, 0).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match hrx.recv_timeout(left) {
            Ok(77) => break,
            Ok(_) => continue,
            Err(e) => {
                std::mem::forget(pool);
                panic!("the worker no longer serves: {e}");
            }
        }
    }
}

/// Item 8: a pool dropped from its own handler (the last reference) shuts
/// down without joining the thread it runs on: no deadlock, no panic.
#[test]
fn a_pool_dropped_from_its_own_handler_shuts_down() {
    let port = Port::builder().concurrency(2).build().unwrap();
    let slot: std::sync::Arc<std::sync::Mutex<Option<Pool>>> = Default::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let pool = {
        let slot = slot.clone();
        Pool::new(&port, 2, move |_, _| {
            let pool = slot.lock().unwrap().take();
            drop(pool);
            let _ = tx.lock().unwrap().send(());
        })
        .unwrap()
    };
    *slot.lock().unwrap() = Some(pool);
    port.post(1, 0, 0).unwrap();
    rx.recv_timeout(Duration::from_secs(20))
        .expect("dropping the pool from its handler never returned");
    assert!(port.is_closed(), "shutdown closes the port");
}

/// Item 8: `Pool::new` failing half-way (here: out of descriptors for the
/// workers' rings) reports the error and leaves the caller's port open.
#[test]
fn a_pool_that_fails_to_start_leaves_the_port_open() {
    if in_child(
        &test_name!(a_pool_that_fails_to_start_leaves_the_port_open),
        &[],
        Duration::from_secs(60),
    ) {
        return;
    }
    let port = Port::builder().concurrency(2).build().unwrap();
    port.attach().unwrap();
    // Few descriptors: some workers get a ring, the others cannot.
    let lim = libc::rlimit {
        rlim_cur: 48,
        rlim_max: 48,
    };
    // SAFETY: setrlimit with a valid resource and a live local.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let r = Pool::new(&port, 100, |_, _| {});
    assert!(r.is_err(), "100 rings cannot fit in 48 descriptors");
    assert!(!port.is_closed(), "the caller's port was closed");
    port.post(5, 6, 7).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!((p.key, p.bytes), (5, 6));
}

/// Finding 1: a packet handed to a parked thread just before the port is
/// closed, whose thread then leaves `get` (abandoned) and exits without
/// detaching: the packet is dropped when the thread exits, and its context's
/// `Drop`, which posts to the port, runs to the end (no deadlock on the
/// port's lock) — `CloseHandle` on a port frees what is queued, it never hangs.
#[test]
fn a_packet_handed_to_an_exiting_thread_is_dropped_without_deadlock() {
    if in_child(
        &test_name!(a_packet_handed_to_an_exiting_thread_is_dropped_without_deadlock),
        &[],
        Duration::from_secs(60),
    ) {
        return;
    }
    for round in 0..100 {
        let port = Port::builder().concurrency(4).build().unwrap();
        let parked = {
            let port = port.clone();
            std::thread::spawn(move || port.get(None).is_err())
        };
        while port.waiters() < 1 {
            std::thread::yield_now();
        }
        let (tx, rx) = mpsc::channel();
        port.attach().unwrap();
        let mut t = Timeout::new(Duration::ZERO, 1);
        t.ctx = Some(Box::new(Reentrant {
            port: port.clone(),
            done: tx,
        }));
        port.submit(t).map_err(|(e, _)| e).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        // Reaps this thread's ring, queues the packet, hands it to the parked
        // thread... then closes the port before that thread takes it.
        port.blocking(|| port.close());
        assert!(
            rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "round {round}: the context's Drop never finished (deadlock at thread exit)"
        );
        // Either the thread took the packet before the close (Ok) or it was
        // abandoned; both are fine, it must only have returned.
        let _ = parked.join().unwrap();
        port.detach();
    }
}

/// Records how many threads the port says are parked in `get` while it
/// runs, and whether it runs on the thread that made it.
struct CountsWaiters {
    port: Port,
    maker: thread::ThreadId,
    seen: mpsc::Sender<(usize, bool)>,
}

impl Drop for CountsWaiters {
    fn drop(&mut self) {
        let on_maker = thread::current().id() == self.maker;
        let _ = self.seen.send((self.port.waiters(), on_maker));
    }
}

/// Finding 3: user code that a waiting thread runs for the port (here the
/// context of a packet nobody waits for: its `Overlapped` was dropped) runs
/// while that thread is not parked — the port does not count it as a waiter
/// (it could not take a packet or start an operation handed to it then).
#[test]
fn a_waiting_thread_running_user_drop_code_is_not_parked() {
    if in_child(
        &test_name!(a_waiting_thread_running_user_drop_code_is_not_parked),
        &[],
        Duration::from_secs(60),
    ) {
        return;
    }
    let port = Port::builder().concurrency(2).build().unwrap();
    let worker = {
        let port = port.clone();
        std::thread::spawn(move || {
            // Returns when the port is closed.
            while port.get(None).is_ok() {}
        })
    };
    // 20 rounds where the worker ran the context's Drop. (Where this thread
    // was descheduled past the timer, the packet completed while the
    // Overlapped was still held, and dropping it here ran the Drop on this
    // thread, while the worker rightly was parked: such a round says
    // nothing and is run again.)
    let (mut round, mut tries) = (0, 0);
    while round < 20 && tries < 400 {
        tries += 1;
        while port.waiters() < 1 {
            std::thread::yield_now();
        }
        let (tx, rx) = mpsc::channel();
        let mut t = Timeout::new(Duration::from_millis(5), 1);
        t.ctx = Some(Box::new(CountsWaiters {
            port: port.clone(),
            maker: thread::current().id(),
            seen: tx,
        }));
        // Runs on the parked worker; nobody keeps the Overlapped.
        drop(port.submit_waitable(t).map_err(|(e, _)| e).unwrap());
        let (seen, on_maker) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        if on_maker {
            eprintln!("try {tries}: the Drop ran on this thread; again");
            continue;
        }
        assert_eq!(
            seen, 0,
            "round {round}: the worker ran user code while parked"
        );
        round += 1;
    }
    assert_eq!(
        round, 20,
        "the worker ran the context's Drop in {round} of {tries} tries"
    );
    port.close();
    worker.join().unwrap();
}

/// Pooled receives (`Recv::pooled`) submitted by a thread that never waits
/// on the port, each with an empty buffer that has room, and completed by
/// the thread that waits: the packets bring those buffers back (the
/// submitting thread keeps none of them, the waiting one allocates none).
#[test]
fn pooled_receives_submitted_by_a_thread_that_never_waits_come_back_in_its_buffers() {
    use crate::harness::{backends, port_on};
    use std::sync::{Arc, Barrier, Mutex};
    for b in backends() {
        let port = port_on(b);
        let n = 20;
        let mut conns = Vec::new();
        for i in 0..n {
            let (ours, peer) = pair();
            conns.push((port.associate(ours, i), peer));
        }
        let handles: Vec<_> = conns.iter().map(|(h, _)| h.clone()).collect();
        let given = Arc::new(Mutex::new(Vec::new()));
        let steps = Arc::new(Barrier::new(2));
        let submitter = {
            let (port, given, steps) = (port.clone(), given.clone(), steps.clone());
            thread::spawn(move || {
                for h in &handles {
                    let mut buf = vec![b'S'; 100];
                    buf.clear();
                    given.lock().unwrap().push(buf.as_ptr() as usize);
                    port.submit(Recv::pooled(h, buf))
                        .map_err(|(e, _)| e)
                        .unwrap();
                }
                steps.wait();
                // Alive (with whatever it kept) until the packets are in.
                steps.wait();
            })
        };
        steps.wait();
        for (_, peer) in conns.iter_mut() {
            peer.write_all(b"data").unwrap();
        }
        let mut back = HashSet::new();
        for _ in 0..n {
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
            let iocomp::Op::Recv(r) = p.op else {
                panic!("not a Recv")
            };
            assert_eq!(r.buf, b"data", "{b:?}");
            back.insert(r.buf.as_ptr() as usize);
        }
        steps.wait();
        submitter.join().unwrap();
        let given: HashSet<usize> = given.lock().unwrap().iter().copied().collect();
        assert_eq!(
            back, given,
            "{b:?}: the packets came back in other allocations than the submitter's buffers"
        );
    }
}
