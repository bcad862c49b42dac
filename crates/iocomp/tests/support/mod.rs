//! Helpers shared by the engine's integration tests (`differential.rs`,
//! `stress.rs`, `ops.rs`, `modes.rs`, `backend.rs`, `regressions.rs`,
//! `review_fixes.rs`): the backends to run, ports, loopback socket pairs with a
//! reader on the far side, byte patterns that make any reordering, loss or
//! duplication visible, and a runner that repeats one test in a child process
//! with a time bound.
//!
//! Everything here uses the public API only.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use iocomp::{Backend, Op, Overlapped, Packet, Port, Timeout, BACKEND_ENV};

/// How long a test waits for one packet: generous, so that a loaded machine
/// never fails a test, while a lost packet still ends it.
pub const T: Option<Duration> = Some(Duration::from_secs(20));

/// A port of concurrency 2 on the backend `IOCOMP_BACKEND` picks, with the
/// calling thread attached.
pub fn port() -> Port {
    let p = Port::builder().concurrency(2).build().unwrap();
    p.attach().unwrap();
    p
}

/// As [`port`], on `backend` whatever the environment says.
pub fn port_on(backend: Backend) -> Port {
    let p = Port::builder()
        .concurrency(2)
        .backend(backend)
        .build()
        .unwrap();
    p.attach().unwrap();
    p
}

/// The bytes a receive's packet holds (panics on any other operation).
pub fn recv_buf(p: Packet) -> Vec<u8> {
    match p.op {
        Op::Recv(r) => r.buf,
        other => panic!("not a receive ({:?}): {other:?}", p.id),
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

/// Set in a child process that [`in_child`] started.
const CHILD: &str = "IOCOMP_TEST_CHILD";

/// Runs the test `name` again in a child process with `IOCOMP_URING_COMPAT`
/// set to `compat` (the switch is read when a ring is made, so it cannot be set
/// inside this process, whose other tests run meanwhile; `""` forces nothing,
/// for a test that runs in a child only so that a hang is bounded). Returns
/// true in the parent, which has checked that the child passed within
/// `limit` (and killed it otherwise); false in the child, which then runs the
/// body.
pub fn in_child(name: &str, compat: &str, limit: Duration) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .env("IOCOMP_URING_COMPAT", compat)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} (IOCOMP_URING_COMPAT={compat:?}) did not finish in {limit:?}: hung");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut out);
    assert!(status.success(), "child failed: {status}\n{out}");
    assert!(
        out.contains("1 passed"),
        "the child did not run the test:\n{out}"
    );
    true
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

/// A connected loopback TCP pair.
pub fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
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

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` bytes of the pattern named `seed`, from position `start`. Distinct
/// seeds give unrelated streams; no pattern repeats within a stream, so a
/// piece moved, lost or sent twice shows at the first byte that differs.
pub fn pattern(seed: u64, start: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let seed = mix(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let mut p = start;
    let end = start + len as u64;
    while p < end {
        let word = mix(seed ^ (p >> 3)).to_le_bytes();
        let from = (p & 7) as usize;
        let take = (8 - from).min((end - p) as usize);
        out.extend_from_slice(&word[from..from + take]);
        p += take as u64;
    }
    out
}

/// Reads the far side of a pair until EOF on a thread of its own; `slow`
/// reads small pieces with pauses so that big sends go out in short pieces.
pub struct Reader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
}

impl Reader {
    /// Starts reading `peer`.
    pub fn start(mut peer: TcpStream, slow: bool) -> Reader {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = vec![0u8; if slow { 16 << 10 } else { 1 << 20 }];
            let r = loop {
                match peer.read(&mut buf) {
                    Ok(0) => break Ok(all),
                    Ok(n) => {
                        all.extend_from_slice(&buf[..n]);
                        if slow {
                            thread::sleep(Duration::from_micros(50));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.send(r);
        });
        Reader { rx }
    }

    /// Everything read up to EOF, or `Err` if EOF did not come within
    /// `within` (the descriptor on our side was never closed) or the read
    /// failed.
    pub fn finish(self, within: Duration) -> Result<Vec<u8>, String> {
        self.finish_or_reset(within, false)
    }

    /// As [`finish`](Reader::finish), but a reset (our side closed with
    /// bytes unread) also counts as closed: it returns no bytes.
    pub fn finish_or_reset(self, within: Duration, reset_ok: bool) -> Result<Vec<u8>, String> {
        match self.rx.recv_timeout(within) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if reset_ok && e.kind() == std::io::ErrorKind::ConnectionReset => {
                Ok(Vec::new())
            }
            Ok(Err(e)) => Err(format!("reading the peer failed: {e}")),
            Err(_) => Err(format!(
                "no EOF on the peer within {within:?}: our side of the socket was never closed \
                 (a Handle leaked, or an operation still holds it)"
            )),
        }
    }
}

/// Writes all of `data` to `peer` (small amounts only: it must not block).
pub fn write_peer(peer: &mut TcpStream, data: &[u8]) {
    peer.write_all(data).unwrap();
}

/// Polls `f` (yielding) until it holds or `within` passes.
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
