//! The epoll backend's file path under faults (issue 15, review findings 9
//! and 10): a kernel or sandbox that refuses `preadv2(RWF_NOWAIT)` (ENOSYS
//! before Linux 4.6, EPERM under a seccomp filter, EINVAL where the flag is
//! unknown, EOPNOTSUPP where a filesystem lacks it) must not fail a
//! `ReadAt`: the read goes to the blocking pool instead. A pool that cannot
//! start a helper thread, or whose job panics, must still give every
//! operation its one packet (Win32: every overlapped operation that was
//! accepted completes through the port) and keep serving later ones.
//!
//! The faults are forced with `IOCOMP_EPOLL_COMPAT` (read once per process),
//! so each test runs again in a child process of its own with the setting.
//! These are epoll-only paths: the io_uring backend has no pool.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use iocomp::{Backend, Fsync, Inline, Op, Packet, Port, ReadAt, WriteAt};

use crate::harness::{in_child, is_child, pattern, test_name, Child, TempFile, T};

/// Whether a blocking-pool helper thread (named `iocomp-blocking`) runs in
/// this process: proof that a test's work went through the pool.
fn pool_ran() -> bool {
    std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
        std::fs::read_to_string(t.unwrap().path().join("comm"))
            .is_ok_and(|c| c.trim_end() == "iocomp-blocking")
    })
}

fn epoll_port() -> Port {
    let p = Port::builder()
        .backend(Backend::Epoll)
        .concurrency(1)
        .build()
        .unwrap();
    assert_eq!(p.backend(), Backend::Epoll);
    p.attach().unwrap();
    p
}

fn get(port: &Port) -> Packet {
    port.get(T)
        .expect("no packet within 30 s: the operation was lost")
}

/// Reads a cached file (where `preadv2(RWF_NOWAIT)` would succeed) with the
/// inline read refused as `compat` says: whole reads, a read across the end
/// of the file and one past it give what the file holds (ReadFile's rules).
fn reads_survive_a_refused_nowait_read() {
    let f = TempFile::new("nowait");
    let data = pattern(7, 0, 100_000);
    let file = f.open();
    file.write_all_at(&data, 0).unwrap();
    let port = epoll_port();
    let h = port.associate(file, 3);

    port.submit(ReadAt::new(&h, Vec::with_capacity(65_536), 4096))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = get(&port);
    assert!(p.status.is_ok(), "whole read: {:?}", p.status);
    assert_eq!((p.key, p.bytes), (3, 65_536));
    let Op::ReadAt(r) = p.op else {
        panic!("{:?}", p.op)
    };
    assert_eq!(r.buf, data[4096..4096 + 65_536]);

    // Across the end: what is there.
    port.submit(ReadAt::new(&h, Vec::with_capacity(8192), 96_000))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = get(&port);
    assert!(p.status.is_ok(), "read across the end: {:?}", p.status);
    assert_eq!(p.bytes, 4000);
    let Op::ReadAt(r) = p.op else {
        panic!("{:?}", p.op)
    };
    assert_eq!(r.buf, data[96_000..]);

    // At the end: 0 bytes, success.
    port.submit(ReadAt::new(&h, Vec::with_capacity(10), 100_000))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = get(&port);
    assert!(p.status.is_ok(), "read at the end: {:?}", p.status);
    assert_eq!(p.bytes, 0);
    assert!(pool_ran(), "the reads did not go through the blocking pool");
}

#[test]
fn read_at_falls_back_to_the_pool_when_nowait_reads_are_enosys() {
    if in_child(
        &test_name!(read_at_falls_back_to_the_pool_when_nowait_reads_are_enosys),
        &[("IOCOMP_EPOLL_COMPAT", "nowait-enosys")],
        Duration::from_secs(60),
    ) {
        return;
    }
    reads_survive_a_refused_nowait_read();
}

