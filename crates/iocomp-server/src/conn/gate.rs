//! Admission: the listeners, the accepts in flight, the count of open
//! connections against `--max-conns` (accepting pauses at the limit and
//! resumes when a connection closes), and the drain at shutdown (no new
//! accepts; a wake-up when the last connection closes).
//!
//! A connection over `--max-conns-per-ip` takes no `--max-conns` slot: it is
//! counted on a small budget of its own ([`REFUSED_MAX`]; beyond it, it is
//! closed at once) until it is answered and closed, so one address can never
//! keep every other out.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use iocomp::{Accept, Handle, OpId, Port};
use tracing::{debug, warn};

/// Connections over `--max-conns-per-ip` kept open at once, to be answered
/// `503`/`busy` (or closed after a short deadline); more are closed at once.
pub(crate) const REFUSED_MAX: usize = 64;

/// The server's listeners and connection slots.
pub(crate) struct Gate {
    listeners: Vec<Handle>,
    /// The index of the metrics listener among `listeners`.
    admin: Option<usize>,
    /// The indices of the TLS listeners among `listeners`.
    tls: std::ops::Range<usize>,
    /// Connections to the metrics listener open now.
    admin_active: AtomicUsize,
    next_conn: AtomicU64,
    active: AtomicUsize,
    /// Connections over `--max-conns-per-ip` open now (not in `active`).
    refused: AtomicUsize,
    max_conns: usize,
    draining: AtomicBool,
    /// Listeners whose accept is parked because of `max_conns`.
    paused: Mutex<Vec<usize>>,
    /// Accepts in flight, to cancel on shutdown.
    accepts: Mutex<Vec<OpId>>,
    /// Signalled when the last connection closes during a drain.
    idle: (Mutex<()>, Condvar),
    /// Reports of failed accepts, at a bounded rate.
    pub(crate) accept_errors: RateLimit,
}

impl Gate {
    /// A gate over `listeners` (the metrics listener at index `admin`), with
    /// room for `max_conns` connections.
    pub(crate) fn new(listeners: Vec<Handle>, admin: Option<usize>, max_conns: usize) -> Gate {
        Gate {
            listeners,
            admin,
            tls: 0..0,
            admin_active: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            max_conns: max_conns.max(1),
            draining: AtomicBool::new(false),
            paused: Mutex::new(Vec::new()),
            accepts: Mutex::new(Vec::new()),
            idle: (Mutex::new(()), Condvar::new()),
            accept_errors: RateLimit::new(),
        }
    }

    /// The listeners at `tls` speak TLS.
    pub(crate) fn with_tls(mut self, tls: std::ops::Range<usize>) -> Gate {
        self.tls = tls;
        self
    }

    /// Whether listener `index` speaks TLS.
    pub(crate) fn is_tls(&self, index: usize) -> bool {
        self.tls.contains(&index)
    }

    /// How many listeners there are.
    pub(crate) fn listeners(&self) -> usize {
        self.listeners.len()
    }

    /// Whether listener `index` is the metrics listener.
    pub(crate) fn is_admin(&self, index: usize) -> bool {
        self.admin == Some(index)
    }

    /// The server is shutting down.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Issues an accept on listener `i` from the calling thread.
    pub(crate) fn accept(&self, port: &Port, i: usize) -> io::Result<()> {
        if self.draining.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(l) = self.listeners.get(i) else {
            return Ok(());
        };
        let id = port.submit(Accept::new(l)).map_err(|(e, _)| e)?;
        self.accepts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
        Ok(())
    }

    /// Accepts again on listener `i` (a failure is logged).
    pub(crate) fn rearm(&self, port: &Port, i: usize) {
        if let Err(e) = self.accept(port, i) {
            if !port.is_closed() {
                warn!("cannot accept again: {e}");
            }
        }
    }

