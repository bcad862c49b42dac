//! A file I/O load generator, the iocomp side of `bench/file/run` (which runs
//! `fio` beside it): one thread keeps `QD` overlapped [`ReadAt`]s or
//! [`WriteAt`]s in flight on one file — each completion issues the next
//! operation with the same buffer — and reports operations per second and
//! MiB/s.
//!
//! ```text
//! cargo run --release -p iocomp --example fileio -- --file PATH [--rw randread|read|write]
//!     [--bs BYTES] [--qd N] [--size BYTES] [--runtime SECS] [--ops N] [--no-fadvise]
//!     [--threads N]
//! ```
//!
//! - `--rw randread` (default): reads of `--bs` bytes at random aligned
//!   offsets in the first `--size` bytes of the file (all of it by default),
//!   for `--runtime` seconds (5 by default) or `--ops` operations;
//! - `--rw read` / `--rw write`: one sequential pass over the first `--size`
//!   bytes (a write pass creates or extends the file; nothing is synced, as
//!   fio without `fsync`/`end_fsync`), or `--runtime` seconds of passes.
//! - `--threads N` (random reads only; 1 by default): N threads, each with a
//!   port of its own, share the queue depth and the operations (the figures
//!   are their sum) — a port per CPU, where fio's `psync` runs a process per
//!   job.
//!
//! The file gets `posix_fadvise(POSIX_FADV_RANDOM)` (no readahead) for
//! random reads and `POSIX_FADV_SEQUENTIAL` for sequential passes, as fio
//! gives it by default (`fadvise_hint=1`); `--no-fadvise` leaves it out.
//! Buffers start on a page boundary, as fio's with `--iomem_align=4k`.
//! `--bs` takes a suffix `k` or `m` (KiB, MiB). `IOCOMP_BACKEND=epoll|uring`
//! picks the backend. The last line of the output is machine-readable:
//!
//! ```text
//! fileio: backend=uring rw=randread bs=4096 qd=32 ops=812345 bytes=3327365120 secs=5.000 iops=162469 mibs=634.6 threads=1
//! ```
//!
//! It exits 0 only if every operation succeeded with its full byte count,
//! and 1 (with a message on stderr) otherwise.

use std::fs::OpenOptions;
use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use iocomp::{Op, Packet, Port, ReadAt, WriteAt};

// Buffers of a page and more start on a page boundary, as dd's does: the
// kernel copies to and from them about twice as fast (support/page_aligned.rs).
#[path = "support/page_aligned.rs"]
mod page_aligned;
#[global_allocator]
static ALLOC: page_aligned::PageAligned = page_aligned::PageAligned;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rw {
    RandRead,
    Read,
    Write,
}

impl Rw {
    fn name(self) -> &'static str {
        match self {
            Rw::RandRead => "randread",
            Rw::Read => "read",
            Rw::Write => "write",
        }
    }
}

struct Args {
    file: String,
    rw: Rw,
    bs: usize,
    qd: usize,
    size: Option<u64>,
    runtime: Option<Duration>,
    ops: Option<u64>,
    fadvise: bool,
    threads: usize,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1u64 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1u64 << 30),
        _ => (s, 1),
    };
    match num.parse::<u64>().ok().and_then(|n| n.checked_mul(mul)) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive size")),
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        file: String::new(),
        rw: Rw::RandRead,
        bs: 4096,
        qd: 32,
        size: None,
        runtime: None,
        ops: None,
        fadvise: true,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--file" => a.file = val()?,
            "--rw" => {
                a.rw = match val()?.as_str() {
                    "randread" => Rw::RandRead,
                    "read" => Rw::Read,
                    "write" => Rw::Write,
                    other => return Err(format!("unknown --rw {other:?}")),
                }
            }
            "--bs" => {
                let bs = parse_bytes(&val()?)?;
                if bs > 1 << 30 {
                    return Err("--bs is at most 1 GiB".into());
                }
                a.bs = bs as usize;
            }
            "--qd" => {
                a.qd = match val()?.parse::<usize>() {
                    Ok(n) if (1..=4096).contains(&n) => n,
                    _ => return Err("--qd is a number from 1 to 4096".into()),
                }
            }
            "--size" => a.size = Some(parse_bytes(&val()?)?),
            "--runtime" => {
                let v = val()?;
                match v.parse::<f64>() {
                    Ok(s) if s > 0.0 && s < 1e6 => a.runtime = Some(Duration::from_secs_f64(s)),
                    _ => return Err(format!("--runtime {v:?} is not a positive number")),
                }
            }
            "--ops" => a.ops = Some(parse_bytes(&val()?)?),
            "--no-fadvise" => a.fadvise = false,
            "--threads" => {
                a.threads = match val()?.parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => n,
                    _ => return Err("--threads is a number from 1 to 256".into()),
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.file.is_empty() {
        return Err("--file is required".into());
    }
    if a.threads > 1 && a.rw != Rw::RandRead {
        return Err("--threads applies to --rw randread only".into());
    }
    if a.threads > a.qd {
        return Err(
            "--threads is at most --qd (each thread keeps one op or more in flight)".into(),
        );
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fileio: {e}");
            eprintln!(
                "usage: fileio --file PATH [--rw randread|read|write] [--bs BYTES] [--qd N] \
                 [--size BYTES] [--runtime SECS] [--ops N] [--no-fadvise] [--threads N]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fileio: {e}");
            ExitCode::FAILURE
        }
    }
}

