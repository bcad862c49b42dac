//! `iocomp serve --user NAME`: started as root, the server binds its
//! listeners (privileged ports included), opens its log and reads its TLS
//! keys, then gives root up for good (user, group and supplementary
//! groups); it warns when that user cannot read the root, and refuses when
//! not started as root or for an unknown user.
//!
//! The tests that need root say `SKIPPED` and pass when the tests do not run
//! as root (CI runs them as root).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;

use crate::harness::{
    assert_bytes_eq, connect, curl_https, exit_of, fetch, read_to_end_timeout, send, serve_command,
    stderr, tls_flags, wait_file, Ca, Server, TempTree, WAIT,
};

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
