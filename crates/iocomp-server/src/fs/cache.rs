//! A bounded cache of open files (nginx's `open_file_cache`), so a hot file
//! costs no system call at all per request instead of `openat2` + `statx` +
//! `fcntl` + `close`, and a small one is sent from memory together with its
//! response head in one `send`.
//!
//! **Only names that resolved without crossing any symlink are kept**, and a
//! hit is revalidated the same way: `openat2(root, name, O_PATH,
//! RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and `fstat`, then device, inode,
//! size, modification and change times are compared with what the cached
//! descriptor had. The name was already checked by the policy (no `..`, the
//! dot rule) before the cache is asked, and with `RESOLVE_NO_SYMLINKS` the
//! kernel walks exactly the name's own components, beneath the root. So a
//! directory on the way moved and replaced by a symlink (into a dot-directory,
//! outside the root, or at all under `--no-symlinks`) fails the check
//! (`ELOOP`), as does a file replaced, truncated or rewritten; any failure is
//! a miss, and the name is resolved again with the full policy. Nothing the
//! policy would refuse is ever served from the cache, and nothing older than
//! `valid` (`Duration::ZERO`: every hit is checked).
//!
//! An entry is trusted for at most `valid` (nginx's `open_file_cache_valid`,
//! lighttpd's one-second stat cache) after it was last checked. No inotify is
//! involved. The contents of small files (at most [`SMALL`] bytes, within a
//! memory budget) are kept with the entry and revalidated with it, so a
//! response never mixes an old head with new bytes. Entries unused for a
//! while are closed by [`FileCache::prune`], so idle servers hold no
//! descriptors for long.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::{File, Metadata};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::Resolver;
use crate::sys;

const SHARDS: usize = 16;

