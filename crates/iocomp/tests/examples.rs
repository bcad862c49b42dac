//! Runs every example to completion and checks it says so (each exits 0 only
//! after checking its own results). The examples are the ones `cargo test`
//! builds beside this test (`target/<profile>/examples/`); they inherit
//! `IOCOMP_BACKEND`, so CI runs them on both backends.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // This test runs from target/<profile>/deps/; examples live in
    // target/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test -p iocomp` (which builds the examples) \
         or `cargo build -p iocomp --examples` first",
        path.display()
    );
    path
}

/// Runs an example with a time limit and checks it succeeded and printed `expect`.
fn run(name: &str, args: &[&str], expect: &str) {
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example {name} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success(),
        "example {name} failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(expect),
        "example {name} did not print {expect:?}:\n{stdout}"
    );
}

#[test]
fn echo_serves_clients_and_stops_on_quit() {
    run("echo", &["--self-test"], "echo: self-test passed");
}

#[test]
fn philosophers_all_eat_without_deadlock() {
    run("philosophers", &["5", "300"], "everyone ate, no deadlock");
}

#[test]
fn cancel_stops_every_worker_by_event() {
    run("cancel", &[], "every worker stopped cleanly");
}

#[test]
fn iobyevent_reads_every_chunk() {
    run("iobyevent", &[], "iobyevent: all chunks read");
}

#[test]
fn iobyapc_reads_every_chunk_in_routines() {
    run("iobyapc", &[], "all chunks read");
}
