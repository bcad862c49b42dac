//! Timeouts: the header timeout cuts a silent client, a partial head and a
//! line that never ends (however it trickles); the idle timeout a keep-alive
//! connection between requests; the send timeout a client that stops
//! reading, never one that reads slowly but keeps moving. A client that has
//! not yet sent a complete request (a fresh connection, one lingering after
//! the server's half-close) gets the short header timeout, not the idle one.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::client::{
    connect_with_rcvbuf, expect_bytes, read_until_closed, req, send, wait_closed, End,
};
use crate::harness::{
    assert_bytes_eq, assert_fds_back_to, check_chunk, fd_count, fd_listing, isolated, poll_until,
    pseudo_random, show, timed, Client, Running, Tree, IO_TIMEOUT, KIB, MIB,
};

/// A server with a short header timeout and a long idle one.
fn serve(t: &Tree) -> Running {
    t.file("f.txt", b"body\n");
    t.serve(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(120);
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    })
}

#[test]
fn a_lingering_close_waits_under_the_header_timeout() {
    let t = Tree::new("linger");
    let srv = serve(&t);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    assert!(
        resp.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert!(resp.ends_with(b"body\n"));
    // The server half-closed and lingers reading what we might still send;
    // we neither send nor close.
    srv.assert_all_closed("a lingering connection (header timeout 1 s, idle 120 s)");
    drop(s);
}

#[test]
fn a_silent_connection_to_the_metrics_listener_waits_under_the_header_timeout() {
    let t = Tree::new("adminwait");
    let srv = serve(&t);
    let s = TcpStream::connect(srv.metrics_addr()).unwrap();
    let start = Instant::now();
    while srv.connections() == 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(srv.connections(), 1, "the connection was accepted");
    srv.assert_all_closed("a silent metrics connection (header timeout 1 s, idle 120 s)");
    drop(s);
}

const OK_CONTENT: &[u8] = b"ok.txt: a small file for the timeout tests\n";

/// Waits (at most `limit`) for the server to close `c`; returns the time it
/// took and any bytes it sent first.
fn time_to_close(c: &mut Client, limit: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    c.stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = std::mem::take(&mut c.buf);
    let mut chunk = [0u8; 4096];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the connection was not closed within {limit:?}; got {}",
                    show(&got)
                )
            }
            Err(_) => break,
        }
        assert!(start.elapsed() < limit, "not closed within {limit:?}");
    }
    (start.elapsed(), got)
}

#[test]
fn header_and_idle_timeouts_close_http_connections() {
    let _timed = timed();
    let tree = Tree::new("httptimeouts");
    tree.file("f.txt", b"timeouts");
    let srv = tree.serve(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(1);
    });
    let limit = Duration::from_secs(5);
    // A partial head: the header timeout.
    let mut partial = srv.client();
    partial.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let (t, got) = time_to_close(&mut partial, limit);
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "partial head: unexpected reply {}",
        show(&got)
    );
    assert!(
        t >= Duration::from_millis(300),
        "partial head closed after only {t:?}: not the header timeout"
    );
    // A complete keep-alive exchange, then silence: the idle timeout.
    let mut idle = srv.client();
    idle.send(&req("GET", "/f.txt", &[]));
    assert_bytes_eq(&idle.response(false).body, b"timeouts", "GET before idling");
    let (t, got) = time_to_close(&mut idle, limit);
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "idle: unexpected reply {}",
        show(&got)
    );
    assert!(
        t >= Duration::from_millis(300),
        "idle keep-alive closed after only {t:?}: not the idle timeout"
    );
    // The server still serves.
    assert_bytes_eq(
        &srv.get("/f.txt", &[]).body,
        b"timeouts",
        "GET after the timeouts",
    );
}

#[test]
fn silent_client_is_cut_by_the_header_timeout() {
    let _timed = timed();
    let tree = Tree::new("silent");
    let srv = tree.serve(|c| c.header_timeout = Duration::from_secs(1));
    let mut s = srv.connect();
    let took = wait_closed(&mut s, Duration::from_secs(5), "silent client");
    assert!(
        took >= Duration::from_millis(800),
        "silent client cut after only {took:?} (header timeout 1s)"
    );
}

#[test]
fn half_line_forever_is_cut_by_the_header_timeout() {
    let _timed = timed();
    let tree = Tree::new("halfline");
    let srv = tree.serve(|c| c.header_timeout = Duration::from_secs(1));
    let mut s = srv.connect();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut w = s.try_clone().unwrap();
        let (stop, sent) = (stop.clone(), sent.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(8);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if w.write_all(b"a").is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let took = wait_closed(
        &mut s,
        Duration::from_secs(5),
        "client sending one byte per 300 ms",
    );
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        took >= Duration::from_millis(800),
        "half-line client cut after only {took:?} (header timeout 1s)"
    );
    assert!(
        sent.load(Ordering::SeqCst) >= 3,
        "the client sent only {} bytes before the cut: the test did not trickle",
        sent.load(Ordering::SeqCst)
    );
}

