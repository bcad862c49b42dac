//! A bounded cache of open files, so a hot file costs one `fstatat` per request
//! instead of `openat2` + `statx` + `fcntl` + `close`.
//!
//! An entry is never trusted blindly: every hit re-stats the name relative to
//! the root and compares device, inode, size, modification and change times
//! with what the cached descriptor had. A file replaced, truncated or
//! rewritten, or a symlink swapped to point elsewhere, is a miss, and the name
//! is resolved again through `openat2(RESOLVE_BENEATH)` with the full policy —
//! so nothing outside the root can ever be served from the cache, and nothing
//! stale either. No inotify is involved. Entries unused for a while are closed
//! by [`FileCache::prune`], so idle servers hold no descriptors for long.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::{File, Metadata};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

struct Entry {
    file: Arc<File>,
    meta: Metadata,
    /// Milliseconds since the cache's epoch.
    used: u64,
}

/// The cache: names (normalized, relative to the root) to open files.
pub(crate) struct FileCache {
    epoch: Instant,
    idle: Duration,
    per_shard: usize,
    shards: Vec<Mutex<HashMap<CString, Entry>>>,
}

impl FileCache {
    /// A cache of at most `entries` open files, each closed after `idle`
    /// without use (at the next [`prune`](FileCache::prune)).
    pub(crate) fn new(entries: usize, idle: Duration) -> FileCache {
        FileCache {
            epoch: Instant::now(),
            idle,
            per_shard: entries.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn shard(&self, rel: &CStr) -> MutexGuard<'_, HashMap<CString, Entry>> {
        let h = rel
            .to_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        self.shards[(h as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The cached file for `rel` if the name still leads to the same, unchanged
    /// file; `follow` says whether a final symlink is followed (as the policy
    /// would).
    pub(crate) fn get(
        &self,
        root: BorrowedFd<'_>,
        rel: &CStr,
        follow: bool,
    ) -> Option<(Arc<File>, Metadata)> {
        let (file, meta) = {
            let mut shard = self.shard(rel);
            let e = shard.get_mut(rel)?;
            e.used = self.now();
            (e.file.clone(), e.meta.clone())
        };
        if same(root, rel, follow, &meta) {
            return Some((file, meta));
        }
        self.shard(rel).remove(rel);
        None
    }

    /// Remembers an opened file; evicts the least recently used entry of its
    /// shard when the shard is full.
    pub(crate) fn put(&self, rel: CString, file: Arc<File>, meta: Metadata) {
        let now = self.now();
        let mut shard = self.shard(&rel);
        if shard.len() >= self.per_shard && !shard.contains_key(&rel) {
            if let Some(oldest) = shard
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            {
                shard.remove(&oldest);
            }
        }
        shard.insert(
            rel,
            Entry {
                file,
                meta,
                used: now,
            },
        );
    }

    /// Closes entries unused for longer than the idle limit.
    pub(crate) fn prune(&self) {
        let cutoff = self.now().saturating_sub(self.idle.as_millis() as u64);
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, e| e.used >= cutoff);
        }
    }

    /// Open files held right now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Whether `rel` (under `root`) is still the file described by `meta`.
fn same(root: BorrowedFd<'_>, rel: &CStr, follow: bool, meta: &Metadata) -> bool {
    // SAFETY: `libc::stat` is plain data for which all-zero bytes are valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: the root descriptor is open for the borrow, `rel` is a
    // NUL-terminated string and `st` a live, writable stat buffer.
    let rc = unsafe { libc::fstatat(root.as_raw_fd(), rel.as_ptr(), &mut st, flags) };
    rc == 0
        && st.st_dev == meta.dev()
        && st.st_ino == meta.ino()
        && st.st_size == meta.size() as libc::off_t
        && st.st_mtime == meta.mtime()
        && st.st_mtime_nsec == meta.mtime_nsec()
        && st.st_ctime == meta.ctime()
        && st.st_ctime_nsec == meta.ctime_nsec()
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache")
            .field("open", &self.len())
            .field("idle", &self.idle)
            .finish()
    }
}
