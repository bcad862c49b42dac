//! Connection limits: `--max-conns` and `--max-conns-per-ip` together. One
//! address over its own limit must never keep another address out (issue 16).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::client::connect_from;
use crate::harness::{Running, Tree};

/// Reads until the server closes `s` or `within` passes; returns whether it
/// closed (EOF or a reset), and what it sent.
fn closed_within(s: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (true, got),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (false, got)
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A request for `f.txt` that asks the server to close after the reply.
const GET_F_CLOSE: &[u8] = b"GET /f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// `tree` with `f.txt` (`served\n`) served with `--max-conns 4`,
/// `--max-conns-per-ip 1` and a header timeout of a minute.
fn serve_limited(tree: &Tree) -> Running {
    tree.file("f.txt", b"served\n");
    tree.serve(|c| {
        c.max_conns = 4;
        c.max_conns_per_ip = 1;
        c.header_timeout = Duration::from_secs(60);
    })
}

#[test]
fn connections_over_the_per_address_limit_do_not_take_max_conns_slots() {
    let tree = Tree::new("limits");
    // A long header timeout: if the refused connections held `--max-conns`
    // slots until it, the second address would wait a minute.
    let running = serve_limited(&tree);
    let one = Ipv4Addr::LOCALHOST;
    // The one connection 127.0.0.1 may have, kept silent.
    let mut first = connect_from(running.addr, one);
    // Six more from the same address, silent: over its limit.
    let mut extra: Vec<TcpStream> = (0..6).map(|_| connect_from(running.addr, one)).collect();

    // Another address is served at once, not after the header timeout.
    let mut other = connect_from(running.addr, Ipv4Addr::new(127, 0, 0, 2));
    other
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    other.write_all(GET_F_CLOSE).unwrap();
    let mut resp = Vec::new();
    let res = other.read_to_end(&mut resp);
    assert!(
        res.is_ok(),
        "127.0.0.2 was kept out by 127.0.0.1's refused connections: {res:?} after {:?}",
        String::from_utf8_lossy(&resp)
    );
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.ends_with("served\n"), "{text}");

    // The refused ones are closed well before the header timeout (after a
    // short deadline of their own), without a reply since they sent nothing.
    let start = Instant::now();
    for s in &mut extra {
        let left = Duration::from_secs(30).saturating_sub(start.elapsed());
        let (closed, got) = closed_within(s, left.max(Duration::from_millis(1)));
        assert!(closed, "a refused connection was kept open");
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }

    // The connection within the limit is still open and served.
    first.write_all(GET_F_CLOSE).unwrap();
    let mut resp = Vec::new();
    first.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
}

#[test]
fn a_refused_connection_that_asks_at_once_gets_503() {
    let tree = Tree::new("limits503");
    let running = serve_limited(&tree);
    let one = Ipv4Addr::LOCALHOST;
    let _first = connect_from(running.addr, one);
    let mut second = connect_from(running.addr, one);
    second
        .write_all(b"GET /f.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (closed, got) = closed_within(&mut second, Duration::from_secs(30));
    assert!(closed, "the refused connection is closed after its answer");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("\r\nretry-after: "),
        "{text}"
    );
}

/// Reads a paced response of `total` bytes (head and body) from `s`; returns
/// when the first `burst` bytes and all of it had arrived, from the start.
fn paced_read(s: &mut impl Read, total: usize, burst: usize) -> (Duration, Duration, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::with_capacity(total);
    let mut buf = vec![0u8; 64 * 1024];
    let mut burst_at = None;
    while got.len() < total {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "cut after {} of {total} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        if burst_at.is_none() && got.len() >= burst {
            burst_at = Some(start.elapsed());
        }
    }
    (burst_at.unwrap(), start.elapsed(), got)
}

/// `--rate-limit` over TLS paces the plaintext as over plain TCP: a reply
/// sends its free burst at once and then `rate` bytes a second, no slower
/// (every byte counted once) and no faster.
#[test]
fn tls_replies_are_paced_to_the_rate_limit_and_keep_their_burst() {
    const MIB: usize = 1 << 20;
    let (size, rate, burst) = (6 * MIB, 2 * MIB, 2 * MIB);
    let tree = Tree::new("limits_tls_rate");
    let content = crate::harness::pseudo_random(7, size);
    tree.file("big.bin", &content);
    let pki = crate::harness::tls::pki(&tree);
    let (_running, addr) = crate::harness::tls::serve_tls(&tree, &pki, |c| {
        c.rate_limit = rate as u64;
        c.rate_limit_after = burst as u64;
        c.send_timeout = Duration::from_secs(30);
    });
    let mut s = crate::harness::tls::tls_connect(&pki, addr);
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.flush().unwrap();
    // The head first, to know the total.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let (burst_at, took, body) = paced_read(&mut s, size, burst - head.len() - 1);
    assert!(body == content, "the paced body differs");
    let floor = Duration::from_secs_f64((size - burst) as f64 / rate as f64);
    eprintln!("TLS paced: burst after {burst_at:?}, all after {took:?} (floor {floor:?})");
    assert!(
        took >= floor.mul_f64(0.9),
        "{took:?} is faster than the limit ({floor:?})"
    );
    // Counting bytes more than once runs 3–4 times under the rate; generous
    // for a loaded machine.
    assert!(
        took <= floor.mul_f64(1.8),
        "{took:?} is well under the rate ({floor:?})"
    );
    // The burst goes at full speed: well before the first paced second.
    assert!(
        burst_at < Duration::from_millis(900),
        "the free burst took {burst_at:?}"
    );
}
