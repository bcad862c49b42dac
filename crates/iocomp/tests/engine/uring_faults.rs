//! The io_uring backend on kernels that lack a feature or refuse a request,
//! forced with `IOCOMP_URING_COMPAT` (read once per process, so each test
//! runs alone in a child process with the setting): draining a thread's ring
//! without `IORING_ASYNC_CANCEL_ANY`, a completion queue far smaller than
//! what is in flight, completions set aside on `EBUSY`, cancels and wake-ups
//! the kernel refused; and a misspelt setting refused loudly.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use iocomp::{Port, Recv, Send, Timeout};

use crate::harness::{in_child, is_child, pair, port, test_name, Child, T};

/// Item 5: a thread that exits with operations in flight, on a kernel without
/// `IORING_ASYNC_CANCEL_ANY` (forced by the switch): every operation still
/// yields its packet (aborted), and every handle is closed once they are
/// dropped (the peers see end-of-file).
#[test]
fn draining_without_cancel_any_yields_every_packet_and_closes_every_handle() {
    if in_child(
        &test_name!(draining_without_cancel_any_yields_every_packet_and_closes_every_handle),
        &[("IOCOMP_URING_COMPAT", "no-cancel-any,no-msg-ring")],
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
        &test_name!(a_full_completion_queue_does_not_stall_submission),
        &[("IOCOMP_URING_COMPAT", "small-cq")],
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

/// A misspelt `IOCOMP_URING_COMPAT` word must not quietly run the normal path
/// (a test meant for an older-kernel path would then prove nothing): building
/// a ring under it panics, naming the word.
#[test]
fn a_misspelt_uring_compat_word_is_refused_loudly() {
    if is_child() {
        // The child: an io_uring port and a thread's ring under the misspelt
        // setting.
        if let Ok(port) = Port::builder().backend(iocomp::Backend::Uring).build() {
            let _ = port.attach();
            let _ = port.post(1, 0, 0);
            let _ = port.get(Some(Duration::ZERO));
        }
        return;
    }
    let out = Child::test(&test_name!(a_misspelt_uring_compat_word_is_refused_loudly))
        .env("IOCOMP_URING_COMPAT", "no-cancel-anyy")
        .run();
    let text = out.all();
    assert!(!out.status.success(), "the child passed:\n{text}");
    assert!(
        text.contains("unknown word \"no-cancel-anyy\""),
        "the child did not fail on the word:\n{text}"
    );
}

/// Finding 2: completions the io_uring backend took off a full completion
/// queue to make room (the kernel answered `EBUSY`, forced here every other
/// push by `IOCOMP_URING_COMPAT=fake-ebusy`) are still delivered: a thread
/// never sleeps on them. Operations are handed over by a thread that does not
/// wait on the port (each wakes the parked worker, which submits it) and
/// issued by the worker itself; every one yields its packet. (On epoll the
/// switch does nothing and this is a plain hand-over test.)
#[test]
fn completions_set_aside_on_ebusy_are_delivered() {
    if in_child(
        &test_name!(completions_set_aside_on_ebusy_are_delivered),
        &[("IOCOMP_URING_COMPAT", "fake-ebusy")],
        Duration::from_secs(90),
    ) {
        return;
    }
    let port = Port::builder().concurrency(2).build().unwrap();
    let n = 200u64;
    let (tx, rx) = mpsc::channel();
    let worker = {
        let port = port.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                // No timeout: a thread asleep on completions it already
                // holds would sleep forever (caught by the main thread).
                let p = port.get(None);
                let p = p.unwrap_or_else(|e| panic!("packet {i}: {e:?}"));
                assert!(p.status.is_ok(), "{:?}", p.status);
                if p.key == 1 {
                    // Issued on the worker: goes to its own ring.
                    port.submit(Timeout::new(Duration::from_millis(1), 2))
                        .map_err(|(e, _)| e)
                        .unwrap();
                }
                tx.send(p.key).unwrap();
            }
        })
    };
    let mut keys = Vec::new();
    for _ in 0..n / 2 {
        while port.waiters() < 1 {
            std::thread::yield_now();
        }
        port.submit(Timeout::new(Duration::from_millis(1), 1))
            .map_err(|(e, _)| e)
            .unwrap();
        for _ in 0..2 {
            // Generous: a stall waits forever, a slow machine does not.
            let key = rx.recv_timeout(Duration::from_secs(20));
            keys.push(key.expect("a packet never came: the worker sleeps on it"));
        }
    }
    worker.join().unwrap();
    assert_eq!(keys.iter().filter(|&&k| k == 1).count() as u64, n / 2);
    assert_eq!(keys.iter().filter(|&&k| k == 2).count() as u64, n / 2);
}

/// Finding 6: a cancel the port accepted, or a wake-up, is not lost when the
/// kernel refuses the request once (`IOCOMP_URING_COMPAT=fail-control-push`
/// refuses every other wake-up read and cancel request on io_uring; on epoll
/// the switch does nothing). Long timers handed to a parked worker are
/// cancelled by a thread that does not wait on the port (`CancelIoEx`): each
/// still completes, aborted, and each new hand-over still wakes the worker.
#[test]
fn cancels_and_wakeups_the_kernel_refused_are_retried() {
    if in_child(
        &test_name!(cancels_and_wakeups_the_kernel_refused_are_retried),
        &[("IOCOMP_URING_COMPAT", "fail-control-push")],
        Duration::from_secs(90),
    ) {
        return;
    }
    let port = Port::builder().concurrency(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let worker = {
        let port = port.clone();
        std::thread::spawn(move || {
            while let Ok(p) = port.get(None) {
                tx.send(p).unwrap();
            }
        })
    };
    for round in 0..20 {
        while port.waiters() < 1 {
            std::thread::yield_now();
        }
        let id = port
            .submit(Timeout::new(Duration::from_secs(3600), round))
            .map_err(|(e, _)| e)
            .unwrap();
        // Most likely started by the worker by now (in the kernel): the
        // cancel is then a request to the kernel.
        std::thread::sleep(Duration::from_millis(10));
        port.cancel(id).unwrap();
        // Generous: the only failure is "never".
        let p = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("round {round}: the cancelled timer never completed"));
        assert_eq!(p.id, id);
        assert!(p.is_aborted(), "round {round}: {:?}", p.status);
    }
    port.close();
    worker.join().unwrap();
}
