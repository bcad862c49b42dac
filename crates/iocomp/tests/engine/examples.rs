//! Runs every example to completion and checks it says so (each exits 0 only
//! after checking its own results). The examples are the ones `cargo test`
//! builds beside this test (`target/<profile>/examples/`); they inherit
//! `IOCOMP_BACKEND`, so CI runs them on both backends.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{Child, TempDir};

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
    let out = Child::program(&example(name), args)
        .limit(Duration::from_secs(60))
        .run();
    let (status, stdout, stderr) = (out.status, &out.stdout, &out.stderr);
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

#[test]
fn filecopy_copies_a_file_with_reads_and_writes_in_flight() {
    let tmp = TempDir::new("filecopy");
    let dir = &tmp.0;
    let src = dir.join("src");
    let dst = dir.join("dst");
    // An odd size: many full chunks and a short last one.
    let data: Vec<u8> = (0..(5u64 << 20) + 4321)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    // Stale, longer content in the destination must not survive.
    std::fs::write(&dst, vec![0xAA; 7 << 20]).unwrap();
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    run("filecopy", &[s, d, "6", "256"], "verified");
    assert!(std::fs::read(&dst).unwrap() == data, "the copy differs");
    // Without the final comparison (as the benchmark runs it): the same copy.
    std::fs::write(&dst, b"stale").unwrap();
    run("filecopy", &["--no-verify", s, d, "3"], "not compared");
    assert!(std::fs::read(&dst).unwrap() == data, "the copy differs");
    // An empty file.
    std::fs::write(&src, b"").unwrap();
    run("filecopy", &[s, d], "copied 0 bytes");
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 0);
    // Errors exit non-zero with a message: a missing source, a directory as
    // the destination.
    for (a, b) in [
        (dir.join("missing"), dst.clone()),
        (src.clone(), dir.clone()),
    ] {
        let (a_, b_) = (a.to_str().unwrap(), b.to_str().unwrap());
        let out = Child::program(&example("filecopy"), &[a_, b_]).run();
        assert!(!out.status.success(), "filecopy {a:?} {b:?} succeeded");
        assert!(out.stderr.contains("filecopy:"));
    }
}

/// The benchmark's load generator (`bench/file/run`): a sequential write
/// pass, random reads of a fixed count and a sequential read pass, each
/// with several operations in flight, report every byte; bad arguments and
/// a region past the end of the file exit non-zero.
#[test]
fn fileio_writes_and_reads_with_operations_in_flight() {
    let tmp = TempDir::new("fileio");
    let dir = &tmp.0;
    let file = dir.join("data");
    let f = file.to_str().unwrap();
    let common = ["--file", f];
    run(
        "fileio",
        &[
            &common[..],
            &["--rw", "write", "--bs", "64k", "--qd", "8", "--size", "4m"],
        ]
        .concat(),
        "rw=write bs=65536 qd=8 ops=64 bytes=4194304",
    );
    // Every block holds the example's write pattern.
    let all = std::fs::read(&file).unwrap();
    assert_eq!(all.len(), 4 << 20);
    let block: Vec<u8> = (0..65536usize).map(|i| (i % 251) as u8 | 1).collect();
    assert!(
        all.chunks(65536).all(|c| c == block),
        "a block was not written"
    );
    run(
        "fileio",
        &[&common[..], &["--bs", "4k", "--qd", "16", "--ops", "3000"]].concat(),
        "rw=randread bs=4096 qd=16 ops=3000 bytes=12288000",
    );
    run(
        "fileio",
        &[
            &common[..],
            &["--bs", "512", "--qd", "2", "--ops", "100", "--no-fadvise"],
        ]
        .concat(),
        "rw=randread bs=512 qd=2 ops=100 bytes=51200",
    );
    run(
        "fileio",
        &[&common[..], &["--rw", "read", "--bs", "1m", "--qd", "3"]].concat(),
        "rw=read bs=1048576 qd=3 ops=4 bytes=4194304",
    );
    // Three threads, a port each, share the queue depth and the operations:
    // every one is counted once in the sum.
    run(
        "fileio",
        &[
            &common[..],
            &["--bs", "4k", "--qd", "8", "--ops", "1001", "--threads", "3"],
        ]
        .concat(),
        "rw=randread bs=4096 qd=8 ops=1001 bytes=4100096",
    );
    for bad in [
        &["--bs", "0"][..],
        &["--qd", "0"],
        &["--rw", "randwrite"],
        &["--size", "5m"],
        &["--threads", "0"],
        &["--qd", "2", "--threads", "3"],
        &["--rw", "read", "--threads", "2"],
    ] {
        let out = Child::program(&example("fileio"), &[&common[..], bad].concat()).run();
        assert!(!out.status.success(), "fileio {bad:?} succeeded");
        assert!(out.stderr.contains("fileio:"));
    }
}
