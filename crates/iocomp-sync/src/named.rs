//! Named objects shared between processes: `CreateMutex`/`CreateEvent`/`CreateSemaphore` with a name, and
//! `OpenMutex`/`OpenEvent`/`OpenSemaphore`.
//!
//! # Namespace and lifetime
//!
//! Each object is a file of [`SEGMENT_SIZE`] bytes in `$XDG_RUNTIME_DIR/iocomp-sync/` when `XDG_RUNTIME_DIR` names a
//! directory private to the user (so nobody else can pre-create the namespace), else in `/dev/shm/iocomp-sync-<uid>/`;
//! either is a directory of mode 0700 owned by the user (checked on every use): one namespace per user, and nobody
//! else can see or plant objects in it. Processes of one user share objects only if they agree on `XDG_RUNTIME_DIR`
//! (a login session and a cron job may not). The
//! file name is `l.<name>` for `name` and `Local\name`, `g.<name>` for `Global\name`; names are case-sensitive.
//!
//! Every process holding a handle holds a shared `flock` on the file (a lock the kernel drops when the process dies,
//! SIGKILL included). Whoever can take the lock *exclusively* knows nobody else holds the object, and only an
//! exclusive holder unlinks the file:
//! - the last handle of a process, when dropped, tries `LOCK_EX | LOCK_NB` and unlinks on success — so the object
//!   disappears with its last handle in the last process;
//! - an open or create that finds the file tries the same first: success means every holder died (a stale segment),
//!   which it unlinks and treats as absent; every `create_named` also sweeps the directory that way.
//!
//! An opener takes its shared lock and only then checks that the file is still linked under the name (same inode); if
//! an exclusive holder unlinked it in between, it starts over, so nobody ends up holding a dead segment. A creator
//! initialises the segment in a private file with no name (`O_TMPFILE`; where the file system lacks it, a temporary
//! name) while holding its shared lock, sets its mode to 0600 (whatever the umask), and publishes it with `linkat(2)`
//! (of `/proc/thread-self/fd/N`), which fails if the name exists: nobody ever sees a half-initialised object or a
//! temporary name, and two creators cannot both win.
//!
//! # State and waiting
//!
//! The state lives in the segment under a robust process-shared pthread mutex (`lock`; a process killed inside the
//! critical section hands the next locker `EOWNERDEAD`, the state stays usable — every change is a few word stores).
//! Waiting is retry-based: a waiter reads the futex word `seq`, checks and acquires under `lock`, and sleeps in
//! `futex_waitv` on the `seq` words of all its named objects (and a private word for its local objects), so it wakes
//! when any of them changes. Changes that may let a waiter through bump `seq` under `lock` and wake all sleepers;
//! `sleepers` lets a signal with no sleeper skip the system call. A waiter consumes the object itself, under `lock`,
//! after winning its [`Waiter`] slot (the same compare-and-swap local objects use), so a wait-any that mixes local and
//! named objects acquires exactly one object.
//!
//! A process killed inside `lock`'s critical section may have changed the state without its wake-up: the next locker
//! gets `EOWNERDEAD` and bumps `seq` and wakes every sleeper; and no named wait sleeps more than a second before it
//! looks again (which locks), so such a loss lasts at most that long even if nobody else touches the object.
//!
//! # Mutex ownership and abandonment
//!
//! A named mutex is owned by a (process, kernel thread): the process by a random 64-bit token (pids repeat across
//! pid namespaces sharing one `/dev/shm`), the thread by its tid, and "owned by me" also requires the thread to hold
//! `own` — a second robust pthread mutex in the segment, held by the owner for as long as it owns the mutex (tids
//! are reused). A thread's robust futexes are on the list the kernel walks when the thread dies, however it dies
//! (thread exit, SIGKILL of the process, a crash): the kernel marks `own`'s futex word `FUTEX_OWNER_DIED` and wakes
//! *one* waiter if the word says there are waiters. Waiters on a mutex owned elsewhere set `FUTEX_WAITERS` in that
//! word and include it in their `futex_waitv`. Whoever sees `FUTEX_OWNER_DIED` — the woken waiter, whatever it was
//! waiting for (a wait-all whose other objects are not signalled included), or a waiter about to sleep that finds the
//! word dead (the owner died after its checks) — reaps at once: under `lock` it takes `own` (`EOWNERDEAD`), marks
//! the mutex abandoned and unowned, lets go of `own`, bumps `seq` and wakes every sleeper. A word that says the owner
//! died is never slept on, so the single kernel wake-up cannot be lost.
//!
//! A thread made or known by this crate abandons the named mutexes it still owns in its exit sequence, before its
//! thread object is signalled (Wine's order); the kernel's walk at its death is the net for the rest.
//!
//! A process maps each segment once (by device and inode), however many handles it opens: all its handles to one
//! object share the mapping. The thread that owns a named mutex holds a reference to that mapping until it releases
//! the mutex or exits (glibc's robust list points into it; unmapping it would leave a dangling entry), so closing the
//! process's last handle meanwhile keeps the object until then. (A mutex acquired outside the thread's record — from
//! a thread-local destructor after the record is gone — falls back to keeping the mapping until the process exits.) A creator whose initially owned mutex cannot be published (a failed `link(2)`) lets go of `own`
//! before unmapping, on every path.
//!
//! `signal_and_wait` on a named object applies the signal and registers the wait (sleeper count, pulse generation)
//! under the state lock(s) — both named locks, in name order, when both objects are named — so an answer from another
//! process, even a pulse, finds the wait in place.

