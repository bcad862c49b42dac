//! Change notifications: `FindFirstChangeNotification`, `FindNextChangeNotification`, on inotify.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::{BitAnd, BitOr, BitOrAssign};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::FdObjectError;
use crate::object::Object;
use crate::reactor::{self, Registration, Source};
use crate::sync::{lock, Arc};
use crate::sys;
use crate::wait::{sealed::Sealed, Waitable};

/// Which changes signal a [`ChangeNotification`] (`FILE_NOTIFY_CHANGE_*`; the values are Win32's). Combine with `|`.
///
/// | flag | Win32 | signalled by (inotify) |
/// |---|---|---|
/// | [`FILE_NAME`](Self::FILE_NAME) | `FILE_NOTIFY_CHANGE_FILE_NAME` | a file (not a directory) created, deleted, renamed in or out (`IN_CREATE`, `IN_DELETE`, `IN_MOVED_FROM`, `IN_MOVED_TO`) |
/// | [`DIR_NAME`](Self::DIR_NAME) | `FILE_NOTIFY_CHANGE_DIR_NAME` | the same for a directory (`IN_ISDIR` set) |
/// | [`ATTRIBUTES`](Self::ATTRIBUTES) | `FILE_NOTIFY_CHANGE_ATTRIBUTES` | permissions, owner, timestamps set explicitly, link count (`IN_ATTRIB`) |
/// | [`SIZE`](Self::SIZE) | `FILE_NOTIFY_CHANGE_SIZE` | a write or a truncation (`IN_MODIFY`) |
/// | [`LAST_WRITE`](Self::LAST_WRITE) | `FILE_NOTIFY_CHANGE_LAST_WRITE` | a write or a truncation (`IN_MODIFY`) |
///
/// inotify reports "modified" without saying whether the size changed, so `SIZE` and `LAST_WRITE` are signalled by
/// the same events: a write that keeps the size still signals `SIZE` (a spurious signal, which Win32 permits too).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChangeFilter(u32);

impl ChangeFilter {
    /// `FILE_NOTIFY_CHANGE_FILE_NAME`: files created, deleted or renamed.
    pub const FILE_NAME: ChangeFilter = ChangeFilter(0x1);
    /// `FILE_NOTIFY_CHANGE_DIR_NAME`: directories created, deleted or renamed.
    pub const DIR_NAME: ChangeFilter = ChangeFilter(0x2);
    /// `FILE_NOTIFY_CHANGE_ATTRIBUTES`: attributes changed.
    pub const ATTRIBUTES: ChangeFilter = ChangeFilter(0x4);
    /// `FILE_NOTIFY_CHANGE_SIZE`: sizes changed (see the table: any write).
    pub const SIZE: ChangeFilter = ChangeFilter(0x8);
    /// `FILE_NOTIFY_CHANGE_LAST_WRITE`: files written.
    pub const LAST_WRITE: ChangeFilter = ChangeFilter(0x10);

