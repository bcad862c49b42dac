//! Which timeout a connection waits under: a client that has not yet sent a
//! complete request (a fresh connection, one lingering after the server's
//! half-close) gets the short header timeout, not the idle one meant for a
//! keep-alive connection between requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::Running;
use crate::harness::Tree;

/// A server with a short header timeout and a long idle one.
fn serve(t: &Tree) -> Running {
    t.file("f.txt", b"body\n");
    t.serve(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(120);
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    })
}

/// Waits (generously) until the server has no connection open.
fn wait_all_closed(srv: &Running, what: &str) {
    let start = Instant::now();
    while srv.connections() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: still open after 30 s (header timeout 1 s, idle 120 s)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    wait_all_closed(&srv, "a lingering connection");
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
    wait_all_closed(&srv, "a silent metrics connection");
    drop(s);
}
