//! Every call into libc, and so every `unsafe` block of the crate: pidfds, `waitid`, `poll`, epoll, inotify, thread
//! nice values, and for named objects `flock`, `mmap`, robust process-shared pthread mutexes and futexes.
//! Each function is a safe wrapper that owns its file descriptors as [`OwnedFd`] and reports
//! failures as [`io::Error`]s; the rest of the crate stays safe code.
#![allow(unsafe_code)]
#![cfg_attr(loom, allow(dead_code, unused_imports))]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Turns a `-1` return into the thread's `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a descriptor a successful call just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful call that creates a descriptor, and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `pidfd_open(pid, 0)` (syscall 434): a descriptor that refers to the process, close-on-exec, readable once it exits.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and touches no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    let fd = check(libc::c_int::try_from(ret).unwrap_or(-1))?;
    Ok(owned(fd))
}

/// `waitid(P_PIDFD, fd, WEXITED | WNOWAIT | WNOHANG)`: the raw wait status (as `waitpid` reports it) of an exited
/// child, without reaping it; `Ok(None)` while it runs; `ECHILD` if it is not our child (or was reaped already).
pub(crate) fn waitid_pidfd_nowait(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value (and the "still running" answer of WNOHANG).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let id = libc::id_t::try_from(fd.as_raw_fd()).unwrap_or(libc::id_t::MAX);
    // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call; the descriptor is borrowed and open.
    check(unsafe {
        libc::waitid(
            libc::P_PIDFD,
            id,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
        )
    })?;
    // SAFETY: waitid filled `info` for SIGCHLD (or left it zeroed), for which si_pid and si_status are the fields set.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f, // CLD_KILLED
    }))
}

/// `poll(fd, POLLIN, 0)`: whether a read would not block right now (data, end of file, hang-up or error).
pub(crate) fn poll_readable(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd, and the count says one.
        match check(unsafe { libc::poll(&mut pfd, 1, 0) }) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if pfd.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: takes a flag, touches no memory of ours.
    check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(owned)
}

/// `epoll_ctl(op, fd)` for one-shot readability with `token` as the event's data. `EPOLL_CTL_ADD` registers,
/// `EPOLL_CTL_MOD` re-arms (and reports at once if the descriptor is readable already), `EPOLL_CTL_DEL` removes.
pub(crate) fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: libc::c_int,
    fd: BorrowedFd<'_>,
    token: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        u64: token,
    };
    // SAFETY: both descriptors are borrowed and open; `ev` is a valid epoll_event (ignored for EPOLL_CTL_DEL).
    check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) }).map(drop)
}

/// `epoll_wait(epoll, .., -1)`: blocks until at least one registered descriptor is ready; appends their tokens to
/// `tokens` (cleared first). An interrupted wait returns no tokens.
pub(crate) fn epoll_wait(epoll: BorrowedFd<'_>, tokens: &mut Vec<u64>) -> io::Result<()> {
    const MAX: usize = 64;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
    tokens.clear();
    // SAFETY: `events` has room for MAX entries, the count passed; the descriptor is borrowed and open.
    let n = match check(unsafe {
        libc::epoll_wait(
            epoll.as_raw_fd(),
            events.as_mut_ptr(),
            MAX as libc::c_int,
            -1,
        )
    }) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
        Err(e) => return Err(e),
    };
    let n = usize::try_from(n).unwrap_or(0).min(MAX);
    tokens.extend(events[..n].iter().map(|e| e.u64));
    Ok(())
}

/// `inotify_init1(IN_NONBLOCK | IN_CLOEXEC)`.
pub(crate) fn inotify_init() -> io::Result<OwnedFd> {
    // SAFETY: takes flags, touches no memory of ours.
    check(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) }).map(owned)
}

/// `inotify_add_watch(fd, path, mask)`: the watch descriptor.
pub(crate) fn inotify_add_watch(fd: BorrowedFd<'_>, path: &Path, mask: u32) -> io::Result<i32> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the descriptor is borrowed and open.
    check(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) })
}

/// The calling thread's kernel id (`gettid`).
pub(crate) fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// The CPU the calling thread runs on (`sched_getcpu`: glibc reads it from the thread's rseq area or the vDSO, no
/// system call), or `u32::MAX` if it cannot tell. A hint only: the thread may move right after.
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(u32::MAX)
}

/// `setpriority(PRIO_PROCESS, tid, nice)`: on Linux the nice value is per thread, so this changes thread `tid` only.
pub(crate) fn set_thread_nice(tid: libc::pid_t, nice: i32) -> io::Result<()> {
    let who = libc::id_t::try_from(tid).unwrap_or(0);
    // SAFETY: takes integers, touches no memory of ours.
    check(unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) }).map(drop)
}