#[test]
fn read_at_falls_back_to_the_pool_when_nowait_reads_are_eperm() {
    if in_child(
        &test_name!(read_at_falls_back_to_the_pool_when_nowait_reads_are_eperm),
        &[("IOCOMP_EPOLL_COMPAT", "nowait-eperm")],
        Duration::from_secs(60),
    ) {
        return;
    }
    reads_survive_a_refused_nowait_read();
}

#[test]
fn read_at_falls_back_to_the_pool_when_nowait_reads_are_einval() {
    if in_child(
        &test_name!(read_at_falls_back_to_the_pool_when_nowait_reads_are_einval),
        &[("IOCOMP_EPOLL_COMPAT", "nowait-einval")],
        Duration::from_secs(60),
    ) {
        return;
    }
    reads_survive_a_refused_nowait_read();
}

#[test]
fn read_at_falls_back_to_the_pool_when_nowait_reads_are_eopnotsupp() {
    if in_child(
        &test_name!(read_at_falls_back_to_the_pool_when_nowait_reads_are_eopnotsupp),
        &[("IOCOMP_EPOLL_COMPAT", "nowait-eopnotsupp")],
        Duration::from_secs(60),
    ) {
        return;
    }
    reads_survive_a_refused_nowait_read();
}

/// The real error of a read the pool runs still reaches the packet: a
/// `ReadAt` on a write-only file fails with EBADF, inline refusal or not.
#[test]
fn a_pool_read_that_fails_reports_the_real_error() {
    if in_child(
        &test_name!(a_pool_read_that_fails_reports_the_real_error),
        &[("IOCOMP_EPOLL_COMPAT", "nowait-enosys")],
        Duration::from_secs(60),
    ) {
        return;
    }
    let f = TempFile::new("wronly");
    std::fs::write(&f.0, b"0123456789").unwrap();
    let port = epoll_port();
    let h = port.associate(OpenOptions::new().write(true).open(&f.0).unwrap(), 4);
    port.submit(ReadAt::new(&h, Vec::with_capacity(10), 0))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = get(&port);
    let e = p.status.expect_err("a read of a write-only file succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
}

/// No helper thread can be started at all: a write (always pool work on
/// epoll), a flush, and a read the inline path cannot do each complete with
/// an error packet instead of waiting forever, and the port stays usable.
#[test]
fn a_pool_without_helpers_completes_each_op_with_an_error() {
    if in_child(
        &test_name!(a_pool_without_helpers_completes_each_op_with_an_error),
        &[("IOCOMP_EPOLL_COMPAT", "pool-spawn-fail,nowait-enosys")],
        Duration::from_secs(60),
    ) {
        return;
    }
    let f = TempFile::new("nospawn");
    let port = epoll_port();
    let h = port.associate(f.open(), 5);
    for round in 0..3 {
        port.submit(WriteAt::new(&h, pattern(round, 0, 5000), 0))
            .map_err(|(e, _)| e)
            .unwrap();
        let p = get(&port);
        assert!(matches!(p.op, Op::WriteAt(_)), "{:?}", p.op);
        let e = p
            .status
            .expect_err("a write succeeded with no thread to run it");
        assert_ne!(e.raw_os_error(), Some(libc::ECANCELED), "not a cancel: {e}");
        assert_not_retryable(&e);
        assert_eq!(p.bytes, 0);
        // The buffer comes back with the packet.
        let Op::WriteAt(w) = p.op else { unreachable!() };
        assert_eq!(w.buf, pattern(round, 0, 5000));

        port.submit(Fsync::new(&h)).map_err(|(e, _)| e).unwrap();
        let p = get(&port);
        assert!(matches!(p.op, Op::Fsync(_)), "{:?}", p.op);
        assert!(
            p.status.is_err(),
            "a flush succeeded with no thread to run it"
        );

        port.submit(ReadAt::new(&h, Vec::with_capacity(100), 0))
            .map_err(|(e, _)| e)
            .unwrap();
        let p = get(&port);
        assert!(
            p.status.is_err(),
            "a pool read succeeded with no thread to run it"
        );
    }
    // Nothing was written.
    assert_eq!(std::fs::metadata(&f.0).unwrap().len(), 0);
    // The port still delivers other packets.
    port.post(9, 1, 2).unwrap();
    assert_eq!(get(&port).key, 9);
}

/// Only the first helper thread can be started: every job still runs, on
/// that one, whatever the number in flight.
#[test]
fn a_pool_with_one_helper_runs_every_job() {
    if in_child(
        &test_name!(a_pool_with_one_helper_runs_every_job),
        &[("IOCOMP_EPOLL_COMPAT", "pool-spawn-fail-after-1")],
        Duration::from_secs(60),
    ) {
        return;
    }
    let f = TempFile::new("onehelper");
    let port = epoll_port();
    let h = port.associate(f.open(), 6);
    let n = 24usize;
    for i in 0..n {
        port.submit(WriteAt::new(
            &h,
            pattern(i as u64, 0, 4096),
            (i * 4096) as u64,
        ))
        .map_err(|(e, _)| e)
        .unwrap();
    }
    for _ in 0..n {
        let p = get(&port);
        assert!(p.status.is_ok(), "{:?}", p.status);
        assert_eq!(p.bytes, 4096);
    }
    let all = std::fs::read(&f.0).unwrap();
    for i in 0..n {
        assert_eq!(
            all[i * 4096..(i + 1) * 4096],
            pattern(i as u64, 0, 4096),
            "block {i}"
        );
    }
}

/// Every other pool job panics, and the pool has one helper: its operation
/// still gets its one packet (an error), the helper that ran it goes on,
/// and the jobs between succeed.
/// Then the port closes cleanly (its drain waits for nothing lost).
#[test]
fn a_panicking_pool_job_completes_its_op_and_the_pool_goes_on() {
    if in_child(
        &test_name!(a_panicking_pool_job_completes_its_op_and_the_pool_goes_on),
        &[(
            "IOCOMP_EPOLL_COMPAT",
            "pool-job-panic,pool-spawn-fail-after-1",
        )],
        Duration::from_secs(60),
    ) {
        return;
    }
    let f = TempFile::new("panic");
    let port = epoll_port();
    let h = port.associate(f.open(), 7);
    let (mut ok, mut failed) = (0, 0);
    // One at a time, so that which job panics is known; the pool has one
    // helper only, so a helper killed by a panic would be missed.
    for i in 0..12u64 {
        port.submit(WriteAt::new(&h, pattern(i, 0, 512), i * 512))
            .map_err(|(e, _)| e)
            .unwrap();
        let p = get(&port);
        assert!(matches!(p.op, Op::WriteAt(_)), "{:?}", p.op);
        match p.status {
            Ok(()) => {
                assert_eq!(p.bytes, 512);
                let mut back = vec![0u8; 512];
                File::open(&f.0)
                    .unwrap()
                    .read_exact_at(&mut back, i * 512)
                    .unwrap();
                assert_eq!(back, pattern(i, 0, 512), "write {i}");
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Other, "write {i}: {e}");
                failed += 1;
            }
        }
    }
    assert_eq!((ok, failed), (6, 6));
    drop(h);
    port.close();
    port.detach();
}

