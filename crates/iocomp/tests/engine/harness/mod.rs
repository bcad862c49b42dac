//! The one harness of the engine's integration tests: the backends to run,
//! ports, packets, waits with a bound, a watchdog (this file); loopback sockets,
//! pipes and peers ([`net`]); temporary files ([`files`]); the seeded
//! generators ([`rng`]); and the bounded child-process runner ([`child`]) for
//! the tests that must be alone in their process.
//!
//! Everything here uses the public API only.

pub mod child;
pub mod files;
pub mod net;
pub mod rng;

pub(crate) use child::test_name;
pub use child::{in_child, in_limited_child, is_child, Child};
pub use files::{rw, TempDir, TempFile};
pub use net::*;
pub use rng::{pattern, Rng};

use std::sync::{mpsc, Mutex, MutexGuard, Once};
use std::thread;
use std::time::{Duration, Instant};

use iocomp::{Backend, GetError, Op, OpId, Overlapped, Packet, Port, Timeout, BACKEND_ENV};

/// How long a test waits for one packet: generous, so that a loaded machine
/// never fails a test, while a lost packet still ends it.
pub const T: Option<Duration> = Some(Duration::from_secs(30));

/// A port of concurrency 2 on the backend `IOCOMP_BACKEND` picks, with the
/// calling thread attached.
pub fn port() -> Port {
    raise_nofile();
    let p = Port::builder().concurrency(2).build().unwrap();
    p.attach().unwrap();
    p
}

/// As [`port`], on `backend` whatever the environment says (checked).
pub fn port_on(backend: Backend) -> Port {
    raise_nofile();
    let p = Port::builder()
        .concurrency(2)
        .backend(backend)
        .build()
        .unwrap();
    assert_eq!(p.backend(), backend);
    p.attach().unwrap();
    p
}

/// Raises this process's soft descriptor limit to its hard limit, once: the
/// tests share one descriptor table, and a soft limit of 1024 (a common
/// default) is too small for them all at once. A limit that a test's child
/// sets itself (`ulimit -n`, soft and hard) stays as it is.
pub fn raise_nofile() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into a live local.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            // SAFETY: setrlimit reads one rlimit from a live local. Best
            // effort: where it fails, the limit stays as it was.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        }
    });
}

/// The backends a verification test must run: both, always. Where io_uring
/// cannot be set up the test fails loudly, unless `IOCOMP_BACKEND=epoll` says
/// that this machine runs the epoll half only.
pub fn backends() -> Vec<Backend> {
    match Port::builder().backend(Backend::Uring).build() {
        Ok(port) => {
            assert_eq!(port.backend(), Backend::Uring);
            vec![Backend::Uring, Backend::Epoll]
        }
        Err(e) => {
            if std::env::var(BACKEND_ENV).as_deref() == Ok("epoll") {
                eprintln!(
                    "io_uring is unavailable ({e}); {BACKEND_ENV}=epoll: running the epoll backend only"
                );
                vec![Backend::Epoll]
            } else {
                panic!(
                    "io_uring is unavailable ({e}): this suite runs both backends; \
                     set {BACKEND_ENV}=epoll to run the epoll half only"
                )
            }
        }
    }
}

/// Submits `op`, which must be accepted; its id.
pub fn submit(port: &Port, op: impl Into<Op>) -> OpId {
    port.submit(op).map_err(|(e, _)| e).unwrap()
}

/// The next packet, which must be the one of `id`.
pub fn one(port: &Port, id: OpId) -> Packet {
    let p = port.get(T).unwrap();
    assert_eq!(p.id, id, "a packet of another operation");
    p
}

/// Waits for the packets of `ids`, in any order; returns them in the order of `ids`.
pub fn collect(port: &Port, ids: &[OpId]) -> Vec<Packet> {
    let mut got: Vec<Option<Packet>> = ids.iter().map(|_| None).collect();
    for _ in 0..ids.len() {
        let p = port.get(T).unwrap();
        let i = ids
            .iter()
            .position(|&id| id == p.id)
            .expect("a packet of no op of this test");
        assert!(got[i].is_none(), "two packets for one op");
        got[i] = Some(p);
    }
    got.into_iter().map(Option::unwrap).collect()
}

/// No packet comes within `within`; `why` says what one would mean.
pub fn no_packet(port: &Port, within: Duration, why: &str) {
    assert_eq!(
        port.get(Some(within)).unwrap_err(),
        GetError::TimedOut,
        "{why}"
    );
}

/// The bytes a receive's packet holds (panics on any other operation).
pub fn recv_buf(p: Packet) -> Vec<u8> {
    match p.op {
        Op::Recv(r) => r.buf,
        other => panic!("not a receive ({:?}): {other:?}", p.id),
    }
}

/// The token of a posted packet (panics on any other).
pub fn token(p: &Packet) -> u64 {
    match p.op {
        Op::Posted { token } => token,
        _ => panic!("not a posted packet: {:?}", p.op),
    }
}

/// Two waitable timers of an hour (keys 1 and 2), submitted and at once
/// cancelled: each must still complete, aborted.
pub fn two_cancelled_hour_timers(port: &Port) -> [Overlapped; 2] {
    let submit = |key| {
        port.submit_waitable(Timeout::new(Duration::from_secs(3600), key))
            .map_err(|(e, _)| e)
            .unwrap()
    };
    let (a, b) = (submit(1), submit(2));
    a.cancel().unwrap();
    b.cancel().unwrap();
    [a, b]
}

/// With packets queued, `get` and `get_many` with `Duration::MAX` (clamped,
/// not a panic) return them at once.
pub fn queued_packets_come_back_under_the_largest_timeout(port: &Port) {
    port.post(1, 2, 3).unwrap();
    let p = port.get(Some(Duration::MAX)).unwrap();
    assert_eq!((p.key, p.bytes), (1, 2));
    port.post(4, 5, 6).unwrap();
    let mut out = Vec::new();
    assert_eq!(port.get_many(&mut out, 4, Some(Duration::MAX)), Ok(1));
    assert_eq!(out[0].key, 4);
}

/// Environment variable `name` as a number, or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

/// Locks `m`, also when a panicking thread left it poisoned: the test then
/// reports that thread's failure, not the poison.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `f` (yielding) until it holds or `within` passes; whether it held.
pub fn until(within: Duration, f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > within {
            return false;
        }
        thread::yield_now();
    }
    true
}

/// Polls `f` (yielding) until it holds; fails the test, naming `what`, after 20 s.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting until {what}"
        );
        thread::yield_now();
    }
}

/// Ends the whole test process if it is not dropped within `limit`: a call
/// into the engine that never returns would otherwise hang the suite. The
/// message says what hung.
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    /// Starts watching `what`.
    pub fn new(what: impl Into<String>, limit: Duration) -> Watchdog {
        let what = what.into();
        let (tx, rx) = mpsc::channel::<()>();
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("HUNG: {what} did not finish within {limit:?}; ending the test process");
                std::process::exit(101);
            }
        });
        Watchdog { done: Some(tx) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}
