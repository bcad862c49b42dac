//! The path policy: how a client-supplied name is turned into an open file.
//!
//! The server serves files from one root directory, opened once as an
//! `O_PATH` descriptor. A name arrives as raw bytes (no decoding, no UTF-8
//! requirement); it is split on `/`, leading slashes, empty and `.`
//! components are dropped, and `..` components as well as dot-names (unless
//! hidden files are allowed) are refused before the kernel is asked anything.
//! The remaining relative path is resolved with `openat2(2)` and
//! `RESOLVE_BENEATH`, so the kernel itself guarantees that no symlink, however
//! crafted, leads outside the root; with `no_symlinks` every symlink is
//! refused. A name that ends in `/` (or `/.`) must be a directory: `file/` is
//! not found, as in nginx and lighttpd.
//!
//! **The dot rule holds for what is opened, not only for the name asked
//! for.** Without `hidden`, a name is first resolved with
//! `RESOLVE_NO_SYMLINKS`: when that succeeds, every component the kernel
//! walked is one of the name's own, already checked. When a symlink is in the
//! way (`ELOOP`), the name is walked one component at a time instead — each
//! opened `O_PATH | O_NOFOLLOW` under its parent with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, each symlink read (`readlinkat`) and its target's
//! components put in front of the rest, `..` popping a directory we opened
//! (never above the root), an absolute target refused, at most 40 links — so
//! every component of the path actually traversed passes the dot rule, and
//! a link to `.env` or into `.git/` is refused like the name itself. This
//! costs nothing for names without symlinks, and needs no `/proc` (reading
//! back the path of an `O_PATH` descriptor through `/proc/self/fd` would, and
//! would not say which links were crossed).
//!
//! **Without `openat2`.** Where the kernel refuses `openat2` (before Linux
//! 5.6: `ENOSYS`; a seccomp filter, as container runtimes' default profiles
//! had: `EPERM` or `ENOSYS`; valgrind before 3.20: `ENOSYS`), every
//! resolution is done instead by a walk of the name one component at a time,
//! each `openat(parent, component, O_PATH | O_NOFOLLOW)` (`O_DIRECTORY` for
//! all but the last) under the descriptor of the one before: a `..`
//! component or an absolute name is refused (`EXDEV`) and a symlink is
//! never followed (`ELOOP`, magic links included, since nothing is
//! followed), which is what `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` would
//! say; symlinks the policy allows are then followed by the very walk that
//! applies the dot rule (with `hidden` too, without the dot rule). Which one
//! applies is decided once, when the root is opened, by a harmless probe:
//! `openat2(root, ".", O_PATH)`, which cannot fail with `EPERM` or `ENOSYS`
//! for any reason but the call itself being refused (an `O_PATH` open checks
//! no permission on the object and triggers no permission event), so a real
//! permission error on a requested name is never mistaken for it.
//!
//! **Nothing is opened for reading before its type is known.** Resolution
//! yields an `O_PATH` descriptor, which has no side effects on the object;
//! `fstat` on it decides regular file, directory, or `NotRegular` (a FIFO, a
//! socket, a device: never opened, so a writer blocked on a FIFO is not
//! released). Only then is the object opened for reading — that very inode,
//! through the descriptor's `/proc/self/fd/N` link, so that nothing renamed
//! onto the name in between (a FIFO swapped in by a renamer) is ever opened.
//! Where `/proc` is not mounted (a chroot) that open fails and the object is
//! opened by the same components without symlinks (its parent and name, or
//! the whole name) instead; then a FIFO swapped onto the name in that window
//! is opened (`O_NONBLOCK`: it does not block us, but it releases a writer
//! waiting on it) before the device and inode comparison with the `O_PATH`
//! descriptor catches the swap (retried, never served). The device and inode
//! are compared either way. This one open is the only use of `/proc`; name
//! resolution and listings never need it.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

mod cache;
pub(crate) mod dir;

use crate::sys;
use cache::FileCache;

/// The longest name, in bytes, that [`Root::open_file`] accepts.
const MAX_NAME: usize = 4096;

/// How many times `openat2` is retried when it fails with `EAGAIN` or `EINTR`,
/// and how many times an open is retried when the object changed between its
/// resolution and its opening for reading.
const OPEN_ATTEMPTS: usize = 8;

/// The most symlinks one name may cross (the kernel's limit too).
const MAX_LINKS: usize = 40;

/// How a root resolves names: with `openat2`, or (where it is refused) by
/// walking one component at a time with `openat` (see the module's page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// `openat2` with `RESOLVE_*` flags.
    Openat2,
    /// `openat` per component, refusing `..` and every symlink.
    Walk,
}

impl Resolver {
    /// `Openat2` when `openat2(root, ".", O_PATH)` works; `Walk` when it is
    /// refused as a call (`ENOSYS`: an older kernel or valgrind; `EPERM`: a
    /// seccomp filter — an `O_PATH` open of `.` checks no permission).
    fn probe(root: BorrowedFd<'_>) -> Resolver {
        match open_how(
            root,
            c".",
            libc::O_PATH | libc::O_CLOEXEC,
            BENEATH,
            Resolver::Openat2,
        ) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                Resolver::Walk
            }
            _ => Resolver::Openat2,
        }
    }
}

/// `openat2` resolution flags every open uses.
const BENEATH: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;

/// A client's name after the root's name rules ([`Root::normalize_name`]),
/// for a caller that both opens it and probes its siblings: the rules run
/// once per request instead of once per call.
pub struct Normalized(Name);

/// A name after the rules.
struct Name {
    /// The relative path (`.` for the root itself).
    rel: CString,
    /// It ended in `/` or `/.`: it must be a directory.
    dir: bool,
}

/// What resolution found: an `O_PATH` descriptor of the object (never a
/// symlink) and how to open it again for reading without crossing a symlink.
struct Found {
    /// `O_PATH`.
    fd: OwnedFd,
    /// Where its name is resolved from.
    at: At,
    /// Its name from there.
    name: CString,
    /// The `RESOLVE_*` flags of that second resolution.
    resolve: u64,
    /// The whole name was resolved from the root in one go, crossing no
    /// symlink (what the open-file cache requires of what it keeps).
    plain: bool,
}

/// Where a [`Found`] object is opened again from.
enum At {
    /// The root.
    Root,
    /// The directory it is in (opened `O_PATH`).
    Parent(OwnedFd),
    /// Itself, as `.` (a directory).
    Itself,
}

