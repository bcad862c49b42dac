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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iocomp::{OpId, Port};
use tracing::debug;

const SHARDS: usize = 16;

/// What a connection waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Wait {
    Header = 0,
    Idle = 1,
    Sending = 2,
}

/// The part of a connection the sweep reads.
pub(crate) struct Watch {
    op: AtomicU64,
    state: AtomicU8,
    /// Milliseconds since the registry's epoch: start of the wait, or the
    /// last progress seen.
    since: AtomicU64,
    /// Progress (bytes) seen by the last sweep while sending.
    seen: AtomicU64,
}

impl Watch {
    pub(crate) fn state(&self) -> Wait {
        match self.state.load(Ordering::Relaxed) {
            0 => Wait::Header,
            1 => Wait::Idle,
            _ => Wait::Sending,
        }
    }
}

/// The three limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
    pub(crate) send: Duration,
}

impl Limits {
    /// How often to sweep: often enough that a limit is enforced within about
    /// a quarter of itself, at most once a second, at least every 10 ms.
    pub(crate) fn tick(&self) -> Duration {
        (self.header.min(self.idle).min(self.send) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Every live connection's watch, sharded to keep accept/close cheap.
pub(crate) struct Registry {
    epoch: Instant,
    shards: Vec<Mutex<HashMap<u64, Arc<Watch>>>>,
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Watch>>> {
        self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection, waiting for its first line.
    pub(crate) fn insert(&self, key: u64) -> Arc<Watch> {
        let w = Arc::new(Watch {
            op: AtomicU64::new(0),
            state: AtomicU8::new(Wait::Header as u8),
            since: AtomicU64::new(self.now()),
            seen: AtomicU64::new(0),
        });
        self.shard(key).insert(key, w.clone());
        w
    }

    pub(crate) fn remove(&self, key: u64) {
        self.shard(key).remove(&key);
    }

    /// The connection now waits for `state` (the clock restarts unless it keeps
    /// waiting for the rest of the same line).
    pub(crate) fn set(&self, w: &Watch, state: Wait) {
        let old = w.state.swap(state as u8, Ordering::Relaxed);
        if !(old == Wait::Header as u8 && state == Wait::Header) {
            w.since.store(self.now(), Ordering::Relaxed);
            w.seen.store(0, Ordering::Relaxed);
        }
    }

    /// The operation the connection has in flight now.
    pub(crate) fn op(&self, w: &Watch, id: OpId) {
        w.op.store(id.as_u64(), Ordering::Relaxed);
    }

    /// Cancels what has waited too long. With `idle_only`, cancels every
    /// connection that is not sending, at once (drain on shutdown).
    pub(crate) fn sweep(&self, port: &Port, limits: &Limits, idle_only: bool) {
        let now = self.now();
        for shard in &self.shards {
            let watches: Vec<(u64, Arc<Watch>)> = shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, w)| (*k, w.clone()))
                .collect();
            for (key, w) in watches {
                let op = w.op.load(Ordering::Relaxed);
                if op == 0 {
                    continue;
                }
                let id = OpId::from_u64(op);
                let since = w.since.load(Ordering::Relaxed);
                let waited = Duration::from_millis(now.saturating_sub(since));
                let state = w.state();
                let expired = match state {
                    Wait::Header => idle_only || waited >= limits.header,
                    Wait::Idle => idle_only || waited >= limits.idle,
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
                                waited >= limits.send
                            }
                        }
                    }
                };
                if expired && port.cancel(id).is_ok() {
                    debug!(conn = key, "{state:?} timeout after {waited:?}: closing");
                }
            }
        }
    }
}
