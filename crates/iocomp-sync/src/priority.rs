//! Thread priorities: `SetThreadPriority`, `GetThreadPriority`, on Linux per-thread nice values.

use crate::error::PriorityError;
use crate::sys;

/// A Win32 thread priority level (`THREAD_PRIORITY_*`), mapped to a Linux nice value.
///
/// Linux keeps a nice value per thread (`setpriority(PRIO_PROCESS, tid, ..)` changes that one thread, see
/// `setpriority(2)`, NOTES), which the normal scheduler (`SCHED_OTHER`) turns into a CPU share: each step of nice is
/// about 10% of CPU time against a competing thread. The seven Win32 levels map onto it as follows:
///
/// | Win32 | value | [`Priority`] | nice |
/// |---|---|---|---|
/// | `THREAD_PRIORITY_IDLE` | -15 | [`Idle`](Priority::Idle) | 19 |
/// | `THREAD_PRIORITY_LOWEST` | -2 | [`Lowest`](Priority::Lowest) | 10 |
/// | `THREAD_PRIORITY_BELOW_NORMAL` | -1 | [`BelowNormal`](Priority::BelowNormal) | 5 |
/// | `THREAD_PRIORITY_NORMAL` | 0 | [`Normal`](Priority::Normal) | 0 |
/// | `THREAD_PRIORITY_ABOVE_NORMAL` | 1 | [`AboveNormal`](Priority::AboveNormal) | -5 |
/// | `THREAD_PRIORITY_HIGHEST` | 2 | [`Highest`](Priority::Highest) | -10 |
/// | `THREAD_PRIORITY_TIME_CRITICAL` | 15 | [`TimeCritical`](Priority::TimeCritical) | -20 |
///
/// What does not map:
/// - **Real-time classes.** `TIME_CRITICAL` is the highest *nice* level, not a real-time scheduling class:
///   `SCHED_FIFO`/`SCHED_RR` would let a spinning thread starve the machine, and need `CAP_SYS_NICE` anyway.
///   `REALTIME_PRIORITY_CLASS` and the other process priority classes are not offered.
/// - **Raising without privileges.** Lowering a nice value (any level above [`Normal`](Priority::Normal), and going
///   *back* to `Normal` after lowering a thread) needs `CAP_SYS_NICE` or `RLIMIT_NICE`; an unprivileged process gets
///   [`PriorityError::NotPermitted`] and nothing changes. Root may do everything.
/// - Priority boosts (`SetThreadPriorityBoost`) and background mode (`THREAD_MODE_BACKGROUND_BEGIN`) have no
///   counterpart.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// `THREAD_PRIORITY_IDLE` (-15): nice 19.
    Idle,
    /// `THREAD_PRIORITY_LOWEST` (-2): nice 10.
    Lowest,
    /// `THREAD_PRIORITY_BELOW_NORMAL` (-1): nice 5.
    BelowNormal,
    /// `THREAD_PRIORITY_NORMAL` (0): nice 0.
    Normal,
    /// `THREAD_PRIORITY_ABOVE_NORMAL` (1): nice -5.
    AboveNormal,
    /// `THREAD_PRIORITY_HIGHEST` (2): nice -10.
    Highest,
    /// `THREAD_PRIORITY_TIME_CRITICAL` (15): nice -20 (not a real-time class).
    TimeCritical,
}

impl Priority {
    /// Every level, lowest first.
    pub const ALL: [Priority; 7] = [
        Priority::Idle,
        Priority::Lowest,
        Priority::BelowNormal,
        Priority::Normal,
        Priority::AboveNormal,
        Priority::Highest,
        Priority::TimeCritical,
    ];

    /// The Win32 value (`THREAD_PRIORITY_*`).
    pub const fn win32(self) -> i32 {
        match self {
            Priority::Idle => -15,
            Priority::Lowest => -2,
            Priority::BelowNormal => -1,
            Priority::Normal => 0,
            Priority::AboveNormal => 1,
            Priority::Highest => 2,
            Priority::TimeCritical => 15,
        }
    }

    /// The level of a Win32 value, or `None` for a value that is not one of the seven.
    pub fn from_win32(value: i32) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.win32() == value)
    }

    /// The Linux nice value it maps to.
    pub const fn nice(self) -> i32 {
        match self {
            Priority::Idle => 19,
            Priority::Lowest => 10,
            Priority::BelowNormal => 5,
            Priority::Normal => 0,
            Priority::AboveNormal => -5,
            Priority::Highest => -10,
            Priority::TimeCritical => -20,
        }
    }

    /// The level whose nice value is closest to `nice` (ties go to the lower priority): how a nice value set by other
    /// means reads back.
    pub fn from_nice(nice: i32) -> Priority {
        let mut best = Priority::Idle;
        for p in Priority::ALL {
            if (p.nice() - nice).abs() < (best.nice() - nice).abs() {
                best = p;
            }
        }
        best
    }
}

/// Sets the calling thread's priority (`SetThreadPriority(GetCurrentThread(), ..)`): its nice value becomes
/// `priority.nice()`. Other threads are not affected; threads it creates afterwards inherit the value.
///
/// # Errors
/// [`PriorityError::NotPermitted`] when the new nice value is below the current one and the process lacks
/// `CAP_SYS_NICE` (and `RLIMIT_NICE` does not allow it); nothing changed. [`PriorityError::Os`] otherwise.
pub fn set_current_thread_priority(priority: Priority) -> Result<(), PriorityError> {
    set_tid_priority(sys::gettid(), priority)
}

/// Sets kernel thread `tid`'s nice value to `priority.nice()`.
pub(crate) fn set_tid_priority(tid: libc::pid_t, priority: Priority) -> Result<(), PriorityError> {
    let nice = priority.nice();
    sys::set_thread_nice(tid, nice).map_err(|e| match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => PriorityError::NotPermitted {
            requested: priority,
            nice,
        },
        Some(libc::ESRCH) => PriorityError::NoSuchThread,
        errno => PriorityError::Os {
            errno: errno.unwrap_or(libc::EIO),
        },
    })
}

/// The calling thread's nice value.
///
/// # Errors
/// [`PriorityError::Os`] if the kernel refuses to tell (not expected for the calling thread).
pub fn current_thread_nice() -> Result<i32, PriorityError> {
    tid_nice(sys::gettid())
}

/// Kernel thread `tid`'s nice value.
pub(crate) fn tid_nice(tid: libc::pid_t) -> Result<i32, PriorityError> {
    sys::thread_nice(tid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => PriorityError::NoSuchThread,
        errno => PriorityError::Os {
            errno: errno.unwrap_or(libc::EIO),
        },
    })
}

/// The calling thread's priority level (`GetThreadPriority(GetCurrentThread())`): [`Priority::from_nice`] of its nice
/// value, so a value set by other means reads as the nearest level.
///
/// # Errors
/// As [`current_thread_nice`].
pub fn current_thread_priority() -> Result<Priority, PriorityError> {
    current_thread_nice().map(Priority::from_nice)
}