/// A pool that cannot start a helper gives an error that says so, not
/// "try again" (EAGAIN / `WouldBlock` invites a poll-and-retry loop, and
/// Win32's `ERROR_IO_PENDING`-style retry has no meaning for a completed
/// packet).
fn assert_not_retryable(e: &std::io::Error) {
    assert_ne!(e.kind(), ErrorKind::WouldBlock, "a retryable error: {e}");
    assert_ne!(e.raw_os_error(), Some(libc::EAGAIN), "EAGAIN: {e}");
}

/// A file of `len` pattern bytes, cached.
fn filled(tag: &str, len: usize) -> (TempFile, File, Vec<u8>) {
    let f = TempFile::new(tag);
    let data = pattern(11, 0, len);
    let file = f.open();
    file.write_all_at(&data, 0).unwrap();
    (f, file, data)
}

/// A `ReadAt` whose first 4096 bytes are read inline and whose rest needs
/// the pool, when no helper thread can be started: ReadFile's rule is that a
/// short count without an error means end of file, so the packet must be an
/// error (not a short success in the middle of the file), and it carries the
/// 4096 bytes read, which are in the buffer.
#[test]
fn a_read_with_inline_bytes_and_no_helper_fails_carrying_the_byte_count() {
    if in_child(
        &test_name!(a_read_with_inline_bytes_and_no_helper_fails_carrying_the_byte_count),
        &[(
            "IOCOMP_EPOLL_COMPAT",
            "pool-spawn-fail,nowait-eagain-after-4k",
        )],
        Duration::from_secs(60),
    ) {
        return;
    }
    let (_f, file, data) = filled("inline-nospawn", 100_000);
    let port = epoll_port();
    let h = port.associate(file, 8);
    port.submit(ReadAt::new(&h, Vec::with_capacity(65_536), 0))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = get(&port);
    let e = p
        .status
        .expect_err("a read stopped mid-file completed as a success");
    assert_not_retryable(&e);
    assert_eq!(p.bytes, 4096);
    let Op::ReadAt(r) = p.op else {
        panic!("{:?}", p.op)
    };
    assert_eq!(r.buf, data[..4096]);
    assert!(r.buf.capacity() >= 65_536);
}

