//! Timeouts without a timer per connection: every connection publishes what it
//! is waiting for and since when (a few atomic stores per request), and a
//! periodic sweep cancels the operation of any connection that has waited too
//! long. The cancelled operation's packet then closes the connection.
//!
//! - `Header`: a partial line (or nothing yet on a new connection) for longer
//!   than `--header-timeout`, counted from its first byte: a client sending one
//!   byte at a time cannot stretch it.
//! - `Idle`: nothing between two lines for longer than `--idle-timeout`.
//! - `Sending`: no send progress for `--send-timeout`. A slow reader that
//!   keeps moving is never cut: progress resets the clock.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iocomp::{OpId, Port};
use tracing::debug;

use crate::config::Timeouts;

/// What a connection waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Wait {
    Header = 0,
    Idle = 1,
    Sending = 2,
    /// A rate-limited reply waits for its allowance (on a timer we set: never
    /// expired by the sweep).
    Paced = 3,
    /// Over `--max-conns-per-ip`: waits for its first request (to answer it
    /// `503`/`busy`) for at most [`REFUSED_WAIT`] or the header timeout,
    /// whichever is shorter, in all.
    Refused = 4,
}

/// The longest a connection over `--max-conns-per-ip` is kept open waiting.
pub(crate) const REFUSED_WAIT: Duration = Duration::from_secs(1);

/// The part of a connection the sweep reads.
pub(crate) struct Watch {
    op: AtomicU64,
    state: AtomicU8,
    /// Milliseconds since the registry's epoch: start of the wait, or the
    /// last progress seen.
    since: AtomicU64,
    /// Progress (bytes) seen by the last sweep while sending.
    seen: AtomicU64,
    /// The shard (worker) the connection is registered in.
    shard: usize,
}

impl Watch {
    pub(crate) fn state(&self) -> Wait {
        match self.state.load(Ordering::Relaxed) {
            0 => Wait::Header,
            1 => Wait::Idle,
            2 => Wait::Sending,
            3 => Wait::Paced,
            _ => Wait::Refused,
        }
    }

    /// The operation in flight (0: none yet).
    pub(crate) fn op_id(&self) -> u64 {
        self.op.load(Ordering::Relaxed)
    }
}

/// Every live connection's watch, one shard per worker: a connection is
/// registered in the shard of the worker that accepted it, and each shard has
/// its own sweep timer, so each worker sweeps its own connections (a coarse,
/// per-worker timer: O(1) work per request, O(connections) per tick).
pub(crate) struct Registry {
    /// [`coarse_millis`](crate::sys::coarse_millis) when it was made.
    epoch: u64,
    shards: Vec<Mutex<HashMap<u64, Arc<Watch>>>>,
    next: AtomicUsize,
}

thread_local! {
    /// (registry address, shard) this thread registers connections in.
    static MY_SHARD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

impl Registry {
    pub(crate) fn new(shards: usize) -> Registry {
        Registry {
            epoch: crate::sys::coarse_millis(),
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// How many shards (sweep timers) there are.
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The calling thread's shard: claimed on first use, in turn.
    fn my_shard(&self) -> usize {
        let me = self as *const Registry as usize;
        MY_SHARD.with(|s| {
            let (owner, shard) = s.get();
            if owner == me {
                return shard;
            }
            let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
            s.set((me, shard));
            shard
        })
    }

    fn now(&self) -> u64 {
        crate::sys::coarse_millis().saturating_sub(self.epoch)
    }

    fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Watch>>> {
        self.shards[i % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection (in the calling worker's shard), waiting for
    /// its first line.
    pub(crate) fn insert(&self, key: u64) -> Arc<Watch> {
        let shard = self.my_shard();
        let w = Arc::new(Watch {
            op: AtomicU64::new(0),
            state: AtomicU8::new(Wait::Header as u8),
            since: AtomicU64::new(self.now()),
            seen: AtomicU64::new(0),
            shard,
        });
        self.shard(shard).insert(key, w.clone());
        w
    }

    pub(crate) fn remove(&self, w: &Watch, key: u64) {
        self.shard(w.shard).remove(&key);
    }

    /// The connection now waits for `state` (the clock restarts unless it keeps
    /// waiting for the rest of the same line).
    pub(crate) fn set(&self, w: &Watch, state: Wait) {
        let old = w.state.swap(state as u8, Ordering::Relaxed);
        let same_wait = old == state as u8 && matches!(state, Wait::Header | Wait::Refused);
        if !same_wait {
            w.since.store(self.now(), Ordering::Relaxed);
            w.seen.store(0, Ordering::Relaxed);
        }
    }

    /// The operation the connection has in flight now. Release: a sweep that
    /// reads this id (Acquire) also sees the state and clock set before it, so
    /// it never judges a new operation by the previous wait's start.
    pub(crate) fn op(&self, w: &Watch, id: OpId) {
        w.op.store(id.as_u64(), Ordering::Release);
    }

    /// Sweeps every shard (drain on shutdown).
    pub(crate) fn sweep_all(&self, port: &Port, timeouts: &Timeouts, idle_only: bool) {
        for i in 0..self.shards.len() {
            self.sweep(i, port, timeouts, idle_only);
        }
    }

    /// Cancels what has waited too long in shard `i`. With `idle_only`, cancels
    /// every connection that is not sending, at once (drain on shutdown).
    /// Returns how many timed out.
    pub(crate) fn sweep(&self, i: usize, port: &Port, timeouts: &Timeouts, idle_only: bool) -> u64 {
        let now = self.now();
        let mut expired_count = 0;
        if let Some(shard) = self.shards.get(i) {
            let watches: Vec<(u64, Arc<Watch>)> = shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, w)| (*k, w.clone()))
                .collect();
            for (key, w) in watches {
                let op = w.op.load(Ordering::Acquire);
                if op == 0 {
                    continue;
                }
                let id = OpId::from_u64(op);
                let since = w.since.load(Ordering::Relaxed);
                let waited = Duration::from_millis(now.saturating_sub(since));
                let state = w.state();
                let expired = match state {
                    Wait::Header => idle_only || waited >= timeouts.header,
                    Wait::Idle => idle_only || waited >= timeouts.idle,
                    Wait::Refused => idle_only || waited >= timeouts.header.min(REFUSED_WAIT),
                    Wait::Paced => false,
                    Wait::Sending => {
                        if idle_only {
                            false
                        } else {
                            let p = port.progress(id).unwrap_or(0);
                            if p != w.seen.load(Ordering::Relaxed) {
                                w.seen.store(p, Ordering::Relaxed);
                                w.since.store(now, Ordering::Relaxed);
                                false
                            } else {
                                waited >= timeouts.send
                            }
                        }
                    }
                };
                if expired && port.cancel(id).is_ok() {
                    debug!(conn = key, "{state:?} timeout after {waited:?}: closing");
                    if !idle_only {
                        expired_count += 1;
                    }
                }
            }
        }
        expired_count
    }
}