/// Switches of the path policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathOptions {
    /// Serve names with a component starting with `.` (dotfiles and dot-directories).
    pub hidden: bool,
    /// Refuse every symlink, even one that stays inside the root.
    pub no_symlinks: bool,
    /// Resolve names without `openat2`, as is done anyway where the kernel
    /// refuses it (see the module's page): for tests of that fallback.
    pub no_openat2: bool,
}

/// The directory files are served from, with the policy applied to names under it.
#[derive(Debug)]
pub struct Root {
    /// The root directory, opened `O_PATH | O_DIRECTORY | O_CLOEXEC`.
    fd: OwnedFd,
    /// The policy for names under the root.
    opts: PathOptions,
    /// Open regular files, revalidated under the policy on every hit (after
    /// `valid`, if set).
    cache: Option<FileCache>,
    /// How names are resolved (probed once, when the root is opened).
    via: Resolver,
}

/// Why a name could not be served.
#[non_exhaustive]
#[derive(Debug)]
pub enum OpenError {
    /// Nothing by that name exists (or a dangling symlink, or a non-directory on the way).
    NotFound,
    /// The name is refused: `..`, a dot-name, an escape from the root, a symlink
    /// while symlinks are off, or no permission.
    Forbidden,
    /// The name exists but is not a regular file (a directory, FIFO, socket or device).
    NotRegular,
    /// The name itself is malformed: empty, too long, or containing a NUL byte.
    BadName,
    /// Any other failure of the system.
    Io(io::Error),
}

