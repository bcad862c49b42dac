//! Connection limits: `max_conns` pauses accepting until a slot frees;
//! `max_conns_per_ip` refuses only the extra connections of one address
//! (503 or `busy`), and with `max_conns` together, one address over its own
//! limit never keeps another out (issue 16). Rate limits over TLS.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::client::{
    closed_within, connect_from, expect_bytes, line, read_exact_timeout, read_to_end_timeout, send,
    status_of,
};
use crate::harness::{error_line, show, timed, Running, Tree};

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

/// Waits (bounded) until the server has counted `n` connections in: those
/// accepted within their address's limit (refused ones are not counted).
fn assert_counted(running: &Running, n: usize) {
    assert!(
        running.wait_connections(n, Duration::from_secs(20)),
        "the server counts {} connections, not {n}",
        running.connections()
    );
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
    // Counted before the others connect: which of two connections from one
    // address the server counts first is the order it handles their accepts
    // in (each worker has its own accept), not the order they connected in.
    assert_counted(&running, 1);
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
    // Counted before the second connects (see above): otherwise the second
    // may take the address's one slot and be served 200 under keep-alive.
    assert_counted(&running, 1);
    let mut second = connect_from(running.addr, one);
    second
        .write_all(b"GET /f.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (closed, got) = closed_within(&mut second, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&got);
    assert!(
        closed,
        "the refused connection is closed after its answer; it got {text:?}"
    );
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
    let _timed = crate::harness::timed();
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

const OK_CONTENT: &[u8] = b"ok.txt: a small file for the limit tests\n";

#[test]
fn max_conns_pauses_accepting_until_a_slot_frees() {
    const MAX: usize = 4;
    const THREADS: usize = 1; // one listener, one thread: overshoot at most 1
    let _timed = timed();
    let tree = Tree::new("maxconns");
    tree.file("ok.txt", OK_CONTENT);
    let srv = tree.serve(|c| {
        c.max_conns = MAX;
        c.threads = THREADS;
    });
    // MAX live connections, each proven accepted by a served request.
    let mut live: Vec<TcpStream> = (0..MAX)
        .map(|i| {
            let mut s = srv.connect();
            send(&mut s, b"ok.txt\n");
            expect_bytes(&mut s, OK_CONTENT, &format!("live connection {i}"));
            s
        })
        .collect();
    // Two more (the 5th and 6th) ask for a file; at most MAX + THREADS
    // connections may be served, and the backlog is FIFO, so the 6th must wait.
    let mut waiting: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = srv.connect();
            send(&mut s, b"ok.txt\n");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let answered: Vec<bool> = waiting
        .iter()
        .map(|s| {
            s.set_nonblocking(true).unwrap();
            let a = matches!(s.peek(&mut [0u8; 1]), Ok(n) if n > 0);
            s.set_nonblocking(false).unwrap();
            a
        })
        .collect();
    assert!(
        answered.iter().filter(|&&a| a).count() <= THREADS,
        "with max_conns {MAX} and {MAX} live connections, both extra connections were served within 1 s"
    );
    assert!(
        !answered[1],
        "the 6th connection was served within 1 s although {MAX} connections (max {MAX}) were open"
    );
    // The live ones are still open (and usable).
    send(&mut live[3], b"ok.txt\n");
    expect_bytes(&mut live[3], OK_CONTENT, "live connection still served");
    // Free two slots: the waiting ones are served promptly.
    drop(live.drain(..2));
    let t0 = Instant::now();
    for (i, s) in waiting.iter_mut().enumerate() {
        expect_bytes(
            s,
            OK_CONTENT,
            &format!("waiting connection {} after slots freed", i + 5),
        );
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "waiting connections served only {took:?} after two slots freed"
    );
}

#[test]
fn max_conns_per_ip_refuses_the_extra_ones_only() {
    let tree = Tree::new("perip");
    tree.file("small.txt", b"per ip\n");
    let srv = tree.serve(|c| {
        c.max_conns_per_ip = 2;
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    });
    let (addr, local) = (srv.addr, Ipv4Addr::LOCALHOST);
    let served = |s: &mut TcpStream| {
        send(s, &line(b"small.txt"));
        read_exact_timeout(s, 7, Duration::from_secs(10))
    };
    let mut a = connect_from(addr, local);
    let mut b = connect_from(addr, local);
    // Both are served, so the server has counted them before the third.
    for s in [&mut a, &mut b] {
        assert_eq!(served(s), b"per ip\n");
    }
    // The third from the same address: HTTP gets 503 with Retry-After.
    let mut c = connect_from(addr, local);
    send(&mut c, b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = read_to_end_timeout(&mut c, Duration::from_secs(10));
    assert_eq!(status_of(&resp), 503, "{}", show(&resp));
    let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    assert!(text.contains("\r\nretry-after: 1\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    // ... and the line protocol gets the busy line; both are closed.
    let mut d = connect_from(addr, local);
    send(&mut d, &line(b"small.txt"));
    let got = read_to_end_timeout(&mut d, Duration::from_secs(10));
    assert_eq!(got, error_line("busy"));
    // Another address is not disturbed, nor are the two connections in.
    assert_eq!(
        served(&mut connect_from(addr, Ipv4Addr::new(127, 0, 0, 2))),
        b"per ip\n"
    );
    assert_eq!(served(&mut a), b"per ip\n");
    // Once one closes, the address may connect again.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = served(&mut connect_from(addr, local));
        if got == b"per ip\n" {
            break;
        }
        assert_eq!(got, &error_line("busy")[..7]);
        assert!(
            Instant::now() < deadline,
            "the closed connection was never counted out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = String::from_utf8_lossy(&srv.admin().get("/metrics", &[]).body).into_owned();
    let refused = text
        .lines()
        .find_map(|l| l.strip_prefix("iocomp_errors_total{kind=\"per_ip_limit\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 2.0, "{text}");
}
