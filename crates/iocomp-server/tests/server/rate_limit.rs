//! `rate_limit` and `rate_limit_after` (`--rate-limit`, `--rate-limit-after`)
//! pace both protocols, zero-copy bodies included: 10 MiB at 3 MiB/s after a
//! 1 MiB burst takes at least 3 s, and not much more; paced waits never
//! count as a stalled transfer; the burst is per reply. (Over TLS:
//! `limits.rs`.)

use std::time::{Duration, Instant};

use crate::harness::client::{line, read_exact_timeout, send};
use crate::harness::{assert_bytes_eq, pseudo_random, timed, Running, Tree, MIB};

const SIZE: usize = 10 * MIB;
const RATE: usize = 3 * MIB;
const BURST: usize = MIB;

fn rate_limited(tree: &Tree, content: &[u8]) -> Running {
    tree.file("big.bin", content);
    tree.serve(|c| {
        c.rate_limit = RATE as u64;
        c.rate_limit_after = BURST as u64;
        // Paced waits must never count as a stalled transfer.
        c.send_timeout = Duration::from_secs(1);
    })
}

/// Asserts a download of SIZE bytes took between (SIZE − BURST) / RATE and
/// 1.5 times that.
fn assert_paced(took: Duration, what: &str) {
    let floor = Duration::from_secs_f64((SIZE - BURST) as f64 / RATE as f64);
    assert!(
        took >= floor,
        "{what}: {took:?} is faster than the limit allows ({floor:?})"
    );
    assert!(
        took <= floor.mul_f64(1.5),
        "{what}: {took:?} is over 1.5 × the paced time ({floor:?})"
    );
}

#[test]
fn http_download_is_paced_to_the_rate_limit() {
    let _timed = timed();
    let tree = Tree::new("rate-http");
    let content = pseudo_random(9, SIZE);
    let srv = rate_limited(&tree, &content);
    let start = Instant::now();
    let r = srv.get("/big.bin", &[]);
    let took = start.elapsed();
    assert_eq!(r.status, 200);
    assert_bytes_eq(&r.body, &content, "rate-limited HTTP body");
    assert_paced(took, "HTTP");
}

#[test]
fn line_download_is_paced_to_the_rate_limit() {
    let _timed = timed();
    let tree = Tree::new("rate-line");
    let content = pseudo_random(10, SIZE);
    let srv = rate_limited(&tree, &content);
    let mut s = srv.connect();
    let start = Instant::now();
    send(&mut s, &line(b"big.bin"));
    let got = read_exact_timeout(&mut s, SIZE, Duration::from_secs(20));
    let took = start.elapsed();
    assert_bytes_eq(&got, &content, "rate-limited line-protocol file");
    assert_paced(took, "line protocol");
    // The burst is per reply: a second file on the same connection starts
    // with a fresh one, and the connection still works.
    send(&mut s, &line(b"big.bin"));
    let start = Instant::now();
    let first = read_exact_timeout(&mut s, BURST / 2, Duration::from_secs(20));
    assert!(start.elapsed() < Duration::from_millis(900));
    assert_eq!(first, content[..BURST / 2]);
}
