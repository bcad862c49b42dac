//! What only the real `iocomp serve` process shows: signals and its exit
//! status, a descriptor limit set on that process alone (`RLIMIT_NOFILE`
//! before `exec`), a server running as another user, and `--quiet` on its
//! standard output. Everything else the server does is tested in-process in
//! `iocomp-server` (`crates/iocomp-server/tests/server/`).

mod common;

use common::{
    connect_with_rcvbuf, error_line, expect_bytes, read_exact_timeout, read_to_end_timeout, send,
    show, Server, StartOptions, TempTree, IO_TIMEOUT,
};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: u64 = 1 << 20;
const OK_CONTENT: &[u8] = b"ok.txt: the small file of the process tests\n";

/// Serialises the heavy tests of this file (1000 clients, a 64 MiB drain).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
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
    let _serial = serial();
    const LIMIT: u64 = 256;
    const CLIENTS: usize = 1000;
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let options = StartOptions {
        nofile_limit: Some(LIMIT),
        ..StartOptions::default()
    };
    let server = Server::start_with(tree.root(), &["--access-log", "off"], &options);
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
    let _serial = serial();
    const LIMIT: u64 = 64;
    const CLIENTS: usize = 100;
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let options = StartOptions {
        nofile_limit: Some(LIMIT),
        ..StartOptions::default()
    };
    let server = Server::start_with(tree.root(), &[], &options);
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
    let got = common::fetch(server.addr(), &[b"ok.txt"]);
    common::assert_bytes_eq(&got, OK_CONTENT, "fresh client after the exhaustion");
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

/// `GET /path` on the keep-alive connection `s`: the head, and the body
/// framed by its `Content-Length`.
fn keep_alive_get(s: &mut TcpStream, path: &str) -> (String, Vec<u8>) {
    send(
        s,
        format!("GET /{path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend_from_slice(&read_exact_timeout(s, 1, IO_TIMEOUT));
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>())
        })
        .expect("a Content-Length")
        .expect("a number");
    let body = read_exact_timeout(s, len, IO_TIMEOUT);
    (head, body)
}

/// An unreadable file (mode 000) and a file in an untraversable directory
/// are 403 over HTTP and `forbidden` over the line protocol, and no answer
/// discloses a path. The server runs as `nobody` (uid 65534): root reads
/// anything, so only an unprivileged server sees `EACCES`.
#[test]
fn unreadable_file_is_403_and_forbidden_without_disclosing_paths() {
    const NOBODY: u32 = 65534;
    let tree = TempTree::new();
    // The tree must be readable by nobody, except what is locked.
    std::fs::set_permissions(tree.base(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(tree.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tree.file("ok.txt", OK_CONTENT);
    let secret = tree.file("secret.bin", b"the secret content\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    tree.file("locked/inner.txt", b"inner content\n");
    std::fs::set_permissions(
        tree.root().join("locked"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let options = StartOptions {
        uid: Some(NOBODY),
        ..StartOptions::default()
    };
    let server = Server::start_with(tree.root(), &[], &options);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == NOBODY.to_string()),
        "the server does not run as nobody: {uid_line:?}"
    );
    let base = tree.base().display().to_string();
    let leaks =
        |text: &str| text.contains(&base) || text.contains("/tmp") || text.contains("root/");
    let mut c = server.connect();
    for path in ["secret.bin", "locked/inner.txt"] {
        let (head, body) = keep_alive_get(&mut c, path);
        assert!(head.starts_with("HTTP/1.1 403 "), "GET /{path}: {head}");
        assert!(
            !leaks(&head) && !leaks(&String::from_utf8_lossy(&body)),
            "GET /{path}: the 403 discloses a path:\n{head}{}",
            show(&body)
        );
        assert!(
            !body.windows(6).any(|w| w == b"secret") && !body.windows(5).any(|w| w == b"inner"),
            "GET /{path}: the 403 body shows content or a name: {}",
            show(&body)
        );
    }
    // The connection survives and readable files are still served.
    let (head, body) = keep_alive_get(&mut c, "ok.txt");
    assert!(
        head.starts_with("HTTP/1.1 200 "),
        "ok.txt after the 403s: {head}"
    );
    common::assert_bytes_eq(&body, OK_CONTENT, "ok.txt after the 403s");
    let mut s = server.connect();
    for path in ["secret.bin", "locked/inner.txt"] {
        send(&mut s, format!("{path}\n").as_bytes());
        expect_bytes(&mut s, &error_line("forbidden"), &format!("line {path}"));
    }
    send(&mut s, b"ok.txt\n");
    expect_bytes(&mut s, OK_CONTENT, "line ok.txt after forbidden");
    s.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_end_timeout(&mut s, IO_TIMEOUT);
    assert!(rest.is_empty(), "stray bytes: {}", show(&rest));
}

/// SIGINT with `--drain-timeout 1s` while a client stalls a 64 MiB
/// transfer: the server waits the drain out, cuts the transfer, exits 0.
#[test]
fn sigint_waits_out_the_drain_timeout_then_cuts_and_exits_0() {
    let _serial = serial();
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
    let got = common::fetch(server.addr(), &[b"ok.txt", b"missing"]);
    common::assert_bytes_eq(
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
