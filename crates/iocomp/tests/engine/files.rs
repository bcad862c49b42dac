//! Overlapped file I/O (`ReadFile`/`WriteFile` with `OVERLAPPED.Offset`,
//! `FlushFileBuffers`) through `ReadAt`, `WriteAt` and `Fsync`, on both
//! backends: positional reads and writes at any 64-bit offset, end-of-file
//! behaviour as Windows documents it (a read at or past the end succeeds with
//! 0 bytes, one across it returns what is there), bad handles and offsets as a
//! packet with the OS error or a refused submission, and cancellation of file
//! work the epoll backend's blocking pool has not started.
//! Positional reads of procfs files (size 0, a page per read) read on to
//! their end.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use iocomp::{Backend, Fsync, Op, Packet, Port, ReadAt, WriteAt};

use crate::harness::{backends, no_packet, one, pattern, port_on, rw, submit, TempDir, T};

#[test]
fn read_above_4_gib_in_a_sparse_file() {
    for b in backends() {
        let dir = TempDir::new("sparse");
        let path = dir.path("sparse");
        let f = rw(&path);
        let at = 5u64 << 30; // 5 GiB: needs OffsetHigh on Windows
        f.set_len(at + (1 << 20)).unwrap();
        let data = pattern(7, at, 3000);
        f.write_all_at(&data, at).unwrap();
        let port = port_on(b);
        let h = port.associate(File::open(&path).unwrap(), 9);
        // A read straddling the written bytes: zeros of the hole, then data.
        let (p, buf) = read_at(&port, &h, Vec::with_capacity(4096), at - 1000);
        assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
        assert_eq!(p.key, 9);
        assert_eq!(p.bytes, 4096, "{b:?}");
        assert_eq!(buf.len(), 4096);
        assert!(buf[..1000].iter().all(|&x| x == 0), "{b:?}: hole not zero");
        assert_eq!(
            &buf[1000..4000],
            &data[..],
            "{b:?}: wrong bytes above 4 GiB"
        );
        assert!(buf[4000..].iter().all(|&x| x == 0));
        // Exactly the written range, at an offset whose low 32 bits are small.
        let (p, buf) = read_at(&port, &h, Vec::with_capacity(3000), at);
        assert_eq!((p.bytes, &buf[..]), (3000, &data[..]), "{b:?}");
        no_packet(
            &port,
            Duration::ZERO,
            "more than one packet for an operation",
        );
    }
}

#[test]
fn short_read_across_end_of_file_and_zero_at_or_after_it() {
    for b in backends() {
        let dir = TempDir::new("eof");
        let path = dir.path("ten");
        std::fs::write(&path, b"0123456789").unwrap();
        let port = port_on(b);
        let h = port.associate(File::open(&path).unwrap(), 1);
        // Across the end: what is there, appended after what the buffer held.
        let mut buf = Vec::with_capacity(100);
        buf.extend_from_slice(b"xy");
        let (p, buf) = read_at(&port, &h, buf, 4);
        assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
        assert_eq!(p.bytes, 6, "{b:?}");
        assert_eq!(buf, b"xy456789");
        // At the end and far after it: success with 0 bytes (ReadFile's EOF).
        for off in [10, 11, 1 << 40, i64::MAX as u64] {
            let (p, buf) = read_at(&port, &h, Vec::with_capacity(100), off);
            assert!(p.status.is_ok(), "{b:?} at {off}: {:?}", p.status);
            assert_eq!((p.bytes, buf.len()), (0, 0), "{b:?} at {off}");
        }
        // (A buffer with no spare capacity is refused at submit: see
        // read_at_with_no_spare_capacity_is_refused.)
        no_packet(
            &port,
            Duration::ZERO,
            "more than one packet for an operation",
        );
    }
}