/// xorshift64*: random enough for offsets, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Where the next operation goes and when the run is over.
struct Plan {
    rw: Rw,
    bs: u64,
    /// Blocks in the region.
    blocks: u64,
    /// The next block of a sequential pass.
    next: u64,
    rng: Rng,
    issued: u64,
    max_ops: Option<u64>,
    end: Option<Instant>,
}

impl Plan {
    /// The offset of the next operation, or `None` when no more should start.
    fn next_offset(&mut self) -> Option<u64> {
        if self.max_ops.is_some_and(|m| self.issued >= m) {
            return None;
        }
        // The clock is read once per 64 operations: it is not free.
        if self.issued % 64 == 0 && self.end.is_some_and(|e| Instant::now() >= e) {
            self.max_ops = Some(self.issued);
            return None;
        }
        let block = match self.rw {
            Rw::RandRead => self.rng.next() % self.blocks,
            Rw::Read | Rw::Write => {
                let b = self.next;
                self.next = (self.next + 1) % self.blocks;
                b
            }
        };
        self.issued += 1;
        Some(block * self.bs)
    }
}

fn run(a: &Args) -> io::Result<String> {
    let fail = |what: String| io::Error::other(what);
    let file = match a.rw {
        Rw::Write => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&a.file),
        _ => OpenOptions::new().read(true).open(&a.file),
    }
    .map_err(|e| fail(format!("open {}: {e}", a.file)))?;
    let len = file.metadata()?.len();
    let size = match (a.rw, a.size) {
        (Rw::Write, None) => return Err(fail("--rw write needs --size".into())),
        (Rw::Write, Some(s)) => s,
        (_, Some(s)) if s > len => {
            return Err(fail(format!(
                "--size {s} is past the end of the file ({len})"
            )))
        }
        (_, Some(s)) => s,
        (_, None) => len,
    };
    let bs = a.bs as u64;
    let blocks = size / bs;
    if blocks == 0 {
        return Err(fail(format!(
            "the file region ({size} bytes) holds no block of {bs}"
        )));
    }
    // Sequential without --runtime/--ops: one pass. Random: 5 s by default.
    let (max_ops, runtime) = match (a.rw, a.ops, a.runtime) {
        (_, Some(n), rt) => (Some(n), rt),
        (_, None, Some(rt)) => (None, Some(rt)),
        (Rw::RandRead, None, None) => (None, Some(Duration::from_secs(5))),
        (_, None, None) => (Some(blocks), None),
    };

    if a.fadvise {
        // As fio does by default (`fadvise_hint=1`): POSIX_FADV_RANDOM (no
        // readahead) for random reads, POSIX_FADV_SEQUENTIAL (a doubled
        // readahead window) for sequential passes. Cold random reads ran
        // faster with it here; cold sequential reads too.
        let advice = match a.rw {
            Rw::RandRead => libc::POSIX_FADV_RANDOM,
            Rw::Read | Rw::Write => libc::POSIX_FADV_SEQUENTIAL,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: posix_fadvise takes a descriptor `file` keeps open and
        // plain integers; it touches no memory of ours.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, advice) };
        if rc != 0 {
            return Err(fail(format!(
                "posix_fadvise: {}",
                io::Error::from_raw_os_error(rc)
            )));
        }
    }
    let start = Instant::now();
    let end = runtime.map(|r| start + r);
    // Thread t keeps qd / threads ops in flight (the first qd % threads one
    // more) and issues its share of --ops; each has its own port and a
    // descriptor of its own on the same open file.
    let n = a.threads;
    let results: Vec<io::Result<Done>> = std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for t in 0..n {
            let share = |total: u64| total / n as u64 + u64::from((t as u64) < total % n as u64);
            let qd = share(a.qd as u64) as usize;
            let file = file.try_clone();
            let plan = Plan {
                rw: a.rw,
                bs,
                blocks,
                next: 0,
                rng: Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()) ^ (t as u64) << 40),
                issued: 0,
                max_ops: max_ops.map(share),
                end,
            };
            workers.push(scope.spawn(move || worker(a, file?, plan, qd)));
        }
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(fail("a worker thread panicked".into())))
            })
            .collect()
    });
    let (mut done, mut bytes, mut backend) = (0u64, 0u64, "");
    for r in results {
        let d = r?;
        done += d.ops;
        bytes += d.bytes;
        backend = d.backend;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    Ok(format!(
        "fileio: backend={backend} rw={} bs={bs} qd={} ops={done} bytes={bytes} secs={secs:.3} iops={:.0} mibs={:.1} threads={n}",
        a.rw.name(),
        a.qd,
        done as f64 / secs,
        bytes as f64 / secs / (1u64 << 20) as f64
    ))
}

