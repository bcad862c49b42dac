//! Waitable threads: `CreateThread`, `ResumeThread`, `GetExitCodeThread`, `QueueUserAPC`.

use std::fmt;
use std::io;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::apc::ApcQueue;
use crate::error::ApcError;
use crate::error::PriorityError;
use crate::local;
use crate::object::{Kind, Object, Tag};
use crate::priority::Priority;
use crate::sync::Arc;
use crate::wait::{self, sealed::Sealed, Waitable};

/// The exit code of a [`Thread::spawn`] thread whose closure panicked (the exit status Rust gives a panicking
/// process).
pub const PANIC_EXIT_CODE: u32 = 101;

/// A thread's id: unique in the process and never reused, unlike OS thread ids (`GetThreadId`, but 64-bit).
///
/// Mutex ownership is keyed by this id, so a new thread can never inherit a dead thread's mutexes (the bug class of
/// rust-lang/rust#123458).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ThreadId(NonZeroU64);

impl ThreadId {
    /// The next id from a process-wide counter (a u64 does not wrap in practice: 2⁶⁴ ids at a billion threads a
    /// second take 584 years).
    pub(crate) fn next() -> ThreadId {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ThreadId(NonZeroU64::MIN.saturating_add(NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    /// The id as a number (never 0).
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }

    /// The id with this number, if it is one (not 0).
    pub(crate) fn from_u64(n: u64) -> Option<ThreadId> {
        NonZeroU64::new(n).map(ThreadId)
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The part of a thread that other threads reach through a [`Thread`] handle.
pub(crate) struct ThreadShared {
    pub(crate) id: ThreadId,
    /// Signalled when the thread exits; holds the exit code.
    object: Arc<Object>,
    /// Manual-reset start gate: set unless the thread was created suspended and not yet resumed.
    gate: Arc<Object>,
    pub(crate) apc: ApcQueue,
    /// The kernel thread id once the thread runs (0 before), and a priority set
    /// before that, applied when it starts.
    kernel: std::sync::Mutex<(libc::pid_t, Option<Priority>)>,
}

impl ThreadShared {
    pub(crate) fn new(id: ThreadId, suspended: bool) -> Arc<ThreadShared> {
        Arc::new(ThreadShared {
            id,
            object: Object::new(Kind::Thread { exit_code: None }, Tag::Thread(id)),
            gate: Object::new(
                Kind::Event {
                    manual: true,
                    signaled: !suspended,
                },
                Tag::Event,
            ),
            apc: ApcQueue::new(),
            kernel: std::sync::Mutex::new((0, None)),
        })
    }

    /// Called on the thread itself: records its kernel id and applies a
    /// priority set before it started.
    pub(crate) fn started(&self) {
        let mut k = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
        k.0 = crate::sys::gettid();
        if let Some(p) = k.1.take() {
            let _ = crate::priority::set_tid_priority(k.0, p);
        }
    }

    /// The end of the exit sequence (after abandoning mutexes): drop queued APCs and refuse new ones, then store the
    /// exit code and signal the thread object.
    pub(crate) fn finish(&self, code: u32) {
        self.apc.close();
        self.object.signal(
            |kind| {
                if let Kind::Thread { exit_code } = kind {
                    *exit_code = Some(code);
                }
            },
            |_| {},
        );
    }
}

/// A handle to a thread: waitable (signalled once the thread has exited), with an exit code, an APC queue, and a
/// never-reused [`ThreadId`] (`CreateThread`'s `HANDLE`).
///
/// Handles exist for threads made by [`Thread::spawn`] and, through [`Thread::current`], for any other thread (the
/// main thread, `std::thread` threads). For a thread not made by `spawn` the exit code is 0, and the handle is
/// signalled when the thread's thread-locals are destroyed (the main thread's never are: the process ends first).
///
/// Cloning makes another handle to the same thread. Dropping handles does not affect the thread.
///
/// ```
/// use iocomp_sync::{Thread, WaitResult, Waitable};
///
/// let t = Thread::spawn_suspended(|| 7);
/// assert_eq!(t.exit_code(), None);           // not started: still active
/// assert_eq!(t.resume(), 1);                 // previous suspend count
/// assert_eq!(t.wait(None), Ok(WaitResult::Signaled(0)));
/// assert_eq!(t.exit_code(), Some(7));
/// ```
#[derive(Clone)]
pub struct Thread {
    shared: Arc<ThreadShared>,
}

/// Runs the exit sequence when the spawned closure ends, by return or by panic.
struct ExitOnDrop(u32);

impl Drop for ExitOnDrop {
    fn drop(&mut self) {
        local::exit_current(self.0);
    }
}

impl Thread {
    /// Starts a thread running `f`; its return value becomes the exit code (`CreateThread`).
    ///
    /// # Panics
    /// If the operating system cannot create a thread, as `std::thread::spawn` does; [`Thread::try_spawn`] returns
    /// the error instead.
    pub fn spawn<F>(f: F) -> Thread
    where
        F: FnOnce() -> u32 + Send + 'static,
    {
        match Thread::try_spawn(f, false) {
            Ok(thread) => thread,
            Err(e) => panic!("failed to spawn thread: {e}"),
        }
    }

    /// Creates a thread that does not run `f` until [`Thread::resume`] (`CREATE_SUSPENDED`).
    ///
    /// # Panics
    /// As [`Thread::spawn`].
    pub fn spawn_suspended<F>(f: F) -> Thread
    where
        F: FnOnce() -> u32 + Send + 'static,
    {
        match Thread::try_spawn(f, true) {
            Ok(thread) => thread,
            Err(e) => panic!("failed to spawn thread: {e}"),
        }
    }

    /// Starts a thread running `f`, suspended until [`Thread::resume`] if `suspended`.
    ///
    /// # Errors
    /// The operating system's error if it cannot create a thread.
    pub fn try_spawn<F>(f: F, suspended: bool) -> io::Result<Thread>
    where
        F: FnOnce() -> u32 + Send + 'static,
    {
        let shared = ThreadShared::new(ThreadId::next(), suspended);
        let child = Arc::clone(&shared);
        crate::sync::thread::spawn(move || {
            let gate = Arc::clone(&child.gate);
            child.started();
            local::install(child);
            let mut exit = ExitOnDrop(PANIC_EXIT_CODE);
            // One object that is not this thread: the wait cannot be refused.
            let _ = wait::wait_objects(&[&gate], wait::Mode::Any, None, false);
            exit.0 = f();
        })?;
        Ok(Thread { shared })
    }

    /// Lets a thread created by [`Thread::spawn_suspended`] start; returns the previous suspend count: 1 if it was
    /// suspended, 0 if it was already running (`ResumeThread`). Suspending a running thread is not offered: stopping
    /// a thread at an arbitrary point can leave any lock held.
    pub fn resume(&self) -> u32 {
        let was_running = self.shared.gate.signal(
            |kind| match kind {
                Kind::Event { signaled, .. } => std::mem::replace(signaled, true),
                _ => true,
            },
            |_| {},
        );
        u32::from(!was_running)
    }

    /// A handle to the calling thread (`GetCurrentThread`, but a real handle that other threads can use). Works on
    /// any thread.
    pub fn current() -> Thread {
        Thread {
            shared: local::current_shared(),
        }
    }

    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        self.shared.id
    }

    /// Sets this thread's priority (`SetThreadPriority(hThread, ..)`): its nice
    /// value becomes `priority.nice()` (see [`Priority`]). A thread that has not
    /// started yet (just spawned, or suspended) takes it when it starts.
    ///
    /// # Errors
    /// [`PriorityError::NotPermitted`] when raising above the current value
    /// without privileges (nothing changes); [`PriorityError::NoSuchThread`] once
    /// the thread has exited.
    pub fn set_priority(&self, priority: Priority) -> Result<(), PriorityError> {
        if self.exit_code().is_some() {
            return Err(PriorityError::NoSuchThread);
        }
        let mut k = self.shared.kernel.lock().unwrap_or_else(|e| e.into_inner());
        if k.0 == 0 {
            k.1 = Some(priority);
            return Ok(());
        }
        crate::priority::set_tid_priority(k.0, priority)
    }

    /// This thread's priority level (`GetThreadPriority(hThread)`): the nearest
    /// level to its nice value, or the one set for a thread not started yet.
    ///
    /// # Errors
    /// [`PriorityError::NoSuchThread`] once the thread has exited.
    pub fn priority(&self) -> Result<Priority, PriorityError> {
        if self.exit_code().is_some() {
            return Err(PriorityError::NoSuchThread);
        }
        let k = self.shared.kernel.lock().unwrap_or_else(|e| e.into_inner());
        match *k {
            (0, pending) => Ok(pending.unwrap_or(Priority::Normal)),
            (tid, _) => crate::priority::tid_nice(tid).map(Priority::from_nice),
        }
    }

    /// The exit code, or `None` while the thread is running or suspended (`GetExitCodeThread`, without its
    /// `STILL_ACTIVE` = 259 ambiguity).
    pub fn exit_code(&self) -> Option<u32> {
        self.shared.object.read(|kind| match *kind {
            Kind::Thread { exit_code } => exit_code,
            _ => None,
        })
    }

    /// Queues `f` to run on this thread during its next alertable wait (`QueueUserAPC`). APCs run in FIFO order; see
    /// [`wait_any_alertable`](crate::wait_any_alertable) and [`sleep_alertable`](crate::sleep_alertable). If the
    /// thread exits before an alertable wait, the APC is dropped unrun.
    ///
    /// # Errors
    /// [`ApcError::ThreadExited`] if the thread has exited; `f` is dropped.
    pub fn queue_apc<F>(&self, f: F) -> Result<(), ApcError>
    where
        F: FnOnce() + Send + 'static,
    {
        self.shared.apc.push(Box::new(f)).map_err(|rejected| {
            drop(rejected);
            ApcError::ThreadExited
        })
    }

    /// Test support: how many APCs are queued to this thread.
    #[doc(hidden)]
    pub fn pending_apcs(&self) -> usize {
        self.shared.apc.len()
    }
}

impl PartialEq for Thread {
    /// Two handles are equal when they refer to the same thread.
    fn eq(&self, other: &Thread) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Thread {}

impl fmt::Debug for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thread")
            .field("id", &self.id())
            .field("exit_code", &self.exit_code())
            .finish()
    }
}

impl Sealed for Thread {
    fn object(&self) -> &Arc<Object> {
        &self.shared.object
    }
}

impl Waitable for Thread {}