/// FNV-1a, the map's hash of names. Not keyed, and it need not be: only
/// names of regular files that exist under the root, each resolved without
/// a symlink, are ever inserted (at most `entries` of them), so the set of
/// keys is the site owner's, not the client's; a client's name is only
/// hashed for a lookup, which costs one probe sequence among keys it cannot
/// choose. SipHash (std's default) cost ~170 instructions per lookup, two
/// lookups per request (callgrind, `bench/callgrind/run`).
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let start = if self.0 == 0 { FNV_OFFSET } else { self.0 };
        self.0 = fnv(start, bytes);
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes`, continuing from `h`.
fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The map of one shard: names to entries.
type Names = HashMap<CString, Entry, std::hash::BuildHasherDefault<Fnv>>;

/// Files up to this size are kept in memory with their entry.
pub(crate) const SMALL: u64 = 16 * 1024;

/// Bytes of small-file contents one shard keeps (32 MiB in all).
const BODY_BUDGET: usize = 2 << 20;

struct Entry {
    file: Arc<File>,
    meta: Arc<Metadata>,
    /// The whole file, if small and read without blocking.
    body: Option<Arc<[u8]>>,
    /// Milliseconds since the cache's epoch.
    used: u64,
    /// When the name was last checked against the file (ms since the epoch).
    checked: u64,
    /// Which precompressed siblings are regular files (a bit per suffix the
    /// caller asked about), the stamp of the directory they were looked for
    /// in (valid while the directory is unchanged), and when that stamp was
    /// last seen unchanged (ms since the epoch): within `valid` of it the
    /// bits are trusted without a look at the directory.
    siblings: Option<(DirStamp, u8, u64)>,
}

/// What changes when a name in a directory is added, removed or renamed:
/// the directory's identity and its modification and change times.
pub(crate) type DirStamp = [i64; 6];

struct Shard {
    map: Names,
    /// Bytes of `body` held by the entries.
    bodies: usize,
}

/// A hit: the file, its metadata, for a small file its contents, and the
/// entry's sibling bits when [`FileCache::fresh_siblings`] would give them
/// (found in the same lookup: no second one per request).
pub(crate) type Hit = (Arc<File>, Arc<Metadata>, Option<Arc<[u8]>>, Option<u8>);

/// The cache: names (normalized, relative to the root) to open files.
pub(crate) struct FileCache {
    /// [`coarse_millis`](crate::sys::coarse_millis) when it was made.
    epoch: u64,
    idle: Duration,
    valid: u64,
    per_shard: usize,
    shards: Vec<Mutex<Shard>>,
}

impl FileCache {
    /// A cache of at most `entries` open files, each closed after `idle`
    /// without use (at the next [`prune`](FileCache::prune)).
    /// An entry is trusted without a check for `valid` after its last one.
    pub(crate) fn new(entries: usize, idle: Duration, valid: Duration) -> FileCache {
        FileCache {
            epoch: crate::sys::coarse_millis(),
            idle,
            valid: valid.as_millis() as u64,
            per_shard: entries.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: Names::default(),
                        bodies: 0,
                    })
                })
                .collect(),
        }
    }

    fn now(&self) -> u64 {
        crate::sys::coarse_millis().saturating_sub(self.epoch)
    }

    fn shard(&self, rel: &CStr) -> MutexGuard<'_, Shard> {
        let h = fnv(FNV_OFFSET, rel.to_bytes());
        self.shards[(h as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The cached file for `rel` if it was checked within `valid`, or if the
    /// name still leads, beneath `root` and crossing no symlink, to the same,
    /// unchanged file.
    pub(crate) fn get(&self, root: BorrowedFd<'_>, rel: &CStr, via: Resolver) -> Option<Hit> {
        let now = self.now();
        let (file, meta, body, fresh, siblings) = {
            let mut shard = self.shard(rel);
            let e = shard.map.get_mut(rel)?;
            e.used = now;
            let fresh = now.saturating_sub(e.checked) < self.valid;
            let siblings = self.fresh_bits(e, now);
            (
                e.file.clone(),
                e.meta.clone(),
                e.body.clone(),
                fresh,
                siblings,
            )
        };
        if fresh {
            return Some((file, meta, body, siblings));
        }
        let mut shard = self.shard(rel);
        if same(root, rel, &meta, via) {
            if let Some(e) = shard.map.get_mut(rel) {
                e.checked = now;
            }
            return Some((file, meta, body, siblings));
        }
        if let Some(e) = shard.map.remove(rel) {
            shard.bodies -= e.body.map_or(0, |b| b.len());
        }
        None
    }

    /// Remembers an opened file (and the contents of a small one); evicts the
    /// least recently used entry of its shard when the shard is full. Returns
    /// the contents kept, if any.
    pub(crate) fn put(
        &self,
        rel: CString,
        file: Arc<File>,
        meta: Arc<Metadata>,
    ) -> Option<Arc<[u8]>> {
        let now = self.now();
        let body = (meta.len() <= SMALL)
            .then(|| read_small(&file, meta.len()))
            .flatten();
        let mut shard = self.shard(&rel);
        if let Some(old) = shard.map.remove(&rel) {
            shard.bodies -= old.body.map_or(0, |b| b.len());
        }
        if shard.map.len() >= self.per_shard {
            if let Some(oldest) = shard
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            {
                if let Some(e) = shard.map.remove(&oldest) {
                    shard.bodies -= e.body.map_or(0, |b| b.len());
                }
            }
        }
        let body = body.filter(|b| shard.bodies + b.len() <= BODY_BUDGET);
        shard.bodies += body.as_ref().map_or(0, |b| b.len());
        shard.map.insert(
            rel,
            Entry {
                file,
                meta,
                body: body.clone(),
                used: now,
                checked: now,
                siblings: None,
            },
        );
        body
    }

    /// The sibling bits kept with `rel`'s entry if its directory was last
    /// seen unchanged within `valid` (nginx's `open_file_cache_valid` covers
    /// a name's existence as well as its file): no `fstatat` of the
    /// directory then. Always `None` with `valid` zero (every request looks).
    pub(crate) fn fresh_siblings(&self, rel: &CStr) -> Option<u8> {
        if self.valid == 0 {
            return None;
        }
        let now = self.now();
        let shard = self.shard(rel);
        self.fresh_bits(shard.map.get(rel)?, now)
    }

    /// `e`'s sibling bits if its directory was seen unchanged within `valid`
    /// of `now`; `None` with `valid` zero.
    fn fresh_bits(&self, e: &Entry, now: u64) -> Option<u8> {
        match e.siblings {
            Some((_, bits, seen)) if self.valid != 0 && now.saturating_sub(seen) < self.valid => {
                Some(bits)
            }
            _ => None,
        }
    }

    /// The sibling bits kept with `rel`'s entry, if they were found while its
    /// directory had `stamp` (which counts as the directory seen unchanged
    /// now).
    pub(crate) fn siblings(&self, rel: &CStr, stamp: &DirStamp) -> Option<u8> {
        let now = self.now();
        let mut shard = self.shard(rel);
        match &mut shard.map.get_mut(rel)?.siblings {
            Some((s, bits, seen)) if *s == *stamp => {
                *seen = now;
                Some(*bits)
            }
            _ => None,
        }
    }

    /// Keeps the sibling bits of `rel` (if it has an entry), found while its
    /// directory had `stamp`.
    pub(crate) fn set_siblings(&self, rel: &CStr, stamp: DirStamp, bits: u8) {
        let now = self.now();
        if let Some(e) = self.shard(rel).map.get_mut(rel) {
            e.siblings = Some((stamp, bits, now));
        }
    }

    /// Closes entries unused for longer than the idle limit.
    pub(crate) fn prune(&self) {
        let cutoff = self.now().saturating_sub(self.idle.as_millis() as u64);
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            let mut freed = 0;
            s.map.retain(|_, e| {
                let keep = e.used >= cutoff;
                if !keep {
                    freed += e.body.as_ref().map_or(0, |b| b.len());
                }
                keep
            });
            s.bodies -= freed;
        }
    }

    /// Open files held right now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }
}

/// The whole of a small file, if its pages are in memory: `preadv2` with
/// `RWF_NOWAIT` never waits for the disk (a worker must not block on it), and
/// a short read (the file changed under us) keeps nothing.
fn read_small(file: &File, len: u64) -> Option<Arc<[u8]>> {
    let mut buf = vec![0u8; len as usize];
    if buf.is_empty() {
        return Some(buf.into());
    }
    let n = sys::pread_nowait(file.as_fd(), &mut buf, 0).ok()?;
    (n as u64 == len).then(|| buf.into())
}

/// Whether `rel` still leads from `root`, beneath it and crossing no
/// symlink, to the file described by `meta`.
fn same(root: BorrowedFd<'_>, rel: &CStr, meta: &Metadata, via: Resolver) -> bool {
    let resolve = super::BENEATH | libc::RESOLVE_NO_SYMLINKS;
    let st = match super::open_how(root, rel, libc::O_PATH | libc::O_CLOEXEC, resolve, via) {
        Ok(fd) => sys::fstatat(fd.as_fd(), c"", libc::AT_EMPTY_PATH),
        // Out of descriptors (the server at its limit, which is when the cache
        // matters most): check the same walk without opening anything.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            same_walk(root, rel)
        }
        Err(e) => Err(e),
    };
    let Ok(st) = st else { return false };
    st.st_dev == meta.dev()
        && st.st_ino == meta.ino()
        && st.st_size == meta.size() as libc::off_t
        && st.st_mtime == meta.mtime()
        && st.st_mtime_nsec == meta.mtime_nsec()
        && st.st_ctime == meta.ctime()
        && st.st_ctime_nsec == meta.ctime_nsec()
}

/// What `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` + `fstat` would
/// say of `rel`, without a descriptor: every leading component must be a
/// directory and not a symlink (`AT_SYMLINK_NOFOLLOW` on each prefix), the
/// last one is not followed either. `rel` is relative and has no `..` (the
/// policy checked it before the cache is asked), so the walk stays beneath
/// `root`. Unlike `openat2` the components are looked at one after another:
/// a directory swapped for a symlink between two looks can at most make the
/// final look reach the same, unchanged inode by another way — the file the
/// policy already approved under this name — and anything else fails the
/// comparison that follows.
pub(super) fn same_walk(root: BorrowedFd<'_>, rel: &CStr) -> std::io::Result<libc::stat> {
    let bytes = rel.to_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, &b)| b == b'/') {
        if i == 0 {
            continue;
        }
        let prefix = CString::new(&bytes[..i]).map_err(std::io::Error::other)?;
        let st = sys::fstatat(root, &prefix, libc::AT_SYMLINK_NOFOLLOW)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
        }
    }
    let st = sys::fstatat(root, rel, libc::AT_SYMLINK_NOFOLLOW)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(st)
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache")
            .field("open", &self.len())
            .field("idle", &self.idle)
            .finish()
    }
}