#[test]
fn write_then_read_back_leaves_the_file_position_alone() {
    for b in backends() {
        let dir = TempDir::new("wr");
        let path = dir.path("f");
        let mut f = rw(&path);
        f.write_all(b"head").unwrap(); // the file position is now 4
        let port = port_on(b);
        let h = port.associate(f.try_clone().unwrap(), 3);
        let data = pattern(3, 0, 3 << 20); // 3 MiB: may take several steps
        let id = submit(&port, WriteAt::new(&h, data.clone(), 1 << 20));
        let p = one(&port, id);
        assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
        assert_eq!((p.key, p.bytes), (3, data.len() as u64), "{b:?}");
        let Op::WriteAt(w) = p.op else { panic!() };
        assert_eq!(w.buf, data, "the buffer comes back untouched");
        // Read back through the port, at a 4 KiB-unaligned offset.
        let (p, got) = read_at(&port, &h, Vec::with_capacity(1 << 20), (1 << 20) + 12345);
        assert!(p.status.is_ok());
        assert_eq!(p.bytes, 1 << 20, "{b:?}");
        assert_eq!(&got[..], &data[12345..12345 + (1 << 20)], "{b:?}");
        // And through std: the bytes are in the file, the hole before is zero,
        // and the file position (4) never moved.
        assert_eq!(f.stream_position().unwrap(), 4, "{b:?}");
        let mut all = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), (1 << 20) + data.len());
        assert_eq!(&all[..4], b"head");
        assert!(all[4..1 << 20].iter().all(|&x| x == 0));
        assert_eq!(&all[1 << 20..], &data[..], "{b:?}");
        no_packet(
            &port,
            Duration::ZERO,
            "more than one packet for an operation",
        );
    }
}

#[test]
fn fsync_and_fdatasync_complete_with_the_key_and_zero_bytes() {
    for b in backends() {
        let dir = TempDir::new("sync");
        let path = dir.path("f");
        let port = port_on(b);
        let h = port.associate(rw(&path), 5);
        let id = submit(&port, WriteAt::new(&h, b"durable".to_vec(), 0));
        assert!(one(&port, id).status.is_ok());
        for op in [Fsync::new(&h), Fsync::data(&h)] {
            let data_only = op.data_only;
            let id = submit(&port, op);
            let p = one(&port, id);
            assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
            assert_eq!((p.key, p.bytes), (5, 0));
            let Op::Fsync(s) = p.op else { panic!() };
            assert_eq!(s.data_only, data_only);
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"durable");
        no_packet(
            &port,
            Duration::ZERO,
            "more than one packet for an operation",
        );
    }
}

#[test]
fn bad_handles_and_offsets_give_an_error_packet_or_a_refusal() {
    for b in backends() {
        let dir = TempDir::new("bad");
        let path = dir.path("ro");
        std::fs::write(&path, b"read only").unwrap();
        let port = port_on(b);

        // A directory: reading it is EISDIR, in the packet.
        let d = port.associate(File::open(&dir.0).unwrap(), 1);
        let (p, buf) = read_at(&port, &d, Vec::with_capacity(64), 0);
        let e = p.status.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{b:?}: {e}");
        assert_eq!((p.bytes, buf.capacity() >= 64), (0, true));

        // A file opened read-only, written: EBADF, the buffer comes back.
        let ro = port.associate(File::open(&path).unwrap(), 2);
        let id = submit(&port, WriteAt::new(&ro, b"nope".to_vec(), 0));
        let p = one(&port, id);
        let e = p.status.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{b:?}: {e}");
        assert_eq!(p.bytes, 0);
        let Op::WriteAt(w) = p.op else { panic!() };
        assert_eq!(w.buf, b"nope");
        assert_eq!(std::fs::read(&path).unwrap(), b"read only");

        // A descriptor without a position (a pipe): refused with ESPIPE
        // (streams take Recv/Send), the buffer handed back.
        let mut child = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = port.associate(std::os::fd::OwnedFd::from(child.stdout.take().unwrap()), 3);
        let (e, op) = port
            .submit(ReadAt::new(&out, Vec::with_capacity(8), 0))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESPIPE), "{b:?}: {e}");
        assert!(matches!(op, Op::ReadAt(ref r) if r.buf.capacity() == 8));
        drop(child.stdin.take());
        child.wait().unwrap();

        // Offsets past the largest file offset: refused, nothing queued, the
        // operation (and its buffer) handed back.
        let (e, op) = port
            .submit(ReadAt::new(&ro, Vec::with_capacity(8), i64::MAX as u64 + 1))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{b:?}");
        assert!(matches!(op, Op::ReadAt(ref r) if r.buf.capacity() == 8));
        let (e, _) = port
            .submit(ReadAt::new(&ro, Vec::with_capacity(8), u64::MAX))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let (e, op) = port
            .submit(WriteAt::new(&ro, b"12".to_vec(), i64::MAX as u64 - 1))
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "{b:?}: end past i64::MAX"
        );
        assert!(matches!(op, Op::WriteAt(ref w) if w.buf == b"12"));

        // A handle of another port: refused.
        let other = Port::builder().backend(b).build().unwrap();
        let foreign = other.associate(File::open(&path).unwrap(), 4);
        let (e, _) = port
            .submit(ReadAt::new(&foreign, Vec::with_capacity(8), 0))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        no_packet(
            &port,
            Duration::ZERO,
            "more than one packet for an operation",
        );

        // A closed port: refused.
        port.close();
        let (e, _) = port.submit(Fsync::new(&ro)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{b:?}");
    }
}

