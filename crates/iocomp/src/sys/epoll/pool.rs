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

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use super::ops::{fsync, pread, pread_append, pwrite_all};
use super::RingShared;
use crate::handle::Handle;
use crate::packet::OpId;

/// Helper threads at most (they only wait for disks).
const THREADS: usize = 4;

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

#[derive(Default)]
struct Pool {
    queue: Mutex<(VecDeque<Queued>, usize)>,
    ready: Condvar,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Hands `job` for operation `id` of `ring` to a helper thread; the result
/// lands in the ring's list of finished jobs and wakes its owner.
pub(super) fn submit(job: Job, ring: &Arc<RingShared>, id: OpId) {
    let pool = pool_ref();
    let mut q = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    q.0.push_back(Queued {
        job,
        ring: Arc::downgrade(ring),
        id,
    });
    // Helpers start on demand, up to the cap, and stay.
    if q.1 < THREADS {
        let spawned = std::thread::Builder::new()
            .name("iocomp-blocking".into())
            .spawn(|| helper(pool_ref()));
        if spawned.is_ok() {
            q.1 += 1;
        }
    }
    drop(q);
    pool.ready.notify_one();
}

/// Takes back the job of operation `id` of `ring` if no helper has started
/// it yet; `None` if one runs it (its result will come) or ran it.
pub(super) fn unqueue(ring: &Arc<RingShared>, id: OpId) -> Option<Job> {
    let pool = pool_ref();
    let mut q = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    let me = Arc::as_ptr(ring);
    let at =
        q.0.iter()
            .position(|j| j.id == id && std::ptr::eq(j.ring.as_ptr(), me))?;
    q.0.remove(at).map(|j| j.job)
}

fn pool_ref() -> &'static Pool {
    POOL.get_or_init(Pool::default)
}

fn helper(pool: &'static Pool) {
    loop {
        let item = {
            let mut q = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(item) = q.0.pop_front() {
                    break item;
                }
                q = pool.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Queued { job, ring, id } = item;
        let done = job.run();
        if let Some(ring) = ring.upgrade() {
            ring.job_done(id, done);
        }
    }
}
