//! The completion port: `CreateIoCompletionPort`, `GetQueuedCompletionStatus(Ex)`,
//! `PostQueuedCompletionStatus` and `CancelIoEx`, on Linux.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use iocomp_sync::{Event, Thread};

use crate::completion::{Completion, Overlapped, Route, Shared};
use crate::control::{Control, Step};
use crate::handle::{lane_of, unlane, Handle, HandleInner, Lane};
use crate::op::Op;
use crate::packet::{GetError, OpId, Packet};
use crate::sys::{Anchor, Ring, RingShared};

static NEXT_PORT: AtomicU64 = AtomicU64::new(1);

/// A completion port: a queue of completion packets that many threads wait on.
///
/// Cloning a `Port` gives another reference to the same port. See the
/// [crate documentation](crate) for the model.
#[derive(Clone)]
pub struct Port {
    pub(crate) core: Arc<Core>,
}

pub(crate) struct Core {
    id: u64,
    pub(crate) control: Control<crate::sys::Waker>,
    anchor: Anchor,
    /// Why `Backend::Auto` did not pick io_uring, if it did not.
    fallback: Option<String>,
    /// Rings of attached threads, by ring index (for cancels and hand-overs).
    rings: RwLock<Vec<Option<Arc<RingShared>>>>,
    /// The slot generations detached rings left, by ring index: the next ring
    /// at that index goes on from them, so no `OpId` repeats.
    gens: Mutex<Vec<Vec<u32>>>,
    next_ring: AtomicUsize,
}

/// What [`Port::submit_inline`] did with an operation.
#[derive(Debug)]
#[must_use = "an `Inline::Done` packet is not queued on the port: drop it and the result is lost"]
pub enum Inline {
    /// It completed at once: its packet, which is not queued on the port.
    Done(Packet),
    /// It is in flight: its one packet will come through the port.
    Pending(OpId),
}

/// The kernel interface a [`Port`] runs on.
///
/// Both backends give the same semantics; io_uring is faster, epoll runs where
/// io_uring is not allowed (Docker's default seccomp profile,
/// `kernel.io_uring_disabled`) or too old. Parsed from and displayed as
/// `auto`, `uring`, `epoll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring if the kernel allows it and knows every opcode used, else epoll
    /// (see [`Port::fallback_reason`]). The environment variable
    /// [`BACKEND_ENV`] (`auto`, `uring` or `epoll`) overrides this choice, and
    /// only this one.
    #[default]
    Auto,
    /// io_uring, one ring per thread; creating the port fails without it.
    Uring,
    /// epoll, one epoll instance per thread.
    Epoll,
}

/// The environment variable that picks the backend of ports built with
/// [`Backend::Auto`] (the default): `auto`, `uring` or `epoll`.
pub const BACKEND_ENV: &str = "IOCOMP_BACKEND";

impl Backend {
    /// The name used by [`BACKEND_ENV`], `--backend` and `Display`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }

    /// What a port built with this choice asks the kernel for: `Auto` becomes
    /// the value of [`BACKEND_ENV`] if that is set (and not empty); other
    /// choices stay. An unparsable variable is an `InvalidInput` error.
    pub fn with_env(self) -> io::Result<Backend> {
        if self != Backend::Auto {
            return Ok(self);
        }
        match std::env::var(BACKEND_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(Backend::Auto),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            "epoll" => Ok(Backend::Epoll),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown backend {s:?}: expected auto, uring or epoll"),
            )),
        }
    }
}

/// Builds a [`Port`]: `Port::builder().concurrency(4).build()`.
#[derive(Debug, Clone, Default)]
pub struct PortBuilder {
    concurrency: usize,
    strict: bool,
    backend: Backend,
}

impl PortBuilder {
    /// The most threads that may run between two `get` calls; 0 (the default)
    /// means the number of CPUs this process may use (IOCP rule C1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Strict mode: every completion goes through the port's single queue, so
    /// I/O packets too are taken oldest first by the newest waiter. Without it a
    /// thread takes its own ring's completions first (faster; the order
    /// Windows documents as "may differ").
    ///
    /// What strict mode guarantees, precisely: the order of packets *in the
    /// queue* (oldest first, to the newest waiter, within the concurrency
    /// limit), as on Windows. An operation's completion enters the queue when
    /// the thread whose ring runs it next enters the port — `get`,
    /// `get_many`, [`blocking`](Port::blocking),
    /// [`may_run_long`](Port::may_run_long), `detach` or thread exit — not
    /// while that thread runs user code: the kernel reports an io_uring
    /// completion only to the ring's own thread (`COOP_TASKRUN`, single
    /// issuer), and an epoll readiness only to its instance's. A handler that
    /// runs long should say so with `blocking` or `may_run_long`, as it
    /// should anyway for the concurrency limit (C21); operations submitted
    /// from threads that never wait on the port run on the parked threads'
    /// rings and are not delayed this way.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// The kernel interface to use (default [`Backend::Auto`]: io_uring if
    /// allowed, else epoll; the environment variable [`BACKEND_ENV`] overrides
    /// `Auto` only).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Creates the port. Fails if the backend asked for is unavailable
    /// (io_uring when forced), or if [`BACKEND_ENV`] holds an unknown name.
    ///
    /// The first port of the process also opens `/dev/null` once, for
    /// [`Handle::close`](crate::Handle::close), so that a close needs no new
    /// descriptor (it works under EMFILE). If `/dev/null` cannot be opened
    /// now (a sandbox, EMFILE), the port is built all the same and a close
    /// opens it when it needs it.
    ///
    /// The process's `SIGPIPE` action is left alone: a write to a pipe whose
    /// reader is gone raises `SIGPIPE` unless the program ignores it (every
    /// Rust binary does, from before `main`, unless it asked otherwise); it
    /// then completes with `EPIPE`. Sends on sockets never raise it
    /// (`MSG_NOSIGNAL`).
    pub fn build(self) -> io::Result<Port> {
        let n = if self.concurrency == 0 {
            default_threads()
        } else {
            self.concurrency
        };
        let (anchor, fallback) = Anchor::open(self.backend.with_env()?)?;
        // Once per process: what `Handle::close` retires descriptors with,
        // so that a close needs no new descriptor. Failing here is no
        // failure: a close tries again.
        let _ = crate::sys::open_dev_null();
        let core = Core {
            id: NEXT_PORT.fetch_add(1, Ordering::Relaxed),
            control: Control::new(n, self.strict),
            anchor,
            fallback,
            rings: RwLock::new(Vec::new()),
            gens: Mutex::new(Vec::new()),
            next_ring: AtomicUsize::new(0),
        };
        Ok(Port {
            core: Arc::new(core),
        })
    }
}

