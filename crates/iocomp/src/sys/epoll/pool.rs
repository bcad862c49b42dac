//! The blocking pool of the epoll backend: regular files cannot be polled, so
//! file work that may wait for the disk runs on one of a few helper threads
//! instead of the thread that owns the operation: a transmit's read of pages
//! that are not in the page cache, a [`ReadAt`](crate::ReadAt) whose inline
//! `preadv2(RWF_NOWAIT)` would have waited, every
//! [`WriteAt`](crate::WriteAt) and [`Fsync`](crate::Fsync). The result goes
//! back to that thread's backend, which wakes up and carries the operation on
//! (or completes it: one packet per operation, as everywhere).
//!
//! A job still queued here can be taken back ([`unqueue`]): that is how a
//! cancel of a queued file operation completes it at once, buffer and all. A
//! job a helper already runs completes with its real result.
//!
//! Every job yields its result, so every operation its packet: when no
//! helper runs and none can be started (`clone` refused: thread or memory
//! limits), the job completes at once with an error that names the pool
//! (not EAGAIN: retrying at once would not help); when some run, they take
//! it. A job that panics completes with an error, its buffer given back
//! with the bytes read inline before the job, and its helper goes on with
//! the next (under `panic = "abort"` there is no unwinding to catch: the
//! process ends).
//!
//! A read that moved bytes before it failed, inline or here, completes
//! with the error and carries that count: a short count with success means
//! end of file only (ReadFile's rule).
//!
//! The pool is process-wide and its helpers never end. It is not fork-safe
//! (nor are the epoll and io_uring instances a port holds): a child process
//! must not use a port it inherited across `fork`, whose helpers do not run
//! there. A port's close waits for jobs a helper runs: a read stuck in a hung
//! filesystem (NFS, FUSE) keeps it waiting until the read returns.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use super::ops::{fsync, pread, pread_append, pwrite_all};
use super::RingShared;
use crate::handle::Handle;
use crate::packet::OpId;

/// Helper threads at most. They only wait for disks, and a disk serves
/// several requests at once: with 16, cold 4 KiB random reads at queue depth
/// 32 ran at about 1.8× the rate of 4 here (fio's psync engine, 16 jobs
/// against 4, on this project's VM); glibc's POSIX AIO allows 20 threads.
/// They start only when a job finds no helper idle.
const THREADS: usize = 16;

/// Faults a test can force in the epoll backend's file path, as a
/// comma-separated list (read once per process, at the first file operation
/// or pool job; a word not listed here panics, naming the known ones, so
/// that a misspelt fault cannot pass a test unforced), in the manner of the
/// io_uring backend's `IOCOMP_URING_COMPAT`:
/// - `nowait-enosys`, `nowait-eperm`, `nowait-einval`, `nowait-eopnotsupp`:
///   every `preadv2(RWF_NOWAIT)` fails with that error without reaching the
///   kernel (a kernel before 4.6, a seccomp filter, a kernel before 4.14, a
///   filesystem without the flag);
/// - `nowait-eagain-after-4k`, `nowait-eio-after-4k`: a
///   `preadv2(RWF_NOWAIT)` reads the file's first 4096 bytes only, and one
///   at or after offset 4096 fails with EAGAIN (not cached) or EIO (a disk
///   error) without reaching the kernel;
/// - `pool-spawn-fail`: no helper thread can be started;
/// - `pool-spawn-fail-after-1`: only the first one can;
/// - `pool-job-panic`: every other job a helper runs (the first, the third…)
///   panics before doing anything.
const COMPAT_ENV: &str = "IOCOMP_EPOLL_COMPAT";

/// The faults [`COMPAT_ENV`] forces.
#[derive(Default, Debug)]
pub(super) struct Compat {
    /// The error every `preadv2(RWF_NOWAIT)` at or after `nowait_from`
    /// gives instead of its result.
    pub(super) nowait_errno: Option<i32>,
    /// Where the forced `preadv2(RWF_NOWAIT)` error starts; reads before it
    /// are real ones that stop there.
    pub(super) nowait_from: u64,
    /// How many helper threads may be started (`None`: as many as asked).
    spawn_limit: Option<usize>,
    /// Every other job panics.
    job_panic: bool,
}

/// The words [`COMPAT_ENV`] knows.
const COMPAT_WORDS: &[&str] = &[
    "nowait-enosys",
    "nowait-eperm",
    "nowait-einval",
    "nowait-eopnotsupp",
    "nowait-eagain-after-4k",
    "nowait-eio-after-4k",
    "pool-spawn-fail",
    "pool-spawn-fail-after-1",
    "pool-job-panic",
];