impl OpenError {
    /// A short reason for the client: `"not found"`, `"forbidden"`,
    /// `"not a regular file"`, `"bad name"` or `"I/O error"`.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::NotFound => "not found",
            OpenError::Forbidden => "forbidden",
            OpenError::NotRegular => "not a regular file",
            OpenError::BadName => "bad name",
            OpenError::Io(_) => "I/O error",
        }
    }

    /// Classifies an error of `openat2`.
    fn from_open(err: io::Error) -> OpenError {
        match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => OpenError::NotFound,
            Some(libc::EXDEV | libc::ELOOP | libc::EACCES | libc::EPERM) => OpenError::Forbidden,
            Some(libc::ENAMETOOLONG) => OpenError::BadName,
            Some(libc::ENXIO | libc::ENODEV) => OpenError::NotRegular,
            _ => OpenError::Io(err),
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// A regular file, or with [`Root::open_entry`] also a directory, opened under
/// the root.
#[derive(Debug)]
pub struct Opened {
    /// The file, open read-only in blocking mode; shared with the open-file
    /// cache, if there is one (use positional reads only).
    pub file: Arc<File>,
    /// Its length in bytes when it was opened.
    pub len: u64,
    /// Its metadata when it was opened (kind, inode, modification time);
    /// shared with the open-file cache (a hit copies no `statx` record).
    pub meta: Arc<std::fs::Metadata>,
    /// The whole file, when it is small and the open-file cache keeps its
    /// contents (sent from memory, with its head, in one `send`).
    pub body: Option<Arc<[u8]>>,
    /// From an open-file cache hit: the sibling bits that
    /// [`Root::sibling_files`] would answer for [`CACHED_SIBLINGS`] from the
    /// cache without looking at the directory, found in the same lookup.
    pub(crate) siblings: Option<u8>,
}

/// The sibling suffixes whose answer the open-file cache keeps with a file's
/// entry (the server's precompressed siblings, `name.br` and `name.gz`):
/// [`Root::sibling_files`] with any other list looks at the directory every
/// time, so that bits found for one list never answer another.
pub const CACHED_SIBLINGS: [&str; 2] = [".br", ".gz"];

impl Root {
    /// Opens `dir` as the root; fails (with `ENOTDIR`) if it is not a directory.
    pub fn open(dir: &Path, opts: PathOptions) -> io::Result<Root> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)?;
        let fd = OwnedFd::from(file);
        let via = if opts.no_openat2 {
            Resolver::Walk
        } else {
            Resolver::probe(fd.as_fd())
        };
        Ok(Root {
            fd,
            opts,
            cache: None,
            via,
        })
    }

    /// Keeps up to `entries` regular files open between requests (each hit
    /// re-checked by resolving its name again under the policy without
    /// following any symlink, and comparing; see the `cache` module), closing those
    /// unused for `idle` at each [`Root::prune_cache`]. 0 entries: no cache.
    pub fn with_cache(self, entries: usize, idle: std::time::Duration) -> Root {
        self.with_cache_valid(entries, idle, std::time::Duration::ZERO)
    }

    /// As [`Root::with_cache`], but an entry checked less than `valid` ago is
    /// used without a new check (nginx's `open_file_cache_valid`): a file
    /// changed on disk may be served as it was for up to `valid`.
    pub fn with_cache_valid(
        mut self,
        entries: usize,
        idle: std::time::Duration,
        valid: std::time::Duration,
    ) -> Root {
        self.cache = (entries > 0).then(|| FileCache::new(entries, idle, valid));
        self
    }

    /// Closes cached files unused for longer than the idle limit.
    pub fn prune_cache(&self) {
        if let Some(c) = &self.cache {
            c.prune();
        }
    }

    /// Files the cache holds open right now.
    pub fn cached_files(&self) -> usize {
        self.cache.as_ref().map_or(0, FileCache::len)
    }

    /// The policy this root was opened with.
    pub fn options(&self) -> PathOptions {
        self.opts
    }

    /// Opens the regular file the client calls `name` (raw bytes) under the root.
    pub fn open_file(&self, name: &[u8]) -> Result<Opened, OpenError> {
        let name = self.normalize(name)?;
        if name.rel.as_bytes() == b"." {
            return Err(OpenError::BadName);
        }
        let want_dir = name.dir;
        let opened = self.open_cached(&name)?;
        if want_dir && !opened.meta.is_dir() {
            return Err(OpenError::NotFound);
        }
        if !opened.meta.is_file() {
            return Err(OpenError::NotRegular);
        }
        Ok(opened)
    }

    /// Opens a regular file or a directory; an empty name (or only slashes and
    /// `.`) is the root itself. Anything else (a FIFO, a socket, a device) is
    /// `NotRegular`.
    pub fn open_entry(&self, name: &[u8]) -> Result<Opened, OpenError> {
        self.open_entry_normalized(&self.normalize_name(name)?)
    }

    /// Applies the name rules to `name` (raw bytes from the client): what
    /// [`Root::open_entry`] and [`Root::sibling_files`] do first, done once
    /// for [`Root::open_entry_normalized`] and [`Root::sibling_files_of`].
    pub fn normalize_name(&self, name: &[u8]) -> Result<Normalized, OpenError> {
        self.normalize(name).map(Normalized)
    }

    /// [`Root::open_entry`] of a name already normalized by this root.
    pub fn open_entry_normalized(&self, name: &Normalized) -> Result<Opened, OpenError> {
        let name = &name.0;
        let want_dir = name.dir;
        let opened = self.open_cached(name)?;
        if want_dir && !opened.meta.is_dir() {
            return Err(OpenError::NotFound);
        }
        if !opened.meta.is_file() && !opened.meta.is_dir() {
            return Err(OpenError::NotRegular);
        }
        Ok(opened)
    }

    /// Whether `name` is a regular file that [`Root::open_file`] would open:
    /// resolved under the same policy, but only to an `O_PATH` descriptor
    /// (cheaper; nothing is opened for reading). For probing siblings.
    pub fn is_file(&self, name: &[u8]) -> bool {
        let Ok(name) = self.normalize(name) else {
            return false;
        };
        if name.dir || name.rel.as_bytes() == b"." {
            return false;
        }
        if let Some(cache) = &self.cache {
            if let Some((_, meta, _, _)) = cache.get(self.fd.as_fd(), &name.rel, self.via) {
                return meta.is_file();
            }
        }
        self.resolve(&name.rel)
            .and_then(|found| fstat(found.fd.as_fd()))
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
    }

    /// Which of `name` + `suffixes[i]` (at most 8) are regular files that
    /// [`Root::is_file`] accepts: bit `i` set for each. With the open-file
    /// cache and `name` in it, the answer is kept with its entry and reused
    /// while `name`'s directory is unchanged (same identity, modification and
    /// change times: a sibling created, removed or renamed changes them), so a
    /// hot file costs one `fstatat` here instead of one resolution per suffix
    /// (for the list [`CACHED_SIBLINGS`] only; any other list is looked up
    /// every time).
    /// A directory changed within the last two seconds is not trusted (a
    /// change in the same clock tick could leave its times as they were).
    /// With a validity interval (`with_cache_valid`), bits whose directory
    /// was seen unchanged within it are used without looking again: a hot
    /// file then costs no system call here.
    pub fn sibling_files(&self, name: &[u8], suffixes: &[&str]) -> u8 {
        let normal = self.normalize(name).ok();
        self.siblings(name, normal.as_ref(), suffixes)
    }

    /// [`Root::sibling_files`] of `name` (the client's raw bytes) whose
    /// normalized form `normal` ([`Root::normalize_name`] of `name`, by this
    /// root) is already known.
    pub fn sibling_files_of(&self, name: &[u8], normal: &Normalized, suffixes: &[&str]) -> u8 {
        self.siblings(name, Some(&normal.0), suffixes)
    }

    fn siblings(&self, name: &[u8], normal: Option<&Name>, suffixes: &[&str]) -> u8 {
        let probe = || {
            suffixes
                .iter()
                .take(8)
                .enumerate()
                .fold(0u8, |bits, (i, suffix)| {
                    let mut sibling = name.to_vec();
                    sibling.extend_from_slice(suffix.as_bytes());
                    if self.is_file(&sibling) {
                        bits | 1 << i
                    } else {
                        bits
                    }
                })
        };
        let (Some(cache), Some(n)) = (&self.cache, normal) else {
            return probe();
        };
        if suffixes != CACHED_SIBLINGS {
            return probe();
        }
        if let Some(bits) = cache.fresh_siblings(&n.rel) {
            return bits;
        }
        let rel = n.rel.as_bytes();
        let parent = match rel.iter().rposition(|&b| b == b'/') {
            Some(slash) => CString::new(&rel[..slash]).ok(),
            None => Some(c".".to_owned()),
        };
        let Some(Ok(st)) =
            parent.map(|p| sys::fstatat(self.fd.as_fd(), &p, libc::AT_SYMLINK_NOFOLLOW))
        else {
            return probe();
        };
        let stamp = [
            st.st_dev as i64,
            st.st_ino as i64,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_ctime,
            st.st_ctime_nsec,
        ];
        if let Some(bits) = cache.siblings(&n.rel, &stamp) {
            return bits;
        }
        let bits = probe();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if now.saturating_sub(st.st_mtime.max(st.st_ctime)) >= 2 {
            cache.set_siblings(&n.rel, stamp, bits);
        }
        bits
    }

    /// Opens `name` through the open-file cache: a hit that still matches the
    /// name costs one `openat2(O_PATH)` and one `fstat`; a regular file opened afresh is remembered.
    fn open_cached(&self, name: &Name) -> Result<Opened, OpenError> {
        if let Some(cache) = &self.cache {
            if let Some((file, meta, body, siblings)) =
                cache.get(self.fd.as_fd(), &name.rel, self.via)
            {
                return Ok(Opened {
                    file,
                    len: meta.len(),
                    meta,
                    body,
                    siblings,
                });
            }
        }
        let (mut opened, plain) = self.open_rel(&name.rel, name.dir)?;
        // Only a name that resolved without crossing a symlink is kept: a hit
        // is revalidated the same way (see the `cache` module).
        if let (Some(cache), true, true) = (&self.cache, opened.meta.is_file(), plain) {
            opened.body = cache.put(name.rel.clone(), opened.file.clone(), opened.meta.clone());
        }
        Ok(opened)
    }

    /// Resolves `rel` to an `O_PATH` descriptor, checks what it is, and only
    /// then opens a regular file or a directory for reading (`want_dir`: it
    /// must be a directory). Also says whether `rel` was resolved from the
    /// root without crossing any symlink.
    fn open_rel(&self, rel: &CStr, want_dir: bool) -> Result<(Opened, bool), OpenError> {
        let mut attempt = 1;
        loop {
            let found = self.resolve(rel)?;
            let st = fstat(found.fd.as_fd())?;
            let kind = st.st_mode & libc::S_IFMT;
            let is_dir = kind == libc::S_IFDIR;
            if want_dir && !is_dir {
                return Err(OpenError::NotFound);
            }
            if kind != libc::S_IFREG && !is_dir {
                return Err(OpenError::NotRegular);
            }
            let (at, name) = match &found.at {
                At::Root => (self.fd.as_fd(), found.name.as_c_str()),
                At::Parent(dir) => (dir.as_fd(), found.name.as_c_str()),
                At::Itself => (found.fd.as_fd(), c"."),
            };
            let mut flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
            if is_dir {
                flags |= libc::O_DIRECTORY;
            }
            #[cfg(test)]
            tests::in_reopen_window();
            let file = match reopen(found.fd.as_fd(), flags) {
                Some(file) => file,
                None => {
                    let fd = open_how(at, name, flags, found.resolve, self.via)
                        .map_err(OpenError::from_open)?;
                    File::from(fd)
                }
            };
            let meta = file.metadata().map_err(OpenError::Io)?;
            if meta.dev() != st.st_dev || meta.ino() != st.st_ino {
                // Replaced between the two opens: resolve it again.
                if attempt < OPEN_ATTEMPTS {
                    attempt += 1;
                    continue;
                }
                return Err(OpenError::NotFound);
            }
            if meta.is_file() {
                clear_nonblock(file.as_fd()).map_err(OpenError::Io)?;
            }
            let len = meta.len();
            let opened = Opened {
                file: Arc::new(file),
                len,
                meta: Arc::new(meta),
                body: None,
                siblings: None,
            };
            return Ok((opened, found.plain));
        }
    }

    /// Resolves `rel` under the root to an `O_PATH` descriptor, with the dot
    /// rule applied to every component crossed (see the module's page).
    fn resolve(&self, rel: &CStr) -> Result<Found, OpenError> {
        let path = libc::O_PATH | libc::O_CLOEXEC;
        // First without crossing any symlink: the common case, and the only
        // one the open-file cache keeps (it revalidates the same way).
        let resolve = BENEATH | libc::RESOLVE_NO_SYMLINKS;
        match open_how(self.fd.as_fd(), rel, path, resolve, self.via) {
            Ok(fd) => Ok(Found {
                fd,
                at: At::Root,
                name: rel.to_owned(),
                resolve,
                plain: true,
            }),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) && !self.opts.no_symlinks => {
                if !self.opts.hidden || self.via == Resolver::Walk {
                    return self.walk(rel);
                }
                let fd = open_how(self.fd.as_fd(), rel, path, BENEATH, self.via)
                    .map_err(OpenError::from_open)?;
                Ok(Found {
                    fd,
                    at: At::Root,
                    name: rel.to_owned(),
                    resolve: BENEATH,
                    plain: false,
                })
            }
            Err(e) => Err(OpenError::from_open(e)),
        }
    }

    /// Resolves `rel` one component at a time, following symlinks ourselves
    /// so that every component of their targets passes the dot rule too.
    fn walk(&self, rel: &CStr) -> Result<Found, OpenError> {
        let one = BENEATH | libc::RESOLVE_NO_SYMLINKS;
        let path = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let mut todo: VecDeque<Vec<u8>> = rel
            .to_bytes()
            .split(|&b| b == b'/')
            .map(<[u8]>::to_vec)
            .collect();
        // The directories opened along the way, below the root.
        let mut dirs: Vec<OwnedFd> = Vec::new();
        // A non-directory reached: it must be the last component.
        let mut last: Option<(OwnedFd, CString)> = None;
        let mut links = 0;
        while let Some(comp) = todo.pop_front() {
            if last.is_some() {
                // A component after a non-directory (ENOTDIR).
                return Err(OpenError::NotFound);
            }
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    // RESOLVE_BENEATH refuses to climb above the root (EXDEV).
                    dirs.pop().ok_or(OpenError::Forbidden)?;
                    continue;
                }
                [b'.', ..] if !self.opts.hidden => return Err(OpenError::Forbidden),
                _ => {}
            }
            let name = CString::new(comp).map_err(|_| OpenError::BadName)?;
            let at = dirs.last().map_or(self.fd.as_fd(), |d| d.as_fd());
            let fd = open_how(at, &name, path, one, self.via).map_err(OpenError::from_open)?;
            match fstat(fd.as_fd())?.st_mode & libc::S_IFMT {
                libc::S_IFLNK => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(OpenError::Forbidden); // ELOOP
                    }
                    let target = sys::readlink_fd(fd.as_fd()).map_err(OpenError::from_open)?;
                    match target.first() {
                        None => return Err(OpenError::NotFound),
                        // An absolute target leaves the root (RESOLVE_BENEATH: EXDEV).
                        Some(b'/') => return Err(OpenError::Forbidden),
                        Some(_) => {}
                    }
                    for part in target.split(|&b| b == b'/').rev() {
                        todo.push_front(part.to_vec());
                    }
                }
                libc::S_IFDIR => dirs.push(fd),
                _ => last = Some((fd, name)),
            }
        }
        Ok(match last {
            Some((fd, name)) => Found {
                fd,
                at: dirs.pop().map_or(At::Root, At::Parent),
                name,
                resolve: one,
                plain: false,
            },
            None => {
                let fd = match dirs.pop() {
                    Some(d) => d,
                    None => open_how(
                        self.fd.as_fd(),
                        c".",
                        libc::O_PATH | libc::O_CLOEXEC,
                        one,
                        self.via,
                    )
                    .map_err(OpenError::from_open)?,
                };
                Found {
                    fd,
                    at: At::Itself,
                    name: c".".to_owned(),
                    resolve: one,
                    plain: false,
                }
            }
        })
    }

    /// Applies the name rules and returns the normalized relative path (`.`
    /// for the root itself) and whether it must be a directory.
    fn normalize(&self, name: &[u8]) -> Result<Name, OpenError> {
        if name.len() > MAX_NAME || name.contains(&0) {
            return Err(OpenError::BadName);
        }
        let mut rel = Vec::with_capacity(name.len());
        let mut dir = false;
        for comp in name.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => {
                    dir = true;
                    continue;
                }
                b".." => return Err(OpenError::Forbidden),
                [b'.', ..] if !self.opts.hidden => return Err(OpenError::Forbidden),
                _ => {}
            }
            dir = false;
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(comp);
        }
        if rel.is_empty() {
            rel.push(b'.');
        }
        let rel = CString::new(rel).map_err(|_| OpenError::BadName)?;
        Ok(Name { rel, dir })
    }
}

