//! Typed errors. Each operation's error enum lists only what that operation can report.

use std::fmt;

/// Why a wait was refused. A refused wait has changed nothing.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitError {
    /// No objects to wait on (Win32: `nCount == 0` is invalid). Use
    /// [`sleep_alertable`](crate::sleep_alertable) to wait for APCs alone.
    Empty,
    /// The same object appears twice, at `first` and at `second` (the first repeat in index order). Win32 forbids
    /// copies of one handle in a wait.
    Duplicate {
        /// Index of the first occurrence.
        first: usize,
        /// Index of the repeat.
        second: usize,
    },
    /// The calling thread owns the mutex at `index` at the maximum recursion count (`u32::MAX`), so acquiring it
    /// once more is impossible.
    RecursionOverflow {
        /// Index of that mutex in the wait.
        index: usize,
    },
    /// An infinite, non-alertable wait that can never end: on the caller's own thread handle, which is signalled only
    /// when the caller has exited. Windows hangs for ever here; a finite timeout returns
    /// [`WaitResult::TimedOut`](crate::WaitResult::TimedOut) instead.
    WouldDeadlock,
    /// More named objects in one wait than `max` (a `futex_waitv` limit; Win32's whole limit is 64 objects).
    TooManyNamed {
        /// The most named objects one wait accepts.
        max: usize,
    },
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Empty => f.write_str("wait on an empty set of objects"),
            WaitError::Duplicate { first, second } => {
                write!(f, "object at index {first} appears again at index {second}")
            }
            WaitError::RecursionOverflow { index } => {
                write!(
                    f,
                    "mutex at index {index} is at its maximum recursion count"
                )
            }
            WaitError::WouldDeadlock => {
                f.write_str("infinite wait on the calling thread's own handle would never end")
            }
            WaitError::TooManyNamed { max } => {
                write!(f, "more than {max} named objects in one wait")
            }
        }
    }
}

impl std::error::Error for WaitError {}

/// Why [`Mutex::release`](crate::Mutex::release) failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MutexError {
    /// The calling thread does not own the mutex (`ERROR_NOT_OWNER`); nothing changed.
    NotOwner,
}

impl fmt::Display for MutexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MutexError::NotOwner => f.write_str("the calling thread does not own the mutex"),
        }
    }
}

impl std::error::Error for MutexError {}

/// Why [`signal_and_wait`](crate::signal_and_wait) failed. Nothing was signalled, and no wait happened.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignalAndWaitError {
    /// Releasing the mutex failed: the calling thread does not own it (`ERROR_NOT_OWNER`).
    Mutex(MutexError),
    /// Releasing the semaphore failed: it is at its maximum (`ERROR_TOO_MANY_POSTS`).
    Semaphore(SemaphoreError),
    /// The wait was refused before anything was signalled.
    Wait(WaitError),
}

impl From<WaitError> for SignalAndWaitError {
    fn from(e: WaitError) -> Self {
        SignalAndWaitError::Wait(e)
    }
}

impl fmt::Display for SignalAndWaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalAndWaitError::Mutex(e) => write!(f, "signal failed: {e}"),
            SignalAndWaitError::Semaphore(e) => write!(f, "signal failed: {e}"),
            SignalAndWaitError::Wait(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SignalAndWaitError {}

/// Why a [`Semaphore`](crate::Semaphore) could not be created or released. A failed release changed nothing.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SemaphoreError {
    /// `max` was 0 (Win32 requires a maximum count above zero).
    ZeroMaximum,
    /// The initial count exceeds the maximum.
    InitialAboveMaximum {
        /// The requested initial count.
        initial: u32,
        /// The requested maximum count.
        max: u32,
    },
    /// A release of 0 (Win32 requires a release count above zero).
    ZeroRelease,
    /// The release would take the count past the maximum (`ERROR_TOO_MANY_POSTS`).
    TooManyPosts {
        /// The count when the release was refused.
        count: u32,
        /// The maximum count.
        max: u32,
        /// The amount that was to be added.
        release: u32,
    },
}

impl fmt::Display for SemaphoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SemaphoreError::ZeroMaximum => {
                f.write_str("semaphore maximum count must be above zero")
            }
            SemaphoreError::InitialAboveMaximum { initial, max } => {
                write!(f, "initial count {initial} exceeds the maximum {max}")
            }
            SemaphoreError::ZeroRelease => {
                f.write_str("semaphore release count must be above zero")
            }
            SemaphoreError::TooManyPosts {
                count,
                max,
                release,
            } => write!(
                f,
                "releasing {release} to a semaphore at {count} would exceed its maximum {max}"
            ),
        }
    }
}

impl std::error::Error for SemaphoreError {}

/// Why [`Thread::queue_apc`](crate::Thread::queue_apc) failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApcError {
    /// The thread has exited; the APC was dropped without running.
    ThreadExited,
}

impl fmt::Display for ApcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApcError::ThreadExited => f.write_str("the thread has exited"),
        }
    }
}

impl std::error::Error for ApcError {}

/// Why a [`Process`](crate::Process) could not be opened.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessError {
    /// No process has this id (or it names a thread that is not a process's main thread).
    NoSuchProcess {
        /// The process id asked for.
        pid: u32,
    },
    /// [`Process::from_child`](crate::Process::from_child): the child was reaped already, so its pid may now belong
    /// to another process.
    NotAChild {
        /// The child's process id.
        pid: u32,
    },
    /// The kernel has no pidfds (Linux before 5.3).
    Unsupported,
    /// Another error of the operating system.
    Os {
        /// The `errno` value.
        errno: i32,
    },
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::NoSuchProcess { pid } => write!(f, "no process with id {pid}"),
            ProcessError::NotAChild { pid } => {
                write!(f, "process {pid} is not an unreaped child of this process")
            }
            ProcessError::Unsupported => f.write_str("this kernel has no pidfds"),
            ProcessError::Os { errno } => std::io::Error::from_raw_os_error(*errno).fmt(f),
        }
    }
}

