//! A pool of worker threads that wait on one port (`QueueUserWorkItem` plus the
//! seed's `ThreadProc` loop).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use crate::op::{Op, Work};
use crate::packet::{GetError, Packet};
use crate::port::Port;

/// The most threads a pool grows to (Windows' thread pool caps at 500).
pub const MAX_THREADS: usize = 500;

/// Packets a worker takes per `get_many`: one trip into the kernel submits
/// every operation the previous batch queued and reaps what finished since,
/// instead of one trip per packet.
const BATCH: usize = 64;

type Handler = dyn Fn(&Port, Packet) + Send + Sync;

/// Worker threads looping on [`Port::get`] and handing each packet to a handler.
///
/// The number of workers defaults to the port's concurrency (the number of
/// CPUs): the seed starts 2×CPUs because its Win32 workers block, ours do not.
/// The pool adds a worker only when one declares that it blocks
/// ([`Port::blocking`], [`Port::may_run_long`]) and no other worker is
/// waiting, up to [`MAX_THREADS`]; added workers stay until shutdown.
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    port: Port,
    handler: Arc<Handler>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    count: AtomicUsize,
    /// Set when `Pool::new` failed: workers leave their loop without the
    /// port being closed.
    stop: AtomicBool,
}

thread_local! {
    /// The pool this thread works for, if any.
    static CURRENT: RefCell<Option<Arc<Inner>>> = const { RefCell::new(None) };
    /// The rest of the batch this worker is handling. A handler that declares
    /// it blocks hands it back to the port first, so other workers take it.
    static PENDING: RefCell<VecDeque<Packet>> = const { RefCell::new(VecDeque::new()) };
}