/// The faults forced for this process ([`COMPAT_ENV`]).
///
/// # Panics
///
/// At the first call, if the setting holds a word it does not know (a test
/// setting, never set in production: a typo must not go unnoticed).
pub(super) fn compat() -> &'static Compat {
    static COMPAT: OnceLock<Compat> = OnceLock::new();
    COMPAT.get_or_init(|| {
        let mut c = Compat::default();
        if let Ok(v) = std::env::var(COMPAT_ENV) {
            for w in v.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                match w {
                    "nowait-enosys" => c.nowait_errno = Some(libc::ENOSYS),
                    "nowait-eperm" => c.nowait_errno = Some(libc::EPERM),
                    "nowait-einval" => c.nowait_errno = Some(libc::EINVAL),
                    "nowait-eopnotsupp" => c.nowait_errno = Some(libc::EOPNOTSUPP),
                    "nowait-eagain-after-4k" => {
                        (c.nowait_errno, c.nowait_from) = (Some(libc::EAGAIN), 4096)
                    }
                    "nowait-eio-after-4k" => {
                        (c.nowait_errno, c.nowait_from) = (Some(libc::EIO), 4096)
                    }
                    "pool-spawn-fail" => c.spawn_limit = Some(0),
                    "pool-spawn-fail-after-1" => c.spawn_limit = Some(1),
                    "pool-job-panic" => c.job_panic = true,
                    _ => panic!(
                        "{COMPAT_ENV}: unknown word {w:?} (known: {})",
                        COMPAT_WORDS.join(", ")
                    ),
                }
            }
        }
        c
    })
}

/// One piece of blocking file work.
pub(super) enum Job {
    /// A transmit's chunk: up to `want` bytes at `off`, replacing `buf`'s
    /// contents.
    Chunk {
        file: Arc<File>,
        off: u64,
        want: usize,
        buf: Vec<u8>,
    },
    /// A `ReadAt`: fill `buf`'s spare capacity from `off` (stopping early only
    /// at end of file); `before` bytes were read inline already.
    ReadAt {
        handle: Handle,
        off: u64,
        buf: Vec<u8>,
        before: usize,
    },
    /// A `WriteAt`: all of `buf` at `off`.
    WriteAt {
        handle: Handle,
        off: u64,
        buf: Vec<u8>,
    },
    /// An `Fsync` (`fdatasync` if `data`).
    Fsync { handle: Handle, data: bool },
}

impl Job {
    /// The buffer the job carries (empty for a flush).
    pub(super) fn into_buf(self) -> Vec<u8> {
        match self {
            Job::Chunk { buf, .. } | Job::ReadAt { buf, .. } | Job::WriteAt { buf, .. } => buf,
            Job::Fsync { .. } => Vec::new(),
        }
    }

    /// Bytes the operation moved inline before it became this job.
    fn before(&self) -> usize {
        match self {
            Job::ReadAt { before, .. } => *before,
            _ => 0,
        }
    }

    /// The job's result when it did not run to its end (no helper thread,
    /// or it panicked): the error `e` carrying the bytes moved inline before
    /// it, and `buf` (the job's buffer) back.
    fn fail(&self, e: io::Error, buf: Vec<u8>) -> JobDone {
        JobDone {
            res: Err(e),
            partial: self.before(),
            buf,
        }
    }

    /// Runs the job on a helper thread, with its buffer taken out into
    /// `buf` (so that a panic does not take the buffer down with it).
    fn run(self, buf: &mut Vec<u8>) -> JobDone {
        let (res, partial) = match self {
            Job::Chunk {
                file, off, want, ..
            } => (pread(file.as_raw_fd(), buf, want, off), 0),
            Job::ReadAt {
                handle,
                off,
                before,
                ..
            } => match pread_append(handle.as_raw_fd(), buf, off) {
                Ok(n) => (Ok(before + n), before + n),
                Err((e, n)) => (Err(e), before + n),
            },
            Job::WriteAt { handle, off, .. } => match pwrite_all(handle.as_raw_fd(), buf, off) {
                Ok(n) => (Ok(n), n),
                Err((e, n)) => (Err(e), n),
            },
            Job::Fsync { handle, data } => (fsync(handle.as_raw_fd(), data).map(|()| 0), 0),
        };
        JobDone {
            res,
            partial,
            buf: std::mem::take(buf),
        }
    }

    /// Takes the job's buffer out (empty for a flush).
    fn take_buf(&mut self) -> Vec<u8> {
        match self {
            Job::Chunk { buf, .. } | Job::ReadAt { buf, .. } | Job::WriteAt { buf, .. } => {
                std::mem::take(buf)
            }
            Job::Fsync { .. } => Vec::new(),
        }
    }
}

