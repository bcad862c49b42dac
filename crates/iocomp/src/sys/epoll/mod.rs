//! The epoll backend, for where io_uring is not allowed (Docker's default
//! seccomp profile, `kernel.io_uring_disabled`, old kernels): one epoll
//! instance per consumer thread.
//!
//! The shape mirrors the io_uring backend, so that everything above `sys/` is
//! shared: each thread that waits on a port owns one epoll instance and parks
//! in `epoll_wait`; an eventfd registered in it is the thread's [`Waker`]. An
//! operation issued on a thread stays on that thread: it is tried at once with
//! its non-blocking system call and, on EAGAIN, waits in the descriptor's read
//! or write queue until an edge-triggered readiness event, when the queue is
//! tried again in order. Timers live on a per-thread heap that bounds
//! `epoll_wait`'s timeout. (The reactor of Boost.Asio has one epoll per
//! process and a leader thread; here the port's control plane already does the
//! LIFO wake-ups and the concurrency limit, and a private instance per thread
//! needs no locks on the hot path and keeps "a connection's operations stay on
//! its worker".)
//!
//! A descriptor is registered (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`) the
//! first time one of its operations would block, and stays registered while
//! its [`Handle`](crate::Handle) lives: the registration cache holds a weak
//! reference, so a closed descriptor whose number comes back for a new handle
//! is registered afresh (the kernel dropped the old registration on close).

use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::common::{errno, EventFd, POOLED};
use super::queue::{Behind, OpQueue, QueueKey};
use super::shared::{RingOps, Shared};
use super::slab::Slab;
use crate::handle::HandleInner;
use crate::op::Op;
use crate::packet::{OpId, Packet};

mod ops;

use ops::{finish, prepare, Attempt, Dir, Offload, OpState, Target};

mod pool;
use pool::JobDone;

/// epoll data of the wake-up eventfd (descriptors use their number).
const WAKE_TAG: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Events that make a read queue worth trying.
const READ_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;
/// Events that make a write queue worth trying.
const WRITE_EVENTS: u32 = (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32;

/// The part of a thread's backend other threads may touch: what every
/// backend shares ([`Shared`]: its wake-up eventfd and its slab of
/// operations), and the jobs its blocking pool finished.
pub(crate) struct RingShared {
    base: Shared<OpState>,
    /// Jobs the blocking pool finished, by op.
    reads: Mutex<Vec<(OpId, JobDone)>>,
}

impl std::ops::Deref for RingShared {
    type Target = Shared<OpState>;
    fn deref(&self) -> &Shared<OpState> {
        &self.base
    }
}

impl RingShared {
    /// The blocking pool finished a job for `id` (called on a pool thread).
    fn job_done(&self, id: OpId, done: JobDone) {
        self.reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, done));
        self.handoff.notify();
    }
}

/// A descriptor this thread has operations (or a registration) for: 32
/// bytes (40 with its key), and no allocation while at most one op per
/// direction waits (an idle connection's receive; issue 18).
struct FdEntry {
    /// The handle the registration belongs to; dead once its descriptor closed.
    owner: Weak<HandleInner>,
    registered: bool,
    /// Accepts and receives, oldest first.
    read: OpQueue,
    /// Sends and transmits, oldest first.
    write: OpQueue,
}

/// A descriptor's queue's key in [`Behind`].
fn qkey(fd: RawFd, dir: Dir) -> QueueKey {
    (fd, dir == Dir::Read)
}

impl FdEntry {
    fn queue(&mut self, dir: Dir) -> &mut OpQueue {
        match dir {
            Dir::Read => &mut self.read,
            Dir::Write => &mut self.write,
        }
    }
}