impl Pool {
    /// Starts `threads` workers (0 = the port's concurrency) on `port`. Each
    /// packet goes to `handler`, which runs on a worker and may submit more
    /// operations (they go to that worker's own ring). Returns once every worker
    /// is attached, so operations submitted from any thread can be handed over.
    /// `threads` above [`MAX_THREADS`] counts as `MAX_THREADS`.
    ///
    /// If a worker cannot start (no thread, or no ring for it), the error is
    /// returned and the port stays open: the workers already started are
    /// woken and stop, without closing it.
    pub fn new<F>(port: &Port, threads: usize, handler: F) -> io::Result<Pool>
    where
        F: Fn(&Port, Packet) + Send + Sync + 'static,
    {
        // More than MAX_THREADS is clamped to it (as the pool never grows past it).
        let n = if threads == 0 {
            port.concurrency()
        } else {
            threads
        }
        .min(MAX_THREADS);
        let inner = Arc::new(Inner {
            port: port.clone(),
            handler: Arc::new(handler),
            threads: Mutex::new(Vec::with_capacity(n)),
            count: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<io::Result<()>>();
        let mut failed = None;
        let mut started = 0;
        for _ in 0..n {
            match inner.spawn(Some(tx.clone())) {
                Ok(()) => started += 1,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        for _ in 0..started {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        if let Some(e) = failed {
            // Not `shutdown`: the port is the caller's and stays open. The
            // workers that started stop at their next wake-up.
            inner.stop.store(true, Ordering::Release);
            inner.port.wake_all();
            return Err(e);
        }
        Ok(Pool { inner })
    }

    /// The port the workers wait on.
    pub fn port(&self) -> &Port {
        &self.inner.port
    }

    /// How many worker threads exist now.
    pub fn threads(&self) -> usize {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Runs `f` on one of the workers (`QueueUserWorkItem`). Fails only if the
    /// port is closed. Queued work cannot be cancelled (C31).
    pub fn queue(&self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.inner.port.post_op(0, Op::Work(Work(Box::new(f))))
    }

    /// Closes the port and joins every worker. Each worker cancels what it has
    /// in flight and waits for the kernel to let go before it exits.
    pub fn shutdown(&mut self) {
        self.inner.port.close();
        loop {
            // Joining may race with a worker adding another: take until empty.
            let batch: Vec<JoinHandle<()>> = match self.inner.threads.lock() {
                Ok(mut t) => t.drain(..).collect(),
                Err(e) => e.into_inner().drain(..).collect(),
            };
            if batch.is_empty() {
                break;
            }
            let me = std::thread::current().id();
            for t in batch {
                // Shut down from a handler of this pool: the calling worker
                // is not joined (it would wait for itself); it leaves its loop
                // when the handler returns, the port being closed.
                if t.thread().id() != me {
                    let _ = t.join();
                }
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn spawn(self: &Arc<Self>, ready: Option<mpsc::Sender<io::Result<()>>>) -> io::Result<()> {
        let i = self.count.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        let t = std::thread::Builder::new()
            .name(format!("iocomp-worker-{i}"))
            .spawn(move || {
                let attached = me.port.attach();
                let ok = attached.is_ok();
                if let Some(tx) = ready {
                    let _ = tx.send(attached);
                }
                if ok {
                    CURRENT.with(|c| *c.borrow_mut() = Some(me.clone()));
                    worker(&me.port, &*me.handler, &me.stop);
                    CURRENT.with(|c| *c.borrow_mut() = None);
                }
                me.port.detach();
            });
        match t {
            Ok(t) => {
                self.threads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(t);
                Ok(())
            }
            Err(e) => {
                self.count.fetch_sub(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// Whether the calling thread is a worker of a pool that failed to start
/// and must leave its loop (its `get` returns `TimedOut` instead of parking).
pub(crate) fn stopping() -> bool {
    CURRENT
        .try_with(|c| {
            c.try_borrow()
                .is_ok_and(|c| c.as_ref().is_some_and(|i| i.stop.load(Ordering::Acquire)))
        })
        .unwrap_or(false)
}

/// Called by [`Port::blocking`] and [`Port::may_run_long`]: if the calling
/// thread is a worker of a pool on `port` and no other worker waits for
/// packets, adds one. Returns whether a worker was added.
pub(crate) fn on_blocking(port: &Port) -> bool {
    let pool = CURRENT.try_with(|c| c.borrow().clone()).ok().flatten();
    let Some(pool) = pool else { return false };
    if !Arc::ptr_eq(&pool.port.core, &port.core) || port.is_closed() {
        return false;
    }
    let rest: Vec<Packet> = PENDING.with(|b| b.borrow_mut().drain(..).collect());
    if !rest.is_empty() {
        // Closed meanwhile: the packets are dropped with their resources, as
        // every packet still queued on a closed port is.
        let _ = port.core.control.enqueue(rest);
    }
    if port.parked() > 0 || pool.count.load(Ordering::Relaxed) >= MAX_THREADS {
        return false;
    }
    pool.spawn(None).is_ok()
}

fn worker(port: &Port, handler: &Handler, stop: &AtomicBool) {
    loop {
        if stop.load(Ordering::Acquire) {
            // What this worker holds goes back to the port for others.
            let rest: Vec<Packet> = PENDING.with(|b| b.borrow_mut().drain(..).collect());
            if !rest.is_empty() {
                let _ = port.core.control.enqueue(rest);
            }
            return;
        }
        // The batch lands straight in the pending queue (taken out of it
        // while the port is waited on, so that no borrow is held then; it is
        // empty here): each packet is moved once on its way to the handler.
        let mut got = PENDING.with(|b| std::mem::take(&mut *b.borrow_mut()));
        match port.get_batch(&mut got, BATCH, None) {
            Ok(_) if stop.load(Ordering::Acquire) => {
                // Handed to this worker as it was told to stop: back to the
                // port, for the caller's threads.
                let _ = port.core.control.enqueue(got.drain(..));
                return;
            }
            Ok(_) => {
                PENDING.with(|b| *b.borrow_mut() = got);
                // Not borrowed while a handler runs: it may call `on_blocking`.
                while let Some(p) = PENDING.with(|b| b.borrow_mut().pop_front()) {
                    run(port, handler, p);
                }
            }
            Err(GetError::Abandoned) => return,
            // (Not alertable: `Alerted` does not come here.)
            Err(GetError::TimedOut | GetError::Alerted) => {
                PENDING.with(|b| *b.borrow_mut() = got);
            }
        }
    }
}

fn run(port: &Port, handler: &Handler, p: Packet) {
    let run = match p {
        Packet {
            op: Op::Work(w), ..
        } => catch_unwind(AssertUnwindSafe(|| w.run())),
        p => catch_unwind(AssertUnwindSafe(|| handler(port, p))),
    };
    if run.is_err() {
        // The packet's resources were dropped during unwinding; the worker
        // stays alive for everyone else.
        eprintln!("iocomp: a completion handler panicked; continuing");
    }
}