/// `openat2(at, name, flags, resolve)`, retrying `EAGAIN`/`EINTR`; with
/// [`Resolver::Walk`], [`open_walk`] instead.
fn open_how(
    at: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    resolve: u64,
    via: Resolver,
) -> io::Result<OwnedFd> {
    if via == Resolver::Walk {
        return open_walk(at, name, flags);
    }
    let how = sys::OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve,
    };
    let mut attempt = 1;
    loop {
        match sys::openat2(at, name, &how) {
            Ok(fd) => return Ok(fd),
            Err(err) => match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) if attempt < OPEN_ATTEMPTS => attempt += 1,
                _ => return Err(err),
            },
        }
    }
}

/// What `openat2(at, name, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
/// does, without `openat2`: one `openat` per component under the descriptor
/// of the one before, every one `O_NOFOLLOW` (the leading ones `O_PATH |
/// O_DIRECTORY`), so no symlink is ever followed; `..` and an absolute name
/// are refused (`EXDEV`), a symlink on the way is `ELOOP` (a trailing one
/// too, unless `flags` has `O_PATH | O_NOFOLLOW`: then, as with `openat2`,
/// the link itself is opened). Stricter than asked when `resolve` would
/// allow symlinks beneath: the callers then follow them with their own walk.
fn open_walk(at: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let err = io::Error::from_raw_os_error;
    let bytes = name.to_bytes();
    if bytes.first() == Some(&b'/') {
        return Err(err(libc::EXDEV));
    }
    // The name with each `/` made a NUL: each component a C string in place.
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    buf.extend(bytes.iter().map(|&b| if b == b'/' { 0 } else { b }));
    buf.push(0);
    let mut comps = buf
        .split_inclusive(|&b| b == 0)
        .filter(|c| !matches!(*c, b"\0" | b".\0"));
    let mut last = comps.next();
    let mut dir: Option<OwnedFd> = None;
    for next in comps {
        let comp = last.replace(next).unwrap_or(b".\0");
        if comp == b"..\0" {
            return Err(err(libc::EXDEV));
        }
        let comp = CStr::from_bytes_with_nul(comp).map_err(io::Error::other)?;
        let parent = dir.as_ref().map_or(at, |d| d.as_fd());
        let o = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        match sys::openat(parent, comp, o) {
            Ok(fd) => dir = Some(fd),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                // A symlink, or not a directory: say which, as `openat2` does.
                let st = sys::fstatat(parent, comp, libc::AT_SYMLINK_NOFOLLOW)?;
                let link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
                return Err(err(if link { libc::ELOOP } else { libc::ENOTDIR }));
            }
            Err(e) => return Err(e),
        }
    }
    let comp = last.unwrap_or(b".\0");
    if comp == b"..\0" {
        return Err(err(libc::EXDEV));
    }
    let comp = CStr::from_bytes_with_nul(comp).map_err(io::Error::other)?;
    let parent = dir.as_ref().map_or(at, |d| d.as_fd());
    // A name that ends in `/` or `/.` must be a directory.
    let must_dir = bytes.ends_with(b"/") || bytes.ends_with(b"/.");
    let extra = libc::O_NOFOLLOW | if must_dir { libc::O_DIRECTORY } else { 0 };
    let fd = match sys::openat(parent, comp, flags | extra) {
        Err(e) if must_dir && e.raw_os_error() == Some(libc::ENOTDIR) => {
            let st = sys::fstatat(parent, comp, libc::AT_SYMLINK_NOFOLLOW)?;
            let link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
            return Err(err(if link { libc::ELOOP } else { libc::ENOTDIR }));
        }
        r => r?,
    };
    // Without `O_PATH`, `O_NOFOLLOW` already refused a symlink (`ELOOP`).
    let keep_link = flags & (libc::O_PATH | libc::O_NOFOLLOW) == libc::O_PATH | libc::O_NOFOLLOW;
    if flags & libc::O_PATH != 0 && !keep_link {
        let st = sys::fstatat(fd.as_fd(), c"", libc::AT_EMPTY_PATH)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(err(libc::ELOOP));
        }
    }
    Ok(fd)
}