    const NAMES: [(ChangeFilter, &'static str); 5] = [
        (ChangeFilter::FILE_NAME, "FILE_NAME"),
        (ChangeFilter::DIR_NAME, "DIR_NAME"),
        (ChangeFilter::ATTRIBUTES, "ATTRIBUTES"),
        (ChangeFilter::SIZE, "SIZE"),
        (ChangeFilter::LAST_WRITE, "LAST_WRITE"),
    ];

    /// No flag.
    pub const fn empty() -> ChangeFilter {
        ChangeFilter(0)
    }

    /// Every flag.
    pub const fn all() -> ChangeFilter {
        ChangeFilter(0x1f)
    }

    /// The Win32 bit values.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The flags among `bits` (unknown bits dropped).
    pub const fn from_bits_truncate(bits: u32) -> ChangeFilter {
        ChangeFilter(bits & 0x1f)
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: ChangeFilter) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share a flag.
    pub const fn intersects(self, other: ChangeFilter) -> bool {
        self.0 & other.0 != 0
    }

    /// The inotify mask that delivers the events these flags need (plus directory creation, for subtrees).
    fn inotify_mask(self, subtree: bool) -> u32 {
        let mut mask = 0;
        if self.intersects(ChangeFilter::FILE_NAME | ChangeFilter::DIR_NAME) {
            mask |= libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
        }
        if subtree {
            mask |= libc::IN_CREATE | libc::IN_MOVED_TO;
        }
        if self.contains(ChangeFilter::ATTRIBUTES) {
            mask |= libc::IN_ATTRIB;
        }
        if self.intersects(ChangeFilter::SIZE | ChangeFilter::LAST_WRITE) {
            mask |= libc::IN_MODIFY;
        }
        mask | libc::IN_ONLYDIR
    }

    /// The flags an inotify event belongs to.
    fn of_event(mask: u32) -> ChangeFilter {
        let mut f = ChangeFilter::empty();
        let names = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
        if mask & names != 0 {
            f |= if mask & libc::IN_ISDIR != 0 {
                ChangeFilter::DIR_NAME
            } else {
                ChangeFilter::FILE_NAME
            };
        }
        if mask & libc::IN_ATTRIB != 0 {
            f |= ChangeFilter::ATTRIBUTES;
        }
        if mask & libc::IN_MODIFY != 0 {
            f |= ChangeFilter::SIZE | ChangeFilter::LAST_WRITE;
        }
        f
    }
}

impl BitOr for ChangeFilter {
    type Output = ChangeFilter;
    fn bitor(self, rhs: ChangeFilter) -> ChangeFilter {
        ChangeFilter(self.0 | rhs.0)
    }
}

impl BitOrAssign for ChangeFilter {
    fn bitor_assign(&mut self, rhs: ChangeFilter) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for ChangeFilter {
    type Output = ChangeFilter;
    fn bitand(self, rhs: ChangeFilter) -> ChangeFilter {
        ChangeFilter(self.0 & rhs.0)
    }
}

impl fmt::Debug for ChangeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        for (flag, name) in ChangeFilter::NAMES {
            if self.contains(flag) {
                set.entry(&format_args!("{name}"));
            }
        }
        set.finish()
    }
}

/// What [`ChangeNotification::next`] or [`ChangeNotification::reset`] found.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChangeStatus {
    /// The notification is signalled again at once: changes were recorded after it was last signalled (always false
    /// after [`reset`](ChangeNotification::reset), which discards them).
    pub signaled: bool,
    /// The kernel's event queue overflowed (`IN_Q_OVERFLOW`) since the last `next`/`reset`: changes were lost, so
    /// rescan the directory. An overflow also signals the notification.
    pub overflowed: bool,
}

/// A handle signalled when something changes in a directory (`FindFirstChangeNotification`), on inotify.
///
/// Once signalled it stays signalled (waits do not reset it) until [`ChangeNotification::next`]
/// (`FindNextChangeNotification`), which re-arms it — and leaves it signalled if changes were recorded in between,
/// as Win32 does — or [`ChangeNotification::reset`], which re-arms it and discards those changes.
///
/// **What is covered.** Changes to the entries of the directory, selected by a [`ChangeFilter`]; with `watch_subtree`
/// the same in every subdirectory, **best effort**: each subdirectory gets its own inotify watch, added for existing
/// ones at creation and for new ones when their creation (or move in) is read — changes made in a new subdirectory
/// before its watch is added are missed, a tree larger than `/proc/sys/fs/inotify/max_user_watches` is watched only in
/// part, and the directory itself being deleted or moved is not reported. Changes made through other mounts of the
/// same files, by other machines (network file systems) or to memory-mapped files are not seen by inotify.
///
/// **Not for correctness.** Like Win32's, this is a hint to rescan: events can coalesce, and if the kernel's queue
/// (`/proc/sys/fs/inotify/max_queued_events`) overflows, changes are lost — reported as
/// [`ChangeStatus::overflowed`]. While a notification is signalled nobody reads its queue, so a long-ignored
/// notification overflows.
///
/// ```
/// use iocomp_sync::{ChangeFilter, ChangeNotification, WaitResult, Waitable};
/// use std::time::Duration;
///
/// let dir = std::env::temp_dir().join(format!("iocomp-sync-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let n = ChangeNotification::new(&dir, false, ChangeFilter::FILE_NAME).unwrap();
/// assert_eq!(n.wait(Some(Duration::ZERO)), Ok(WaitResult::TimedOut));
/// std::fs::File::create(dir.join("new")).unwrap();
/// assert_eq!(n.wait(Some(Duration::from_secs(20))), Ok(WaitResult::Signaled(0)));
/// assert!(!n.next().signaled); // re-armed: nothing else happened
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone)]
pub struct ChangeNotification {
    inner: Arc<Inner>,
}

