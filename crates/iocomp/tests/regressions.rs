//! Regressions of issue 14, one test per defect, through the public API only.
//! Each runs on both backends (`IOCOMP_BACKEND=uring` and `IOCOMP_BACKEND=epoll`).

use std::collections::HashSet;
use std::io::{Read, Write};

use std::time::Duration;

use iocomp::{GetError, Pool, Port, Recv, Send, Timeout};

mod support;

use support::{in_child, pair, port, recv_buf, two_cancelled_hour_timers, T};

/// Item 1: WSASend keeps the order of sends on one socket. Two large sends
/// queued back to back by one thread, with a reader slower than the sender so
/// that the first one is short at least once: the peer must receive all of the
/// first, then all of the second.
#[test]
fn sends_on_one_socket_complete_in_order() {
    let port = port();
    const N: usize = 8 * 1024 * 1024;
    for round in 0..3u8 {
        let (ours, mut peer) = pair();
        let h = port.associate(ours, 1);
        let a: Vec<u8> = (0..N).map(|i| (i % 251) as u8 ^ round).collect();
        let b: Vec<u8> = (0..N).map(|i| (i % 241) as u8 ^ 0x55).collect();
        let mut want = a.clone();
        want.extend_from_slice(&b);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::with_capacity(2 * N);
            let mut buf = vec![0u8; 128 * 1024];
            while got.len() < 2 * N {
                let n = peer.read(&mut buf).unwrap();
                assert!(n > 0, "eof after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                std::thread::sleep(Duration::from_micros(200));
            }
            got
        });
        let ia = port.submit(Send::new(&h, a)).map_err(|(e, _)| e).unwrap();
        let ib = port.submit(Send::new(&h, b)).map_err(|(e, _)| e).unwrap();
        let mut done = Vec::new();
        for _ in 0..2 {
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{:?}", p.status);
            assert_eq!(p.bytes, N as u64);
            done.push(p.id);
        }
        assert_eq!(done, vec![ia, ib], "sends complete in the order issued");
        let got = reader.join().unwrap();
        let first_bad = got.iter().zip(&want).position(|(x, y)| x != y);
        assert!(
            first_bad.is_none(),
            "round {round}: byte stream differs at {first_bad:?}"
        );
    }
}

/// Item 2: cancels handed to a pool worker are never lost. Each of two timers
/// of an hour, cancelled at once, must come back aborted (a lost wake-up
/// leaves one in flight for the hour).
#[test]
fn cancelled_waitable_operations_always_complete() {
    let port = Port::builder().concurrency(1).build().unwrap();
    let _pool = Pool::new(&port, 1, |_, _| {}).unwrap();
    for i in 0..3000 {
        let [a, b] = two_cancelled_hour_timers(&port);
        for ov in [&a, &b] {
            let p = ov
                .wait(Some(Duration::from_secs(5)))
                .unwrap_or_else(|| panic!("iteration {i}: a cancelled op never completed"));
            assert!(p.is_aborted(), "{:?}", p.status);
        }
    }
}

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

/// Item 4: a huge timeout is a documented clamp, not a panic.
#[test]
fn get_with_the_largest_timeout_does_not_panic() {
    support::queued_packets_come_back_under_the_largest_timeout(&port());
}

/// Item 4: a timer of `Duration::MAX` waits (it is clamped, the same on both
/// backends) instead of failing at once on one backend only.
#[test]
fn a_timer_of_the_largest_duration_waits_until_cancelled() {
    let port = port();
    let id = port
        .submit(Timeout::new(Duration::MAX, 7))
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(
        port.get(Some(Duration::from_millis(50))).unwrap_err(),
        GetError::TimedOut,
        "the timer must not complete at once"
    );
    port.cancel(id).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!((p.id, p.key), (id, 7));
    assert!(p.is_aborted(), "{:?}", p.status);
}

/// Item 1, continued: a send waiting behind a blocked send on its socket is
/// cancelled at once (CancelIoEx), without waiting for the one ahead of it,
/// and sent nothing.
#[test]
fn a_cancelled_send_waiting_behind_a_blocked_one_completes_at_once() {
    let port = port();
    let (ours, _peer) = pair();
    let h = port.associate(ours, 3);
    let first = port
        .submit(Send::new(&h, vec![1u8; 64 * 1024 * 1024]))
        .map_err(|(e, _)| e)
        .unwrap();
    let second = port
        .submit(Send::new(&h, b"second".to_vec()))
        .map_err(|(e, _)| e)
        .unwrap();
    port.cancel(second).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!((p.id, p.bytes), (second, 0));
    assert!(p.is_aborted(), "{:?}", p.status);
    port.cancel(first).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.id, first);
    assert!(p.is_aborted(), "{:?}", p.status);
}

