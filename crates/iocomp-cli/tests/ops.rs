//! Running `iocomp serve` for real: the access log in a file reopened on
//! SIGUSR1 (logrotate), systemd socket activation and `sd_notify`, and
//! `--user` giving root up.

mod common;

use common::{assert_bytes_eq, fetch, Server, StartOptions, TempTree};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Polls `path` (bounded) until its text satisfies `pred`; returns the text.
fn wait_file(path: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} never got there; it holds {text:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_access_log_file_is_reopened_on_sigusr1() {
    let tree = TempTree::new();
    tree.file("first.txt", b"1\n");
    tree.file("second.txt", b"2\n");
    let log = tree.base().join("access.log");
    let rotated = tree.base().join("access.log.1");
    let server = Server::start(
        tree.root(),
        &["--quiet", "--access-log-file", log.to_str().unwrap()],
    );
    assert_bytes_eq(&fetch(server.addr(), &[b"first.txt"]), b"1\n", "first");
    wait_file(&log, "first line", |t| t.contains("\"first.txt\" 200 2"));
    assert!(
        !server
            .stdout_lines()
            .iter()
            .any(|l| l.contains("first.txt")),
        "the log went to stdout too"
    );

    std::fs::rename(&log, &rotated).unwrap(); // what logrotate does
    server.signal(libc::SIGUSR1);
    wait_file(&log, "the reopened file", |_| log.exists());
    assert_bytes_eq(&fetch(server.addr(), &[b"second.txt"]), b"2\n", "second");
    let new = wait_file(&log, "second line", |t| t.contains("\"second.txt\" 200 2"));
    assert!(
        !new.contains("first.txt"),
        "old line in the new file: {new}"
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("\"first.txt\" 200 2"), "{old}");
    assert!(
        !old.contains("second.txt"),
        "new line in the old file: {old}"
    );

    // A reopen that fails keeps the old file.
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap(); // a directory cannot be opened for appending
    server.signal(libc::SIGUSR1);
    let deadline = Instant::now() + WAIT;
    while !server
        .stderr_text()
        .contains("cannot reopen the access log")
    {
        assert!(
            Instant::now() < deadline,
            "no warning: {}",
            server.stderr_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_bytes_eq(
        &fetch(server.addr(), &[b"first.txt"]),
        b"1\n",
        "after a failed reopen",
    );
    // The old descriptor (its file now unlinked) still takes the lines: the
    // server is alive and serving, and wrote nothing to stdout.
    assert!(!server
        .stdout_lines()
        .iter()
        .any(|l| l.contains("first.txt")));
}

#[test]
fn socket_activation_serves_through_the_passed_socket() {
    let tree = TempTree::new();
    let content = common::pseudo_random(9, 300_000);
    tree.file("big.bin", &content);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::start_with(
        tree.root(),
        &[],
        &StartOptions {
            listen_fd: Some(listener.as_raw_fd()),
            ..StartOptions::default()
        },
    );
    assert_eq!(
        server.addr(),
        addr,
        "it must serve the passed socket, not bind"
    );
    drop(listener); // the server holds its own copy
    assert_bytes_eq(
        &fetch(addr, &[b"big.bin"]),
        &content,
        "through the passed socket",
    );
    let err = server.stderr_text();
    assert!(err.contains("socket activation: descriptor 3"), "{err}");
}

#[test]
fn listen_variables_for_another_process_are_ignored() {
    let tree = TempTree::new();
    tree.file("a.txt", b"a\n");
    let server = Server::start_with(
        tree.root(),
        &[],
        &StartOptions {
            env: vec![
                ("LISTEN_PID".into(), "1".into()),
                ("LISTEN_FDS".into(), "1".into()),
            ],
            ..StartOptions::default()
        },
    );
    assert_bytes_eq(&fetch(server.addr(), &[b"a.txt"]), b"a\n", "bound as usual");
    assert!(!server.stderr_text().contains("socket activation"));
}

/// Runs `iocomp serve` with `fd` as descriptor 3 and `LISTEN_PID`/`LISTEN_FDS`
/// set, expecting it to exit by itself; returns (status code, stderr).
fn activated_run(fd: RawFd, root: &Path) -> (Option<i32>, String) {
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_iocomp"))
        .arg("serve")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only
    // calls dup2/fcntl (async-signal-safe) on an inherited descriptor.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    bounded(command)
}

/// Runs `command` to its end (at most [`WAIT`]) and returns its exit code and
/// stderr.
fn bounded(command: Command) -> (Option<i32>, String) {
    let out = common::output_within(command, WAIT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_passed_socket_that_is_not_listening_tcp_is_a_start_up_error() {
    let tree = TempTree::new();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (code, err) = activated_run(udp.as_raw_fd(), tree.root());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("socket activation: descriptor 3") && err.contains("not a stream socket"),
        "{err}"
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (code, err) = activated_run(connected.as_raw_fd(), tree.root());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not listening"), "{err}");
    let file = std::fs::File::open(tree.base()).unwrap();
    let (code, err) = activated_run(file.as_raw_fd(), tree.root());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not a socket"), "{err}");
}

fn notify_socket_test(abstract_name: bool) {
    let tree = TempTree::new();
    tree.file("a.txt", b"a\n");
    let (sock, env) = if abstract_name {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("iocomp-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
    } else {
        let path = tree.base().join("notify.sock");
        (
            UnixDatagram::bind(&path).unwrap(),
            path.to_str().unwrap().to_owned(),
        )
    };
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut server = Server::start_with(
        tree.root(),
        &[],
        &StartOptions {
            env: vec![("NOTIFY_SOCKET".into(), env)],
            ..StartOptions::default()
        },
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within the timeout");
    assert_eq!(&buf[..n], b"READY=1");
    assert_bytes_eq(
        &fetch(server.addr(), &[b"a.txt"]),
        b"a\n",
        "serving when ready",
    );
    server.signal(libc::SIGTERM);
    let n = sock.recv(&mut buf).expect("STOPPING=1 within the timeout");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = server.wait_exit(WAIT).expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sd_notify_ready_then_stopping_on_a_path_socket() {
    notify_socket_test(false);
}

#[test]
fn sd_notify_ready_then_stopping_on_an_abstract_socket() {
    notify_socket_test(true);
}

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

#[test]
fn user_switches_from_root_to_nobody_after_binding() {
    if !is_root() {
        println!("SKIPPED: --user needs the test to run as root (euid is not 0)");
        return;
    }
    let Some((uid, gid)) = passwd_entry("nobody") else {
        println!("SKIPPED: no user `nobody` in /etc/passwd");
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
    if !is_root() {
        println!("SKIPPED: --user needs the test to run as root (euid is not 0)");
        return;
    }
    if passwd_entry("nobody").is_none() {
        println!("SKIPPED: no user `nobody` in /etc/passwd");
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
        let mut command = Command::new(env!("CARGO_BIN_EXE_iocomp"));
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--user", user])
            .arg(tree.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
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
        bounded(command)
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
    if !is_root() {
        println!("SKIPPED: --user needs the test to run as root (euid is not 0)");
        return;
    }
    if passwd_entry("nobody").is_none() {
        println!("SKIPPED: no user `nobody` in /etc/passwd");
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
    let line = server
        .wait_stdout_line(WAIT, |l| l.starts_with("metrics on "))
        .expect("a `metrics on ADDR` line");
    assert_eq!(line.trim(), format!("metrics on {metrics}"));
    assert_bytes_eq(&fetch(server.addr(), &[b"pub.txt"]), b"public\n", "file");
    let mut s = common::connect(metrics.parse().unwrap());
    common::send(
        &mut s,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let got = String::from_utf8_lossy(&common::read_to_end_timeout(&mut s, WAIT)).into_owned();
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    assert!(got.contains("iocomp_"), "no metrics in the scrape: {got}");
}

#[test]
fn an_access_log_file_that_is_a_symlink_is_refused_at_start() {
    let tree = TempTree::new();
    let victim = tree.outside_file("victim.txt", b"untouched\n");
    let link = tree.base().join("access.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_iocomp"));
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--access-log-file"])
        .arg(&link)
        .arg(tree.root());
    let (code, err) = bounded(command);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot open the access log"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched\n");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
}

/// A self-signed certificate for `localhost` and its key, made by the
/// `openssl` command (fails loudly when it is missing), in `dir`.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command must be installed to make a test certificate");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn user_serves_tls_with_a_key_only_root_may_read() {
    if !is_root() {
        println!("SKIPPED: --user needs the test to run as root (euid is not 0)");
        return;
    }
    if passwd_entry("nobody").is_none() {
        println!("SKIPPED: no user `nobody` in /etc/passwd");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tree = TempTree::new();
    tree.file("pub.txt", b"public\n");
    let (cert, key) = self_signed(tree.base());
    // As nginx's keys: root's, mode 0600.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::start(
        tree.root(),
        &[
            "--user",
            "nobody",
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let plain = format!("listening on {}", server.addr());
    let line = server
        .wait_stdout_line(WAIT, |l| {
            l.starts_with("listening on ") && l.trim() != plain
        })
        .expect("a second `listening on` line (the TLS listener)");
    let tls: std::net::SocketAddr = line["listening on ".len()..].trim().parse().unwrap();
    let get = || {
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
            .arg(&cert)
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", tls.port()))
            .arg(format!("https://localhost:{}/pub.txt", tls.port()))
            .output()
            .expect("curl must be installed");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_bytes_eq(&get(), b"public\n", "over TLS as nobody");
    // A reload reads as nobody, who may not read the key: the certificates in
    // use stay, with a warning that says so.
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    while !server.stderr_text().contains("certificates in use stay") {
        assert!(
            Instant::now() < deadline,
            "no warning on a reload that cannot read the key: {}",
            server.stderr_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_bytes_eq(&get(), b"public\n", "over TLS after the failed reload");
}

#[test]
fn tls_files_without_a_tls_listener_are_a_usage_error() {
    let tree = TempTree::new();
    for extra in [
        &["--tls-cert", "c.pem", "--tls-key", "k.pem"][..],
        &["--tls-no-tickets"][..],
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_iocomp"));
        command
            .arg("serve")
            .arg(tree.root())
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null());
        let (code, err) = bounded(command);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(err.contains("need --tls-bind"), "{extra:?}: {err}");
    }
}

#[test]
fn sighup_without_tls_reloads_no_certificates() {
    let tree = TempTree::new();
    let server = Server::start(tree.root(), &[]);
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    while !server.stderr_text().contains("SIGHUP") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP was not acknowledged: {}",
            server.stderr_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let err = server.stderr_text();
    assert!(!err.contains("certificate"), "{err}");
}

/// `--ktls` takes auto, on or off (anything else is a usage error naming the
/// flag); `on` needs a TLS listener; on a kernel whose probe finds no kernel
/// TLS, `on` refuses to start with an error naming the probe and what it saw,
/// while `off` (and `auto`) serve HTTPS in user space.
#[test]
fn ktls_on_fails_loudly_where_the_probe_finds_nothing_and_off_serves() {
    let tree = TempTree::new();
    tree.file("pub.txt", b"public\n");
    let (cert, key) = self_signed(tree.base());
    let serve = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_iocomp"));
        command
            .arg("serve")
            .arg(tree.root())
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null());
        command
    };
    let (code, err) = bounded(serve(&["--ktls", "maybe"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--ktls") && err.contains("expected auto, on or off"),
        "{err}"
    );
    let (code, err) = bounded(serve(&["--ktls", "on"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("need --tls-bind"), "{err}");
    let tls = [
        "--tls-bind",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let list = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .expect("/proc is mounted for the tests");
    if list.split_whitespace().any(|u| u == "tls") {
        println!(
            "NOTE: this kernel lists `tls` ({list:?}): `--ktls on` may start here, so its \
             refusal was NOT exercised"
        );
    } else {
        let mut on = tls.to_vec();
        on.extend(["--ktls", "on"]);
        let (code, err) = bounded(serve(&on));
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("--ktls on")
                && err.contains("kernel TLS probe")
                && err.contains("modprobe tls"),
            "{err}"
        );
    }
    for mode in ["off", "auto"] {
        let mut args = tls.to_vec();
        args.extend(["--ktls", mode]);
        let server = Server::start(tree.root(), &args);
        let plain = format!("listening on {}", server.addr());
        let line = server
            .wait_stdout_line(WAIT, |l| {
                l.starts_with("listening on ") && l.trim() != plain
            })
            .expect("a second `listening on` line (the TLS listener)");
        let addr: std::net::SocketAddr = line["listening on ".len()..].trim().parse().unwrap();
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
            .arg(&cert)
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", addr.port()))
            .arg(format!("https://localhost:{}/pub.txt", addr.port()))
            .output()
            .expect("curl must be installed");
        assert!(
            out.status.success(),
            "--ktls {mode}: curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_bytes_eq(&out.stdout, b"public\n", "over TLS");
    }
}