#[test]
fn idle_client_is_cut_by_the_idle_timeout() {
    let _timed = timed();
    let tree = Tree::new("idlecut");
    tree.file("ok.txt", OK_CONTENT);
    let srv = tree.serve(|c| {
        c.idle_timeout = Duration::from_secs(1);
        c.header_timeout = Duration::from_secs(30);
    });
    let mut s = srv.connect();
    send(&mut s, b"ok.txt\n");
    expect_bytes(&mut s, OK_CONTENT, "ok.txt before going idle");
    let took = wait_closed(&mut s, Duration::from_secs(5), "idle client");
    assert!(
        took >= Duration::from_millis(800),
        "idle client cut after only {took:?} (idle timeout 1s)"
    );
}

#[test]
fn client_that_never_reads_is_cut_by_the_send_timeout() {
    let _timed = timed();
    // In a process of its own: the descriptor count (the server's socket
    // and its open big.bin) is this server's and this client's only.
    isolated(
        concat!(
            module_path!(),
            "::client_that_never_reads_is_cut_by_the_send_timeout"
        ),
        Duration::from_secs(120),
        never_reads_is_cut,
    );
}

fn never_reads_is_cut() {
    const LEN: u64 = 64 * MIB as u64;
    let tree = Tree::new("sendtimeout");
    tree.file("ok.txt", OK_CONTENT);
    std::fs::File::create(tree.path("big.bin"))
        .unwrap()
        .set_len(LEN)
        .unwrap();
    let srv = tree.serve(|c| c.send_timeout = Duration::from_secs(1));
    let baseline = fd_count();
    let mut stalled = connect_with_rcvbuf(srv.addr, 4 * KIB);
    send(&mut stalled, b"big.bin\n");
    let t0 = Instant::now();
    // The client's socket, plus the server's end and its open big.bin.
    let taken = |n: usize| n > baseline + 1;
    assert!(
        poll_until(Duration::from_secs(5), || srv.connections() > 0
            && taken(fd_count())),
        "the server never took the stalled connection:\n{}",
        fd_listing()
    );
    thread::sleep(Duration::from_millis(500));
    assert!(
        srv.connections() > 0 && taken(fd_count()),
        "the stalled transfer was cut after only {:?} (send timeout is 1s):\n{}",
        t0.elapsed(),
        fd_listing()
    );
    // Another client is served while the stalled one holds its transfer.
    assert_bytes_eq(
        &srv.lines(&[b"ok.txt"]),
        OK_CONTENT,
        "ok.txt while a client is stalled",
    );
    let bound = Duration::from_secs(10);
    let left = || bound.saturating_sub(t0.elapsed());
    let cut = srv.wait_connections(0, left()) && poll_until(left(), || fd_count() == baseline + 1);
    assert!(
        cut,
        "a client that never reads was not cut within {bound:?} of its request (send timeout 1s); \
         {} connection(s), open now:\n{}",
        srv.connections(),
        fd_listing()
    );
    // The client sees its connection end before the whole file.
    let (got, end) = read_until_closed(&mut stalled, MIB, Duration::from_secs(30), |_| {});
    assert!(
        got < LEN,
        "the cut client still received the whole file ({got} bytes, {end:?})"
    );
    drop(stalled);
    assert_fds_back_to(baseline);
}

#[test]
fn slow_reader_that_keeps_moving_is_not_cut() {
    let _timed = timed();
    const LEN: usize = 16 * MIB;
    // 512 KiB every 300 ms: ~10 s in all, stalls of 300 ms (well under the
    // 2 s send timeout, so a loaded machine that oversleeps a tick does not
    // cut it), while the transfer as a whole takes many times 2 s.
    const PER_TICK: usize = 512 * KIB;
    const TICK: Duration = Duration::from_millis(300);
    let tree = Tree::new("slowreader");
    let content = pseudo_random(5, LEN);
    tree.file("big.bin", &content);
    let srv = tree.serve(|c| c.send_timeout = Duration::from_secs(2));
    let mut s = connect_with_rcvbuf(srv.addr, 64 * KIB);
    send(&mut s, b"big.bin\n");
    let t0 = Instant::now();
    let mut buf = vec![0u8; PER_TICK];
    let mut pos = 0;
    while pos < LEN {
        let want = (LEN - pos).min(PER_TICK);
        let mut got = 0;
        while got < want {
            match s.read(&mut buf[got..want]) {
                Ok(0) => panic!(
                    "slow reader cut: EOF after {} bytes, {:?} in",
                    pos + got,
                    t0.elapsed()
                ),
                Ok(r) => got += r,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "slow reader cut: {e} after {} bytes, {:?} in",
                    pos + got,
                    t0.elapsed()
                ),
            }
        }
        check_chunk(&content, pos, &buf[..got], "slow reader");
        pos += got;
        if pos < LEN {
            thread::sleep(TICK);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "slow transfer took over 60 s"
        );
    }
    let took = t0.elapsed();
    assert!(
        took > Duration::from_secs(4),
        "the transfer took only {took:?}: the test did not pace it"
    );
    s.shutdown(Shutdown::Write).expect("half-close");
    let (extra, end) = read_until_closed(&mut s, 64 * KIB, IO_TIMEOUT, |c| {
        panic!("extra bytes after the file: {}", show(c))
    });
    assert!(
        matches!(end, End::Eof),
        "after the file: {extra} bytes, then {end:?}"
    );
}