/// Item 5: a thread that exits with operations in flight, on a kernel without
/// `IORING_ASYNC_CANCEL_ANY` (forced by the switch): every operation still
/// yields its packet (aborted), and every handle is closed once they are
/// dropped (the peers see end-of-file).
#[test]
fn draining_without_cancel_any_yields_every_packet_and_closes_every_handle() {
    if in_child(
        "draining_without_cancel_any_yields_every_packet_and_closes_every_handle",
        "no-cancel-any,no-msg-ring",
        Duration::from_secs(60),
    ) {
        return;
    }
    let port = Port::builder().concurrency(2).build().unwrap();
    port.attach().unwrap();
    let (r_ours, mut r_peer) = pair();
    let (s_ours, mut s_peer) = pair();
    let hr = port.associate(r_ours, 1);
    let hs = port.associate(s_ours, 2);
    let ids = {
        let port = port.clone();
        std::thread::spawn(move || {
            port.attach().unwrap();
            let mut ids = HashSet::new();
            let mut go = |op: iocomp::Op| ids.insert(port.submit(op).map_err(|(e, _)| e).unwrap());
            go(Recv::new(&hr, Vec::with_capacity(64)).into());
            go(Recv::pooled(&hr, Vec::new()).into());
            go(Timeout::new(Duration::from_secs(3600), 3).into());
            go(Send::new(&hs, vec![9u8; 64 * 1024 * 1024]).into());
            go(Send::new(&hs, b"queued".to_vec()).into());
            ids
            // The thread exits: its ring drains.
        })
        .join()
        .unwrap()
    };
    let mut got = HashSet::new();
    for _ in 0..ids.len() {
        let p = port.get(T).unwrap();
        assert!(p.is_aborted(), "{:?} {:?}", p.id, p.status);
        got.insert(p.id);
    }
    assert_eq!(got, ids);
    // Every packet, with its handle, is gone: both descriptors are closed.
    for peer in [&mut r_peer, &mut s_peer] {
        peer.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the handle was not closed: {e}"),
            }
        }
    }
    let _ = r_peer.write_all(b"x");
}

/// Item 9: with a completion queue far smaller than what is in flight (forced
/// by the switch), submitting never spins for ever on `EBUSY`: every
/// operation completes.
#[test]
fn a_full_completion_queue_does_not_stall_submission() {
    if in_child(
        "a_full_completion_queue_does_not_stall_submission",
        "small-cq",
        Duration::from_secs(60),
    ) {
        return;
    }
    let port = port();
    let n = 200;
    let mut ids = HashSet::new();
    for i in 0..n {
        let id = port
            .submit(Timeout::new(Duration::ZERO, i))
            .map_err(|(e, _)| e)
            .unwrap();
        ids.insert(id);
    }
    for _ in 0..n {
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{:?}", p.status);
        assert!(ids.remove(&p.id));
    }
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
        "a_context_dropped_by_a_closing_port_may_call_the_port",
        "",
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

/// Item 10: a transmit whose file range ends past what a file offset holds is
/// refused at submit with `InvalidInput`, and nothing else is lost.
#[test]
fn a_transmit_range_past_the_largest_offset_is_refused_at_submit() {
    let port = port();
    let (ours, _peer) = pair();
    let h = port.associate(ours, 4);
    let path = std::env::temp_dir().join(format!("iocomp-tf-range-{}", std::process::id()));
    std::fs::write(&path, b"0123456789").unwrap();
    let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    port.post(1, 0, 0).unwrap();
    for (offset, len) in [(u64::MAX - 4, 100), (u64::MAX, 1), (i64::MAX as u64, 2)] {
        let mut tf = iocomp::TransmitFile::new(&h, file.clone());
        tf.offset = offset;
        tf.len = len;
        let (e, _) = port.submit(tf).expect_err("an impossible range");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::InvalidInput,
            "{offset} {len}: {e}"
        );
    }
    let p = port.get(T).unwrap();
    assert_eq!(p.key, 1, "the posted packet is still there");
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
        "a_pool_that_fails_to_start_leaves_the_port_open",
        "",
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

/// AFD fills a stream socket's pending receives in the order they were
/// posted, and `CancelIoEx` of one of them completes it (aborted) without
/// taking bytes: the others still take the peer's bytes in order.
#[test]
fn a_cancelled_pending_receive_takes_no_bytes_and_the_others_keep_their_order() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 1);
    let submit = |op: iocomp::Op| port.submit(op).map_err(|(e, _)| e).unwrap();
    let a = submit(Recv::new(&h, Vec::with_capacity(1)).into());
    let b = submit(Recv::new(&h, Vec::with_capacity(1)).into());
    let c = submit(Recv::new(&h, Vec::with_capacity(1)).into());
    port.cancel(b).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!((p.id, p.bytes), (b, 0));
    assert!(p.is_aborted(), "{:?}", p.status);
    peer.write_all(b"12").unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{:?}", p.status);
        got.push((p.id, recv_buf(p)));
    }
    got.sort_by_key(|(id, _)| if *id == a { 0 } else { 1 });
    assert_eq!(got, vec![(a, b"1".to_vec()), (c, b"2".to_vec())]);
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

/// A misspelt `IOCOMP_URING_COMPAT` word must not quietly run the normal path
/// (a test meant for an older-kernel path would then prove nothing): building
/// a ring under it panics, naming the word.
#[test]
fn a_misspelt_uring_compat_word_is_refused_loudly() {
    const NAME: &str = "a_misspelt_uring_compat_word_is_refused_loudly";
    if std::env::var_os("IOCOMP_TEST_CHILD").is_some() {
        // The child: an io_uring port and a thread's ring under the misspelt
        // setting.
        if let Ok(port) = Port::builder().backend(iocomp::Backend::Uring).build() {
            let _ = port.attach();
            let _ = port.post(1, 0, 0);
            let _ = port.get(Some(Duration::ZERO));
        }
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
        .env("IOCOMP_TEST_CHILD", "1")
        .env("IOCOMP_URING_COMPAT", "no-cancel-anyy")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child passed:\n{text}");
    assert!(
        text.contains("unknown word \"no-cancel-anyy\""),
        "the child did not fail on the word:\n{text}"
    );
}