/// Threads this process may run on (respects `taskset`), at least 1.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// This thread's attachment to one port: its ring and its own completions.
struct Consumer {
    core: Arc<Core>,
    id: usize,
    ring: Ring,
    local: VecDeque<Packet>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Every op still yields its packet: cancelled ones go to the port's queue
        // (dropped there if the port is closed).
        let mut left = self.ring.drain();
        left.extend(self.local.drain(..));
        self.core.control.detach(self.id);
        if !left.is_empty() {
            let _ = self.core.control.enqueue(left);
        }
        let index = usize::from(self.ring.shared().index());
        // Before the index is free again: the next ring there continues the
        // generations.
        let gens = self.ring.gens();
        {
            let mut all = self.core.gens.lock().unwrap_or_else(|e| e.into_inner());
            if all.len() <= index {
                all.resize(index + 1, Vec::new());
            }
            all[index] = gens;
        }
        if let Ok(mut rings) = self.core.rings.write() {
            if let Some(slot) = rings.get_mut(index) {
                *slot = None;
            }
        }
        // No engine lock is held here (a consumer is dropped by `detach`
        // after its borrow ends, or when the thread exits).
        crate::defer::flush();
    }
}

thread_local! {
    static CONSUMERS: RefCell<Vec<Consumer>> = const { RefCell::new(Vec::new()) };
}

impl Port {
    /// A port whose concurrency is the number of CPUs.
    pub fn new() -> io::Result<Port> {
        Port::builder().build()
    }

    /// A builder for a port with other settings.
    pub fn builder() -> PortBuilder {
        PortBuilder::default()
    }

    /// The concurrency limit.
    pub fn concurrency(&self) -> usize {
        self.core.control.max()
    }