// The segment layout embeds glibc's `pthread_mutex_t` and reads its futex word (see `sys.rs`): only glibc on a
// 64-bit Linux target has been checked. (The layout's size is also folded into `MAGIC`, so two builds that disagree
// on it refuse each other's segments instead of misreading them.)
#[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
compile_error!(
    "iocomp-sync's named objects need glibc on 64-bit Linux (the segment embeds pthread_mutex_t)"
);

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::NamedError;
use crate::object::Waiter;
use crate::sys::{
    self, Segment, Shared, TryLock, FUTEX_OWNER_DIED, FUTEX_TID_MASK, FUTEX_WAITERS, MAGIC,
    SEGMENT_SIZE,
};

/// The longest name accepted, in bytes, after the `Global\`/`Local\` prefix.
pub const MAX_NAME_LEN: usize = 240;

const KIND_EVENT: u32 = 1;
const KIND_MUTEX: u32 = 2;
const KIND_SEMAPHORE: u32 = 3;

/// What a named object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamedKind {
    /// An [`Event`](crate::Event).
    Event,
    /// A [`Mutex`](crate::Mutex).
    Mutex,
    /// A [`Semaphore`](crate::Semaphore).
    Semaphore,
}

impl NamedKind {
    fn code(self) -> u32 {
        match self {
            NamedKind::Event => KIND_EVENT,
            NamedKind::Mutex => KIND_MUTEX,
            NamedKind::Semaphore => KIND_SEMAPHORE,
        }
    }

    fn from_code(code: u32) -> Option<NamedKind> {
        match code {
            KIND_EVENT => Some(NamedKind::Event),
            KIND_MUTEX => Some(NamedKind::Mutex),
            KIND_SEMAPHORE => Some(NamedKind::Semaphore),
            _ => None,
        }
    }
}

/// The file name for a Win32 object name, or why the name is refused.
fn file_name(name: &str) -> Result<String, NamedError> {
    let (prefix, rest) = if let Some(rest) = name.strip_prefix("Global\\") {
        ("g.", rest)
    } else if let Some(rest) = name.strip_prefix("Local\\") {
        ("l.", rest)
    } else {
        ("l.", name)
    };
    if rest.is_empty() || rest.contains(['/', '\0', '\\']) {
        return Err(NamedError::InvalidName);
    }
    if rest.len() > MAX_NAME_LEN {
        return Err(NamedError::TooLong {
            len: rest.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(format!("{prefix}{rest}"))
}

fn os(e: io::Error) -> NamedError {
    NamedError::Os {
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// The per-user namespace directory, made on first use and checked on every use: `$XDG_RUNTIME_DIR/iocomp-sync`
/// when `XDG_RUNTIME_DIR` is set to an absolute path of a directory owned by the user and private to it (nobody else
/// can pre-create anything there), else `/dev/shm/iocomp-sync-<uid>` (which another user could pre-create to deny
/// the service: then every call fails with [`NamedError::UnsafeNamespace`], never uses their directory).
fn namespace() -> Result<PathBuf, NamedError> {
    let uid = sys::getuid();
    let private_runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .filter(|d| {
            fs::symlink_metadata(d)
                .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
        });
    let dir = match private_runtime_dir {
        Some(runtime) => runtime.join("iocomp-sync"),
        None => PathBuf::from(format!("/dev/shm/iocomp-sync-{uid}")),
    };
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(os(e)),
    }
    let meta = fs::symlink_metadata(&dir).map_err(os)?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(NamedError::UnsafeNamespace);
    }
    Ok(dir)
}

/// Whether `file` is still the file linked at `path`.
fn still_linked(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.nlink() > 0 && a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Unlinks every segment (and abandoned temporary file) in `dir` that no process holds.
fn sweep(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(file) = OpenOptions::new().read(true).open(&path) else {
            continue;
        };
        if sys::flock(&file, libc::LOCK_EX | libc::LOCK_NB).unwrap_or(false)
            && still_linked(&file, &path)
        {
            let _ = fs::remove_file(&path);
        }
    }
}

static TMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Publishes the initialised segment at `tmp` (a temporary name, or `/proc/thread-self/fd/N` for an `O_TMPFILE`
/// file) under `path` (`linkat(2)`, following the `/proc` link: fails if `path` exists).
fn publish(tmp: &Path, path: &Path) -> io::Result<()> {
    sys::link_following(tmp, path)
}

/// Set once `O_TMPFILE` (or `/proc`, to publish such a file) turned out to be unavailable: creators then use
/// temporary names.
static NO_TMPFILE: AtomicBool = AtomicBool::new(false);

/// Sets the segment file's mode to 0600 whatever the umask (the `mode` of `open(2)` is masked by it: a umask such as
/// 0277 would leave the object unopenable by the same user's other processes).
fn make_private(file: &File) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(0o600))
}

/// A new private file in `dir` to initialise a segment in, open for reading and writing, mode 0600: with no name
/// (`O_TMPFILE`: nothing can see or sweep it before it is published) if `*tmpfile` and the file system allows,
/// returned with `None`; else under a fresh temporary name, returned with it (`*tmpfile` is then false).
fn new_segment_file(dir: &Path, tmpfile: &mut bool) -> Result<(File, Option<PathBuf>), NamedError> {
    if *tmpfile {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir)
        {
            Ok(file) => {
                make_private(&file).map_err(os)?;
                return Ok((file, None));
            }
            // Not supported here: EOPNOTSUPP (the file system), EISDIR or EINVAL (a kernel before 3.11).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                NO_TMPFILE.store(true, Ordering::Relaxed);
                *tmpfile = false;
            }
            Err(e) => return Err(os(e)),
        }
    }
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        sys::getpid(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(os)?;
    if let Err(e) = make_private(&file) {
        let _ = fs::remove_file(&tmp);
        return Err(os(e));
    }
    Ok((file, Some(tmp)))
}

/// This process's mappings, one per segment (by device and inode): every handle to one object in a process shares
/// one [`Named`], so a mutex acquired through one handle and released through another locks and unlocks `own` at
/// the same address (glibc's robust list holds that address), and a process maps a segment once however many handles
/// it opens. Weak: the entry goes with the last handle.
type Registry = std::sync::Mutex<std::collections::HashMap<(u64, u64), std::sync::Weak<Named>>>;

fn registry(
) -> std::sync::MutexGuard<'static, std::collections::HashMap<(u64, u64), std::sync::Weak<Named>>> {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn file_id(file: &File) -> Result<(u64, u64), NamedError> {
    let m = file.metadata().map_err(os)?;
    Ok((m.dev(), m.ino()))
}