/// `getpriority(PRIO_PROCESS, tid)`: the nice value of thread `tid` (-1 is a valid answer, so errno tells errors).
pub(crate) fn thread_nice(tid: libc::pid_t) -> io::Result<i32> {
    let who = libc::id_t::try_from(tid).unwrap_or(0);
    // SAFETY: __errno_location returns the calling thread's errno, valid for the thread's lifetime; getpriority takes
    // integers. errno is cleared first because -1 is also a legitimate nice value.
    let (ret, errno) = unsafe {
        *libc::__errno_location() = 0;
        let ret = libc::getpriority(libc::PRIO_PROCESS, who);
        (ret, *libc::__errno_location())
    };
    if ret == -1 && errno != 0 {
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(ret)
}

// ---------------------------------------------------------------------------------------------------------------
// Named objects: flock, the shared-memory segment, robust process-shared pthread mutexes, futexes.
// ---------------------------------------------------------------------------------------------------------------

pub(crate) use named::*;

#[cfg(not(loom))]
mod named {
    use std::cell::UnsafeCell;
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::ptr::NonNull;
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    use super::check;

    /// `flock(fd, op)`, retried on `EINTR`. `Ok(false)` when `LOCK_NB` was given and the lock is held elsewhere.
    pub(crate) fn flock(file: &File, op: libc::c_int) -> io::Result<bool> {
        loop {
            // SAFETY: takes a descriptor borrowed from an open `File` and a flag; touches no memory of ours.
            match check(unsafe { libc::flock(file.as_raw_fd(), op) }) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// `linkat(AT_FDCWD, src, AT_FDCWD, dst, AT_SYMLINK_FOLLOW)`: like `link(2)` (fails with `EEXIST` if `dst`
    /// exists), but following a symbolic link at `src` — so that `/proc/thread-self/fd/N` links the open file itself,
    /// the one way an unprivileged process can give an `O_TMPFILE` file a name (open(2)).
    pub(crate) fn link_following(src: &std::path::Path, dst: &std::path::Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let src = std::ffi::CString::new(src.as_os_str().as_bytes())?;
        let dst = std::ffi::CString::new(dst.as_os_str().as_bytes())?;
        // SAFETY: both are valid NUL-terminated paths that outlive the call; linkat writes no memory of ours.
        check(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                src.as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        })
        .map(drop)
    }

    /// The calling process's id.
    pub(crate) fn getpid() -> u32 {
        // SAFETY: getpid has no arguments and cannot fail.
        let pid = unsafe { libc::getpid() };
        u32::try_from(pid).unwrap_or(0)
    }

    /// This process's random 64-bit identity for named-mutex ownership (never 0). Unlike a pid it is unique across
    /// pid namespaces (two containers sharing `/dev/shm`) and never reused; a forked child makes its own.
    pub(crate) fn process_token() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static TOKEN: AtomicU64 = AtomicU64::new(0);
        static TOKEN_PID: AtomicU32 = AtomicU32::new(0);
        let pid = getpid();
        let t = TOKEN.load(Ordering::Acquire);
        if t != 0 && TOKEN_PID.load(Ordering::Acquire) == pid {
            return t;
        }
        let mut bytes = [0u8; 8];
        let mut filled = 0;
        while filled < bytes.len() {
            // SAFETY: writes at most `bytes.len() - filled` bytes into the unfilled tail of `bytes`, which we own.
            let n = unsafe {
                libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
            };
            if n > 0 {
                filled += n as usize;
            } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // No getrandom (pre-3.17 kernel): fall back on the clock, the pid and the address space layout.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                let aslr = &TOKEN as *const AtomicU64 as u64;
                bytes = (now ^ aslr.rotate_left(29) ^ (u64::from(pid) << 40)).to_ne_bytes();
                break;
            }
        }
        let fresh = u64::from_ne_bytes(bytes).max(1);
        // Racing first callers may each store a token; the pid store orders after, and all agree once it settles
        // (ownership is only ever recorded by a thread holding `own`, which reads the token afterwards).
        match TOKEN.compare_exchange(t, fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                TOKEN_PID.store(pid, Ordering::Release);
                fresh
            }
            Err(now) => now,
        }
    }

    /// The real user id of the calling process.
    pub(crate) fn getuid() -> u32 {
        // SAFETY: getuid has no arguments and cannot fail.
        unsafe { libc::getuid() }
    }

    /// A robust, process-shared pthread mutex living in a shared segment. When the thread holding it dies (alone or
    /// with its process, SIGKILL included), the kernel walks that thread's robust list, marks the futex word
    /// `FUTEX_OWNER_DIED` and wakes one waiter; the next locker gets `EOWNERDEAD`.
    #[repr(transparent)]
    pub(crate) struct RobustMutex(UnsafeCell<libc::pthread_mutex_t>);

    // SAFETY: a process-shared pthread mutex is made to be used from any thread (and any process); every access goes
    // through the pthread functions, which synchronise internally.
    unsafe impl Sync for RobustMutex {}
    // SAFETY: as above; the mutex has no thread affinity except ownership, which pthread tracks itself.
    unsafe impl Send for RobustMutex {}

    /// What a `try_lock` found.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum TryLock {
        /// The caller now holds the mutex.
        Acquired,
        /// The caller now holds the mutex, whose previous holder died holding it; it has been made consistent again.
        OwnerDied,
        /// Someone else holds it.
        Busy,
    }

    /// glibc's futex word of a pthread mutex: bit 31 `FUTEX_WAITERS`, bit 30 `FUTEX_OWNER_DIED`, the rest the owner's
    /// kernel thread id.
    pub(crate) const FUTEX_WAITERS: u32 = 0x8000_0000;
    /// See [`FUTEX_WAITERS`].
    pub(crate) const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
    /// See [`FUTEX_WAITERS`].
    pub(crate) const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

    impl RobustMutex {
        /// Initialises the mutex in place: process-shared, robust. Only for a segment nobody else can see yet.
        fn init(&self) -> io::Result<()> {
            // SAFETY: `attr` is initialised by pthread_mutexattr_init before any other use and destroyed after; the
            // mutex storage is valid, writable, suitably aligned (repr(C) field of the mapped segment) and not yet
            // visible to any other thread or process, so initialising it cannot race.
            unsafe {
                let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
                let r = libc::pthread_mutexattr_init(&mut attr);
                if r != 0 {
                    return Err(io::Error::from_raw_os_error(r));
                }
                let mut r =
                    libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
                if r == 0 {
                    r = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
                }
                if r == 0 {
                    r = libc::pthread_mutex_init(self.0.get(), &attr);
                }
                libc::pthread_mutexattr_destroy(&mut attr);
                if r != 0 {
                    return Err(io::Error::from_raw_os_error(r));
                }
            }
            Ok(())
        }

        /// Locks, blocking; returns whether the previous holder died holding it (the mutex is consistent again), or
        /// the error pthread reported (a corrupt or unrecoverable segment).
        pub(crate) fn lock(&self) -> io::Result<bool> {
            loop {
                // SAFETY: the mutex was initialised by `init` before the segment was published, and the mapping
                // outlives `self`.
                let r = unsafe { libc::pthread_mutex_lock(self.0.get()) };
                match r {
                    0 => return Ok(false),
                    libc::EOWNERDEAD => {
                        self.make_consistent();
                        return Ok(true);
                    }
                    libc::EINTR | libc::EAGAIN => std::thread::yield_now(),
                    // ENOTRECOVERABLE cannot happen while every EOWNERDEAD is made consistent at once (here or in
                    // try_lock); a corrupt segment could still say anything. Never spin on it.
                    e => return Err(io::Error::from_raw_os_error(e)),
                }
            }
        }

        /// Tries to lock without blocking.
        pub(crate) fn try_lock(&self) -> TryLock {
            // SAFETY: as in `lock`.
            let r = unsafe { libc::pthread_mutex_trylock(self.0.get()) };
            match r {
                0 => TryLock::Acquired,
                libc::EOWNERDEAD => {
                    self.make_consistent();
                    TryLock::OwnerDied
                }
                _ => TryLock::Busy,
            }
        }

        fn make_consistent(&self) {
            // SAFETY: called only by the holder right after EOWNERDEAD, as pthread_mutex_consistent requires.
            unsafe { libc::pthread_mutex_consistent(self.0.get()) };
        }

        /// Unlocks; the caller holds the mutex.
        pub(crate) fn unlock(&self) {
            // SAFETY: the mutex is initialised and held by the calling thread (every caller pairs this with a
            // successful lock/try_lock on the same thread).
            unsafe { libc::pthread_mutex_unlock(self.0.get()) };
        }

        /// The mutex's futex word, to wait on it in `futex_waitv` and to set `FUTEX_WAITERS` so that the kernel wakes
        /// a waiter when the holder dies.
        pub(crate) fn word(&self) -> &AtomicU32 {
            // SAFETY: in glibc's pthread_mutex_t (every Linux architecture) the first member is `int __lock`, the
            // futex word, 4-byte aligned; glibc and the kernel only ever access it atomically, so viewing it as an
            // AtomicU32 for the lifetime of `self` is sound.
            unsafe { &*self.0.get().cast::<AtomicU32>() }
        }
    }

    /// The layout of a named object's shared segment. Every field but the two mutexes is an atomic; the state fields
    /// are read and written only under `lock` (so `Relaxed` suffices for them), `seq` and `sleepers` also outside it.
    #[repr(C)]
    pub(crate) struct Shared {
        /// [`MAGIC`] once initialised (the segment is published only after that).
        pub(crate) magic: AtomicU32,
        /// 1 event, 2 mutex, 3 semaphore.
        pub(crate) kind: AtomicU32,
        /// Futex word: bumped under `lock` by every change that may let a waiter through.
        pub(crate) seq: AtomicU32,
        /// How many waits (all processes) may be asleep on `seq`; signals skip the wake system call when zero.
        pub(crate) sleepers: AtomicU32,
        /// Event: set (0/1). Semaphore: count. Mutex: recursion count.
        pub(crate) value: AtomicU32,
        /// Event: manual-reset (0/1). Semaphore: maximum. Mutex: abandoned (0/1).
        pub(crate) param: AtomicU32,
        /// Event: pulse generation.
        pub(crate) pulse_gen: AtomicU32,
        /// Event: how many waiters the last pulse may still release.
        pub(crate) pulse_tokens: AtomicU32,
        /// Mutex: owning process (0 when unowned).
        pub(crate) owner_pid: AtomicU32,
        /// Mutex: owning kernel thread id (0 when unowned).
        pub(crate) owner_tid: AtomicU32,
        /// Mutex: the owning process's [`process_token`] (0 when unowned).
        pub(crate) owner_token: std::sync::atomic::AtomicU64,
        /// The state lock.
        pub(crate) lock: RobustMutex,
        /// Mutex: held by the owning thread for as long as it owns the mutex; its robust-futex death is abandonment.
        pub(crate) own: RobustMutex,
    }

    /// The segment's size in bytes.
    pub(crate) const SEGMENT_SIZE: usize = std::mem::size_of::<Shared>();
    /// The layout version of [`Shared`]; bump it with every change to the layout or its meaning.
    const LAYOUT_VERSION: u32 = 2;
    /// The initialised marker: a constant folded with the layout version and size, so that builds with another
    /// layout (or another pthread_mutex_t size) see each other's segments as corrupt instead of misreading them.
    pub(crate) const MAGIC: u32 = 0x1c05_7a9e ^ (LAYOUT_VERSION << 24) ^ (SEGMENT_SIZE as u32);

    /// A shared mapping of one segment file.
    pub(crate) struct Segment {
        ptr: NonNull<Shared>,
        /// Never unmap (see [`Segment::keep_mapped`]).
        keep: std::sync::atomic::AtomicBool,
    }

    // SAFETY: the mapping is plain shared memory holding only atomics and process-shared mutexes; it is unmapped
    // once, by Drop, when no reference to it can remain.
    unsafe impl Send for Segment {}
    // SAFETY: see Send; all access through `&Shared` is by atomics or pthread calls.
    unsafe impl Sync for Segment {}

    impl Segment {
        /// Maps `file`, which must be exactly [`SEGMENT_SIZE`] bytes long (checked).
        pub(crate) fn map(file: &File) -> io::Result<Segment> {
            let len = file.metadata()?.len();
            if len != SEGMENT_SIZE as u64 {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            // SAFETY: a fresh shared mapping of a descriptor we hold; the kernel picks the address. The file is
            // SEGMENT_SIZE long (checked above; segment files are never truncated), so no access faults.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    SEGMENT_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let ptr = NonNull::new(p.cast::<Shared>()).ok_or_else(io::Error::last_os_error)?;
            Ok(Segment {
                ptr,
                keep: std::sync::atomic::AtomicBool::new(false),
            })
        }

        /// Leaves the mapping in place when `self` is dropped (for the rest of the process's life).
        pub(crate) fn keep_mapped(&self) {
            self.keep.store(true, std::sync::atomic::Ordering::Relaxed);
        }

        /// Initialises the two mutexes of a fresh (zero-filled) segment that nobody else can see yet.
        pub(crate) fn init_mutexes(&self) -> io::Result<()> {
            self.lock.init()?;
            self.own.init()
        }
    }

    impl std::ops::Deref for Segment {
        type Target = Shared;
        fn deref(&self) -> &Shared {
            // SAFETY: `ptr` is a live, page-aligned mapping of SEGMENT_SIZE bytes for as long as `self` lives; Shared
            // is repr(C) of atomics and pthread mutexes, for which any bit pattern another process wrote is at worst
            // a wrong value, never undefined behaviour through these types.
            unsafe { self.ptr.as_ref() }
        }
    }

    impl Drop for Segment {
        fn drop(&mut self) {
            if self.keep.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            // SAFETY: the mapping was made by `map` with this length and no reference into it outlives `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), SEGMENT_SIZE) };
        }
    }

    /// `FUTEX_WAKE` of up to `n` waiters on `word`; `shared` for a word in shared memory (other processes).
    pub(crate) fn futex_wake(word: &AtomicU32, n: i32, shared: bool) {
        let op = if shared {
            libc::FUTEX_WAKE
        } else {
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG
        };
        // SAFETY: `word` is a valid, aligned u32 for the call; FUTEX_WAKE only uses it as a key.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), op, n, 0usize, 0usize, 0u32);
        }
    }

    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }

    const FUTEX2_SIZE_U32: u32 = 0x02;
    const FUTEX2_PRIVATE: u32 = 128;

    /// `futex_waitv` (Linux 5.16): sleeps until one of `words` is woken, one of them no longer holds its expected
    /// value, `deadline` passes, or a signal arrives — the caller re-checks in every case. Each entry is
    /// (word, expected, shared). At most 128 entries.
    pub(crate) fn futex_waitv(words: &[(&AtomicU32, u32, bool)], deadline: Option<Instant>) {
        let v: Vec<FutexWaitv> = words
            .iter()
            .map(|&(w, val, shared)| FutexWaitv {
                val: u64::from(val),
                uaddr: w.as_ptr() as u64,
                flags: FUTEX2_SIZE_U32 | if shared { 0 } else { FUTEX2_PRIVATE },
                reserved: 0,
            })
            .collect();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let tsp = match deadline {
            None => std::ptr::null_mut(),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // SAFETY: `ts` is a valid timespec to write.
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
                let nsec = ts.tv_nsec as u64 + u64::from(left.subsec_nanos());
                let secs = i64::try_from(left.as_secs()).unwrap_or(i64::MAX / 2);
                ts.tv_sec = ts
                    .tv_sec
                    .saturating_add(secs)
                    .saturating_add((nsec / 1_000_000_000) as i64);
                ts.tv_nsec = (nsec % 1_000_000_000) as i64;
                &mut ts as *mut libc::timespec
            }
        };
        // SAFETY: `v` holds `v.len()` valid futex_waitv entries pointing at live, aligned u32 words (borrowed for the
        // call); `tsp` is null or a valid absolute CLOCK_MONOTONIC timespec. Errors (EAGAIN, ETIMEDOUT, EINTR) only
        // mean "look again", which every caller does.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                v.as_ptr(),
                v.len() as libc::c_uint,
                0 as libc::c_uint,
                tsp,
                libc::CLOCK_MONOTONIC,
            )
        };
        if r < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN | libc::ETIMEDOUT | libc::EINTR) => {}
                // No futex_waitv (a kernel before 5.16: ENOSYS; a seccomp filter: ENOSYS or EPERM; anything else
                // unexpected): never spin. Sleep on the first word only, for at most POLL_FALLBACK, and let the
                // caller look again — correct (every wait re-checks), just slower to notice the other words.
                _ => futex_wait_fallback(words, deadline),
            }
        }
    }

    /// How long the fallback of [`futex_waitv`] sleeps at most before the caller looks again.
    const POLL_FALLBACK: std::time::Duration = std::time::Duration::from_millis(2);

    fn futex_wait_fallback(words: &[(&AtomicU32, u32, bool)], deadline: Option<Instant>) {
        let left = deadline.map_or(POLL_FALLBACK, |d| {
            d.saturating_duration_since(Instant::now())
                .min(POLL_FALLBACK)
        });
        let Some(&(word, val, shared)) = words.first() else {
            std::thread::sleep(left);
            return;
        };
        let op = if shared {
            libc::FUTEX_WAIT
        } else {
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG
        };
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `word` is a live, aligned u32 for the call; `ts` a valid relative timeout that outlives it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                op,
                val,
                &ts as *const libc::timespec,
                0usize,
                0u32,
            )
        };
        if r < 0
            && !matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EAGAIN | libc::ETIMEDOUT | libc::EINTR)
            )
        {
            // No futex at all: a plain bounded sleep still never spins.
            std::thread::sleep(left);
        }
    }
}

#[cfg(loom)]
mod named {}
