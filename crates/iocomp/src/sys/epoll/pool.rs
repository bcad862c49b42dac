//! The blocking pool of the epoll backend: regular files cannot be polled, so
//! a file read that would wait for the disk (its pages are not in the page
//! cache) runs on one of a few helper threads instead of the thread that owns
//! the connection. The result goes back to that thread's backend, which wakes
//! up and carries the operation on. Reads of cached pages never come here:
//! they are done at once with `preadv2(RWF_NOWAIT)`.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use super::ops::pread;
use super::RingShared;
use crate::packet::OpId;

/// Helper threads at most (they only wait for disks).
const THREADS: usize = 4;

/// One read to do.
pub(super) struct Job {
    pub(super) file: Arc<File>,
    pub(super) off: u64,
    pub(super) want: usize,
    /// Read into this buffer's spare capacity; it goes back with the result.
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
/// lands in the ring's read-completion list and wakes its owner.
pub(super) fn submit(job: Job, ring: &Arc<RingShared>, id: OpId) {
    let pool = POOL.get_or_init(Pool::default);
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
        let Queued { mut job, ring, id } = item;
        let res: io::Result<usize> = pread(job.file.as_raw_fd(), &mut job.buf, job.want, job.off);
        if let Some(ring) = ring.upgrade() {
            ring.read_done(id, res, job.buf);
        }
    }
}