/// Held, within this process, from a creator's `link` to its registration, and from an opener's look-up in the
/// [`registry`] to its registration: without it an opener could map a segment just published and not yet registered
/// (or two openers could each map it), and one process would hold two mappings of one segment. A separate lock from
/// the registry's, because a `Named` may drop (and take the registry's lock) while it is held.
fn publishing() -> std::sync::MutexGuard<'static, ()> {
    static PUBLISHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    PUBLISHING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes `named` this process's mapping of its segment (the caller holds [`publishing`]).
fn register(named: Named) -> Arc<Named> {
    let named = Arc::new(named);
    registry().insert(named.id, Arc::downgrade(&named));
    named
}

/// One process's handle to a named object's segment. Shared (`Arc`) by the clones of one `Event`/`Mutex`/`Semaphore`.
pub struct Named {
    kind: NamedKind,
    path: PathBuf,
    /// The segment file's (device, inode): the key of [`registry`].
    id: (u64, u64),
    /// The mapping (dropped before `file`).
    seg: Segment,
    /// Holds the shared `flock` (for as long as the descriptor is open).
    file: File,
}

impl std::fmt::Debug for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Named")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .finish()
    }
}

/// A segment made by `create` and not yet published. If it is dropped unpublished — on *every* path, errors
/// included — the initially owned mutex's `own` is unlocked first: it is on the creating thread's glibc robust list,
/// which must never point into an unmapped page (the kernel and glibc would write through it later).
struct Unpublished(Option<Segment>);

impl Unpublished {
    fn publish(mut self) -> Segment {
        self.0.take().expect("published once")
    }
}

impl std::ops::Deref for Unpublished {
    type Target = Segment;
    fn deref(&self) -> &Segment {
        self.0.as_ref().expect("not yet published")
    }
}

impl Drop for Unpublished {
    fn drop(&mut self) {
        if let Some(seg) = self.0.take() {
            // Only `init_mutex(true)` records an owner, and it ran on this thread, which holds `own`.
            if seg.owner_token.load(Ordering::Relaxed) != 0 {
                seg.own.unlock();
            }
        }
    }
}

/// What opening an existing file found.
enum Found {
    Open(Arc<Named>),
    Absent,
    Retry,
}

impl Named {
    /// Creates the object, or opens it if it exists (then `init` is ignored, as in Win32); returns whether it existed.
    pub(crate) fn create(
        name: &str,
        kind: NamedKind,
        init: impl Fn(&Shared),
    ) -> Result<(Arc<Named>, bool), NamedError> {
        let tmpfile = !NO_TMPFILE.load(Ordering::Relaxed);
        Named::create_with(name, kind, init, &publish, tmpfile)
    }