impl std::error::Error for ProcessError {}

/// Why a [`ChangeNotification`](crate::ChangeNotification) or a [`Stdin`](crate::Stdin) object could not be created.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FdObjectError {
    /// The path does not exist (change notifications).
    NotFound,
    /// The path is not a directory (change notifications).
    NotADirectory,
    /// Standard input is closed (descriptor 0 is not open).
    NotOpen,
    /// A kernel limit was reached: inotify instances or watches (`/proc/sys/fs/inotify/max_user_*`), or descriptors.
    LimitReached {
        /// The `errno` value (`EMFILE`, `ENFILE`, `ENOSPC`, `ENOMEM`).
        errno: i32,
    },
    /// Another error of the operating system (`EACCES`, ...).
    Os {
        /// The `errno` value.
        errno: i32,
    },
}

impl FdObjectError {
    #[cfg(not(loom))]
    pub(crate) fn from_io(e: &std::io::Error) -> FdObjectError {
        match e.raw_os_error().unwrap_or(libc::EIO) {
            libc::ENOENT => FdObjectError::NotFound,
            libc::ENOTDIR => FdObjectError::NotADirectory,
            libc::EBADF => FdObjectError::NotOpen,
            errno @ (libc::EMFILE | libc::ENFILE | libc::ENOSPC | libc::ENOMEM) => {
                FdObjectError::LimitReached { errno }
            }
            errno => FdObjectError::Os { errno },
        }
    }
}

impl fmt::Display for FdObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdObjectError::NotFound => f.write_str("no such directory"),
            FdObjectError::NotADirectory => f.write_str("not a directory"),
            FdObjectError::NotOpen => f.write_str("standard input is not open"),
            FdObjectError::LimitReached { errno } => write!(
                f,
                "kernel limit reached: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            FdObjectError::Os { errno } => std::io::Error::from_raw_os_error(*errno).fmt(f),
        }
    }
}

impl std::error::Error for FdObjectError {}

/// Why a thread's priority could not be set or read.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PriorityError {
    /// Raising a thread's priority (lowering its nice value) needs `CAP_SYS_NICE` or a high enough `RLIMIT_NICE`;
    /// an unprivileged process can only lower its threads' priority. Nothing changed.
    NotPermitted {
        /// The priority asked for.
        requested: crate::Priority,
        /// The nice value it maps to.
        nice: i32,
    },
    /// The thread has exited, or has not started yet.
    NoSuchThread,
    /// Another error of the operating system.
    Os {
        /// The `errno` value.
        errno: i32,
    },
}

impl fmt::Display for PriorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriorityError::NotPermitted { requested, nice } => write!(
                f,
                "not permitted to raise the thread to {requested:?} (nice {nice}) without CAP_SYS_NICE"
            ),
            PriorityError::NoSuchThread => f.write_str("no such thread"),
            PriorityError::Os { errno } => std::io::Error::from_raw_os_error(*errno).fmt(f),
        }
    }
}

impl std::error::Error for PriorityError {}

/// Why a named object could not be created or opened (`CreateMutex`/`OpenMutex` and friends with a name).
#[cfg(not(loom))]
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamedError {
    /// The name is empty (after a `Global\`/`Local\` prefix), or contains `/`, NUL or a further backslash
    /// (`ERROR_INVALID_NAME` / `ERROR_PATH_NOT_FOUND` on Windows).
    InvalidName,
    /// The name (after the prefix) is `len` bytes long, over the limit `max`.
    TooLong {
        /// The name's length in bytes.
        len: usize,
        /// The longest name accepted.
        max: usize,
    },
    /// `open_named`: no object has this name (`ERROR_FILE_NOT_FOUND`).
    NotFound,
    /// The name belongs to an object of another kind (`ERROR_INVALID_HANDLE`).
    WrongKind {
        /// The kind asked for.
        requested: crate::NamedKind,
        /// The kind the name belongs to.
        found: crate::NamedKind,
    },
    /// The per-user namespace directory (`$XDG_RUNTIME_DIR/iocomp-sync` or `/dev/shm/iocomp-sync-<uid>`) is not a
    /// private directory of this user (another user may have made it first).
    UnsafeNamespace,
    /// The object's shared segment is not one this library wrote (wrong size or marker).
    Corrupt,
    /// `create_named` for a semaphore with invalid counts.
    Semaphore(SemaphoreError),
    /// The system refused (`errno`).
    Os {
        /// The `errno` value.
        errno: i32,
    },
}

#[cfg(not(loom))]
impl fmt::Display for NamedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamedError::InvalidName => f.write_str("invalid object name"),
            NamedError::TooLong { len, max } => {
                write!(
                    f,
                    "object name is {len} bytes long, over the limit of {max}"
                )
            }
            NamedError::NotFound => f.write_str("no object has this name"),
            NamedError::WrongKind { requested, found } => {
                write!(f, "the name belongs to a {found:?}, not a {requested:?}")
            }
            NamedError::UnsafeNamespace => {
                f.write_str("the per-user object directory is not private to this user")
            }
            NamedError::Corrupt => f.write_str("the named object's shared segment is corrupt"),
            NamedError::Semaphore(e) => e.fmt(f),
            NamedError::Os { errno } => {
                write!(f, "{}", std::io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

#[cfg(not(loom))]
impl std::error::Error for NamedError {}
