//! Signals to `iocomp serve`: on SIGINT or SIGTERM the server stops, closes
//! its connections (idle ones included), joins its workers and exits with
//! status 0 within a bounded time, and its clients see the connection end
//! instead of hanging; SIGHUP reloads (the certificates, when there are any).
//! SIGUSR1 (reopen the access log) is in `access_log`, systemd's
//! `STOPPING=1` in `systemd`.

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    assert_bytes_eq, assert_read_sees_close, connect_with_rcvbuf, error_line, expect_bytes, fetch,
    heavy, read_exact_timeout, read_to_end_timeout, send, Server, TempTree, IO_TIMEOUT,
};

const OK_CONTENT: &[u8] = b"shutdown test file\n";
const KIB: usize = 1 << 10;
const MIB: u64 = 1 << 20;
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn sigint_with_idle_clients_exits_zero() {
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let mut server = Server::start(tree.root(), &[]);
    let baseline = server.fd_count();

    for _ in 0..3 {
        let got = fetch(server.addr(), &[b"ok.txt", b"ok.txt"]);
        assert_bytes_eq(&got, &OK_CONTENT.repeat(2), "fetch before shutdown");
    }
    server.assert_fds_back_to(baseline);

    // Idle clients: five connected that never send anything, and three that
    // completed a request (so they were certainly accepted) and then wait.
    let mut idle: Vec<_> = (0..5).map(|_| server.connect()).collect();
    for _ in 0..3 {
        let mut stream = server.connect();
        send(&mut stream, b"ok.txt\n");
        expect_bytes(&mut stream, OK_CONTENT, "request before going idle");
        idle.push(stream);
    }

    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("server still running {EXIT_TIMEOUT:?} after SIGINT"));
    assert!(status.success(), "exit status after SIGINT: {status:?}");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGINT: {status:?}"
    );

    for (i, stream) in idle.iter_mut().enumerate() {
        assert_read_sees_close(stream, &format!("idle client {i}"));
    }
}

#[test]
fn sigterm_exits_zero() {
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let mut server = Server::start(tree.root(), &[]);

    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("server still running {EXIT_TIMEOUT:?} after SIGTERM"));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status:?}"
    );
}

#[test]
fn sighup_without_tls_reloads_no_certificates() {
    let tree = TempTree::new();
    let server = Server::start(tree.root(), &[]);
    server.signal(libc::SIGHUP);
    let err = server.wait_stderr("SIGHUP");
    assert!(!err.contains("certificate"), "{err}");
}

/// SIGINT with `--drain-timeout 1s` while a client stalls a 64 MiB
/// transfer: the server waits the drain out, cuts the transfer, exits 0.
#[test]
fn sigint_waits_out_the_drain_timeout_then_cuts_and_exits_0() {
    let _heavy = heavy();
    const LEN: u64 = 64 * MIB;
    let tree = TempTree::new();
    std::fs::File::create(tree.root().join("big.bin"))
        .unwrap()
        .set_len(LEN)
        .unwrap();
    let mut server = Server::start(tree.root(), &["--drain-timeout", "1s"]);
    let mut s = connect_with_rcvbuf(server.addr(), 4 * KIB);
    send(&mut s, b"big.bin\n");
    let first = read_exact_timeout(&mut s, 1, IO_TIMEOUT);
    assert_eq!(first, [0u8], "first byte of the sparse file");
    thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGINT);
    let t0 = Instant::now();
    let status = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!("server still running 10 s after SIGINT with --drain-timeout 1s")
        });
    let took = t0.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGINT: {status:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "server exited {took:?} after SIGINT with --drain-timeout 1s"
    );
    assert!(
        took >= Duration::from_millis(800),
        "server exited after only {took:?}: it did not let the transfer drain for 1s"
    );
    let mut got = 1u64;
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        got += n as u64;
    }
    assert!(
        got < LEN,
        "the cut client still received the whole file ({got} bytes)"
    );
}

/// `--quiet`: no access lines on stdout at all, even after the shutdown
/// flush on SIGTERM, which ends the process with status 0.
#[test]
fn quiet_writes_no_access_lines_and_sigterm_exits_0() {
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let mut server = Server::start(tree.root(), &["--quiet"]);
    let got = fetch(server.addr(), &[b"ok.txt", b"missing"]);
    assert_bytes_eq(
        &got,
        &[OK_CONTENT, &error_line("not found")].concat(),
        "ok.txt then missing",
    );
    let mut s = server.connect();
    s.write_all(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(read_to_end_timeout(&mut s, IO_TIMEOUT).starts_with(b"HTTP/1.1 200 "));
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "--quiet server did not exit cleanly on SIGTERM: {status:?}"
    );
    assert!(
        server.wait_stdout_eof(Duration::from_secs(5)),
        "stdout not closed after exit"
    );
    let extra: Vec<String> = server
        .stdout_lines()
        .into_iter()
        .filter(|l| !l.starts_with("listening on "))
        .collect();
    assert!(extra.is_empty(), "--quiet still wrote to stdout: {extra:?}");
}