    /// The accept `id` has completed.
    pub(crate) fn accepted(&self, id: OpId) {
        self.accepts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&a| a != id);
    }

    /// Whether accepted sockets are to be closed at once (draining).
    pub(crate) fn refusing(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// A connection is accepted on listener `index`: its key, and how many
    /// connections are open with it.
    pub(crate) fn open(&self, index: usize) -> (u64, usize) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let active = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        if self.is_admin(index) {
            self.admin_active.fetch_add(1, Ordering::Relaxed);
        }
        (id, active)
    }

    /// A connection over `--max-conns-per-ip` is accepted: its key, or `None`
    /// when [`REFUSED_MAX`] of them are open already (close it at once). It
    /// does not count against `--max-conns`.
    pub(crate) fn open_refused(&self) -> Option<u64> {
        if self.refused.fetch_add(1, Ordering::SeqCst) >= REFUSED_MAX {
            self.refused.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// A connection opened with [`Gate::open_refused`] is gone.
    pub(crate) fn closed_refused(&self) {
        let left =
            self.refused.fetch_sub(1, Ordering::SeqCst) - 1 + self.active.load(Ordering::SeqCst);
        if left == 0 && self.draining.load(Ordering::SeqCst) {
            let _g = self.idle.0.lock().unwrap_or_else(|e| e.into_inner());
            self.idle.1.notify_all();
        }
    }

    /// After an accept on listener `index` that left `active` connections
    /// open: accepts again, or parks the listener at `--max-conns`.
    pub(crate) fn next(&self, port: &Port, index: usize, active: usize) {
        if active < self.max_conns {
            self.rearm(port, index);
            return;
        }
        debug!("{active} connections: accepting paused");
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(index);
        // A connection may have closed meanwhile: never park forever.
        if self.active.load(Ordering::SeqCst) < self.max_conns {
            if let Some(i) = self.paused.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                self.rearm(port, i);
            }
        }
    }

    /// A connection is gone (`admin`: one to the metrics listener): count it
    /// out, resume a paused accept, wake a drain.
    pub(crate) fn closed(&self, port: &Port, admin: bool) {
        if admin {
            self.admin_active.fetch_sub(1, Ordering::Relaxed);
        }
        let left =
            self.active.fetch_sub(1, Ordering::SeqCst) - 1 + self.refused.load(Ordering::SeqCst);
        let resume = self.paused.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(i) = resume {
            self.rearm(port, i);
        }
        if left == 0 && self.draining.load(Ordering::SeqCst) {
            let _g = self.idle.0.lock().unwrap_or_else(|e| e.into_inner());
            self.idle.1.notify_all();
        }
    }

    /// Connections open now (both kinds).
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Client connections open now (not those to the metrics listener).
    pub(crate) fn clients(&self) -> u64 {
        let all = self.active.load(Ordering::Relaxed);
        all.saturating_sub(self.admin_active.load(Ordering::Relaxed)) as u64
    }

    /// Connections to the metrics listener open now.
    pub(crate) fn admins(&self) -> u64 {
        self.admin_active.load(Ordering::Relaxed) as u64
    }

    /// Starts the drain: no more accepts; returns those in flight, to cancel.
    pub(crate) fn drain(&self) -> Vec<OpId> {
        self.draining.store(true, Ordering::SeqCst);
        std::mem::take(&mut *self.accepts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until no connection is left or `deadline` passes; returns how
    /// many are left.
    pub(crate) fn wait_idle(&self, deadline: Instant) -> usize {
        let (lock, cv) = &self.idle;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let left = self.active.load(Ordering::SeqCst) + self.refused.load(Ordering::SeqCst);
            let now = Instant::now();
            if left == 0 || now >= deadline {
                break;
            }
            guard = match cv.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        drop(guard);
        self.active.load(Ordering::SeqCst) + self.refused.load(Ordering::SeqCst)
    }
}

/// At most one report per second; counts what it held back.
pub(crate) struct RateLimit {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimit {
    fn new() -> RateLimit {
        RateLimit {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last report)` if a report may go out now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}
