//! Helpers shared by the verification suite (`differential.rs`, `stress.rs`):
//! the backends to run, loopback socket pairs with a reader on the far side,
//! and byte patterns that make any reordering, loss or duplication visible.
//!
//! Everything here uses the public API only.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use iocomp::{Backend, Port, BACKEND_ENV};

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
