//! The transfers in progress, for the status page: registered in a sharded
//! table when a file reply starts and removed when it ends (one lock of one
//! shard each); the bytes sent so far are an atomic the connection adds to
//! after each operation, plus the progress of the operation in flight, read
//! from the engine at scrape time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use iocomp::{OpId, Port};

/// What a transfer reads of its connection: the operation sending its bytes
/// now, if one is. The connection driver implements it; this module never
/// imports the driver.
pub(crate) trait Sending: Send + Sync {
    /// The operation in flight, if the connection is sending.
    fn sending(&self) -> Option<OpId>;
}

const SHARDS: usize = 16;

/// One file reply in progress.
pub(crate) struct Transfer {
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) name: String,
    /// Body bytes.
    pub(crate) size: u64,
    pub(crate) start: Instant,
    /// Bytes sent by the reply's finished operations (its head included).
    done: AtomicU64,
    /// The length of the reply's head, not counted as progress.
    head: AtomicU64,
    /// The connection: which operation is sending now.
    conn: Arc<dyn Sending>,
}

impl Transfer {
    /// Operation `bytes` moved.
    pub(crate) fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The reply's head is `n` bytes.
    pub(crate) fn set_head(&self, n: u64) {
        self.head.store(n, Ordering::Relaxed);
    }

    /// Body bytes sent so far, the operation in flight included.
    pub(crate) fn sent(&self, port: &Port) -> u64 {
        let mut sent = self.done.load(Ordering::Relaxed);
        if let Some(op) = self.conn.sending() {
            sent += port.progress(op).unwrap_or(0);
        }
        sent.saturating_sub(self.head.load(Ordering::Relaxed))
            .min(self.size)
    }
}

/// The transfers in progress, in shards by connection.
pub(crate) struct Transfers {
    shards: Vec<Mutex<HashMap<u64, Arc<Transfer>>>>,
}

impl Transfers {
    pub(crate) fn new() -> Transfers {
        Transfers {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Transfer>>> {
        self.shards[key as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers connection `key`'s new file reply.
    pub(crate) fn begin(
        &self,
        key: u64,
        peer: Option<SocketAddr>,
        name: &[u8],
        size: u64,
        conn: Arc<dyn Sending>,
    ) -> Arc<Transfer> {
        let t = Arc::new(Transfer {
            peer,
            name: String::from_utf8_lossy(name).into_owned(),
            size,
            start: Instant::now(),
            done: AtomicU64::new(0),
            head: AtomicU64::new(0),
            conn,
        });
        self.shard(key).insert(key, t.clone());
        t
    }

    /// Connection `key`'s reply is over.
    pub(crate) fn end(&self, key: u64) {
        self.shard(key).remove(&key);
    }

    /// How many are in progress.
    pub(crate) fn count(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len() as u64)
            .sum()
    }

    /// Every transfer in progress, by connection.
    pub(crate) fn snapshot(&self) -> Vec<(u64, Arc<Transfer>)> {
        let mut all = Vec::new();
        for s in &self.shards {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(s.iter().map(|(k, t)| (*k, t.clone())));
        }
        all.sort_by_key(|(k, _)| *k);
        all
    }
}
