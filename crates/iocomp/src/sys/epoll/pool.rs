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
//! limits), the job completes at once with that error; when some run, they
//! take it. A job that panics completes with an error (its buffer is lost)
//! and its helper goes on with the next.

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
/// comma-separated list (read once per process; unknown words are ignored),
/// in the manner of the io_uring backend's `IOCOMP_URING_COMPAT`:
/// - `nowait-enosys`, `nowait-eperm`, `nowait-einval`, `nowait-eopnotsupp`:
///   every `preadv2(RWF_NOWAIT)` fails with that error without reaching the
///   kernel (a kernel before 4.6, a seccomp filter, a kernel before 4.14, a
///   filesystem without the flag);
/// - `pool-spawn-fail`: no helper thread can be started;
/// - `pool-spawn-fail-after-1`: only the first one can;
/// - `pool-job-panic`: every other job a helper runs (the first, the third…)
///   panics before doing anything.
const COMPAT_ENV: &str = "IOCOMP_EPOLL_COMPAT";

/// The faults [`COMPAT_ENV`] forces.
#[derive(Default, Debug)]
pub(super) struct Compat {
    /// The error every `preadv2(RWF_NOWAIT)` gives instead of its result.
    pub(super) nowait_errno: Option<i32>,
    /// How many helper threads may be started (`None`: as many as asked).
    spawn_limit: Option<usize>,
    /// Every other job panics.
    job_panic: bool,
}

/// The faults forced for this process ([`COMPAT_ENV`]).
pub(super) fn compat() -> &'static Compat {
    static COMPAT: OnceLock<Compat> = OnceLock::new();
    COMPAT.get_or_init(|| {
        let mut c = Compat::default();
        if let Ok(v) = std::env::var(COMPAT_ENV) {
            for w in v.split(',').map(str::trim) {
                match w {
                    "nowait-enosys" => c.nowait_errno = Some(libc::ENOSYS),
                    "nowait-eperm" => c.nowait_errno = Some(libc::EPERM),
                    "nowait-einval" => c.nowait_errno = Some(libc::EINVAL),
                    "nowait-eopnotsupp" => c.nowait_errno = Some(libc::EOPNOTSUPP),
                    "pool-spawn-fail" => c.spawn_limit = Some(0),
                    "pool-spawn-fail-after-1" => c.spawn_limit = Some(1),
                    "pool-job-panic" => c.job_panic = true,
                    _ => {}
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
    /// A `WriteAt`: `buf[from..]` at `off + from` (the first `from` bytes
    /// were written inline).
    WriteAt {
        handle: Handle,
        off: u64,
        buf: Vec<u8>,
        from: usize,
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

    /// The job's result when it cannot run (no helper thread): `e`, or for
    /// a read or write that moved bytes inline already, those bytes (a short
    /// count; the next operation meets the error).
    fn fail(self, e: io::Error) -> JobDone {
        let done = match &self {
            Job::ReadAt { before, .. } => *before,
            Job::WriteAt { from, .. } => *from,
            _ => 0,
        };
        let res = if done > 0 { Ok(done) } else { Err(e) };
        JobDone {
            res,
            partial: done,
            buf: self.into_buf(),
        }
    }

    /// Runs the job on a helper thread.
    fn run(self) -> JobDone {
        match self {
            Job::Chunk {
                file,
                off,
                want,
                mut buf,
            } => JobDone {
                res: pread(file.as_raw_fd(), &mut buf, want, off),
                partial: 0,
                buf,
            },
            Job::ReadAt {
                handle,
                off,
                mut buf,
                before,
            } => {
                let (res, partial) = match pread_append(handle.as_raw_fd(), &mut buf, off) {
                    Ok(n) => (Ok(before + n), before + n),
                    Err((e, n)) => (Err(e), before + n),
                };
                JobDone { res, partial, buf }
            }
            Job::WriteAt {
                handle,
                off,
                buf,
                from,
            } => {
                let at = off + from as u64;
                let (res, partial) = match pwrite_all(handle.as_raw_fd(), &buf[from..], at) {
                    Ok(n) => (Ok(from + n), from + n),
                    Err((e, n)) => (Err(e), from + n),
                };
                JobDone { res, partial, buf }
            }
            Job::Fsync { handle, data } => JobDone {
                res: fsync(handle.as_raw_fd(), data).map(|()| 0),
                partial: 0,
                buf: Vec::new(),
            },
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
                let Some(Queued { job, ring, id }) = q.queue.pop_back() else {
                    return;
                };
                drop(q);
                if let Some(ring) = ring.upgrade() {
                    ring.job_done(id, job.fail(e));
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

/// Starts one more helper thread; `running` are running already.
fn spawn_helper(running: usize) -> io::Result<()> {
    if compat().spawn_limit.is_some_and(|max| running >= max) {
        return Err(io::Error::from_raw_os_error(libc::EAGAIN));
    }
    std::thread::Builder::new()
        .name("iocomp-blocking".into())
        .spawn(|| helper(pool_ref()))
        .map(drop)
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
        let Queued { job, ring, id } = item;
        // A panic (a bug, or an allocation failure) must not lose the
        // operation's packet nor this helper: the job completes with an
        // error. The buffer went down with the job.
        let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if compat().job_panic && PANICS.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                panic!("{COMPAT_ENV}=pool-job-panic: a blocking-pool job panics");
            }
            job.run()
        }))
        .unwrap_or_else(|_| JobDone {
            res: Err(io::Error::other("the blocking-pool job panicked")),
            partial: 0,
            buf: Vec::new(),
        });
        if let Some(ring) = ring.upgrade() {
            ring.job_done(id, done);
        }
    }
}