    /// The backend this port runs on: [`Backend::Uring`] or [`Backend::Epoll`]
    /// (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.core.anchor.backend()
    }

    /// Why the port runs on epoll although io_uring was acceptable
    /// ([`Backend::Auto`]): the io_uring step that failed and its error, such
    /// as `io_uring_setup: Operation not permitted (os error 1)`. `None` when
    /// io_uring runs, or when epoll was asked for.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.core.fallback.as_deref()
    }

    /// Associates a descriptor with this port under a completion key (C3, C4):
    /// every packet of every operation on the returned handle carries `key`.
    /// The handle owns the descriptor from now on.
    ///
    /// The engine may set `O_NONBLOCK` on the descriptor (the epoll backend
    /// does for pipes, listeners, connects and transmits) and leaves it set,
    /// as tokio and mio do: the descriptor stays non-blocking after the
    /// handle goes. The flag belongs to the open file, so every descriptor
    /// of it sees the change: a descriptor shared with another process (a
    /// pipe to a child, an inherited stdout) too. If that matters, give the
    /// port a descriptor of a separate open file (for a pipe or a terminal,
    /// reopen `/proc/self/fd/N`) instead of a dup.
    pub fn associate(&self, fd: impl Into<OwnedFd>, key: u64) -> Handle {
        Handle(Arc::new(HandleInner {
            fd: fd.into(),
            key,
            port: self.core.id,
            nonblocking: std::sync::atomic::AtomicBool::new(false),
            kind: std::sync::atomic::AtomicU8::new(0),
            lanes: [Lane::new(), Lane::new()],
            core: Arc::downgrade(&self.core),
            closing: std::sync::atomic::AtomicBool::new(false),
            close_pending: std::sync::atomic::AtomicI64::new(crate::handle::CLOSE_BIG),
            counted: std::sync::Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Queues a packet (`PostQueuedCompletionStatus`, C12): the values are not
    /// looked at, the status is success, and waking follows the same LIFO and
    /// concurrency rules as I/O packets. Fails only if the port is closed.
    pub fn post(&self, key: u64, bytes: u64, token: u64) -> io::Result<()> {
        let p = Packet {
            key,
            bytes,
            status: Ok(()),
            id: OpId::POSTED,
            op: Op::Posted { token },
        };
        let r = self.core.control.enqueue([p]).map_err(|()| closed());
        crate::defer::flush();
        r
    }

    pub(crate) fn post_op(&self, key: u64, op: Op) -> io::Result<()> {
        let p = Packet {
            key,
            bytes: 0,
            status: Ok(()),
            id: OpId::POSTED,
            op,
        };
        let r = self.core.control.enqueue([p]).map_err(|()| closed());
        crate::defer::flush();
        r
    }

    /// Waits for one packet (`GetQueuedCompletionStatus`). `None` waits forever;
    /// `Some(Duration::ZERO)` only polls (C14). A timeout too long to be a
    /// point in time (such as `Duration::MAX`) is clamped: it waits forever.
    ///
    /// The calling thread becomes one of the port's threads: it counts as running
    /// from the time `get` returns a packet until it calls `get` again (C19, C20).
    pub fn get(&self, timeout: Option<Duration>) -> Result<Packet, GetError> {
        self.get_with(timeout, false)
    }

    /// [`get`](Port::get), alertable (`GetQueuedCompletionStatusEx` with
    /// `fAlertable`): if no packet can be taken and the wait would block,
    /// the calling thread's queued APCs ([`iocomp_sync::Thread::queue_apc`],
    /// the completion routines of [`Port::submit_ex`]) run on it, oldest
    /// first, and the call returns [`GetError::Alerted`]
    /// (`WAIT_IO_COMPLETION`). An APC queued by another thread while this
    /// one is blocked in the port wakes it at once.
    ///
    /// Packets come first, as on Windows ("if no entries are available, the
    /// function performs an alertable wait"): while a packet can be taken it
    /// is returned and queued APCs stay queued for the next alertable wait;
    /// a packet and an APC that arrive during the same wait give the packet.
    /// With `Some(Duration::ZERO)` queued APCs run if no packet is ready.
    /// The APCs run outside the engine (they may call the port).
    pub fn get_alertable(&self, timeout: Option<Duration>) -> Result<Packet, GetError> {
        self.get_with(timeout, true)
    }

    fn get_with(&self, timeout: Option<Duration>, alertable: bool) -> Result<Packet, GetError> {
        // A deadline past what `Instant` holds is as good as none: wait forever.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            // A thread that cannot get a ring (out of memory or descriptors)
            // can never receive a packet: for it the port is as good as gone.
            let r = self
                .with_consumer(|c| wait(c, deadline, alertable))
                .unwrap_or(Err(Leave::Get(GetError::Abandoned)));
            if alertable {
                // The waker is registered only while this thread may block
                // in its ring.
                iocomp_sync::set_apc_waker(None);
            }
            // Outside the consumer borrow: user values the engine let go of
            // are dropped here (their Drop may call the port).
            crate::defer::flush();
            match r {
                Ok(p) => return Ok(p),
                Err(Leave::Get(GetError::TimedOut)) if alertable => {
                    // A zero timeout never parks: queued APCs run here.
                    if iocomp_sync::run_queued_apcs() > 0 {
                        return Err(GetError::Alerted);
                    }
                    return Err(GetError::TimedOut);
                }
                Err(Leave::Get(e)) => return Err(e),
                Err(Leave::Flush) => {}
                Err(Leave::Alert) => {
                    if iocomp_sync::run_queued_apcs() > 0 {
                        return Err(GetError::Alerted);
                    }
                }
            }
        }
    }

    /// Waits for at least one packet and takes up to `max` (at least 1) that are
    /// ready, appending them to `out` (`GetQueuedCompletionStatusEx`, C15). The
    /// batch counts as one running thread. Returns how many were added. The
    /// timeout is clamped as in [`get`](Port::get).
    pub fn get_many(
        &self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        self.get_many_with(out, max, timeout, false)
    }

    /// [`get_many`](Port::get_many), alertable (`GetQueuedCompletionStatusEx`
    /// with `fAlertable`): as [`get_alertable`](Port::get_alertable), the
    /// thread's queued APCs run, and [`GetError::Alerted`] is returned, only
    /// when no packet can be taken.
    pub fn get_many_alertable(
        &self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        self.get_many_with(out, max, timeout, true)
    }

    fn get_many_with(
        &self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Option<Duration>,
        alertable: bool,
    ) -> Result<usize, GetError> {
        let start = out.len();
        let first = self.get_with(timeout, alertable)?;
        out.push(first);
        self.take_more(out, max);
        Ok(out.len() - start)
    }

    /// [`get_many`](Port::get_many) into a queue (a [`Pool`](crate::Pool)
    /// worker's): the packets are moved once, from the thread's queue to
    /// `out`.
    pub(crate) fn get_batch(
        &self,
        out: &mut VecDeque<Packet>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        let start = out.len();
        let first = self.get_with(timeout, false)?;
        out.push_back(first);
        self.take_more(out, max);
        Ok(out.len() - start)
    }

    /// The rest of a batch of at most `max` whose first packet `get` gave.
    fn take_more(&self, out: &mut impl Extend<Packet>, max: usize) {
        let _ = self.with_consumer(|c| {
            c.core.control.take_more(&mut c.local, out, max.max(1) - 1);
        });
        crate::defer::flush();
    }
    /// Submits an overlapped operation. On `Ok` exactly one packet will come back
    /// for it (C8); on `Err` the operation is returned with the error and no
    /// packet will come.
    ///
    /// Issued on a thread that waits on this port, the operation goes to that
    /// thread's own ring (no locks, no hand-off). Issued elsewhere, it is handed
    /// to one of the port's threads — the most recently parked one if any is
    /// parked, which starts it at once; a busy thread starts it when it next calls
    /// `get`. If no thread has attached yet, it fails with `NotConnected`.
    ///
    /// When the I/O reaches the kernel: on Windows, in the call. On the epoll
    /// backend, in the call too (a socket op is tried at once or waits for
    /// readiness; a file read is tried with `preadv2(RWF_NOWAIT)`, else the
    /// blocking pool starts it, as it does every file write). On io_uring,
    /// ops are queued on the thread's ring and handed to the kernel in one
    /// batch at the thread's next wait on the port (`get`, `blocking`,
    /// [`submit_inline`](Port::submit_inline)), except file reads and writes
    /// ([`ReadAt`](crate::ReadAt), [`WriteAt`](crate::WriteAt)): those go in
    /// groups of at most 8 as they are submitted (the 8th queued since the
    /// last hand-over submits the queue), so that a deep queue of cold reads
    /// does not reach the disk as one burst; a partial group goes with the
    /// next wait. Ops handed to another thread's ring start when it takes
    /// them (file ops grouped the same way).
    ///
    /// One socket's receives, and its sends and transmits, complete in the
    /// order they were submitted, as `WSARecv`s and `WSASend`s do on Windows
    /// whichever threads issue them (when one call returns before the other
    /// is made): while some are in flight, a later one goes to the thread
    /// that runs them, behind them, instead of the caller's own ring.
    pub fn submit(&self, op: impl Into<Op>) -> Result<OpId, (io::Error, Op)> {
        let op = op.into();
        if let Err(e) = self.check(&op) {
            return Err((e, op));
        }
        let mut op = Some(op);
        let local = self.submit_own(&mut op, |c, op, own, to| {
            if to == own {
                unlane(c.ring.submit_local(op))
            } else {
                self.behind(op, to, own, |op| c.ring.submit_local(op))
            }
        });
        if let Some(r) = local {
            return r;
        }
        let Some(op) = op else {
            return Err((closed(), Op::Posted { token: 0 }));
        };
        self.submit_remote(op, None)
    }

    /// Submits an operation and, if it completes at once, hands its packet
    /// straight back instead of queueing it (`FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`,
    /// asked per call so that [`submit`](Port::submit) keeps its rule):
    /// [`Inline::Done`] with the packet — nothing is queued for it — or
    /// [`Inline::Pending`] with its id, and then exactly one packet comes
    /// through the port as with `submit`. On `Err` the operation is returned
    /// and no packet comes.
    ///
    /// Only an operation that runs on the calling thread's own ring can
    /// complete inline: called on a thread that waits on this port, with no
    /// earlier operation of the same direction still in flight on the socket.
    /// A send that the socket buffer takes, a receive with data waiting, a
    /// file read from the page cache usually complete inline; others are
    /// `Pending`. Saves the trip through the queue for what is done at once.
    pub fn submit_inline(&self, op: impl Into<Op>) -> Result<Inline, (io::Error, Op)> {
        let mut op = op.into();
        if let Some(c) = op.completion_mut() {
            *c = Completion::default();
        }
        if let Err(e) = self.check(&op) {
            return Err((e, op));
        }
        let mut op = Some(op);
        let local = self.submit_own(&mut op, |c, op, own, to| {
            if to != own {
                return self
                    .behind(op, to, own, |op| c.ring.submit_local(op))
                    .map(Inline::Pending);
            }
            unlane(c.ring.submit_local(op)).map(|id| match c.ring.take_inline(id) {
                Some(p) => Inline::Done(p),
                None => Inline::Pending(id),
            })
        });
        if let Some(r) = local {
            crate::defer::flush();
            return r;
        }
        let Some(op) = op else {
            return Err((closed(), Op::Posted { token: 0 }));
        };
        self.submit_remote(op, None).map(Inline::Pending)
    }

    /// Submits the op in `op` on the calling thread's own ring with `f`,
    /// given the consumer, the op, the ring's index and the index of the ring
    /// whose lane the op must join (`own` when it may run here). `None`, with
    /// the op left in `op`, when this thread does not wait on this port (or
    /// is leaving it).
    fn submit_own<R>(
        &self,
        op: &mut Option<Op>,
        f: impl FnOnce(&mut Consumer, Op, u16, u16) -> R,
    ) -> Option<R> {
        CONSUMERS
            .try_with(|cs| {
                let mut cs = cs.try_borrow_mut().ok()?;
                let c = cs.iter_mut().find(|c| Arc::ptr_eq(&c.core, &self.core))?;
                let op = op.take()?;
                let own = c.ring.shared().index();
                let to = lane_of(&op).map_or(own, |l| l.enter(own));
                Some(f(c, op, own, to))
            })
            .ok()
            .flatten()
    }

    /// Submits an operation whose packet waits in the returned [`Overlapped`]
    /// instead of the port's queue: `ReadFile`/`WriteFile` on a handle opened
    /// with `FILE_FLAG_OVERLAPPED` and no event, followed by
    /// `GetOverlappedResult` ([`Overlapped::result`], [`Overlapped::wait`]).
    ///
    /// The operation runs on one of the port's *other* threads (those waiting in
    /// [`get`](Port::get), such as a [`Pool`](crate::Pool)'s), never on the
    /// caller's own ring, so the caller may block on the result; with no such
    /// thread it fails with `NotConnected`. Otherwise as [`submit`](Port::submit):
    /// on `Ok` exactly one packet comes back, into the `Overlapped`. (Because it
    /// never runs on the caller's ring, a receive or send submitted this way
    /// while the caller's own ring still runs earlier ones on the same socket
    /// is not ordered behind them.)
    pub fn submit_waitable(&self, op: impl Into<Op>) -> Result<Overlapped, (io::Error, Op)> {
        self.submit_overlapped(op.into(), None)
    }

    /// Submits an operation that sets `event` when it completes, its packet
    /// waiting in the returned [`Overlapped`] (`OVERLAPPED.hEvent`): wait for
    /// the event, alone or with others in
    /// [`wait_any`](iocomp_sync::wait_any), then take the packet with
    /// [`Overlapped::result`]. As on Windows the event is reset when the
    /// operation is submitted and should be manual-reset (an auto-reset one is
    /// consumed by whichever wait sees it first; [`Overlapped::wait`] does not
    /// depend on it). Runs on another thread of the port, as
    /// [`submit_waitable`](Port::submit_waitable).
    pub fn submit_with_event(
        &self,
        op: impl Into<Op>,
        event: &Event,
    ) -> Result<Overlapped, (io::Error, Op)> {
        event.reset();
        self.submit_overlapped(op.into(), Some(event.clone()))
    }

    /// Submits an operation whose packet is handed to `routine`, run as an APC
    /// on the calling thread during its next alertable wait
    /// (`ReadFileEx`/`WriteFileEx` with a completion routine; the wait is
    /// [`sleep_alertable`](iocomp_sync::sleep_alertable),
    /// [`wait_any_alertable`](iocomp_sync::wait_any_alertable) or
    /// [`Waitable::wait_alertable`](iocomp_sync::Waitable::wait_alertable), which
    /// then returns `Alerted`). If the calling thread has exited by then, the
    /// routine and the packet are dropped, as Windows discards a dead thread's
    /// APCs. Runs on another thread of the port, as
    /// [`submit_waitable`](Port::submit_waitable).
    pub fn submit_ex(
        &self,
        op: impl Into<Op>,
        routine: impl FnOnce(Packet) + std::marker::Send + 'static,
    ) -> Result<OpId, (io::Error, Op)> {
        let route = Route::Routine {
            thread: Thread::current(),
            routine: Box::new(routine),
        };
        self.submit_routed(op.into(), route)
    }

    fn submit_overlapped(
        &self,
        op: Op,
        event: Option<Event>,
    ) -> Result<Overlapped, (io::Error, Op)> {
        let shared = Shared::new(event);
        let id = self.submit_routed(op, Route::Overlapped(shared.clone()))?;
        Ok(Overlapped::new(id, self.clone(), shared))
    }

    /// Submits `op` with `route` to a ring other than the caller's own.
    fn submit_routed(&self, mut op: Op, route: Route) -> Result<OpId, (io::Error, Op)> {
        let Some(c) = op.completion_mut() else {
            return Err((
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "only I/O operations have a completion mode",
                ),
                op,
            ));
        };
        *c = Completion(Some(Box::new(route)));
        let own = CONSUMERS
            .try_with(|cs| {
                let cs = cs.try_borrow().ok()?;
                let c = cs.iter().find(|c| Arc::ptr_eq(&c.core, &self.core))?;
                Some(c.ring.shared().index())
            })
            .ok()
            .flatten();
        let r = match self.check(&op) {
            Ok(()) => self.submit_remote(op, own),
            Err(e) => Err((e, op)),
        };
        r.map_err(|(e, mut op)| {
            if let Some(c) = op.completion_mut() {
                *c = Completion::default();
            }
            (e, op)
        })
    }

    /// Refuses an operation on another port's handle, or on a closed port.
    fn check(&self, op: &Op) -> io::Result<()> {
        if let Some(h) = op.handle() {
            if h.0.port != self.core.id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "handle belongs to another port",
                ));
            }
            if h.0.closing.load(std::sync::atomic::Ordering::Relaxed) {
                // ERROR_INVALID_HANDLE: Handle::close was called.
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
        }
        if self.core.control.is_closed() {
            return Err(closed());
        }
        // Positional file I/O: the range must lie within the largest file
        // offset (`off_t` is signed; io_uring reads -1 as "the file position").
        // A read's length is cut to fit (a read there is past any end of
        // file); a write's range must fit whole.
        let (h, end) = match op {
            Op::ReadAt(r) => (&r.handle, Some(r.offset)),
            Op::WriteAt(w) => (&w.handle, w.offset.checked_add(w.buf.len() as u64)),
            _ => return Ok(()),
        };
        // A read into no room would complete with 0 bytes, which reads as end
        // of file: refused instead.
        if let Op::ReadAt(r) = op {
            if r.buf.capacity() == r.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "ReadAt with no spare capacity in its buffer",
                ));
            }
        }
        if !matches!(end, Some(e) if e <= i64::MAX as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file offset beyond the largest file offset (i64::MAX)",
            ));
        }
        // A stream has no position: ReadFile on a pipe ignores the offset on
        // Windows, io_uring would too, `pread` says ESPIPE. One meaning on
        // every backend: refused (use Recv/Send on streams).
        if matches!(
            h.kind()?,
            crate::sys::FdKind::Socket | crate::sys::FdKind::Pipe
        ) {
            return Err(io::Error::from_raw_os_error(libc::ESPIPE));
        }
        Ok(())
    }

    /// Hands `op` to a ring owned by another thread (never the ring at index
    /// `exclude`).
    fn submit_remote(&self, op: Op, exclude: Option<u16>) -> Result<OpId, (io::Error, Op)> {
        // A ring whose thread is leaving stays listed until it has drained, and
        // refuses new work with NotConnected: take the next ring instead, at
        // most once per ring listed (the turn counter moves on each try).
        let mut op = op;
        let mut tries = 0;
        loop {
            match self.submit_remote_once(op, exclude) {
                Err((e, back))
                    if e.kind() == io::ErrorKind::NotConnected && tries < self.rings_listed() =>
                {
                    tries += 1;
                    op = back;
                }
                r => return r,
            }
        }
    }

    /// How many rings are listed now (live or draining).
    fn rings_listed(&self) -> usize {
        let rings = self.core.rings.read().unwrap_or_else(|e| e.into_inner());
        rings.iter().flatten().count()
    }

    fn submit_remote_once(&self, op: Op, exclude: Option<u16>) -> Result<OpId, (io::Error, Op)> {
        // Prefer a thread that is parked (it starts the operation at once), else
        // take turns. (A parked thread is never the caller.)
        let ring = self.core.control.top_waiter().or_else(|| {
            let rings = self.core.rings.read().unwrap_or_else(|e| e.into_inner());
            let live: Vec<&Arc<RingShared>> = rings
                .iter()
                .flatten()
                .filter(|r| Some(r.index()) != exclude)
                .collect();
            if live.is_empty() {
                None
            } else {
                let i = self.core.next_ring.fetch_add(1, Ordering::Relaxed) % live.len();
                Some(live[i].clone())
            }
        });
        match ring {
            Some(r) => {
                let mine = r.index();
                let to = lane_of(&op).map_or(mine, |l| l.enter(mine));
                if to == mine || Some(to) == exclude {
                    // (A routed op never runs on the caller's own ring, which
                    // may wait for it: if that ring holds the socket's earlier
                    // ops, this one is counted but not ordered behind them.)
                    return unlane(r.submit_remote(op));
                }
                self.behind(op, to, mine, |op| r.submit_remote(op))
            }
            None => Err((
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    if exclude.is_some() {
                        "no other thread waits on this port"
                    } else {
                        "no thread waits on this port yet"
                    },
                ),
                op,
            )),
        }
    }

    /// Hands `op`, counted in its socket's lane, to the lane's ring `to`, so
    /// that it queues behind the socket's earlier ops there. If that ring is
    /// gone or closed (its thread detached: its ops are cancelled and leave
    /// the lane as they complete), the lane moves to `mine` and `op` goes
    /// where it was meant to, with `here`.
    fn behind(
        &self,
        op: Op,
        to: u16,
        mine: u16,
        here: impl FnOnce(Op) -> Result<OpId, (io::Error, Op)>,
    ) -> Result<OpId, (io::Error, Op)> {
        let owner = {
            let rings = self.core.rings.read().unwrap_or_else(|e| e.into_inner());
            rings.get(usize::from(to)).cloned().flatten()
        };
        let op = match owner {
            Some(r) => match r.submit_remote(op) {
                Ok(id) => return Ok(id),
                // The ring is closed: its thread is detaching.
                Err((e, op)) if e.kind() == io::ErrorKind::NotConnected => op,
                // Refused for itself (a bad argument): the lane stays.
                Err(e) => return unlane(Err(e)),
            },
            None => op,
        };
        if let Some(l) = lane_of(&op) {
            l.adopt(to, mine);
        }
        unlane(here(op))
    }

    /// Asks for an operation to be cancelled (`CancelIoEx`, C23). Answers at once
    /// and posts nothing itself: `Ok` if the operation was in flight — its own
    /// packet then reports `ECANCELED`, or its real result if it finished first —
    /// and `NotFound` if it is not (already completed, or never existed).
    pub fn cancel(&self, id: OpId) -> io::Result<()> {
        // Prefer a thread that is parked (it starts the operation at once), else
        // take turns.
        match self.ring_of(id) {
            Some(r) => r.cancel(id),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such operation in flight",
            )),
        }
    }

    /// Cancels every operation pending on `handle`, whichever thread issued
    /// it (`CancelIoEx(h, NULL)`), and returns how many were pending (0 when
    /// none: Windows' `ERROR_NOT_FOUND`). Like [`Port::cancel`] it answers at
    /// once; each of those operations then yields its one packet, with the
    /// handle's key and `ECANCELED` ([`Packet::is_aborted`]), or its real
    /// result if it finished first (a file operation the epoll backend's
    /// blocking pool already runs, say). Operations issued after the call are
    /// not affected. A handle of another port is refused with `InvalidInput`.
    pub fn cancel_handle(&self, handle: &Handle) -> io::Result<usize> {
        self.cancel_handle_counting(handle, false)
    }

    /// [`Port::cancel_handle`]; with `count`, the ids are noted on the handle
    /// for [`Handle::close`].
    pub(crate) fn cancel_handle_counting(&self, handle: &Handle, count: bool) -> io::Result<usize> {
        if handle.0.port != self.core.id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "handle belongs to another port",
            ));
        }
        let rings = self.core.rings.read().unwrap_or_else(|e| e.into_inner());
        Ok(rings
            .iter()
            .flatten()
            .map(|r| r.cancel_handle(handle, count))
            .sum())
    }

    /// How many bytes an operation still in flight has moved so far (a send or a
    /// transmit in progress; 0 for others), or `None` if it is not in flight.
    /// Lets a caller tell a slow transfer that moves from one that is stuck.
    pub fn progress(&self, id: OpId) -> Option<u64> {
        self.ring_of(id).and_then(|r| r.progress(id))
    }

    /// The ring an operation was given to.
    fn ring_of(&self, id: OpId) -> Option<Arc<RingShared>> {
        if id == OpId::POSTED {
            return None;
        }
        let rings = self.core.rings.read().unwrap_or_else(|e| e.into_inner());
        rings.get(usize::from(id.ring())).cloned().flatten()
    }

    /// Wakes every attached thread (a spurious wake-up: each looks at its
    /// state again).
    pub(crate) fn wake_all(&self) {
        let rings = self.core.rings.read().unwrap_or_else(|e| e.into_inner());
        for r in rings.iter().flatten() {
            r.wake();
        }
    }

    /// Closes the port: every thread waiting in `get` returns
    /// [`GetError::Abandoned`], as do later calls; queued packets are dropped.
    /// Operations still in flight are cancelled when their threads detach.
    pub fn close(&self) {
        self.core.control.close();
    }

    /// Whether [`close`](Port::close) was called.
    pub fn is_closed(&self) -> bool {
        self.core.control.is_closed()
    }

    /// Detaches the calling thread: cancels the operations it issued that are
    /// still in flight (their packets are queued on the port, or dropped if the
    /// port is closed) and stops counting it as running. Threads detach by
    /// themselves when they exit; [`Pool`](crate::Pool) workers do it explicitly.
    pub fn detach(&self) {
        let c = CONSUMERS.try_with(|cs| {
            let mut cs = cs.try_borrow_mut().ok()?;
            cs.iter()
                .position(|c| Arc::ptr_eq(&c.core, &self.core))
                .map(|i| cs.remove(i))
        });
        drop(c);
        crate::defer::flush();
    }

    /// How many threads are parked in `get` right now.
    pub(crate) fn parked(&self) -> usize {
        self.core.control.waiters()
    }

    /// How many threads are parked in `get` right now. A test hook (feature
    /// `test-hooks`), for tests that need to order waiters without sleeping.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn waiters(&self) -> usize {
        self.parked()
    }

    /// How many attached threads count as running. A test hook (feature
    /// `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn running(&self) -> usize {
        self.core.control.running()
    }

    /// How many packets are queued. A test hook (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn queued(&self) -> usize {
        self.core.control.queued()
    }

    /// Runs `f`, which may block, without holding one of the port's running
    /// slots (C21): while it runs, the calling thread does not count toward the
    /// concurrency limit, so another waiting thread may be released to handle
    /// packets; afterwards it counts again (possibly above the limit, in which
    /// case no thread is released until the count drops). Completions already
    /// reaped by this thread are handed to the port's queue first, so none are
    /// stranded. On a [`Pool`](crate::Pool) worker, the pool adds a thread if no
    /// other worker is waiting (C32, C33).
    ///
    /// Linux gives no hook for "this thread blocked in the kernel", so code that
    /// may block on a lock, a disk or another process says so with this call.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let id = self.leave_running();
        crate::defer::flush();
        crate::pool::on_blocking(self);
        let r = f();
        if let Some(id) = id {
            self.core.control.recount(id);
        }
        r
    }

    /// `CallbackMayRunLong`: the calling thread stops counting toward the
    /// concurrency limit until it next calls [`get`](Port::get), and on a pool
    /// worker the pool may add a thread. Returns whether another thread is
    /// available to handle packets meanwhile.
    pub fn may_run_long(&self) -> bool {
        let _ = self.leave_running();
        crate::defer::flush();
        crate::pool::on_blocking(self) || self.parked() > 0
    }

    /// Stops counting the calling thread as running; returns its consumer id
    /// if it was counted.
    fn leave_running(&self) -> Option<usize> {
        CONSUMERS
            .try_with(|cs| {
                let mut cs = cs.try_borrow_mut().ok()?;
                let c = cs.iter_mut().find(|c| Arc::ptr_eq(&c.core, &self.core))?;
                c.ring.reap(&mut c.local);
                if !c.local.is_empty() {
                    let _ = c.core.control.enqueue(c.local.drain(..));
                }
                c.core.control.uncount(c.id).then_some(c.id)
            })
            .ok()
            .flatten()
    }

    /// Attaches the calling thread (creating its ring) without waiting, so that
    /// operations from other threads can be handed to it.
    pub fn attach(&self) -> io::Result<()> {
        self.with_consumer(|_| ())
    }

    fn with_consumer<R>(&self, f: impl FnOnce(&mut Consumer) -> R) -> io::Result<R> {
        // `try_with`/`try_borrow_mut`: called from a Drop while this thread
        // exits (its consumers are being dropped), or re-entered, there is no
        // consumer to use: an error, not a panic.
        let busy = || io::Error::new(io::ErrorKind::WouldBlock, "the thread is leaving the port");
        CONSUMERS
            .try_with(|cs| {
                let Ok(mut cs) = cs.try_borrow_mut() else {
                    return Err(busy());
                };
                // C17: a thread counts toward one port at a time.
                for other in cs.iter().filter(|c| !Arc::ptr_eq(&c.core, &self.core)) {
                    let _ = other.core.control.uncount(other.id);
                }
                let i = match cs.iter().position(|c| Arc::ptr_eq(&c.core, &self.core)) {
                    Some(i) => i,
                    None => {
                        let c = self.new_consumer()?;
                        cs.push(c);
                        cs.len() - 1
                    }
                };
                Ok(f(&mut cs[i]))
            })
            .unwrap_or_else(|_| Err(busy()))
    }

    fn new_consumer(&self) -> io::Result<Consumer> {
        let mut rings = self.core.rings.write().unwrap_or_else(|e| e.into_inner());
        let index = rings
            .iter()
            .position(Option::is_none)
            .unwrap_or(rings.len());
        // A ring's index is the top 16 bits of its op ids; the op queues keep
        // a mark in the very top bit, so indices stay below 0x8000.
        if index >= crate::sys::MAX_RINGS {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "too many threads on one port",
            ));
        }
        let gens = self
            .core
            .gens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default();
        let ring = match Ring::new(&self.core.anchor, index as u16, gens.clone()) {
            Ok(r) => r,
            Err(e) => {
                // Keep the generations for the next try at this index.
                if !gens.is_empty() {
                    self.core.gens.lock().unwrap_or_else(|e| e.into_inner())[index] = gens;
                }
                return Err(e);
            }
        };
        let shared = ring.shared().clone();
        if index == rings.len() {
            rings.push(Some(shared.clone()));
        } else {
            rings[index] = Some(shared.clone());
        }
        drop(rings);
        let id = self.core.control.attach(shared);
        Ok(Consumer {
            core: self.core.clone(),
            id,
            ring,
            local: VecDeque::new(),
        })
    }
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.core.id)
            .field("concurrency", &self.concurrency())
            .field("backend", &self.backend())
            .finish()
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the completion port is closed")
}