/// What one worker thread did.
struct Done {
    ops: u64,
    bytes: u64,
    backend: &'static str,
}

/// One thread's run: its own port, `qd` operations in flight on `file`,
/// offsets from `plan`.
fn worker(a: &Args, file: std::fs::File, mut plan: Plan, qd: usize) -> io::Result<Done> {
    let fail = |what: String| io::Error::other(what);
    let bs = a.bs as u64;
    let port = Port::builder().concurrency(1).build()?;
    port.attach()?;
    let backend = port.backend().name();
    let h = port.associate(file, 1);

    let issue = |buf: Vec<u8>, off: u64| -> io::Result<()> {
        let r = match a.rw {
            Rw::Write => port.submit(WriteAt::new(&h, buf, off)),
            _ => port.submit(ReadAt::new(&h, buf, off)),
        };
        r.map(|_| ()).map_err(|(e, _)| e)
    };
    let fresh = || -> Vec<u8> {
        match a.rw {
            // Not zeros: some filesystems and disks treat zero pages specially.
            Rw::Write => (0..a.bs).map(|i| (i % 251) as u8 | 1).collect(),
            // Exactly `bs` of capacity: a read never runs into the next block.
            _ => Vec::with_capacity(a.bs),
        }
    };

    let mut pending = 0usize;
    for _ in 0..qd {
        let Some(off) = plan.next_offset() else { break };
        issue(fresh(), off)?;
        pending += 1;
    }
    let (mut done, mut bytes) = (0u64, 0u64);
    let mut batch: Vec<Packet> = Vec::with_capacity(qd);
    while pending > 0 {
        port.get_many(&mut batch, qd, Some(Duration::from_secs(120)))
            .map_err(|e| fail(format!("waiting for a completion: {e:?}")))?;
        for p in batch.drain(..) {
            pending -= 1;
            let (off, mut buf) = match p.op {
                Op::ReadAt(r) => (r.offset, r.buf),
                Op::WriteAt(w) => (w.offset, w.buf),
                other => return Err(fail(format!("unexpected packet {other:?}"))),
            };
            p.status
                .map_err(|e| fail(format!("operation at {off}: {e}")))?;
            if p.bytes != bs {
                return Err(fail(format!(
                    "short transfer at {off}: {} of {bs} bytes",
                    p.bytes
                )));
            }
            done += 1;
            bytes += p.bytes;
            if let Some(off) = plan.next_offset() {
                if a.rw != Rw::Write {
                    buf.clear();
                }
                issue(buf, off)?;
                pending += 1;
            }
        }
    }
    Ok(Done {
        ops: done,
        bytes,
        backend,
    })
}