struct Inner {
    obj: Arc<Object>,
    filter: ChangeFilter,
    subtree: bool,
    /// The inotify descriptor (non-blocking) and what draining it needs; reads and state changes happen under it.
    reader: Mutex<Reader>,
    reg: OnceLock<Registration>,
}

struct Reader {
    file: File,
    /// Watch descriptor → directory (for adding watches to new subdirectories).
    dirs: HashMap<i32, PathBuf>,
    buf: Vec<u8>,
    /// Changes read while the notification was already signalled.
    pending: bool,
    overflowed: bool,
}

/// inotify's `struct inotify_event` header: wd, mask, cookie, len.
const HEADER: usize = 16;

impl Reader {
    /// Reads every queued event; returns whether one matches `filter` (an overflow or a read error counts as a match:
    /// something may have changed).
    fn drain(&mut self, filter: ChangeFilter, subtree: bool) -> bool {
        let mut matched = false;
        loop {
            let n = match (&self.file).read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return matched,
                Err(_) => return true,
            };
            if n == 0 {
                return matched;
            }
            let mut off = 0;
            let mut new_dirs = Vec::new();
            while off + HEADER <= n {
                let word = |i: usize| {
                    let b = &self.buf[off + 4 * i..off + 4 * i + 4];
                    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
                };
                let (wd, mask, len) = (word(0) as i32, word(1), word(3) as usize);
                let name_bytes = &self.buf[(off + HEADER).min(n)..(off + HEADER + len).min(n)];
                let name_end = name_bytes
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(name_bytes.len());
                let name = OsStr::from_bytes(&name_bytes[..name_end]);
                off += HEADER + len;
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    self.overflowed = true;
                    matched = true;
                    continue;
                }
                if mask & libc::IN_IGNORED != 0 {
                    self.dirs.remove(&wd);
                    continue;
                }
                let is_new_dir =
                    mask & libc::IN_ISDIR != 0 && mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0;
                if subtree && is_new_dir {
                    if let Some(parent) = self.dirs.get(&wd) {
                        new_dirs.push(parent.join(name));
                    }
                }
                matched |= ChangeFilter::of_event(mask).intersects(filter);
            }
            for dir in new_dirs {
                self.watch_tree(&dir, filter.inotify_mask(true));
            }
        }
    }

    /// Watches `dir` and, recursively, its subdirectories; best effort (errors skip that directory).
    fn watch_tree(&mut self, dir: &Path, mask: u32) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(wd) = sys::inotify_add_watch(self.file.as_fd(), &dir, mask) else {
                continue;
            };
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
            self.dirs.insert(wd, dir);
        }
    }
}

impl Inner {
    /// Drains the queue and updates the state: signalled on a matching change (recorded as pending if already
    /// signalled); the reactor is re-armed whenever the notification is left unsignalled.
    fn process(&self, r: &mut Reader) {
        if r.drain(self.filter, self.subtree) {
            if reactor::flag_is_set(&self.obj) {
                r.pending = true;
            } else {
                reactor::set_flag(&self.obj);
            }
        }
        self.rearm_if_clear(r);
    }

    fn rearm_if_clear(&self, r: &Reader) {
        if !reactor::flag_is_set(&self.obj) {
            if let Some(reg) = self.reg.get() {
                reg.rearm(r.file.as_fd());
            }
        }
    }

