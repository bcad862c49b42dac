//! Fixes of the adversarial review of the issue 14 engine, one test per
//! finding, through the public API only. Each runs on both backends
//! (`IOCOMP_BACKEND=uring` and `IOCOMP_BACKEND=epoll`); a test that could hang
//! runs its scenario in a child process that the parent kills after a bound.

use std::sync::mpsc;
use std::time::Duration;

use iocomp::{Port, Timeout};

mod support;

use support::in_child;

/// A context whose `Drop` calls back into the port, then says it finished.
struct Reentrant {
    port: Port,
    done: mpsc::Sender<()>,
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        let _ = self.port.post(9, 9, 9);
        let _ = self.done.send(());
    }
}

/// Finding 1: a packet handed to a parked thread just before the port is
/// closed, whose thread then leaves `get` (abandoned) and exits without
/// detaching: the packet is dropped when the thread exits, and its context's
/// `Drop`, which posts to the port, runs to the end (no deadlock on the
/// port's lock) — `CloseHandle` on a port frees what is queued, it never hangs.
#[test]
fn a_packet_handed_to_an_exiting_thread_is_dropped_without_deadlock() {
    if in_child(
        "a_packet_handed_to_an_exiting_thread_is_dropped_without_deadlock",
        "",
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
        "completions_set_aside_on_ebusy_are_delivered",
        "fake-ebusy",
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

/// Records how many threads the port says are parked in `get` while it runs.
struct CountsWaiters {
    port: Port,
    seen: mpsc::Sender<usize>,
}

impl Drop for CountsWaiters {
    fn drop(&mut self) {
        let _ = self.seen.send(self.port.waiters());
    }
}

/// Finding 3: user code that a waiting thread runs for the port (here the
/// context of a packet nobody waits for: its `Overlapped` was dropped) runs
/// while that thread is not parked — the port does not count it as a waiter
/// (it could not take a packet or start an operation handed to it then).
#[test]
fn a_waiting_thread_running_user_drop_code_is_not_parked() {
    if in_child(
        "a_waiting_thread_running_user_drop_code_is_not_parked",
        "",
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
    for round in 0..20 {
        while port.waiters() < 1 {
            std::thread::yield_now();
        }
        let (tx, rx) = mpsc::channel();
        let mut t = Timeout::new(Duration::from_millis(5), 1);
        t.ctx = Some(Box::new(CountsWaiters {
            port: port.clone(),
            seen: tx,
        }));
        // Runs on the parked worker; nobody keeps the Overlapped.
        drop(port.submit_waitable(t).map_err(|(e, _)| e).unwrap());
        let seen = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(
            seen, 0,
            "round {round}: the worker ran user code while parked"
        );
    }
    port.close();
    worker.join().unwrap();
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
        "cancels_and_wakeups_the_kernel_refused_are_retried",
        "fail-control-push",
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
