//! Signals to `iocomp serve`: on SIGINT or SIGTERM the server stops, closes
//! its connections (idle ones included), joins its workers and exits with
//! status 0 within a bounded time, and its clients see the connection end
//! instead of hanging; SIGHUP reloads (the certificates, when there are any).
//! SIGUSR1 (reopen the access log) is in `access_log`, systemd's
//! `STOPPING=1` in `systemd`.

use std::time::Duration;

use crate::harness::{
    assert_bytes_eq, assert_read_sees_close, expect_bytes, fetch, send, Server, TempTree,
};

const OK_CONTENT: &[u8] = b"shutdown test file\n";
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
