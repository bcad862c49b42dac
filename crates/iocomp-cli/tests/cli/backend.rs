//! The engine backend as a user sees it: where io_uring is denied (Docker's
//! default seccomp profile), the server falls back to epoll by itself, says so
//! in its banner, and serves exactly the same bytes; `--backend` forces one.

use std::process::Command;

use crate::harness::{fetch, pseudo_random, Server, StartOptions, TempTree};

#[test]
#[cfg(target_arch = "x86_64")]
fn with_io_uring_denied_by_seccomp_the_server_runs_on_epoll_and_says_why() {
    let tree = TempTree::new();
    let body = pseudo_random(61, 3 * 1024 * 1024 + 17);
    tree.file("big.bin", &body);
    tree.file("small.txt", b"small\n");
    let opts = StartOptions {
        deny_io_uring: true,
        ..StartOptions::default()
    };
    let server = Server::start_with(tree.root(), &[], &opts);
    let log = server.wait_stderr("worker threads, backend");
    assert!(
        log.contains("backend epoll (io_uring unavailable: io_uring_setup"),
        "the banner must name the backend and the reason:\n{log}"
    );
    let got = fetch(server.addr(), &[b"big.bin", b"small.txt"]);
    let mut want = body.clone();
    want.extend_from_slice(b"small\n");
    assert!(
        got == want,
        "bytes differ on epoll ({} vs {})",
        got.len(),
        want.len()
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn forcing_uring_where_it_is_denied_fails_with_a_clear_error() {
    let tree = TempTree::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iocomp"));
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--backend", "uring"])
        .arg(tree.root());
    crate::harness::deny_io_uring(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("io_uring is unavailable"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "nothing listens: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn version_names_the_backend_this_machine_would_run() {
    let mut denied = Command::new(env!("CARGO_BIN_EXE_iocomp"));
    denied.arg("--version");
    crate::harness::deny_io_uring(&mut denied);
    let out = denied.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("iocomp "), "{text}");
    assert!(
        text.contains("backend: epoll (io_uring unavailable:"),
        "{text}"
    );
    let forced = Command::new(env!("CARGO_BIN_EXE_iocomp"))
        .arg("--version")
        .env("IOCOMP_BACKEND", "epoll")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&forced.stdout);
    assert!(text.contains("backend: epoll\n"), "{text}");
}

#[test]
fn backend_flag_forces_epoll() {
    let tree = TempTree::new();
    tree.file("a.txt", b"hello\n");
    let server = Server::start(tree.root(), &["--backend", "epoll"]);
    let log = server.wait_stderr("worker threads, backend");
    assert!(log.contains("backend epoll"), "{log}");
    assert!(
        !log.contains("unavailable"),
        "a forced backend is no fallback: {log}"
    );
    assert_eq!(fetch(server.addr(), &[b"a.txt"]), b"hello\n");
}