/// A pool job that panics after the inline read got the first 4096 bytes:
/// the packet is an error carrying those bytes, and the caller's buffer
/// comes back with them (and its capacity), not empty.
#[test]
fn a_panicking_pool_read_gives_back_its_buffer_and_inline_bytes() {
    if in_child(
        &test_name!(a_panicking_pool_read_gives_back_its_buffer_and_inline_bytes),
        &[(
            "IOCOMP_EPOLL_COMPAT",
            "pool-job-panic,nowait-eagain-after-4k",
        )],
        Duration::from_secs(60),
    ) {
        return;
    }
    let (_f, file, data) = filled("panic-read", 100_000);
    let port = epoll_port();
    let h = port.associate(file, 9);
    port.submit(ReadAt::new(&h, Vec::with_capacity(65_536), 0))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = get(&port);
    let e = p.status.expect_err("the panicking job succeeded");
    assert_eq!(e.kind(), ErrorKind::Other, "{e}");
    assert_eq!(p.bytes, 4096);
    let Op::ReadAt(r) = p.op else {
        panic!("{:?}", p.op)
    };
    assert_eq!(r.buf, data[..4096]);
    assert!(r.buf.capacity() >= 65_536, "the buffer was lost");
    assert!(pool_ran(), "the read did not reach the pool");
    // The next job (not panicking) reads the rest from the same helper.
    port.submit(ReadAt::new(&h, r.buf, 4096))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = get(&port);
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!(p.bytes, 65_536 - 4096);
    let Op::ReadAt(r) = p.op else {
        panic!("{:?}", p.op)
    };
    assert_eq!(r.buf[4096..], data[4096..65_536]);
}