/// CancelIoEx on file work: an operation not started yet completes as
/// aborted with its buffer, and nothing of it reaches the file; one already
/// running completes with its real result. Either way, one packet each.
#[test]
fn cancel_of_queued_file_writes() {
    for b in backends() {
        let dir = TempDir::new("cancel");
        let path = dir.path("f");
        let port = port_on(b);
        let h = port.associate(rw(&path), 6);
        const CHUNK: usize = 8 << 20;
        const N: usize = 24;
        let mut aborted = 0;
        for round in 0..5 {
            // The buffers are made first, so that the submissions come in a
            // burst and the cancels while later writes still wait for a
            // helper (filling 24 × 8 MiB between submissions gave the pool
            // time to take every job before the first cancel).
            let datas: Vec<Vec<u8>> = (0..N).map(|i| vec![(i + 1) as u8; CHUNK]).collect();
            let mut ids = Vec::new();
            for (i, data) in datas.into_iter().enumerate() {
                ids.push(submit(&port, WriteAt::new(&h, data, (i * CHUNK) as u64)));
            }
            // The last half most likely waits behind the first (the epoll
            // backend's pool has a few threads; io_uring's workers a few more).
            for &id in ids[N / 2..].iter().rev() {
                port.cancel(id).unwrap_or_else(|e| {
                    // It may have finished already: then its packet is queued.
                    assert_eq!(e.kind(), ErrorKind::NotFound, "{b:?}: {e}")
                });
            }
            let mut written = [None; N];
            for _ in 0..N {
                let p = port.get(T).unwrap();
                let i = ids.iter().position(|&x| x == p.id).expect("unknown packet");
                assert!(written[i].is_none(), "two packets for one op");
                let Op::WriteAt(w) = p.op else { panic!() };
                assert_eq!(w.buf.len(), CHUNK, "{b:?}: the buffer must come back");
                assert!(w.buf.iter().all(|&x| x == (i + 1) as u8));
                match p.status {
                    Ok(()) => {
                        assert_eq!(p.bytes, CHUNK as u64);
                        written[i] = Some(true);
                    }
                    Err(e) => {
                        assert_eq!(e.raw_os_error(), Some(libc::ECANCELED), "{b:?}: {e}");
                        assert!(i >= N / 2, "{b:?}: op {i} was never cancelled");
                        // The write may have been cut short only before it began
                        // on epoll; io_uring may report what a torn write did.
                        written[i] = Some(false);
                        if b == Backend::Epoll {
                            assert_eq!(p.bytes, 0);
                        }
                        aborted += 1;
                    }
                }
            }
            no_packet(
                &port,
                Duration::ZERO,
                "more than one packet for an operation",
            );
            // Ops that succeeded are in the file.
            let f = File::open(&path).unwrap();
            let mut probe = vec![0u8; 4096];
            for (i, w) in written.iter().enumerate() {
                if *w == Some(true) {
                    f.read_exact_at(&mut probe, (i * CHUNK + CHUNK - 4096) as u64)
                        .unwrap();
                    assert!(probe.iter().all(|&x| x == (i + 1) as u8), "{b:?} op {i}");
                }
            }
            // Start the next round from an empty file.
            File::create(&path).unwrap();
            if aborted > 0 && round > 0 {
                break;
            }
        }
        if b == Backend::Epoll {
            assert!(
                aborted > 0,
                "no queued write was cancelled in 5 rounds of {N} 8 MiB writes"
            );
        }
    }
}