/// The waker an alertable wait registers with iocomp-sync's APC queue: it
/// ends the ring's park as a hand-off from another thread does.
fn apc_waker(ring: &Ring) -> iocomp_sync::ApcWaker {
    let shared = ring.shared().clone();
    Arc::new(move || shared.wake())
}

/// The longest one park of `wait` sleeps before it looks again.
const MAX_PARK: Duration = Duration::from_secs(3600);

/// The `get` loop for one consumer.
/// Why `wait` returned without a packet.
enum Leave {
    /// `get` is over.
    Get(GetError),
    /// User values wait to be dropped outside the consumer borrow
    /// ([`crate::defer`]); `get` goes on after dropping them.
    Flush,
    /// An alertable wait found APCs queued to the thread and no packet: they
    /// run outside the consumer borrow.
    Alert,
}

fn wait(c: &mut Consumer, deadline: Option<Instant>, alertable: bool) -> Result<Packet, Leave> {
    loop {
        c.ring.reap(&mut c.local);
        let now = Instant::now();
        // A worker of a pool that failed to start leaves as if timed out.
        let expired = deadline.is_some_and(|d| now >= d) || crate::pool::stopping();
        match c.core.control.step(c.id, &mut c.local, expired) {
            Step::Got(p) => return Ok(p),
            Step::TimedOut => return Err(Leave::Get(GetError::TimedOut)),
            Step::Abandoned => return Err(Leave::Get(GetError::Abandoned)),
            // Parked, or about to park: a packet handed over meanwhile is
            // taken by the next step.
            // Not parked while it runs that user code: off the waiter stack.
            Step::Park if crate::defer::pending() => {
                c.core.control.stop_waiting(c.id);
                return Err(Leave::Flush);
            }
            // Alertable and about to park: the ring's wake primitive becomes
            // the thread's APC waker before the queue is looked at (under the
            // queue's lock), so an APC queued after the look wakes the park
            // (the wake is kept until the park), and one queued before is
            // seen here.
            Step::Park if alertable && iocomp_sync::set_apc_waker(Some(apc_waker(&c.ring))) > 0 => {
                // Leave the waiter stack; a packet handed over meanwhile (or
                // queued) is taken instead: packets come first.
                return match c.core.control.step(c.id, &mut c.local, true) {
                    Step::Got(p) => Ok(p),
                    Step::Abandoned => Err(Leave::Get(GetError::Abandoned)),
                    Step::TimedOut | Step::Park => Err(Leave::Alert),
                };
            }
            // One park sleeps at most MAX_PARK (the kernel's timeouts need not
            // take any value); the loop goes on until the deadline.
            Step::Park => {
                c.ring.park(Some(deadline.map_or(MAX_PARK, |d| {
                    d.saturating_duration_since(now).min(MAX_PARK)
                })))
            }
        }
    }
}
