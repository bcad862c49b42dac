//! A descriptor limit set on the `iocomp serve` process alone
//! (`RLIMIT_NOFILE` before `exec`): out of descriptors under many clients,
//! the server serves those it accepted, warns on stderr at a bounded rate,
//! does not spin retrying accept(2), and recovers once the load drops, its
//! descriptors back to where they were.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    assert_bytes_eq, fetch, heavy, send, show, Server, StartOptions, TempTree, IO_TIMEOUT,
};

const OK_CONTENT: &[u8] = b"ok.txt: the small file of the process tests\n";

/// A server of a tree holding `ok.txt`, started with `RLIMIT_NOFILE`
/// `limit` and the flags `extra`; the tree lives as long as it is held.
fn limited_server(limit: u64, extra: &[&str]) -> (TempTree, Server) {
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let options = StartOptions {
        nofile_limit: Some(limit),
        ..StartOptions::default()
    };
    let server = Server::start_with(tree.root(), extra, &options);
    (tree, server)
}

/// One non-blocking read of a client's answer to `ok.txt` into `got`; true
/// once it is complete. Panics on wrong bytes, EOF or an error.
fn poll_answer(s: &mut TcpStream, got: &mut Vec<u8>, buf: &mut [u8]) -> bool {
    match s.read(buf) {
        Ok(0) => panic!(
            "client closed by the server after {} bytes: {}",
            got.len(),
            show(got)
        ),
        Ok(n) => {
            got.extend_from_slice(&buf[..n]);
            assert!(
                OK_CONTENT.starts_with(got),
                "wrong bytes for ok.txt under descriptor exhaustion: {}",
                show(got)
            );
            got.len() == OK_CONTENT.len()
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
        Err(e) => panic!("client read failed after {} bytes: {e}", got.len()),
    }
}

/// `RLIMIT_NOFILE` 256 on the server process and 1000 clients at once (the
/// listen backlog holds those not yet accepted), each asking for `ok.txt`
/// and closing once answered. While none closes, the server is out of
/// descriptors: it serves those it accepted, says so on stderr and does not
/// spin. Then every client is served byte-exact, the condition is logged at
/// a bounded rate, and a fresh client is served and the descriptors return.
#[test]
fn descriptor_limit_256_under_1000_clients_serves_all_recovers_and_logs_bounded() {
    let _heavy = heavy();
    const LIMIT: u64 = 256;
    const CLIENTS: usize = 1000;
    let (_tree, server) = limited_server(LIMIT, &["--access-log", "off"]);
    let baseline = server.fd_count();
    let t_start = Instant::now();
    let mut pending: Vec<(TcpStream, Vec<u8>)> = (0..CLIENTS)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("connect client {i}: {e}"));
            send(&mut s, b"ok.txt\n");
            s.set_nonblocking(true).unwrap();
            (s, Vec::new())
        })
        .collect();
    // Exhaustion: the server holds (nearly) all of its descriptors and says so.
    let t_wait = Instant::now();
    while !(server.stderr_text().contains("accept:") && server.fd_count() as u64 >= LIMIT - 16) {
        assert!(
            t_wait.elapsed() < Duration::from_secs(10),
            "the server did not run out of descriptors within 10 s ({} open, limit {LIMIT}); stderr:\n{}",
            server.fd_count(),
            server.stderr_text()
        );
        thread::sleep(Duration::from_millis(10));
    }
    // While exhausted (no client closes yet), the accepted ones are served,
    // and the server does not spin retrying accept(2).
    let cpu0 = server.cpu_time();
    let window = Duration::from_millis(1000);
    thread::sleep(window);
    let cpu = server.cpu_time().saturating_sub(cpu0);
    let mut buf = [0u8; 256];
    let mut served_while_exhausted = 0;
    for (s, got) in &mut pending {
        if poll_answer(s, got, &mut buf) {
            served_while_exhausted += 1;
        }
    }
    assert!(
        served_while_exhausted >= 1,
        "no client was served while out of descriptors"
    );
    assert!(
        served_while_exhausted < CLIENTS,
        "all {CLIENTS} clients were served at once: the limit of {LIMIT} was never binding"
    );
    assert!(
        cpu < window / 4,
        "server used {cpu:?} of CPU in {window:?} while out of descriptors"
    );
    // Load drops as clients get their answers and close: every pending
    // client must be served, byte-exact, from the backlog.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {CLIENTS} clients still unserved after 60 s",
            pending.len()
        );
        pending.retain_mut(|(s, got)| {
            !(got.len() == OK_CONTENT.len() || poll_answer(s, got, &mut buf))
        });
        thread::sleep(Duration::from_millis(5));
    }
    check_recovery(&server, baseline, t_start, Duration::from_secs(5));
}

/// The same with a limit of 64, where the server's own descriptors are a
/// good part of the limit, and 100 clients that never close while it is out
/// of descriptors: it retries without spinning, and serves a fresh client
/// once they are gone.
#[test]
fn descriptor_limit_64_under_100_clients_recovers() {
    let _heavy = heavy();
    const LIMIT: u64 = 64;
    const CLIENTS: usize = 100;
    let (_tree, server) = limited_server(LIMIT, &[]);
    let baseline = server.fd_count();
    assert!(
        (baseline as u64) < LIMIT / 2,
        "the server starts with {baseline} descriptors: too close to the limit of {LIMIT}"
    );
    let t_start = Instant::now();
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut s = server.connect();
            send(&mut s, b"ok.txt\n");
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr_text().contains("accept:") {
        assert!(
            Instant::now() < deadline,
            "no `accept:` warning with {CLIENTS} clients and a limit of {LIMIT}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // Stay exhausted for a while: the server must retry without spinning.
    let cpu0 = server.cpu_time();
    let window = Duration::from_millis(1500);
    thread::sleep(window);
    let used = server.cpu_time().saturating_sub(cpu0);
    assert!(
        used < window / 4,
        "server used {used:?} of CPU in {window:?} while out of descriptors"
    );
    let mut answered = 0;
    for s in &mut clients {
        s.set_nonblocking(true).unwrap();
        if matches!(s.read(&mut [0u8; 256]), Ok(n) if n > 0) {
            answered += 1;
        }
    }
    assert!(
        answered >= 1,
        "no client at all was served under the descriptor limit"
    );
    assert!(
        answered < CLIENTS,
        "all {CLIENTS} clients were served: the limit was never reached"
    );
    drop(clients);
    check_recovery(&server, baseline, t_start, Duration::from_secs(10));
}

/// After an exhaustion: a fresh client is served at once, the descriptors
/// return, and the `accept:` warnings named EMFILE at most once a second.
fn check_recovery(server: &Server, baseline: usize, t_start: Instant, within: Duration) {
    let t0 = Instant::now();
    let got = fetch(server.addr(), &[b"ok.txt"]);
    assert_bytes_eq(&got, OK_CONTENT, "fresh client after the exhaustion");
    assert!(
        t0.elapsed() < within,
        "fresh client served only after {:?}",
        t0.elapsed()
    );
    server.assert_fds_back_to(baseline);
    let secs = t_start.elapsed().as_secs() + 1;
    let stderr = server.stderr_text();
    let accept_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("accept:")).collect();
    assert!(
        accept_lines
            .iter()
            .any(|l| l.contains("Too many open files") || l.contains("os error 24")),
        "no EMFILE among the accept warnings:\n{}",
        accept_lines.join("\n")
    );
    assert!(
        accept_lines.len() as u64 <= secs + 1,
        "{} `accept:` lines in about {secs} s (a log flood):\n{}",
        accept_lines.len(),
        accept_lines.join("\n")
    );
}