/// What a job did: its result (bytes moved), the bytes moved before a
/// failure, and its buffer back.
pub(super) struct JobDone {
    pub(super) res: io::Result<usize>,
    pub(super) partial: usize,
    pub(super) buf: Vec<u8>,
}

struct Queued {
    job: Job,
    ring: Weak<RingShared>,
    id: OpId,
}

/// The queue and its helpers.
#[derive(Default)]
struct Jobs {
    queue: VecDeque<Queued>,
    /// Helper threads started (they never end).
    helpers: usize,
    /// Helpers waiting for a job.
    idle: usize,
}

#[derive(Default)]
struct Pool {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Jobs `pool-job-panic` ([`COMPAT_ENV`]) has counted.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Hands `job` for operation `id` of `ring` to a helper thread; the result
/// lands in the ring's list of finished jobs and wakes its owner.
pub(super) fn submit(job: Job, ring: &Arc<RingShared>, id: OpId) {
    let pool = pool_ref();
    let mut q = pool.jobs.lock().unwrap_or_else(|e| e.into_inner());
    q.queue.push_back(Queued {
        job,
        ring: Arc::downgrade(ring),
        id,
    });
    // Helpers start on demand, when more jobs wait than helpers are idle, up
    // to the cap, and stay.
    if q.queue.len() > q.idle && q.helpers < THREADS {
        match spawn_helper(q.helpers) {
            Ok(()) => q.helpers += 1,
            // None runs and none could start: nothing would ever take this
            // job. It completes now, with the error (the next job tries
            // to start a helper again).
            Err(e) if q.helpers == 0 => {
                let Some(Queued { mut job, ring, id }) = q.queue.pop_back() else {
                    return;
                };
                drop(q);
                if let Some(ring) = ring.upgrade() {
                    let buf = job.take_buf();
                    ring.job_done(id, job.fail(e, buf));
                }
                return;
            }
            // The helpers running take it.
            Err(_) => {}
        }
    }
    // A helper that is not idle looks at the queue before it waits again:
    // wake one only if one waits (a notify is a system call).
    let wake = q.idle > 0;
    drop(q);
    if wake {
        pool.ready.notify_one();
    }
}

/// Starts one more helper thread; `running` are running already. The error
/// names the pool, and is not `WouldBlock` (`clone`'s EAGAIN means a thread
/// or memory limit, which an immediate retry would meet again).
fn spawn_helper(running: usize) -> io::Result<()> {
    let res = if compat().spawn_limit.is_some_and(|max| running >= max) {
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    } else {
        std::thread::Builder::new()
            .name("iocomp-blocking".into())
            .spawn(|| helper(pool_ref()))
            .map(drop)
    };
    res.map_err(|e| {
        io::Error::other(format!(
            "the epoll backend's blocking pool could not start a helper thread: {e}"
        ))
    })
}

/// Takes back the job of operation `id` of `ring` if no helper has started
/// it yet; `None` if one runs it (its result will come) or ran it.
pub(super) fn unqueue(ring: &Arc<RingShared>, id: OpId) -> Option<Job> {
    let pool = pool_ref();
    let mut q = pool.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let me = Arc::as_ptr(ring);
    let at = q
        .queue
        .iter()
        .position(|j| j.id == id && std::ptr::eq(j.ring.as_ptr(), me))?;
    q.queue.remove(at).map(|j| j.job)
}

fn pool_ref() -> &'static Pool {
    POOL.get_or_init(Pool::default)
}

fn helper(pool: &'static Pool) {
    loop {
        let item = {
            let mut q = pool.jobs.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(item) = q.queue.pop_front() {
                    break item;
                }
                q.idle += 1;
                q = pool.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                q.idle -= 1;
            }
        };
        let Queued { mut job, ring, id } = item;
        // A panic (a bug) must not lose the operation's packet, its buffer
        // nor this helper: the job completes with an error, and the buffer
        // (taken out first) comes back as it was before the job, holding
        // the bytes read inline.
        let mut buf = job.take_buf();
        let kept = buf.len();
        let before = job.before();
        let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if compat().job_panic && PANICS.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                panic!("{COMPAT_ENV}=pool-job-panic: a blocking-pool job panics");
            }
            job.run(&mut buf)
        }))
        .unwrap_or_else(|_| {
            buf.truncate(kept);
            JobDone {
                res: Err(io::Error::other("the blocking-pool job panicked")),
                partial: before,
                buf,
            }
        });
        if let Some(ring) = ring.upgrade() {
            ring.job_done(id, done);
        }
    }
}