/// Opens the very object `path_fd` (an `O_PATH` descriptor) refers to for
/// reading, through its `/proc/self/fd` link: no name is resolved again, so
/// nothing renamed onto the name meanwhile (a FIFO) can be opened. `None`
/// when that fails (no `/proc` mounted, in a chroot, or any error): the
/// caller then opens by name, and checks the inode.
fn reopen(path_fd: BorrowedFd<'_>, flags: libc::c_int) -> Option<File> {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
    // std adds O_CLOEXEC and sets the access mode from `read`.
    let extra = flags & !(libc::O_ACCMODE | libc::O_CLOEXEC);
    OpenOptions::new()
        .read(true)
        .custom_flags(extra)
        .open(link)
        .ok()
}

/// `fstat` of a descriptor (an `O_PATH` one too).
fn fstat(fd: BorrowedFd<'_>) -> Result<libc::stat, OpenError> {
    sys::fstatat(fd, c"", libc::AT_EMPTY_PATH).map_err(OpenError::Io)
}

/// Puts `fd` back into blocking mode.
fn clear_nonblock(fd: BorrowedFd<'_>) -> io::Result<()> {
    // We opened it with O_RDONLY|O_CLOEXEC|O_NOCTTY|O_NONBLOCK; of those only
    // O_NONBLOCK is a status flag that F_SETFL changes, so setting the status
    // flags to 0 clears exactly it (one system call, no F_GETFL).
    sys::set_status_flags(fd, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    thread_local! {
        /// Run once, on this thread, between the `O_PATH` resolution and the
        /// open for reading: a test's stand-in for a concurrent renamer.
        static REOPEN_WINDOW: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
            const { std::cell::RefCell::new(None) };
    }

    pub(super) fn in_reopen_window() {
        if let Some(f) = REOPEN_WINDOW.with(|w| w.borrow_mut().take()) {
            f();
        }
    }

    /// Whether the thread `task` (`/proc/<pid>/task/<tid>`) is asleep in
    /// `openat` (a FIFO writer waiting for a reader).
    fn asleep_in_openat(task: &std::path::Path) -> bool {
        let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        let call = std::fs::read_to_string(task.join("syscall")).unwrap_or_default();
        state == Some('S') && call.starts_with(&format!("{} ", libc::SYS_openat))
    }

    /// The cache's check without descriptors (used when the process is out
    /// of them) refuses what `openat2(RESOLVE_NO_SYMLINKS)` refuses.
    #[test]
    fn the_cache_check_without_descriptors_refuses_every_symlink_on_the_way() {
        let t = Tree::new("samewalk");
        t.file(b"d/e/f", b"deep");
        let root = File::open(&t.root).unwrap();
        let st = cache::same_walk(root.as_fd(), c"d/e/f").unwrap();
        let meta = std::fs::metadata(t.root.join("d/e/f")).unwrap();
        assert_eq!((st.st_dev, st.st_ino), (meta.dev(), meta.ino()));
        // A directory on the way moved behind a symlink (into a dot-directory).
        std::fs::rename(t.root.join("d/e"), t.root.join("d/.e")).unwrap();
        symlink(".e", t.root.join("d/e")).unwrap();
        assert!(cache::same_walk(root.as_fd(), c"d/e/f").is_err());
        // The file itself a symlink, and a directory where a file was.
        symlink("e/f", t.root.join("d/g")).unwrap();
        assert!(cache::same_walk(root.as_fd(), c"d/g").is_err());
        assert!(cache::same_walk(root.as_fd(), c"d/.e").is_err());
        assert!(cache::same_walk(root.as_fd(), c"d/.e/f").is_ok());
    }

    /// The walk without `openat2` says what `openat2(RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS)` says, name by name: the same descriptor
    /// target or the same error.
    #[test]
    fn the_walk_without_openat2_answers_as_openat2_does() {
        let t = Tree::new("openwalk");
        t.file(b"d/e/f", b"deep");
        t.file(b"g", b"file");
        t.link("d", "dl");
        t.link("e/f", "d/fl");
        t.link("../outside", "up");
        t.link("/etc/passwd", "abs");
        let root = File::open(&t.root).unwrap();
        let at = root.as_fd();
        let resolve = BENEATH | libc::RESOLVE_NO_SYMLINKS;
        let path = libc::O_PATH | libc::O_CLOEXEC;
        let names: [&CStr; 20] = [
            c"d/e/f",
            c"d//e/./f",
            c"./d/e/",
            c"d/e",
            c".",
            c"d/./",
            c"g",
            c"g/",
            c"g/x",
            c"nope",
            c"d/nope/f",
            c"dl",
            c"dl/e/f",
            c"d/fl",
            c"up",
            c"abs",
            c"..",
            c"d/../g",
            c"d/e/../../..",
            c"/etc/passwd",
        ];
        let id = |r: io::Result<OwnedFd>| {
            r.map(|fd| {
                let st = fstat(fd.as_fd()).unwrap();
                (st.st_dev, st.st_ino, st.st_mode)
            })
            .map_err(|e| e.raw_os_error())
        };
        for name in names {
            for flags in [
                path,
                path | libc::O_NOFOLLOW,
                libc::O_RDONLY | libc::O_CLOEXEC,
            ] {
                let kernel = id(open_how(at, name, flags, resolve, Resolver::Openat2));
                let walk = id(open_how(at, name, flags, resolve, Resolver::Walk));
                // `d/../g`: the kernel allows a `..` that stays beneath; the
                // walk refuses every `..` (the policy never passes one on).
                if name == c"d/../g" {
                    assert_eq!(walk, Err(Some(libc::EXDEV)));
                    continue;
                }
                assert_eq!(walk, kernel, "{name:?} with flags {flags:#o}");
            }
        }
    }

    #[test]
    fn a_fifo_swapped_onto_the_name_after_resolution_is_never_opened() {
        let t = Tree::new("fifoswap");
        t.file(b"f", b"regular");
        let fifo = t.base.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        sys::mkfifo(&c, 0o644).unwrap();
        // A writer blocked opening the FIFO: any reader's open wakes it.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            tx.send(PathBuf::from("/proc").join(me)).unwrap();
            drop(std::fs::OpenOptions::new().write(true).open(&path));
        });
        let task = rx.recv().unwrap();
        let start = std::time::Instant::now();
        while !asleep_in_openat(&task) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the writer never blocked"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // A renamer swaps the FIFO onto the name right after its resolution.
        let (from, to) = (fifo.clone(), t.root.join("f"));
        REOPEN_WINDOW.with(|w| {
            *w.borrow_mut() = Some(Box::new(move || std::fs::rename(from, to).unwrap()));
        });
        let root = t.open(false, false);
        let got = got(&root, b"f");
        assert!(got == "7" || got == "not a regular file", "{got}");
        let still = asleep_in_openat(&task);
        // Release the writer ourselves.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(t.root.join("f"))
            .unwrap();
        writer.join().unwrap();
        drop(reader);
        assert!(
            still,
            "the server opened the FIFO for reading (its writer woke)"
        );
    }

    /// A temporary tree: `<base>/root` is served, `<base>/outside` is not.
    struct Tree {
        base: PathBuf,
        root: PathBuf,
    }

    impl Tree {
        fn new(tag: &str) -> Tree {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = format!("iocomp-path-{}-{tag}-{n}", std::process::id());
            let base = std::env::temp_dir().join(dir);
            let root = base.join("root");
            std::fs::create_dir_all(&root).unwrap();
            std::fs::write(base.join("outside"), b"secret").unwrap();
            Tree { base, root }
        }

        fn file(&self, rel: &[u8], content: &[u8]) {
            let path = self.root.join(OsStr::from_bytes(rel));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }

        fn link(&self, target: &str, rel: &str) {
            symlink(target, self.root.join(rel)).unwrap();
        }

        fn open(&self, hidden: bool, no_symlinks: bool) -> Root {
            let opts = PathOptions {
                hidden,
                no_symlinks,
                ..PathOptions::default()
            };
            Root::open(&self.root, opts).unwrap()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    /// The length served for `name`, or the reason it was refused.
    fn got(root: &Root, name: &[u8]) -> String {
        match root.open_file(name) {
            Ok(opened) => opened.len.to_string(),
            Err(err) => err.reason().to_string(),
        }
    }

    /// Checks `name=outcome` pairs (separated by spaces; `_` in a reason stands for a space).
    fn check(root: &Root, cases: &str) {
        for case in cases.split_whitespace() {
            let (name, want) = case.rsplit_once('=').unwrap();
            let got = got(root, name.as_bytes());
            assert_eq!(got, want.replace('_', " "), "name {name:?}");
        }
    }

    #[test]
    fn name_rules() {
        let t = Tree::new("names");
        t.file(b"a", b"hello");
        t.file(b"empty", b"");
        t.file(b"d/b", b"xyz");
        t.file(b"a..b", b"12");
        t.file(b".secret", b"abc");
        t.file(b".dir/f", b"abcd");
        t.file(b"caf\xe9", b"coffee");
        let root = t.open(false, false);
        check(&root, "a=5 empty=0 d/b=3 a..b=2");
        check(&root, "nonexistent=not_found a/b=not_found");
        check(&root, "/a=5 //a=5 ./a=5 d/./b=3 d//b=3 /./d/b=3");
        // A file named as a directory is not found (nginx, lighttpd).
        check(
            &root,
            "/./d/b/=not_found a/=not_found a/.=not_found d/b//.=not_found",
        );
        check(&root, "/=bad_name //=bad_name .=bad_name");
        check(&root, "./=bad_name /./.=bad_name");
        check(&root, "..=forbidden ../outside=forbidden");
        check(&root, "d/../d/b=forbidden ../../x=forbidden");
        check(&root, "d/..=forbidden /../x=forbidden d/b/..=forbidden");
        check(&root, "..a=forbidden .nonexistent=forbidden");
        check(&root, ".secret=forbidden .dir/f=forbidden d/.b=forbidden");
        for name in [&b""[..], b"a\0", b"\0a", b"../\0", b"/\0/"] {
            assert_eq!(got(&root, name), "bad name");
        }
        assert_eq!(got(&root, &[b'x'; 5000]), "bad name");
        assert_eq!(got(&root, &[b'x'; 300]), "bad name");
        assert_eq!(got(&root, &[b'x'; 255]), "not found");
        assert_eq!(got(&root, b"caf\xe9"), "6");
        assert_eq!(got(&root, b"caf\xc3\xa9"), "not found");

        let opened = root.open_file(b"a").unwrap();
        let mut content = String::new();
        io::Read::read_to_string(&mut &*opened.file, &mut content).unwrap();
        assert_eq!(content, "hello");
        let flags = sys::status_flags(opened.file.as_fd()).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0);

        let root = t.open(true, false);
        assert!(root.options().hidden);
        check(&root, ".secret=3 .dir/f=4 ..=forbidden");
        check(&root, ".nonexistent=not_found ..a=not_found");
    }

    #[test]
    fn symlinks() {
        let t = Tree::new("symlinks");
        t.file(b"target", b"12345");
        t.file(b"d/f", b"12");
        t.link("/etc/hostname", "abs");
        t.link("../outside", "rel");
        t.link("..", "up");
        t.link("../../outside", "d/rel2");
        t.link("../target", "d/up");
        t.link("target", "ln");
        t.link("d", "dl");
        t.link("missing", "dangling");
        let root = t.open(false, false);
        check(&root, "abs=forbidden rel=forbidden");
        check(&root, "d/rel2=forbidden up/outside=forbidden");
        check(&root, "ln=5 dl/f=2 d/up=5 dangling=not_found");
        t.file(b".hid/f", b"1234");
        t.file(b".h", b"123");
        t.link(".h", "toh");
        t.link(".hid", "tohid");
        t.link("d/../.h", "via");
        t.link("./d/./../ln", "dots");
        t.link("lp2", "lp1");
        t.link("lp1", "lp2");
        t.link("target/", "slash");
        t.link("d/", "dslash");
        let root = t.open(false, false);
        check(&root, "toh=forbidden tohid/f=forbidden via=forbidden");
        check(&root, "dots=5 lp1=forbidden slash=not_found dslash/f=2");
        assert!(matches!(
            root.open_entry(b"tohid"),
            Err(OpenError::Forbidden)
        ));
        assert!(matches!(
            root.open_entry(b"tohid/"),
            Err(OpenError::Forbidden)
        ));
        assert!(root.open_entry(b"dl").unwrap().meta.is_dir());
        assert!(
            root.open_entry(b"up").is_err(),
            "a link to the root's parent"
        );
        let root = t.open(true, false);
        check(&root, "toh=3 tohid/f=4 via=3 dots=5");
        let root = t.open(false, true);
        assert!(root.options().no_symlinks);
        check(&root, "target=5 ln=forbidden dl/f=forbidden");
        check(&root, "d/up=forbidden abs=forbidden");
    }

    #[test]
    fn non_regular_files() {
        let t = Tree::new("special");
        t.file(b"d/f", b"");
        let root = t.open(false, false);
        check(&root, "d=not_a_regular_file d/=not_a_regular_file");
        check(&root, "d/f/g=not_found");
        let _sock = std::os::unix::net::UnixListener::bind(t.root.join("sock")).unwrap();
        check(&root, "sock=not_a_regular_file");

        let fifo = CString::new(t.root.join("fifo").as_os_str().as_bytes()).unwrap();
        sys::mkfifo(&fifo, 0o644).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(got(&root, b"fifo")));
        let res = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(res.expect("FIFO open blocked"), "not a regular file");
    }

    #[test]
    fn root_must_be_a_directory() {
        let t = Tree::new("rootdir");
        let opts = PathOptions::default();
        assert!(Root::open(&t.base.join("outside"), opts).is_err());
        assert!(Root::open(&t.base.join("missing"), opts).is_err());
        assert!(Root::open(&t.base, opts).is_ok());
    }

    #[test]
    fn reasons() {
        assert_eq!(OpenError::NotFound.reason(), "not found");
        assert_eq!(OpenError::Forbidden.reason(), "forbidden");
        assert_eq!(OpenError::NotRegular.reason(), "not a regular file");
        assert_eq!(OpenError::BadName.reason(), "bad name");
        let io = OpenError::Io(io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(io.reason(), "I/O error");
        assert_eq!(io.to_string(), "I/O error");
        assert!(std::error::Error::source(&io).is_some());
        assert_eq!(OpenError::Forbidden.to_string(), "forbidden");
    }

    // EACCES -> Forbidden is not tested: the tests run as root, which ignores
    // permission bits, so no unreadable file can be made honestly.

    #[test]
    fn open_entry_accepts_directories_and_the_root_but_open_file_does_not() {
        let t = Tree::new("entry");
        t.file(b"sub/f.txt", b"abc");
        let root = t.open(false, false);
        for name in [&b""[..], b"/", b".", b"//./"] {
            let e = root.open_entry(name).unwrap();
            assert!(e.meta.is_dir(), "{name:?}");
            assert!(
                matches!(root.open_file(name), Err(OpenError::BadName)),
                "{name:?}"
            );
        }
        assert!(root.open_entry(b"sub").unwrap().meta.is_dir());
        assert!(matches!(root.open_file(b"sub"), Err(OpenError::NotRegular)));
        let f = root.open_entry(b"sub/f.txt").unwrap();
        assert!(f.meta.is_file());
        assert_eq!(f.len, 3);
        assert!(matches!(
            root.open_entry(b"../x"),
            Err(OpenError::Forbidden)
        ));
    }

    #[test]
    fn a_name_normalized_once_opens_and_probes_as_the_raw_name_does() {
        let t = Tree::new("normal");
        t.file(b"sub/f.txt", b"abc");
        t.file(b"sub/f.txt.gz", b"z");
        for root in [
            t.open(false, false),
            t.open(false, false).with_cache(8, Duration::from_secs(60)),
        ] {
            for _ in 0..2 {
                let n = root.normalize_name(b"/sub//./f.txt").unwrap();
                let f = root.open_entry_normalized(&n).unwrap();
                assert!(f.meta.is_file());
                assert_eq!(f.len, 3);
                let suffixes = [".br", ".gz"];
                assert_eq!(root.sibling_files_of(b"/sub//./f.txt", &n, &suffixes), 0b10);
                assert_eq!(root.sibling_files(b"/sub//./f.txt", &suffixes), 0b10);
            }
            assert!(matches!(
                root.normalize_name(b"sub/../f.txt"),
                Err(OpenError::Forbidden)
            ));
            assert!(matches!(
                root.normalize_name(b"sub/.hidden"),
                Err(OpenError::Forbidden)
            ));
            let d = root.normalize_name(b"sub/f.txt/").unwrap();
            assert!(matches!(
                root.open_entry_normalized(&d),
                Err(OpenError::NotFound)
            ));
        }
    }

    #[test]
    fn cached_files_are_reused_until_the_name_leads_elsewhere() {
        let t = Tree::new("cache");
        t.file(b"a.txt", b"one");
        let outside = t.base.join("outside-secret");
        std::fs::write(&outside, b"SECRET").unwrap();
        let root = t.open(false, false).with_cache(8, Duration::from_secs(60));
        let first = root.open_file(b"a.txt").unwrap();
        let again = root.open_file(b"/a.txt").unwrap();
        assert!(
            Arc::ptr_eq(&first.file, &again.file),
            "a hit shares the open file"
        );
        assert_eq!(root.cached_files(), 1);
        // Replaced by rename: a new inode, so a miss and the new content.
        std::fs::write(t.root.join("a.new"), b"two!").unwrap();
        std::fs::rename(t.root.join("a.new"), t.root.join("a.txt")).unwrap();
        let replaced = root.open_file(b"a.txt").unwrap();
        assert!(!Arc::ptr_eq(&first.file, &replaced.file));
        assert_eq!(replaced.len, 4);
        // Truncated in place: the size differs, so a miss.
        std::fs::OpenOptions::new()
            .write(true)
            .open(t.root.join("a.txt"))
            .unwrap()
            .set_len(1)
            .unwrap();
        assert_eq!(root.open_file(b"a.txt").unwrap().len, 1);
        // A symlink swapped to point outside: never served from the cache.
        t.link("a.txt", "l");
        assert_eq!(root.open_file(b"l").unwrap().len, 1);
        std::fs::remove_file(t.root.join("l")).unwrap();
        symlink(&outside, t.root.join("l")).unwrap();
        assert!(matches!(root.open_file(b"l"), Err(OpenError::Forbidden)));
    }

    #[test]
    fn a_cached_name_whose_directory_became_a_link_to_a_dot_directory_is_refused() {
        let t = Tree::new("revcache");
        t.file(b"docs/f", b"doc");
        let root = t.open(false, false).with_cache(8, Duration::from_secs(60));
        assert_eq!(got(&root, b"docs/f"), "3");
        // The directory moves into a dot-directory, a link takes its place.
        std::fs::rename(t.root.join("docs"), t.root.join(".private")).unwrap();
        t.link(".private", "docs");
        let uncached = t.open(false, false);
        assert_eq!(
            got(&uncached, b"docs/f"),
            "forbidden",
            "the policy refuses it"
        );
        assert_eq!(got(&root, b"docs/f"), "forbidden", "the cache must too");
    }

    #[test]
    fn a_cached_name_whose_directory_became_a_link_outside_the_root_is_refused() {
        let t = Tree::new("revcache2");
        t.file(b"docs/f", b"doc");
        let root = t.open(false, false).with_cache(8, Duration::from_secs(60));
        assert_eq!(got(&root, b"docs/f"), "3");
        std::fs::rename(t.root.join("docs"), t.base.join("moved")).unwrap();
        t.link("../moved", "docs");
        assert_eq!(got(&root, b"docs/f"), "forbidden", "outside the root");
    }

    #[test]
    fn a_cached_name_whose_directory_became_a_link_is_refused_with_no_symlinks() {
        let t = Tree::new("revcache3");
        t.file(b"docs/f", b"doc");
        let root = t.open(false, true).with_cache(8, Duration::from_secs(60));
        assert_eq!(got(&root, b"docs/f"), "3");
        std::fs::rename(t.root.join("docs"), t.root.join("real")).unwrap();
        t.link("real", "docs");
        assert_eq!(got(&root, b"docs/f"), "forbidden", "--no-symlinks");
    }

    #[test]
    fn the_cache_is_bounded_and_pruned() {
        let t = Tree::new("cachebound");
        for i in 0..64 {
            t.file(format!("f{i}").as_bytes(), b"x");
        }
        let root = t
            .open(false, false)
            .with_cache(16, Duration::from_millis(50));
        for i in 0..64 {
            root.open_file(format!("f{i}").as_bytes()).unwrap();
        }
        assert!(root.cached_files() <= 16, "{} open", root.cached_files());
        std::thread::sleep(Duration::from_millis(120));
        root.prune_cache();
        assert_eq!(root.cached_files(), 0, "idle entries are closed");
        let no_cache = t.open(false, false);
        no_cache.open_file(b"f1").unwrap();
        assert_eq!(no_cache.cached_files(), 0);
    }
}