    /// [`Named::create`], publishing with `link` (`link(2)`; a failing one in tests), initialising the segment in an
    /// `O_TMPFILE` file if `tmpfile` (falling back to temporary names where that fails), else under a temporary name.
    fn create_with(
        name: &str,
        kind: NamedKind,
        init: impl Fn(&Shared),
        link: &dyn Fn(&Path, &Path) -> io::Result<()>,
        mut tmpfile: bool,
    ) -> Result<(Arc<Named>, bool), NamedError> {
        let file_name = file_name(name)?;
        let dir = namespace()?;
        sweep(&dir);
        let path = dir.join(&file_name);
        for _ in 0..1000 {
            match Named::open_path(&path, kind)? {
                Found::Open(n) => return Ok((n, true)),
                Found::Retry => continue,
                Found::Absent => {}
            }
            let (file, tmp_name) = new_segment_file(&dir, &mut tmpfile)?;
            let remove_tmp = || {
                if let Some(tmp) = &tmp_name {
                    let _ = fs::remove_file(tmp);
                }
            };
            let made = (|| -> io::Result<Segment> {
                sys::flock(&file, libc::LOCK_SH)?;
                file.set_len(SEGMENT_SIZE as u64)?;
                let seg = Segment::map(&file)?;
                seg.init_mutexes()?;
                seg.kind.store(kind.code(), Ordering::Relaxed);
                init(&seg);
                seg.magic.store(MAGIC, Ordering::Release);
                Ok(seg)
            })();
            let made = made.and_then(|seg| {
                let seg = Unpublished(Some(seg));
                let m = file.metadata()?;
                Ok((seg, (m.dev(), m.ino())))
            });
            let (seg, id) = match made {
                Ok(made) => made,
                Err(e) => {
                    remove_tmp();
                    return Err(os(e));
                }
            };
            let publishing = publishing();
            let linked = match &tmp_name {
                Some(tmp) => link(tmp, &path),
                // The thread's own view of its descriptors (Linux 3.17); `/proc/self` where that is missing.
                None => match link(
                    Path::new(&format!("/proc/thread-self/fd/{}", file.as_raw_fd())),
                    &path,
                ) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => link(
                        Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())),
                        &path,
                    ),
                    other => other,
                },
            };
            remove_tmp();
            match linked {
                Ok(()) => {
                    let named = register(Named {
                        kind,
                        path,
                        id,
                        file,
                        seg: seg.publish(),
                    });
                    drop(publishing);
                    return Ok((named, false));
                }
                // Someone created it first, or a sweep removed our temporary file: look again (dropping `seg`
                // lets go of an initially owned `own` before unmapping).
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        || e.kind() == io::ErrorKind::NotFound =>
                {
                    // An unnamed file cannot have been swept: NotFound means no `/proc/self/fd` (procfs not
                    // mounted). Use temporary names from now on.
                    if tmp_name.is_none() && e.kind() == io::ErrorKind::NotFound {
                        NO_TMPFILE.store(true, Ordering::Relaxed);
                        tmpfile = false;
                    }
                    drop(publishing);
                    drop(seg);
                    continue;
                }
                // Any other failure (ENOSPC, EMLINK, EIO...): the same guard runs as `seg` goes.
                Err(e) => return Err(os(e)),
            }
        }
        Err(NamedError::Os {
            errno: libc::EAGAIN,
        })
    }

    /// Opens an existing object.
    pub(crate) fn open(name: &str, kind: NamedKind) -> Result<Arc<Named>, NamedError> {
        let path = namespace()?.join(file_name(name)?);
        for _ in 0..1000 {
            match Named::open_path(&path, kind)? {
                Found::Open(n) => return Ok(n),
                Found::Retry => continue,
                Found::Absent => return Err(NamedError::NotFound),
            }
        }
        Err(NamedError::Os {
            errno: libc::EAGAIN,
        })
    }

    fn open_path(path: &Path, kind: NamedKind) -> Result<Found, NamedError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Absent),
            Err(e) => return Err(os(e)),
        };
        // Exclusive means no process holds it: every holder died. Remove the stale segment.
        if sys::flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(os)? {
            if still_linked(&file, path) {
                let _ = fs::remove_file(path);
            }
            return Ok(Found::Absent);
        }
        sys::flock(&file, libc::LOCK_SH).map_err(os)?;
        if !still_linked(&file, path) {
            return Ok(Found::Retry);
        }
        let id = file_id(&file)?;
        let _publishing = publishing();
        // Already mapped in this process: share that mapping (the registry lock is not held while an Arc may drop).
        let known = registry().get(&id).and_then(std::sync::Weak::upgrade);
        if let Some(named) = known {
            if named.kind != kind {
                return Err(NamedError::WrongKind {
                    requested: kind,
                    found: named.kind,
                });
            }
            return Ok(Found::Open(named));
        }
        let seg = Segment::map(&file).map_err(|_| NamedError::Corrupt)?;
        if seg.magic.load(Ordering::Acquire) != MAGIC {
            return Err(NamedError::Corrupt);
        }
        let found =
            NamedKind::from_code(seg.kind.load(Ordering::Relaxed)).ok_or(NamedError::Corrupt)?;
        if found != kind {
            return Err(NamedError::WrongKind {
                requested: kind,
                found,
            });
        }
        Ok(Found::Open(register(Named {
            kind,
            path: path.to_path_buf(),
            id,
            file,
            seg,
        })))
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.seg
    }

    pub(crate) fn kind(&self) -> NamedKind {
        self.kind
    }

    /// The identity of the object across handles: its file.
    pub(crate) fn key(&self) -> &Path {
        &self.path
    }

    /// Locks the state.
    ///
    /// If the previous holder died inside the critical section, it may have changed the state without bumping `seq`
    /// (a release cut short before its wake-up): the state is bumped and every sleeper woken, so they all look again.
    /// (`sleepers` needs no repair: a process that dies asleep leaves it too high, which costs only a wake call.)
    /// `pthread_mutex_lock` fails only on a segment corrupted by this same user (the namespace is private); then the
    /// state is used without the lock — every word is an atomic, so the worst is a wrong answer, never a hang.
    pub(crate) fn lock(&self) -> Locked<'_> {
        let died = self.seg.lock.lock().unwrap_or(false);
        let mut g = Locked {
            named: self,
            bumped: false,
            release_after: None,
        };
        if died {
            g.bump();
        }
        g
    }

    /// How many waits (in all processes) may be asleep on this object (test support).
    pub(crate) fn sleepers(&self) -> usize {
        self.seg.sleepers.load(Ordering::SeqCst) as usize
    }

    /// The futex word of `own` to sleep on (with `FUTEX_WAITERS` set so that the kernel wakes a sleeper when the
    /// owner dies), and its expected value. [`Armed::Dead`] when the word says the owner died: the caller must
    /// [`reap_dead_owner`](Self::reap_dead_owner) before sleeping (the kernel's single wake-up may have gone to a
    /// wait that will not pass it on, or to nobody).
    pub(crate) fn arm_owner_word(&self) -> Armed<'_> {
        if self.kind != NamedKind::Mutex {
            return Armed::Unowned;
        }
        let word = self.seg.own.word();
        let mut v = word.load(Ordering::Acquire);
        loop {
            if v & FUTEX_OWNER_DIED != 0 {
                return Armed::Dead;
            }
            if v & FUTEX_TID_MASK == 0 {
                return Armed::Unowned;
            }
            if v & FUTEX_WAITERS != 0 {
                return Armed::Sleep(word, v);
            }
            match word.compare_exchange(v, v | FUTEX_WAITERS, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Armed::Sleep(word, v | FUTEX_WAITERS),
                Err(now) => v = now,
            }
        }
    }

    /// If the owner of this mutex died, marks it abandoned and unowned and wakes every sleeper (see the module docs).
    pub(crate) fn reap_dead_owner(&self) {
        if self.kind != NamedKind::Mutex
            || self.seg.own.word().load(Ordering::Acquire) & FUTEX_OWNER_DIED == 0
        {
            return;
        }
        let mut g = self.lock();
        match g.shared().own.try_lock() {
            TryLock::OwnerDied => {
                if g.owner_recorded() {
                    g.mark_abandoned();
                } else {
                    // Died between recording "unowned" and letting go of `own` (a release cut short): nothing to
                    // abandon, but waiters must look again.
                    g.bump();
                }
                g.shared().own.unlock();
            }
            TryLock::Acquired => {
                if g.owner_recorded() {
                    g.mark_abandoned();
                }
                g.shared().own.unlock();
            }
            TryLock::Busy => {}
        }
    }

    /// Wait-any step for this object at `index`: under the lock, if it is signalled for the calling thread and the
    /// slot of `q` is still free, wins the slot and consumes the object. `pulse_seen` is this wait's view of the
    /// event's pulse generation (taken at the first check: pulses after it release this wait).
    pub(crate) fn try_acquire(&self, q: &Waiter, index: usize, pulse_seen: &mut Option<u32>) {
        let mut g = self.lock();
        let s = g.shared();
        if q.is_signaled() {
            return;
        }
        match self.kind {
            NamedKind::Event => {
                let gen = s.pulse_gen.load(Ordering::Relaxed);
                let seen = *pulse_seen.get_or_insert(gen);
                let manual = s.param.load(Ordering::Relaxed) != 0;
                if s.value.load(Ordering::Relaxed) != 0 {
                    if q.claim(index) && !manual {
                        s.value.store(0, Ordering::Relaxed);
                    }
                } else if gen != seen
                    && s.pulse_tokens.load(Ordering::Relaxed) > 0
                    && q.claim(index)
                    && !manual
                {
                    s.pulse_tokens.fetch_sub(1, Ordering::Relaxed);
                }
            }
            NamedKind::Semaphore => {
                let count = s.value.load(Ordering::Relaxed);
                if count > 0 && q.claim(index) {
                    s.value.store(count - 1, Ordering::Relaxed);
                }
            }
            NamedKind::Mutex => {
                if g.owned_by_me() {
                    let count = s.value.load(Ordering::Relaxed);
                    if count < u32::MAX && q.claim(index) {
                        s.value.store(count + 1, Ordering::Relaxed);
                    }
                    return;
                }
                match s.own.try_lock() {
                    TryLock::Busy => {}
                    got => {
                        if got == TryLock::OwnerDied {
                            g.mark_abandoned();
                        }
                        if q.claim(index) {
                            if g.take_ownership() {
                                q.abandoned.store(index, Ordering::Relaxed);
                            }
                        } else {
                            s.own.unlock();
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        {
            let mut reg = registry();
            if reg
                .get(&self.id)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), self as *const Named))
            {
                reg.remove(&self.id);
            }
        }
        let s = self.shared();
        if self.kind == NamedKind::Mutex
            && s.owner_token.load(Ordering::Relaxed) == sys::process_token()
        {
            // A thread of this process still owns the mutex: glibc's robust list points into the mapping. Keep the
            // mapping, and the shared lock (through a duplicate of the descriptor), until the process exits.
            self.seg.keep_mapped();
            if let Ok(dup) = self.file.try_clone() {
                std::mem::forget(dup);
            }
            return;
        }
        if sys::flock(&self.file, libc::LOCK_EX | libc::LOCK_NB).unwrap_or(false)
            && still_linked(&self.file, &self.path)
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What [`Named::arm_owner_word`] found.
pub(crate) enum Armed<'a> {
    /// Not a mutex, or nobody holds `own`.
    Unowned,
    /// Sleep on this word with this expected value.
    Sleep(&'a AtomicU32, u32),
    /// The owner died: reap before sleeping.
    Dead,
}

/// The state lock, held. Dropping it unlocks, then wakes every sleeper if the state was bumped.
pub(crate) struct Locked<'a> {
    named: &'a Named,
    bumped: bool,
    /// A reference to drop after unlocking (see [`Locked::mutex_release`]).
    release_after: Option<Arc<Named>>,
}

impl<'a> Locked<'a> {
    pub(crate) fn shared(&self) -> &'a Shared {
        self.named.shared()
    }

    /// Notes a change that may let waiters through: bumps `seq` now, wakes sleepers after unlocking.
    pub(crate) fn bump(&mut self) {
        self.shared().seq.fetch_add(1, Ordering::SeqCst);
        self.bumped = true;
    }

    /// `SetEvent` (see [`Named::event_set`]).
    pub(crate) fn event_set(&mut self) -> bool {
        let previous = self.shared().value.swap(1, Ordering::Relaxed) != 0;
        if !previous {
            self.bump();
        }
        previous
    }

    /// `ReleaseSemaphore(n)` (n > 0 checked by the caller): the previous count.
    pub(crate) fn semaphore_release(&mut self, n: u32) -> Result<u32, crate::SemaphoreError> {
        let s = self.shared();
        let previous = s.value.load(Ordering::Relaxed);
        let max = s.param.load(Ordering::Relaxed);
        match previous.checked_add(n) {
            Some(new) if new <= max => {
                s.value.store(new, Ordering::Relaxed);
                self.bump();
                Ok(previous)
            }
            _ => Err(crate::SemaphoreError::TooManyPosts {
                count: previous,
                max,
                release: n,
            }),
        }
    }

    /// `ReleaseMutex`: the previous count; at zero the mutex becomes unowned.
    pub(crate) fn mutex_release(&mut self) -> Result<u32, crate::MutexError> {
        if !self.owned_by_me() {
            return Err(crate::MutexError::NotOwner);
        }
        let s = self.shared();
        let previous = s.value.load(Ordering::Relaxed);
        s.value.store(previous - 1, Ordering::Relaxed);
        if previous == 1 {
            s.owner_pid.store(0, Ordering::Relaxed);
            s.owner_tid.store(0, Ordering::Relaxed);
            s.owner_token.store(0, Ordering::Relaxed);
            s.own.unlock();
            self.bump();
            // The owning thread's record kept the mapping while owned; drop that reference after unlocking.
            self.release_after = crate::local::note_released_named(self.named);
        }
        Ok(previous)
    }

    /// `SignalObjectAndWait`'s signal of this object: set, release one, release one level.
    pub(crate) fn signal(&mut self) -> Result<(), crate::SignalAndWaitError> {
        match self.named.kind {
            NamedKind::Event => {
                self.event_set();
            }
            NamedKind::Semaphore => {
                self.semaphore_release(1)
                    .map_err(crate::SignalAndWaitError::Semaphore)?;
            }
            NamedKind::Mutex => {
                self.mutex_release()
                    .map_err(crate::SignalAndWaitError::Mutex)?;
            }
        }
        Ok(())
    }

    /// Registers a wait about to start on this object (under the lock, so atomically with whatever else is done
    /// under it): counts it as a sleeper, and returns the event's pulse generation it has seen (pulses after this
    /// release it).
    pub(crate) fn register_waiter(&self) -> Option<u32> {
        let s = self.shared();
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        (self.named.kind == NamedKind::Event).then(|| s.pulse_gen.load(Ordering::SeqCst))
    }

    /// Whether anyone is recorded as the owner.
    pub(crate) fn owner_recorded(&self) -> bool {
        self.shared().owner_token.load(Ordering::Relaxed) != 0
    }

    /// Whether the calling thread owns this mutex: this process (by its random token: pids repeat across pid
    /// namespaces), this kernel thread, and the thread really holds `own` (thread ids are reused).
    pub(crate) fn owned_by_me(&self) -> bool {
        let s = self.shared();
        let tid = sys::gettid() as u32;
        s.owner_token.load(Ordering::Relaxed) == sys::process_token()
            && s.owner_tid.load(Ordering::Relaxed) == tid
            && s.own.word().load(Ordering::Acquire) & FUTEX_TID_MASK == tid
            && s.value.load(Ordering::Relaxed) > 0
    }

    /// The owner died holding `own` (we hold it now, consistent): abandoned and unowned.
    pub(crate) fn mark_abandoned(&mut self) {
        let s = self.shared();
        s.owner_pid.store(0, Ordering::Relaxed);
        s.owner_tid.store(0, Ordering::Relaxed);
        s.owner_token.store(0, Ordering::Relaxed);
        s.value.store(0, Ordering::Relaxed);
        s.param.store(1, Ordering::Relaxed);
        self.bump();
    }

    /// The calling thread, holding `own`, becomes the owner with count 1; returns whether the mutex was abandoned.
    pub(crate) fn take_ownership(&mut self) -> bool {
        let s = self.shared();
        s.owner_pid.store(sys::getpid(), Ordering::Relaxed);
        s.owner_tid.store(sys::gettid() as u32, Ordering::Relaxed);
        s.owner_token.store(sys::process_token(), Ordering::Relaxed);
        s.value.store(1, Ordering::Relaxed);
        s.param.swap(0, Ordering::Relaxed) != 0
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let s = self.named.shared();
        s.lock.unlock();
        if self.bumped && s.sleepers.load(Ordering::SeqCst) > 0 {
            sys::futex_wake(&s.seq, i32::MAX, true);
        }
    }
}

/// The operations of the three kinds on their shared state (each under the state lock).
impl Named {
    /// `SetEvent`: returns the previous state.
    pub(crate) fn event_set(&self) -> bool {
        self.lock().event_set()
    }

    /// `ResetEvent`: returns the previous state.
    pub(crate) fn event_reset(&self) -> bool {
        let g = self.lock();
        g.shared().value.swap(0, Ordering::Relaxed) != 0
    }

    /// `PulseEvent`: releases the waits queued right now (all for manual-reset, one for auto-reset), leaves the event
    /// reset; returns the previous state. A set event releases through its state as `set` would, then is reset.
    pub(crate) fn event_pulse(&self) -> bool {
        let mut g = self.lock();
        let s = g.shared();
        let previous = s.value.swap(0, Ordering::Relaxed) != 0;
        let manual = s.param.load(Ordering::Relaxed) != 0;
        s.pulse_gen.fetch_add(1, Ordering::SeqCst);
        s.pulse_tokens
            .store(if manual { u32::MAX } else { 1 }, Ordering::Relaxed);
        g.bump();
        previous
    }

    /// The event's state.
    pub(crate) fn event_is_set(&self) -> bool {
        self.lock().shared().value.load(Ordering::Relaxed) != 0
    }

    /// `ReleaseSemaphore(n)` (n > 0 checked by the caller): the previous count.
    pub(crate) fn semaphore_release(&self, n: u32) -> Result<u32, crate::SemaphoreError> {
        self.lock().semaphore_release(n)
    }

    /// The semaphore's (count, max).
    pub(crate) fn semaphore_read(&self) -> (u32, u32) {
        let g = self.lock();
        let s = g.shared();
        (
            s.value.load(Ordering::Relaxed),
            s.param.load(Ordering::Relaxed),
        )
    }

    /// `ReleaseMutex`: the previous count; at zero the mutex becomes unowned.
    pub(crate) fn mutex_release(&self) -> Result<u32, crate::MutexError> {
        self.lock().mutex_release()
    }

    /// The mutex's (owning process, recursion count, abandoned, owned by the calling thread), after reaping a dead
    /// owner.
    pub(crate) fn mutex_read(&self) -> (Option<u32>, u32, bool, bool) {
        self.reap_dead_owner();
        let g = self.lock();
        let s = g.shared();
        let pid = s.owner_pid.load(Ordering::Relaxed);
        (
            (pid != 0).then_some(pid),
            s.value.load(Ordering::Relaxed),
            s.param.load(Ordering::Relaxed) != 0,
            g.owned_by_me(),
        )
    }

    /// Whether the calling thread owns this mutex.
    pub(crate) fn mutex_owned_by_me(&self) -> bool {
        self.lock().owned_by_me()
    }

    /// The exit sequence of the calling thread: if it owns this mutex, abandons it now (and lets go of `own`).
    pub(crate) fn abandon_if_mine(&self) {
        let mut g = self.lock();
        if g.owned_by_me() {
            g.mark_abandoned();
            g.shared().own.unlock();
        }
    }

    /// Whether the calling thread owns this mutex at the maximum recursion count.
    pub(crate) fn mutex_recursion_full(&self) -> bool {
        let g = self.lock();
        g.owned_by_me() && g.shared().value.load(Ordering::Relaxed) == u32::MAX
    }
}

/// Initial state writers for [`Named::create`].
pub(crate) fn init_event(manual: bool, initial: bool) -> impl Fn(&Shared) {
    move |s| {
        s.value.store(u32::from(initial), Ordering::Relaxed);
        s.param.store(u32::from(manual), Ordering::Relaxed);
    }
}

/// See [`init_event`].
pub(crate) fn init_semaphore(initial: u32, max: u32) -> impl Fn(&Shared) {
    move |s| {
        s.value.store(initial, Ordering::Relaxed);
        s.param.store(max, Ordering::Relaxed);
    }
}

/// See [`init_event`]. An initially owned mutex is locked by the creating thread before it is published.
pub(crate) fn init_mutex(owned: bool) -> impl Fn(&Shared) {
    move |s| {
        if owned && s.own.try_lock() != TryLock::Busy {
            s.owner_pid.store(sys::getpid(), Ordering::Relaxed);
            s.owner_tid.store(sys::gettid() as u32, Ordering::Relaxed);
            s.owner_token.store(sys::process_token(), Ordering::Relaxed);
            s.value.store(1, Ordering::Relaxed);
        }
    }
}

impl Named {
    /// Whether the event is manual-reset.
    pub(crate) fn event_is_manual(&self) -> bool {
        self.lock().shared().param.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by the tests that create, or look for, this process's temporary names (they run in parallel threads).
    static TEMPORARY_NAMES: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn lock(m: &std::sync::Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unique(what: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "iocomp-unit-{}-{}-{what}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `CreateMutex(.., TRUE, name)` that fails to publish (here `link(2)` fails with ENOSPC, as on a full tmpfs)
    /// returns the error and leaves nothing behind — in particular not its locked `own` on this thread's glibc
    /// robust list pointing into an unmapped segment: releasing another mutex owned by this thread unlinks it from
    /// that list, writing through its neighbour, and would crash (SIGSEGV) if the neighbour were unmapped.
    #[test]
    fn failed_publication_of_an_owned_mutex_lets_go_of_it() {
        let (a, b) = (unique("a"), unique("b"));
        let (held, existed) = Named::create(&a, NamedKind::Mutex, init_mutex(true)).unwrap();
        assert!(!existed);
        let enospc = |_: &Path, _: &Path| Err(io::Error::from_raw_os_error(libc::ENOSPC));
        let r = Named::create_with(&b, NamedKind::Mutex, init_mutex(true), &enospc, true);
        assert!(
            matches!(
                r,
                Err(NamedError::Os {
                    errno: libc::ENOSPC
                })
            ),
            "{r:?}"
        );
        assert_eq!(held.mutex_release(), Ok(1));
        assert!(matches!(
            Named::open(&b, NamedKind::Mutex),
            Err(NamedError::NotFound)
        ));
        // The same thread can still own and release mutexes (the robust list is intact).
        let (again, _) = Named::create(&b, NamedKind::Mutex, init_mutex(true)).unwrap();
        assert_eq!(again.mutex_release(), Ok(1));
    }

    /// Review finding 13: a creator's segment has no name in the namespace until it is published — no temporary
    /// name is ever visible (another process listing the directory, or a sweep, could otherwise see it). Checked at
    /// the moment of publication, when the old scheme's `.tmp-<pid>-<n>` file existed: this process's temporary
    /// names only (other processes of this user share the namespace).
    #[test]
    fn creation_never_shows_a_temporary_name() {
        let _no_fallback_test = lock(&TEMPORARY_NAMES);
        let dir = namespace().unwrap();
        let ours = format!(".tmp-{}-", sys::getpid());
        let seen = std::cell::RefCell::new(Vec::new());
        let spy = |tmp: &Path, path: &Path| {
            let entries = fs::read_dir(&dir).unwrap().flatten();
            seen.borrow_mut().extend(
                entries
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&ours)),
            );
            publish(tmp, path)
        };
        let name = unique("tmp");
        let (created, existed) =
            Named::create_with(&name, NamedKind::Event, init_event(false, true), &spy, true)
                .unwrap();
        assert!(!existed);
        assert_eq!(*seen.borrow(), Vec::<String>::new());
        // Published as usual: another open finds the same segment, with its initial state.
        let opened = Named::open(&name, NamedKind::Event).unwrap();
        assert!(Arc::ptr_eq(&created, &opened));
        assert!(opened.event_is_set());
    }

    /// The temporary-name fallback (for file systems without `O_TMPFILE`, or no `/proc`), forced: four creators race
    /// for each of 50 names; exactly one creates each (the others open its object, with the creator's initial state),
    /// and no temporary name is left behind.
    #[test]
    fn a_process_maps_a_segment_once_however_its_creators_and_openers_race() {
        // Two creators and two openers of one new name, in one process: every handle must be the one mapping (glibc's
        // robust list holds the owner mutex's address, so two mappings of one segment would break abandonment).
        for round in 0..1000 {
            let name = unique("race-once");
            let barrier = std::sync::Barrier::new(4);
            let got: Vec<Arc<Named>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|i| {
                        let (name, barrier) = (&name, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            if i < 2 {
                                Named::create_with(
                                    name,
                                    NamedKind::Semaphore,
                                    init_semaphore(1, 5),
                                    &publish,
                                    true,
                                )
                                .unwrap()
                                .0
                            } else {
                                loop {
                                    match Named::open(name, NamedKind::Semaphore) {
                                        Ok(n) => break n,
                                        Err(NamedError::NotFound) => std::thread::yield_now(),
                                        Err(e) => panic!("open: {e:?}"),
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for n in &got[1..] {
                assert!(
                    Arc::ptr_eq(&got[0], n),
                    "round {round}: two mappings of one segment in one process"
                );
            }
        }
    }

    #[test]
    fn temporary_name_fallback_has_one_creator_per_name_and_leaves_nothing() {
        let _alone = lock(&TEMPORARY_NAMES);
        let dir = namespace().unwrap();
        for round in 0..50 {
            let name = unique("fallback");
            let barrier = std::sync::Barrier::new(4);
            let made: Vec<(Arc<Named>, bool)> = std::thread::scope(|s| {
                let creators: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            Named::create_with(
                                &name,
                                NamedKind::Semaphore,
                                init_semaphore(1, 5),
                                &publish,
                                false,
                            )
                            .unwrap()
                        })
                    })
                    .collect();
                creators.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let created = made.iter().filter(|(_, existed)| !existed).count();
            assert_eq!(created, 1, "round {round}");
            for (n, _) in &made {
                assert_eq!(n.semaphore_read(), (1, 5), "round {round}");
            }
            // One segment per name: a release through one handle is seen through every other.
            assert_eq!(made[0].0.semaphore_release(1), Ok(1));
            for (n, _) in &made {
                assert_eq!(n.semaphore_read(), (2, 5), "round {round}");
            }
        }
        let ours = format!(".tmp-{}-", sys::getpid());
        let left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&ours))
            .collect();
        assert_eq!(left, Vec::<String>::new());
    }
}