/// The owner's side: the epoll instance and everything only the owner touches.
pub(crate) struct Ring {
    epfd: OwnedFd,
    shared: Arc<RingShared>,
    /// Hashed with FxHash, not SipHash: looked up on every op and readiness
    /// event, and its keys are descriptors the engine holds, never chosen by
    /// a remote peer, so there is no HashDoS to defend against.
    fds: FxHashMap<RawFd, FdEntry>,
    /// The ops waiting behind the fronts of `fds`' queues.
    behind: Behind,
    /// Size of `fds` above which dead entries are swept out.
    sweep_at: usize,
    /// Operations waiting in descriptor queues (the thread polls only if some).
    queued: usize,
    /// Deadlines of timers, by op id (cancelled ones linger until they expire
    /// or the heap is compacted).
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    live_timers: usize,
    /// Queues whose front op used its turn and may go on without an event.
    again: Vec<(RawFd, Dir)>,
    /// Completions that happened during `submit_local`, for the next `reap`.
    done: VecDeque<Packet>,
    events: Vec<libc::epoll_event>,
    /// Events from the last `epoll_wait` not yet handled.
    ready: usize,
    /// Where pooled receives land before they are copied into their buffer.
    scratch: Box<[u8]>,
}

impl Ring {
    pub(crate) fn new(index: u16, gens: Vec<u32>) -> io::Result<Ring> {
        let epfd = epoll_create()?;
        let eventfd = EventFd::new()?;
        epoll_ctl(
            &epfd,
            libc::EPOLL_CTL_ADD,
            eventfd.raw(),
            libc::EPOLLIN as u32,
            WAKE_TAG,
        )?;
        let shared = Arc::new(RingShared {
            base: Shared::new(index, eventfd, gens),
            reads: Mutex::new(Vec::new()),
        });
        Ok(Ring {
            epfd,
            shared,
            fds: FxHashMap::default(),
            behind: Behind::default(),
            sweep_at: 64,
            queued: 0,
            timers: BinaryHeap::new(),
            live_timers: 0,
            again: Vec::new(),
            done: VecDeque::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            ready: 0,
            scratch: vec![0u8; POOLED].into_boxed_slice(),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<RingShared> {
        &self.shared
    }

    /// Starts an op that is in the slab: arms its timer, or queues it on its
    /// descriptor and tries it if nothing is ahead of it.
    fn start(&mut self, slab: &mut Slab<OpState>, id: OpId, out: &mut VecDeque<Packet>) {
        let Some(st) = slab.get(id) else { return };
        if st.cancel {
            if let Some(st) = slab.remove(id) {
                out.push_back(finish(id, st, Err(errno(libc::ECANCELED)), 0));
            }
            return;
        }
        match st.target() {
            Target::Timer(at) => {
                self.timers.push(Reverse((at, id.0)));
                self.live_timers += 1;
            }
            Target::File => match st.file_attempt() {
                Attempt::Offload(job) => {
                    st.offload = Offload::Busy;
                    pool::submit(job, &self.shared, id);
                }
                Attempt::Done(status, bytes) => {
                    if let Some(st) = slab.remove(id) {
                        out.push_back(finish(id, st, status, bytes));
                    }
                }
                // A file op neither blocks nor yields.
                Attempt::Blocked | Attempt::Yield | Attempt::Pending => {}
            },
            Target::Fd(fd, dir) => {
                let Some(h) = st.handle() else { return };
                let owner = Arc::as_ptr(&h.0);
                if !self.fds.contains_key(&fd) && self.fds.len() >= self.sweep_at {
                    self.sweep();
                }
                let entry = self.fds.entry(fd).or_insert_with(|| FdEntry {
                    owner: Weak::new(),
                    registered: false,
                    read: OpQueue::default(),
                    write: OpQueue::default(),
                });
                if !std::ptr::eq(entry.owner.as_ptr(), owner) {
                    // A new handle on this descriptor number: the old one was
                    // closed, which ended its registration; its queues can only
                    // hold ids of finished ops.
                    self.queued -= entry.read.clear(&mut self.behind, qkey(fd, Dir::Read))
                        + entry.write.clear(&mut self.behind, qkey(fd, Dir::Write));
                    *entry = FdEntry {
                        owner: Arc::downgrade(&h.0),
                        registered: false,
                        read: OpQueue::default(),
                        write: OpQueue::default(),
                    };
                }
                let q = entry.queue(dir);
                let first = q.is_empty();
                q.push_back(&mut self.behind, qkey(fd, dir), id);
                self.queued += 1;
                if first {
                    self.run_queue(slab, fd, dir, out);
                }
            }
        }
    }

    /// Drops entries of descriptors whose handles are gone.
    fn sweep(&mut self) {
        let mut dropped = 0;
        let behind = &mut self.behind;
        self.fds.retain(|&fd, e| {
            let keep = e.owner.strong_count() > 0;
            if !keep {
                dropped += e.read.clear(behind, qkey(fd, Dir::Read))
                    + e.write.clear(behind, qkey(fd, Dir::Write));
            }
            keep
        });
        self.queued -= dropped;
        self.sweep_at = (self.fds.len() * 2).max(64);
    }

    /// Tries the ops queued on `fd` for `dir`, oldest first, until one would
    /// block or has used its turn.
    fn run_queue(
        &mut self,
        slab: &mut Slab<OpState>,
        fd: RawFd,
        dir: Dir,
        out: &mut VecDeque<Packet>,
    ) {
        loop {
            let Some(entry) = self.fds.get_mut(&fd) else {
                return;
            };
            let q = entry.queue(dir);
            let Some(id) = q.front() else { return };
            let Some(st) = slab.get(id) else {
                // Cancelled or finished elsewhere: a stale id.
                q.pop_front(&mut self.behind, qkey(fd, dir));
                self.queued -= 1;
                continue;
            };
            let (status, bytes) = match st.attempt(&mut self.scratch) {
                Attempt::Blocked => {
                    // The first time this descriptor waits it is registered.
                    // Adding reports the current readiness, so an edge
                    // between the EAGAIN and now is not lost.
                    let waits = if entry.registered {
                        Ok(())
                    } else {
                        register(&self.epfd, fd).map(|()| entry.registered = true)
                    };
                    match waits {
                        Ok(()) => {
                            st.park_pooled();
                            return;
                        }
                        Err(e) => (Err(e), st.progress()),
                    }
                }
                Attempt::Yield => {
                    if !self.again.contains(&(fd, dir)) {
                        self.again.push((fd, dir));
                    }
                    return;
                }
                // The front op waits for the blocking pool: so does its queue.
                Attempt::Pending => return,
                Attempt::Offload(job) => {
                    st.offload = Offload::Busy;
                    pool::submit(job, &self.shared, id);
                    return;
                }
                Attempt::Done(status, bytes) => (status, bytes),
            };
            entry.queue(dir).pop_front(&mut self.behind, qkey(fd, dir));
            self.queued -= 1;
            if let Some(st) = slab.remove(id) {
                out.push_back(finish(id, st, status, bytes));
            }
        }
    }

    /// Completes `id` as cancelled, wherever it waits.
    /// A file operation a pool helper already runs is left to finish: its
    /// packet has its real result.
    fn cancel_now(&mut self, slab: &mut Slab<OpState>, id: OpId, out: &mut VecDeque<Packet>) {
        let mut inline = None;
        if let Some(st) = slab.get(id) {
            if st.is_file() && matches!(st.offload, Offload::Busy) {
                match pool::unqueue(&self.shared, id) {
                    Some(job) => inline = Some(st.file_restore(job)),
                    None => return,
                }
            }
        }
        let Some(st) = slab.remove(id) else { return };
        let mut rerun = None;
        match st.target() {
            Target::Timer(_) => self.live_timers -= 1,
            Target::File => {}
            Target::Fd(fd, dir) => {
                if let Some(e) = self.fds.get_mut(&fd) {
                    let at = e.queue(dir).remove(&mut self.behind, qkey(fd, dir), id);
                    if at.is_some() {
                        self.queued -= 1;
                    }
                    if at == Some(0) {
                        // The next op may be able to run now, and no edge may come.
                        rerun = Some((fd, dir));
                    }
                }
            }
        }
        let bytes = inline.unwrap_or_else(|| st.progress());
        out.push_back(finish(id, st, Err(errno(libc::ECANCELED)), bytes));
        if let Some((fd, dir)) = rerun {
            self.run_queue(slab, fd, dir, out);
        }
    }

    /// Starts what other threads handed over, carries out their cancels, and
    /// goes on with transmits whose file read the blocking pool finished.
    fn take_remote(&mut self, slab: &mut Slab<OpState>, out: &mut VecDeque<Packet>) {
        let reads =
            std::mem::take(&mut *self.shared.reads.lock().unwrap_or_else(|e| e.into_inner()));
        for (id, done) in reads {
            // A read for an op cancelled meanwhile is simply dropped.
            let Some(st) = slab.get(id) else { continue };
            if st.is_file() {
                let (status, bytes) = st.file_returned(done);
                if let Some(st) = slab.remove(id) {
                    out.push_back(finish(id, st, status, bytes));
                }
                continue;
            }
            st.read_returned(done);
            if let Target::Fd(fd, dir) = st.target() {
                self.run_queue(slab, fd, dir, out);
            }
        }
        let subs = std::mem::take(&mut slab.remote_submit);
        let cancels = std::mem::take(&mut slab.remote_cancel);
        let index = self.shared.index;
        for slot in subs {
            let id = slab.id_at(index, slot);
            self.start(slab, id, out);
        }
        for id in cancels {
            self.cancel_now(slab, id, out);
        }
    }

    /// Completes the timers whose deadline has passed.
    fn expire(&mut self, slab: &mut Slab<OpState>, out: &mut VecDeque<Packet>) {
        let now = Instant::now();
        while let Some(&Reverse((at, raw))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = OpId(raw);
            if let Some(st) = slab.remove(id) {
                self.live_timers -= 1;
                out.push_back(finish(id, st, Ok(()), 0));
            }
        }
        if self.timers.len() > 64 && self.timers.len() > 2 * self.live_timers {
            // Mostly cancelled timers: drop their entries.
            self.timers
                .retain(|Reverse((_, raw))| slab.get(OpId(*raw)).is_some());
        }
    }

    /// One `epoll_wait`; the events wait in `events` for `reap`.
    fn poll(&mut self, ms: i32) {
        self.ready = epoll_wait(&self.epfd, &mut self.events, ms);
    }
}

impl RingOps for Ring {
    /// The generations of this ring's slots, for the next ring at its index.
    fn gens(&self) -> Vec<u32> {
        self.shared.lock().gens_left()
    }

    /// Submits an operation issued on the owning thread: it is tried at once,
    /// after the operations other threads handed over earlier (they were
    /// issued first: a send handed over, then one of this thread, reach the
    /// socket in that order; checking costs nothing, the slab lock is taken
    /// anyway).
    fn submit_local(&mut self, op: Op) -> Result<OpId, (io::Error, Op)> {
        let st = prepare(op)?;
        let shared = self.shared.clone();
        let mut slab = shared.lock();
        let mut out = std::mem::take(&mut self.done);
        if !slab.remote_submit.is_empty() || !slab.remote_cancel.is_empty() {
            self.take_remote(&mut slab, &mut out);
        }
        let id = match slab.insert(shared.index, st) {
            Ok(id) => id,
            Err((e, st)) => {
                self.done = out;
                return Err((e, st.op));
            }
        };
        self.start(&mut slab, id, &mut out);
        self.done = out;
        Ok(id)
    }

    /// The packet of `id` if it completed while it was submitted (a send
    /// the socket took, a receive with data waiting, a cached file read).
    fn take_inline(&mut self, id: OpId) -> Option<Packet> {
        let i = self.done.iter().position(|p| p.id == id)?;
        self.done.remove(i)
    }

    /// Collects finished operations into `out` without blocking.
    fn reap(&mut self, out: &mut VecDeque<Packet>) {
        out.append(&mut self.done);
        let shared = self.shared.clone();
        let mut slab = shared.lock();
        if self.ready == 0 && self.queued > 0 {
            self.poll(0);
        }
        let ready = std::mem::take(&mut self.ready);
        // The eventfd is consumed before the flag is taken (crate::handoff): a
        // notifier after this is seen by the take or leaves the eventfd
        // readable for the next epoll_wait.
        let fired = self.events[..ready].iter().any(|ev| ev.u64 == WAKE_TAG);
        if self.shared.handoff.take(fired) {
            self.take_remote(&mut slab, out);
        }
        for i in 0..ready {
            let ev = self.events[i];
            let (data, flags) = (ev.u64, ev.events);
            if data == WAKE_TAG {
                continue;
            }
            let fd = data as RawFd;
            if flags & READ_EVENTS != 0 {
                self.run_queue(&mut slab, fd, Dir::Read, out);
            }
            if flags & WRITE_EVENTS != 0 {
                self.run_queue(&mut slab, fd, Dir::Write, out);
            }
        }
        if !self.again.is_empty() {
            for (fd, dir) in std::mem::take(&mut self.again) {
                self.run_queue(&mut slab, fd, dir, out);
            }
        }
        if !self.timers.is_empty() {
            self.expire(&mut slab, out);
        }
    }

    /// Sleeps until a descriptor is ready, a wake-up, the next timer, or
    /// `timeout`.
    fn park(&mut self, timeout: Option<Duration>) {
        if self.ready > 0 || !self.done.is_empty() || !self.again.is_empty() {
            return;
        }
        let mut wait = timeout;
        if let Some(Reverse((at, _))) = self.timers.peek() {
            let d = at.saturating_duration_since(Instant::now());
            wait = Some(wait.map_or(d, |w| w.min(d)));
        }
        let ms = match wait {
            None => -1,
            // Rounded up: waking early would only spin until the deadline.
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        };
        self.poll(ms);
    }

    /// Completes everything still in flight as cancelled and returns the
    /// packets (every op still yields exactly one). Nothing here is held by
    /// the kernel; the one wait is for file operations a blocking-pool helper
    /// is running (they hold the op's buffer): they complete with their real
    /// result, as a running `ReadFile` does on Windows.
    fn drain(&mut self) -> VecDeque<Packet> {
        let mut out = std::mem::take(&mut self.done);
        let shared = self.shared.clone();
        let mut slab = shared.lock();
        slab.closed = true;
        slab.remote_submit.clear();
        slab.remote_cancel.clear();
        let mut running = HashMap::new();
        for (id, mut st) in slab.take_all(shared.index) {
            let mut inline = None;
            if st.is_file() && matches!(st.offload, Offload::Busy) {
                match pool::unqueue(&shared, id) {
                    Some(job) => inline = Some(st.file_restore(job)),
                    None => {
                        running.insert(id, st);
                        continue;
                    }
                }
            }
            let bytes = inline.unwrap_or_else(|| st.progress());
            out.push_back(finish(id, st, Err(errno(libc::ECANCELED)), bytes));
        }
        drop(slab);
        while !running.is_empty() {
            let reads =
                std::mem::take(&mut *shared.reads.lock().unwrap_or_else(|e| e.into_inner()));
            for (id, done) in reads {
                if let Some(mut st) = running.remove(&id) {
                    let (status, bytes) = st.file_returned(done);
                    out.push_back(finish(id, st, status, bytes));
                }
            }
            if !running.is_empty() {
                // A helper is in a blocking file call: it ends on its own.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = self.shared.handoff.take(false);
        self.fds.clear();
        self.behind = Behind::default();
        self.queued = 0;
        self.timers.clear();
        self.live_timers = 0;
        self.again.clear();
        self.ready = 0;
        out
    }
}

// The epoll and eventfd system calls, and their `unsafe`, are here.

fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 with a valid flag returns a new descriptor or -1.
    syscall!(epoll_create1(libc::EPOLL_CLOEXEC)).map(super::owned)
}

fn epoll_ctl(epfd: &OwnedFd, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a live local the kernel reads during the call only.
    syscall!(epoll_ctl(epfd.as_raw_fd(), op, fd, &mut ev)).map(drop)
}

/// Registers a socket for edge-triggered readiness in both directions.
fn register(epfd: &OwnedFd, fd: RawFd) -> io::Result<()> {
    let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
    match epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, events, fd as u64) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, events, fd as u64)
        }
        r => r,
    }
}

/// Waits up to `ms` milliseconds (-1: forever); returns how many events were
/// written to the front of `events` (0 on timeout or interruption).
fn epoll_wait(epfd: &OwnedFd, events: &mut [libc::epoll_event], ms: i32) -> usize {
    let cap = events.len().min(i32::MAX as usize) as i32;
    // SAFETY: the kernel writes at most `cap` events into `events`, which we
    // borrow mutably for the call.
    let n = unsafe { libc::epoll_wait(epfd.as_raw_fd(), events.as_mut_ptr(), cap, ms) };
    if n > 0 {
        n as usize
    } else {
        0
    }
}