/// The inline read gets the first 4096 bytes, then the disk fails (EIO):
/// the packet is that error carrying the 4096 bytes (the same rule as the
/// pool's), not a short success. A read that stops at end of file inside
/// the readable part is a success.
#[test]
fn an_inline_read_error_after_some_bytes_fails_carrying_the_byte_count() {
    if in_child(
        &test_name!(an_inline_read_error_after_some_bytes_fails_carrying_the_byte_count),
        &[("IOCOMP_EPOLL_COMPAT", "nowait-eio-after-4k")],
        Duration::from_secs(60),
    ) {
        return;
    }
    let (_f, file, data) = filled("inline-eio", 100_000);
    let port = epoll_port();
    let h = port.associate(file, 10);
    port.submit(ReadAt::new(&h, Vec::with_capacity(65_536), 0))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = get(&port);
    let e = p
        .status
        .expect_err("a read that met EIO mid-file succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(p.bytes, 4096);
    let Op::ReadAt(r) = p.op else {
        panic!("{:?}", p.op)
    };
    assert_eq!(r.buf, data[..4096]);

    let (_g, short, small) = filled("inline-eof", 3000);
    let h = port.associate(short, 11);
    port.submit(ReadAt::new(&h, Vec::with_capacity(65_536), 0))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = get(&port);
    assert!(p.status.is_ok(), "a read up to end of file: {:?}", p.status);
    assert_eq!(p.bytes, 3000);
    let Op::ReadAt(r) = p.op else {
        panic!("{:?}", p.op)
    };
    assert_eq!(r.buf, small);
}

/// A misspelt fault word must not let a test pass without the fault: the
/// first use of the setting panics, naming the word and the known ones.
#[test]
fn a_misspelt_compat_word_is_refused_loudly() {
    if is_child() {
        // The child: a file read reads the setting.
        let (_f, file, _) = filled("misspelt", 10_000);
        let port = epoll_port();
        let h = port.associate(file, 12);
        let _ = port.submit(ReadAt::new(&h, Vec::with_capacity(4096), 0));
        let _ = port.get(T);
        return;
    }
    let ran = Child::test(&test_name!(a_misspelt_compat_word_is_refused_loudly))
        .env("IOCOMP_EPOLL_COMPAT", "nowait-enosis")
        .limit(Duration::from_secs(60))
        .run();
    let (status, out) = (ran.status, ran.all());
    assert!(
        !status.success(),
        "a misspelt IOCOMP_EPOLL_COMPAT word was accepted:\n{out}"
    );
    assert!(
        out.contains("nowait-enosis") && out.contains("nowait-enosys"),
        "the panic names neither the word nor the known ones:\n{out}"
    );
}

/// A transmit of pages that are not cached, with `preadv2(RWF_NOWAIT)`
/// refused (ENOSYS): the blocking pool reads them, and the peer gets the
/// file byte for byte (TransmitFile sends the whole file).
#[test]
fn a_cold_transmit_with_nowait_reads_refused_goes_through_the_pool() {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    if in_child(
        &test_name!(a_cold_transmit_with_nowait_reads_refused_goes_through_the_pool),
        &[("IOCOMP_EPOLL_COMPAT", "nowait-enosys")],
        Duration::from_secs(60),
    ) {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut peer, _) = l.accept().unwrap();
    let (_f, file, data) = filled("cold-transmit", 3_000_017);
    file.sync_all().unwrap();
    // SAFETY: a hint about a descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
    let port = epoll_port();
    let h = port.associate(ours, 13);
    port.submit(iocomp::TransmitFile::new(&h, file))
        .map_err(|(e, _)| e)
        .unwrap();
    let len = data.len();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; len];
        peer.read_exact(&mut got).unwrap();
        got
    });
    let p = get(&port);
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!(p.bytes, data.len() as u64);
    drop(p);
    drop(h);
    let got = reader.join().unwrap();
    assert!(
        got == data,
        "the peer got {} bytes, not the file",
        got.len()
    );
    assert!(pool_ran(), "the cold pages were not read by the pool");
}

/// The harness itself: a child that writes more than a pipe holds (64 KiB;
/// a panic test with `RUST_BACKTRACE=full` writes about that much) must not
/// block on its output, so its parent reads it while it runs.
#[test]
fn a_child_with_much_output_finishes() {
    if in_child(
        &test_name!(a_child_with_much_output_finishes),
        &[],
        Duration::from_secs(60),
    ) {
        return;
    }
    let line = "x".repeat(1023);
    for _ in 0..256 {
        eprintln!("{line}");
    }
}

