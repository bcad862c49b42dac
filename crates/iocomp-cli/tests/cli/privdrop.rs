//! `iocomp serve --user NAME`: started as root, the server binds its
//! listeners (privileged ports included), opens its log and reads its TLS
//! keys, then gives root up for good (user, group and supplementary
//! groups); it warns when that user cannot read the root, and refuses when
//! not started as root or for an unknown user.
//!
//! A server running as an unprivileged user (started as `nobody` by the
//! harness) answers 403 and `forbidden` for what it cannot read.
//!
//! The `--user` tests that need root say `SKIPPED` and pass when the tests
//! do not run as root (CI runs them as root); the `nobody` server needs root
//! to be started as another user.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use crate::harness::{
    assert_bytes_eq, connect, curl_https, error_line, exit_of, expect_bytes, fetch,
    read_exact_timeout, read_to_end_timeout, send, serve_command, show, stderr, tls_flags,
    wait_file, Ca, Server, StartOptions, TempTree, IO_TIMEOUT, WAIT,
};

const OK_CONTENT: &[u8] = b"ok.txt: the small file of the process tests\n";

/// `(uid, gid)` of `name` from /etc/passwd, if it is there.
fn passwd_entry(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&name) || f.len() < 4 {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `nobody`'s ids when the test runs as root and the user exists; `None`
/// after saying why the test is skipped otherwise.
fn root_and_nobody() -> Option<(u32, u32)> {
    if !is_root() {
        println!("SKIPPED: --user needs the test to run as root (euid is not 0)");
        return None;
    }
    let ids = passwd_entry("nobody");
    if ids.is_none() {
        println!("SKIPPED: no user `nobody` in /etc/passwd");
    }
    ids
}

#[test]
fn user_switches_from_root_to_nobody_after_binding() {
    let Some((uid, gid)) = root_and_nobody() else {
        return;
    };
    let tree = TempTree::new();
    tree.file("pub.txt", b"public\n");
    let log = tree.base().join("access.log");
    let server = Server::start(
        tree.root(),
        &[
            "--user",
            "nobody",
            "--access-log-file",
            log.to_str().unwrap(),
        ],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line[key.len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert_eq!(ids("Uid:"), vec![uid; 4], "{status}");
    assert_eq!(ids("Gid:"), vec![gid; 4], "{status}");
    assert!(!ids("Groups:").contains(&0), "root's group kept: {status}");
    assert_bytes_eq(
        &fetch(server.addr(), &[b"pub.txt"]),
        b"public\n",
        "as nobody",
    );
    // The log file was opened as root, before the switch, and still takes lines.
    wait_file(&log, "log line", |t| t.contains("\"pub.txt\" 200 7"));
    // Created by root (nobody may not write in the tree's 0755 base).
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&log).unwrap());
    assert_eq!(owner, 0, "the access log was not created as root");
    assert!(
        !server.stderr_text().contains("cannot be read"),
        "a readable root was warned about: {}",
        server.stderr_text()
    );
}

#[test]
fn user_who_cannot_read_the_root_is_warned_at_start() {
    if root_and_nobody().is_none() {
        return;
    }
    let tree = TempTree::new();
    tree.file("secret.txt", b"secret\n");
    std::fs::set_permissions(
        tree.root(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let server = Server::start(tree.root(), &["--user", "nobody"]);
    let err = server.stderr_text();
    assert!(
        err.contains("as user nobody") && err.contains("cannot be read"),
        "no warning about the closed root: {err}"
    );
    // And it answers, with the fixed reason, rather than leaking the file.
    let got = fetch(server.addr(), &[b"secret.txt"]);
    assert!(
        got.starts_with(b"File transmit error: "),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn user_is_refused_when_not_root_and_an_unknown_user_is_an_error() {
    let tree = TempTree::new();
    let run = |user: &str, as_nobody: bool| {
        let mut command = serve_command(tree.root(), &["--user", user]);
        if as_nobody {
            // SAFETY: runs in the forked child before exec; two
            // async-signal-safe calls on plain integers.
            unsafe {
                command.pre_exec(|| {
                    if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        exit_of(command)
    };
    if is_root() {
        let (code, err) = run("no-such-user-iocomp", false);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("--user no-such-user-iocomp: no such user"),
            "{err}"
        );
        let (code, err) = run("root", true);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("only root can switch users"), "{err}");
    } else {
        let (code, err) = run("nobody", false);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("only root can switch users"), "{err}");
        println!("SKIPPED (partly): the unknown-user check needs root");
    }
}

/// A loopback port below `ip_unprivileged_port_start` that is free now (only
/// root, or a process with `CAP_NET_BIND_SERVICE`, may bind it); `None` when
/// the system lets everyone bind every port.
fn free_privileged_port() -> Option<u16> {
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1024);
    (600..start.min(1024))
        .rev()
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
}

#[test]
fn user_binds_a_privileged_metrics_port_before_giving_root_up() {
    if root_and_nobody().is_none() {
        return;
    }
    let Some(port) = free_privileged_port() else {
        println!("SKIPPED: every port is unprivileged here (ip_unprivileged_port_start)");
        return;
    };
    let tree = TempTree::new();
    tree.file("pub.txt", b"public\n");
    let metrics = format!("127.0.0.1:{port}");
    let server = Server::start(tree.root(), &["--user", "nobody", "--metrics", &metrics]);
    assert_eq!(server.metrics_addr(), metrics);
    assert_bytes_eq(&fetch(server.addr(), &[b"pub.txt"]), b"public\n", "file");
    let mut s = connect(metrics.parse().unwrap());
    send(
        &mut s,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let got = String::from_utf8_lossy(&read_to_end_timeout(&mut s, WAIT)).into_owned();
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    assert!(got.contains("iocomp_"), "no metrics in the scrape: {got}");
}

#[test]
fn user_serves_tls_with_a_key_only_root_may_read() {
    if root_and_nobody().is_none() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tree = TempTree::new();
    tree.file("pub.txt", b"public\n");
    let ca = Ca::new(tree.base(), "root");
    let (cert, key) = ca.leaf(tree.base(), "root", &["localhost"], false);
    // As nginx's keys: root's, mode 0600.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut args = vec!["--user".to_string(), "nobody".to_string()];
    args.extend(tls_flags(&[(cert, key)]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(tree.root(), &args);
    let port = server.tls_addr().port();
    let get = || {
        let out = curl_https(&ca.pem, port, "pub.txt");
        assert!(out.status.success(), "curl: {}", stderr(&out));
        out.stdout
    };
    assert_bytes_eq(&get(), b"public\n", "over TLS as nobody");
    // A reload reads as nobody, who may not read the key: the certificates in
    // use stay, with a warning that says so.
    server.signal(libc::SIGHUP);
    server.wait_stderr("certificates in use stay");
    assert_bytes_eq(&get(), b"public\n", "over TLS after the failed reload");
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
    assert_bytes_eq(&body, OK_CONTENT, "ok.txt after the 403s");
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
