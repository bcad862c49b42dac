//! The classic completion-port file copy: several overlapped reads of the
//! source are outstanding at once; each completed read issues the write of
//! its bytes at the same offset of the destination, and each completed write
//! issues the next read — one thread, one port, `ReadFile`/`WriteFile` with
//! `OVERLAPPED.Offset` ([`ReadAt`]/[`WriteAt`]) and
//! `GetQueuedCompletionStatus` ([`Port::get`]).
//!
//! ```text
//! cargo run --release -p iocomp --example filecopy -- [--no-verify] SRC DST [DEPTH [CHUNK_KIB]]
//! ```
//!
//! `DEPTH` operations are in flight (8 by default), each moving `CHUNK_KIB`
//! KiB (1024 by default). At the end the copy is compared with the source,
//! byte for byte; it exits 0 only if every operation succeeded and the files
//! are equal, and 1 (with a message on stderr) on any error. `--no-verify`
//! leaves out the comparison (the benchmark in `bench/file/` times the copy
//! against `dd`, which does not compare either); every operation's status
//! and byte count are still checked. Neither file is synced (as `dd` without
//! `conv=fsync`). `IOCOMP_BACKEND=epoll|uring` picks the backend.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use iocomp::{Handle, Op, Port, ReadAt, WriteAt};

// Buffers of a page and more start on a page boundary, as dd's does: the
// kernel copies to and from them about twice as fast (support/page_aligned.rs).
#[path = "support/page_aligned.rs"]
mod page_aligned;
#[global_allocator]
static ALLOC: page_aligned::PageAligned = page_aligned::PageAligned;

const SRC: u64 = 1;
const DST: u64 = 2;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = match args.iter().position(|a| a == "--no-verify") {
        Some(i) => {
            args.remove(i);
            false
        }
        None => true,
    };
    if args.len() < 2 || args.len() > 4 {
        eprintln!("usage: filecopy [--no-verify] SRC DST [DEPTH [CHUNK_KIB]]");
        return ExitCode::from(2);
    }
    let num = |i: usize, default: usize| -> Result<usize, String> {
        match args.get(i) {
            None => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{s:?} is not a positive number")),
            },
        }
    };
    let (depth, chunk) = match (num(2, 8), num(3, 1024)) {
        (Ok(d), Ok(c)) if c <= 1 << 20 => (d, c << 10),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("filecopy: {e}");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!("filecopy: CHUNK_KIB is at most 1048576 (1 GiB)");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    match copy(&args[0], &args[1], depth, chunk).and_then(|n| {
        let took = start.elapsed();
        if check {
            verify(&args[0], &args[1], n)?;
        }
        Ok((n, took))
    }) {
        Ok((n, took)) => {
            let mib = n as f64 / (1u64 << 20) as f64;
            println!(
                "filecopy: copied {n} bytes in {:.3} s ({:.0} MiB/s, depth {depth}, chunk {} KiB), {}",
                took.as_secs_f64(),
                mib / took.as_secs_f64().max(1e-9),
                chunk >> 10,
                if check { "verified" } else { "not compared" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("filecopy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fail(what: String) -> io::Error {
    io::Error::other(what)
}

/// Issues the read of the next `chunk`-sized range of the source, if any is
/// left; `buf` is reused when it is the right size.
fn next_read(
    port: &Port,
    src: &Handle,
    buf: Vec<u8>,
    next: &mut u64,
    len: u64,
    chunk: usize,
) -> io::Result<bool> {
    if *next >= len {
        return Ok(false);
    }
    let want = chunk.min((len - *next) as usize);
    let mut buf = if buf.capacity() == want {
        buf
    } else {
        // Vec::with_capacity gives exactly the capacity asked for: a read
        // never runs into the next range.
        Vec::with_capacity(want)
    };
    buf.clear();
    port.submit(ReadAt::new(src, buf, *next))
        .map_err(|(e, _)| e)?;
    *next += want as u64;
    Ok(true)
}

/// Copies `src` to `dst` and returns the bytes copied.
fn copy(src: &str, dst: &str, depth: usize, chunk: usize) -> io::Result<u64> {
    let s = File::open(src).map_err(|e| fail(format!("open {src}: {e}")))?;
    let len = s.metadata()?.len();
    let d = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .map_err(|e| fail(format!("create {dst}: {e}")))?;
    // Like SetEndOfFile before the writes: the file has its size at once.
    d.set_len(len)?;

    let port = Port::builder().concurrency(1).build()?;
    port.attach()?;
    let src_h = port.associate(s, SRC);
    let dst_h = port.associate(d, DST);

    let mut next = 0u64; // where the next read starts
    let mut pending = 0usize;
    for _ in 0..depth {
        if !next_read(&port, &src_h, Vec::new(), &mut next, len, chunk)? {
            break;
        }
        pending += 1;
    }
    let mut written = 0u64;
    while pending > 0 {
        let p = port
            .get(Some(Duration::from_secs(120)))
            .map_err(|e| fail(format!("waiting for a completion: {e:?}")))?;
        pending -= 1;
        match p.op {
            Op::ReadAt(r) => {
                p.status
                    .map_err(|e| fail(format!("read at {}: {e}", r.offset)))?;
                let got = p.bytes as usize;
                let want = r.buf.capacity();
                if got == 0 {
                    return Err(fail(format!(
                        "{src} ended at {} instead of {len}: it shrank",
                        r.offset
                    )));
                }
                let (off, buf) = (r.offset, r.buf);
                if got < want {
                    // Short (not at the end: the size is known): read the rest.
                    let rest = Vec::with_capacity(want - got);
                    port.submit(ReadAt::new(&src_h, rest, off + got as u64))
                        .map_err(|(e, _)| e)?;
                    pending += 1;
                }
                // The bytes read go to the same offset of the copy.
                port.submit(WriteAt::new(&dst_h, buf, off))
                    .map_err(|(e, _)| e)?;
                pending += 1;
            }
            Op::WriteAt(w) => {
                p.status
                    .map_err(|e| fail(format!("write at {}: {e}", w.offset)))?;
                if p.bytes != w.buf.len() as u64 {
                    return Err(fail(format!("short write at {}", w.offset)));
                }
                written += p.bytes;
                // This buffer is free again: it carries the next read.
                if next_read(&port, &src_h, w.buf, &mut next, len, chunk)? {
                    pending += 1;
                }
            }
            other => return Err(fail(format!("unexpected packet {other:?}"))),
        }
    }
    if written != len {
        return Err(fail(format!("wrote {written} bytes of {len}")));
    }
    Ok(len)
}

/// Compares the two files byte for byte.
fn verify(src: &str, dst: &str, len: u64) -> io::Result<()> {
    let mut a = File::open(src)?;
    let mut b = File::open(dst)?;
    if b.metadata()?.len() != len {
        return Err(fail(format!("{dst} has the wrong size")));
    }
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Err(fail(format!("{dst} differs from {src} after byte {at}")));
        }
        if n == 0 {
            return Ok(());
        }
        at += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