/// Reads refused inline (`preadv2(RWF_NOWAIT)` finds nothing cached) go to
/// the blocking pool: many in flight at once, each completes once with the
/// file's bytes at its offset; and reads of cached pages afterwards complete
/// inline: `submit_inline` returns them at once (Win32's skip-on-success
/// path), not only through the pool.
#[test]
fn cold_reads_go_to_the_pool_and_cached_ones_come_back_inline() {
    if in_child(
        &test_name!(cold_reads_go_to_the_pool_and_cached_ones_come_back_inline),
        &[("IOCOMP_EPOLL_COMPAT", "nowait-eagain-after-4k")],
        Duration::from_secs(60),
    ) {
        return;
    }
    let f = TempFile::new("guess");
    let data = pattern(11, 0, 256 * 1024);
    let file = f.open();
    file.write_all_at(&data, 0).unwrap();
    let port = epoll_port();
    let h = port.associate(file, 5);

    // 400 reads past the first 4 KiB (refused inline: "not cached"), 32 in
    // flight, at offsets that are not page-aligned.
    let blocks = (data.len() - 4096) / 1000 - 1;
    let mut next = 0usize;
    let mut seen = std::collections::HashSet::new();
    let mut pending = std::collections::HashMap::new();
    let issue = |next: &mut usize, pending: &mut std::collections::HashMap<_, _>| {
        let off = 4096 + (*next * 7919 % blocks) * 1000;
        let id = port
            .submit(ReadAt::new(&h, Vec::with_capacity(1000), off as u64))
            .map_err(|(e, _)| e)
            .unwrap();
        pending.insert(id, off);
        *next += 1;
    };
    for _ in 0..32 {
        issue(&mut next, &mut pending);
    }
    while !pending.is_empty() {
        let p = get(&port);
        let off = pending
            .remove(&p.id)
            .unwrap_or_else(|| panic!("a packet for an unknown or finished op: {:?}", p.id));
        assert!(seen.insert(p.id), "two packets for one op");
        assert!(p.status.is_ok(), "read at {off}: {:?}", p.status);
        assert_eq!(p.bytes, 1000, "read at {off}");
        let Op::ReadAt(r) = p.op else {
            panic!("{:?}", p.op)
        };
        assert_eq!(r.offset, off as u64);
        assert_eq!(r.buf, data[off..off + 1000], "bytes of the read at {off}");
        if next < 400 {
            issue(&mut next, &mut pending);
        }
    }
    assert_eq!(seen.len(), 400);
    assert!(pool_ran(), "the reads did not go through the blocking pool");

    // The first 4 KiB read inline. Within 64 reads one completes inline,
    // and from then on every one does.
    let mut first_inline = None;
    for i in 0..64 {
        let at = (i * 97) % 3000;
        let p = match port
            .submit_inline(ReadAt::new(&h, Vec::with_capacity(1000), at as u64))
            .map_err(|(e, _)| e)
            .unwrap()
        {
            Inline::Done(p) => {
                first_inline.get_or_insert(i);
                p
            }
            Inline::Pending(id) => {
                assert!(
                    first_inline.is_none(),
                    "read {i} went to the pool after read {first_inline:?} completed inline"
                );
                let p = get(&port);
                assert_eq!(p.id, id);
                p
            }
        };
        assert!(p.status.is_ok(), "read at {at}: {:?}", p.status);
        let Op::ReadAt(r) = p.op else {
            panic!("{:?}", p.op)
        };
        assert_eq!(r.buf, data[at..at + 1000], "bytes of the read at {at}");
    }
    let first = first_inline.expect("no cached read completed inline in 64 tries");
    assert!(first < 48, "only read {first} of 64 completed inline");
}