/// How many of the first `n` 4-KiB blocks of `path` hold what
/// `pattern(i, i * 4096, 4096)` wrote, once `n` do or `wait` has passed.
fn blocks_written(path: &std::path::Path, n: u64, at_least: u64, wait: Duration) -> u64 {
    const LEN: usize = 4096;
    let f = File::open(path).unwrap();
    let deadline = std::time::Instant::now() + wait;
    loop {
        let mut count = 0;
        for i in 0..n {
            let mut got = vec![0u8; LEN];
            let k = f.read_at(&mut got, i * LEN as u64).unwrap();
            if k == LEN && got == pattern(i, i * LEN as u64, LEN) {
                count += 1;
            }
        }
        if count >= at_least.min(n) || std::time::Instant::now() >= deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// When a file write reaches the kernel before the thread waits on the port.
/// On Windows `WriteFile` on an overlapped handle starts the I/O in the call;
/// the epoll backend's pool starts it on its own threads at once. The
/// io_uring backend hands every op to the kernel in a batch at the thread's
/// next wait on the port, except file reads and writes: those go in groups of
/// 8 as they are submitted (so a deep queue of cold reads does not reach the
/// disk as one plugged burst), and only a partial group waits for the next
/// `get`. So of 61 writes submitted with no `get`, at least 56 (7 full
/// groups) reach the file on io_uring and all 61 on epoll; the groups count
/// from the last time the queue was handed over, not from the ring's first
/// file op (a read reaped before them does not shift them).
#[test]
fn full_groups_of_file_writes_start_before_the_thread_waits_on_the_port() {
    for b in backends() {
        let dir = TempDir::new("started");
        let path = dir.path("f");
        let port = port_on(b);
        let h = port.associate(rw(&path), 4);
        // One file op before, submitted and reaped.
        let id = submit(&port, ReadAt::new(&h, Vec::with_capacity(16), 0));
        assert!(one(&port, id).status.is_ok());
        const N: u64 = 61;
        const LEN: usize = 4096;
        let ids: Vec<_> = (0..N)
            .map(|i| {
                let data = pattern(i, i * LEN as u64, LEN);
                submit(&port, WriteAt::new(&h, data, i * LEN as u64))
            })
            .collect();
        // No get until the file holds what must have started (or a generous
        // bound).
        let must = match b {
            Backend::Uring => N / 8 * 8,
            _ => N,
        };
        let n = blocks_written(&path, N, must, Duration::from_secs(20));
        assert!(
            n >= must,
            "{b:?}: {n} of {N} writes in the file after 20 s without a get \
             ({must} must have started at submit)"
        );
        for p in crate::harness::collect(&port, &ids) {
            assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
            assert_eq!((p.key, p.bytes), (4, LEN as u64), "{b:?}");
        }
        // After the wait, every write is there.
        assert_eq!(
            blocks_written(&path, N, N, Duration::ZERO),
            N,
            "{b:?}: writes missing after their packets"
        );
        no_packet(
            &port,
            Duration::ZERO,
            "more than one packet for an operation",
        );
    }
}

/// Hundreds of file writes and then reads with no `get` in between (on
/// io_uring most are handed to the kernel in groups as they are submitted,
/// and their completions pile up before the thread reaps anything): every
/// operation still gets exactly one packet, each succeeds, every write is
/// whole, and no read returns more than its buffer holds (a read may run
/// before the write at its offset: positional I/O orders nothing).
#[test]
fn many_file_ops_without_a_get_give_one_packet_each() {
    for b in backends() {
        let dir = TempDir::new("many");
        let path = dir.path("f");
        let port = port_on(b);
        let h = port.associate(rw(&path), 4);
        const N: u64 = 203;
        let writes: Vec<_> = (0..N)
            .map(|i| {
                submit(
                    &port,
                    WriteAt::new(&h, pattern(i, i * 4096, 4096), i * 4096),
                )
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let reads: Vec<_> = (0..N)
            .map(|i| submit(&port, ReadAt::new(&h, Vec::with_capacity(4096), i * 4096)))
            .collect();
        let all: Vec<_> = writes.iter().chain(&reads).copied().collect();
        for p in crate::harness::collect(&port, &all) {
            assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
            if writes.contains(&p.id) {
                assert_eq!(p.bytes, 4096, "{b:?}: a short write");
            } else {
                assert!(p.bytes <= 4096, "{b:?}: a read of {} bytes", p.bytes);
            }
        }
        no_packet(
            &port,
            Duration::from_millis(200),
            "more than one packet for an operation",
        );
    }
}

/// `submit_inline` file reads mixed with queued ones and cancels (on
/// io_uring a group of 8 may be handed to the kernel inside the inline
/// call): an inline read's packet comes back from the call and none is
/// queued; every other read gets exactly one packet through the port.
#[test]
fn inline_file_reads_mixed_with_queued_ones_and_cancels_give_one_packet_per_op() {
    use iocomp::Inline;
    for b in backends() {
        let dir = TempDir::new("inline");
        let path = dir.path("f");
        let f = rw(&path);
        f.write_all_at(&vec![7u8; 1 << 20], 0).unwrap();
        let port = port_on(b);
        let h = port.associate(f, 4);
        let mut pending = Vec::new();
        for round in 0..50u64 {
            for i in 0..5u64 {
                let off = ((round * 7 + i) % 256) * 4096;
                pending.push(submit(
                    &port,
                    ReadAt::new(&h, Vec::with_capacity(4096), off),
                ));
            }
            match port.submit_inline(ReadAt::new(&h, Vec::with_capacity(4096), round * 4096)) {
                Ok(Inline::Done(p)) => {
                    assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
                    assert_eq!(p.bytes, 4096, "{b:?}");
                }
                Ok(Inline::Pending(id)) => pending.push(id),
                Err((e, _)) => panic!("{b:?}: {e}"),
            }
            if round % 3 == 0 {
                let _ = port.cancel(*pending.last().unwrap());
            }
        }
        for p in crate::harness::collect(&port, &pending) {
            assert!(p.status.is_ok() || p.is_aborted(), "{b:?}: {:?}", p.status);
        }
        no_packet(
            &port,
            Duration::from_millis(200),
            "more than one packet for an operation",
        );
    }
}

fn read_at(port: &Port, h: &iocomp::Handle, buf: Vec<u8>, off: u64) -> (Packet, Vec<u8>) {
    let id = submit(port, ReadAt::new(h, buf, off));
    let mut p = one(port, id);
    let Op::ReadAt(r) = std::mem::replace(&mut p.op, Op::Posted { token: 0 }) else {
        panic!("not a ReadAt: {:?}", p.op)
    };
    (p, r.buf)
}

/// ReadFile into no room at all would complete with 0 bytes, which reads as
/// end of file: refused at submit, nothing queued, the buffer handed back.
#[test]
fn read_at_with_no_spare_capacity_is_refused() {
    for b in backends() {
        let dir = TempDir::new("nospare");
        let path = dir.path("f");
        std::fs::write(&path, b"some bytes").unwrap();
        let port = port_on(b);
        let h = port.associate(rw(&path), 1);
        let mut full = Vec::with_capacity(4);
        full.extend_from_slice(b"abcd");
        let cap = full.capacity();
        full.resize(cap, b'x');
        let (e, op) = port.submit(ReadAt::new(&h, full, 0)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{b:?}: {e}");
        assert!(
            matches!(op, Op::ReadAt(ref r) if r.buf.len() == cap),
            "{b:?}"
        );
        let (e, _) = port.submit(ReadAt::new(&h, Vec::new(), 0)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{b:?}: {e}");
        no_packet(
            &port,
            Duration::ZERO,
            "more than one packet for an operation",
        );
    }
}

/// The same reads give the same results on both backends, submitted or
/// tried inline: a read is filled unless the file ends first, so a read
/// across the end returns exactly the bytes up to it, and one at or past it
/// 0 bytes (review finding 7: io_uring's read went unchecked for a short
/// count, epoll continued). Sizes around page boundaries, buffers larger
/// and smaller than what is left.
#[test]
fn reads_across_the_end_agree_between_backends_and_inline() {
    use iocomp::Inline;
    let dir = TempDir::new("agree");
    let sizes = [0usize, 1, 4095, 4096, 4097, 70_000];
    let mut results: Vec<Vec<(u64, Vec<u8>)>> = Vec::new();
    for b in backends() {
        let port = port_on(b);
        let mut mine = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let path = dir.path(&format!("{b}-{i}"));
            std::fs::write(&path, pattern(i as u64, 0, size)).unwrap();
            let f = port.associate(File::open(&path).unwrap(), 5);
            for off in [0u64, 1, 4095, 4096, size as u64, size as u64 + 10] {
                for cap in [1usize, 4096, 8192, 1 << 20] {
                    for inline in [false, true] {
                        let op = ReadAt::new(&f, Vec::with_capacity(cap), off);
                        let p = if inline {
                            match port.submit_inline(op).map_err(|(e, _)| e).unwrap() {
                                Inline::Done(p) => p,
                                Inline::Pending(id) => {
                                    let p = port.get(T).unwrap();
                                    assert_eq!(p.id, id);
                                    p
                                }
                            }
                        } else {
                            port.submit(op).map_err(|(e, _)| e).unwrap();
                            port.get(T).unwrap()
                        };
                        assert!(p.status.is_ok(), "{b}: {:?}", p.status);
                        let Op::ReadAt(r) = p.op else { panic!() };
                        let cap = r.buf.capacity();
                        let want = size.saturating_sub(off as usize).min(cap);
                        assert_eq!(
                            p.bytes as usize, want,
                            "{b}: size {size} offset {off} buffer {cap}"
                        );
                        assert_eq!(r.buf.len(), want);
                        mine.push((p.bytes, r.buf));
                    }
                }
            }
        }
        results.push(mine);
    }
    for other in &results[1..] {
        assert!(other == &results[0], "the backends read different bytes");
    }
}

/// `ReadAt` on procfs files, whose `st_size` is 0 and whose reads return at
/// most about a page each: the buffer is filled up to the end of the file,
/// as `ReadFile` does, which takes several reads (the continuation step).
///
/// `/proc/self/smaps` always exists and is several pages for a test process
/// (a record of some 20 lines per mapping, dozens of mappings), but it changes
/// as the process runs, so only its size is checked: more than one page.
/// `/proc/kallsyms` (where the kernel has it) is megabytes long and its
/// first part is fixed while the system runs (module symbols come last):
/// there the bytes must equal what `std::fs::read` gives.
#[test]
fn read_at_on_a_procfs_file_reads_on_to_its_end() {
    for b in backends() {
        let port = port_on(b);
        let read_at = |path: &str, cap: usize| -> (u64, Vec<u8>) {
            let f = std::fs::File::open(path).unwrap();
            let h = port.associate(f, 1);
            port.submit(ReadAt::new(&h, Vec::with_capacity(cap), 0))
                .map_err(|(e, _)| e)
                .unwrap();
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b}: {path}: {:?}", p.status);
            let Op::ReadAt(r) = p.op else {
                panic!("{b}: not a ReadAt")
            };
            (p.bytes, r.buf)
        };
        let (n, buf) = read_at("/proc/self/smaps", 1 << 20);
        assert!(n > 8192, "{b}: /proc/self/smaps gave only {n} bytes");
        assert_eq!(n as usize, buf.len(), "{b}");
        assert_eq!(buf.last(), Some(&b'\n'), "{b}: smaps cut inside a line");
        if std::fs::File::open("/proc/kallsyms").is_ok() {
            const CAP: usize = 256 * 1024;
            let want = std::fs::read("/proc/kallsyms").unwrap();
            let want = &want[..want.len().min(CAP)];
            let (n, buf) = read_at("/proc/kallsyms", CAP);
            assert_eq!(n as usize, want.len(), "{b}: /proc/kallsyms");
            assert!(buf == want, "{b}: /proc/kallsyms bytes differ");
        }
    }
}