    /// `next` (`keep` = true) or `reset`.
    fn rearm(&self, keep: bool) -> ChangeStatus {
        let mut r = lock(&self.reader);
        let matched = r.drain(self.filter, self.subtree);
        let signaled = keep && (matched || r.pending);
        r.pending = false;
        let overflowed = std::mem::take(&mut r.overflowed);
        if signaled {
            reactor::set_flag(&self.obj);
        } else {
            reactor::reset_flag(&self.obj);
        }
        self.rearm_if_clear(&r);
        ChangeStatus {
            signaled,
            overflowed,
        }
    }
}

impl Source for Inner {
    fn ready(&self) {
        let mut r = lock(&self.reader);
        self.process(&mut r);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reg) = self.reg.get() {
            reg.deregister(lock(&self.reader).file.as_fd());
        }
    }
}

impl ChangeNotification {
    /// Watches directory `dir` for the changes in `filter`, and its subdirectories too if `watch_subtree` (best
    /// effort: see the type's docs) (`FindFirstChangeNotification(dir, watch_subtree, filter)`). Not signalled
    /// initially.
    ///
    /// # Errors
    /// [`FdObjectError::NotFound`], [`FdObjectError::NotADirectory`], [`FdObjectError::LimitReached`] (too many inotify
    /// instances or watches), [`FdObjectError::Os`] (`EACCES`, ...).
    pub fn new(
        dir: impl AsRef<Path>,
        watch_subtree: bool,
        filter: ChangeFilter,
    ) -> Result<ChangeNotification, FdObjectError> {
        let dir = dir.as_ref();
        let fd = sys::inotify_init().map_err(|e| FdObjectError::from_io(&e))?;
        let mask = filter.inotify_mask(watch_subtree);
        let wd = sys::inotify_add_watch(fd.as_fd(), dir, mask)
            .map_err(|e| FdObjectError::from_io(&e))?;
        let mut reader = Reader {
            file: File::from(fd),
            dirs: HashMap::from([(wd, dir.to_path_buf())]),
            buf: vec![0; 64 * 1024],
            pending: false,
            overflowed: false,
        };
        if watch_subtree {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        reader.watch_tree(&entry.path(), mask);
                    }
                }
            }
        }
        let inner = Arc::new(Inner {
            obj: reactor::new_flag(),
            filter,
            subtree: watch_subtree,
            reader: Mutex::new(reader),
            reg: OnceLock::new(),
        });
        let weak = Arc::downgrade(&inner) as std::sync::Weak<dyn Source>;
        let reg = Registration::register(lock(&inner.reader).file.as_fd(), weak)
            .map_err(|e| FdObjectError::from_io(&e))?;
        let _ = inner.reg.set(reg);
        Ok(ChangeNotification { inner })
    }

    /// Re-arms the notification (`FindNextChangeNotification`): it becomes unsignalled, unless changes were recorded
    /// since it was signalled, in which case it stays signalled ([`ChangeStatus::signaled`]) and the next wait returns
    /// at once, as on Win32. Also reports a queue overflow since the last call.
    pub fn next(&self) -> ChangeStatus {
        self.inner.rearm(true)
    }

    /// Re-arms the notification and discards the changes recorded so far: afterwards it is unsignalled, and only
    /// changes made after this call signal it. Reports a queue overflow like [`ChangeNotification::next`].
    pub fn reset(&self) -> ChangeStatus {
        self.inner.rearm(false)
    }

    /// The filter it was created with.
    pub fn filter(&self) -> ChangeFilter {
        self.inner.filter
    }
}

impl fmt::Debug for ChangeNotification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeNotification")
            .field("filter", &self.inner.filter)
            .field("subtree", &self.inner.subtree)
            .field("signaled", &reactor::flag_is_set(&self.inner.obj))
            .finish()
    }
}

impl Sealed for ChangeNotification {
    fn object(&self) -> &Arc<Object> {
        &self.inner.obj
    }

    fn refresh(&self) {
        let mut r = lock(&self.inner.reader);
        self.inner.process(&mut r);
    }
}

impl Waitable for ChangeNotification {}
