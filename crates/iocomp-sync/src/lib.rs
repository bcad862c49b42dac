//! Win32 kernel-object waits for Linux, in userspace: events, mutexes, semaphores and threads that can be waited on
//! one at a time or many at once, with timeouts and APCs.
//!
//! # The model
//!
//! Every object is, at any moment, **signalled or not**, and a wait on it blocks until it is signalled — then
//! **acquires** it, which may change it back:
//!
//! | object | signalled when | a satisfied wait… |
//! |---|---|---|
//! | [`Event`], manual-reset | set | changes nothing: every waiter gets through until [`Event::reset`] |
//! | [`Event`], auto-reset | set | resets it: one waiter per set; sets do not add up |
//! | [`Semaphore`] | count > 0 | takes one from the count |
//! | [`Mutex`] | unowned, or owned by the waiter | makes the waiter its owner (count + 1) |
//! | [`Thread`] | the thread has exited | changes nothing |
//! | [`Process`] | the process has exited (pidfd readable) | changes nothing |
//! | [`ChangeNotification`] | a change in the directory matched its filter | changes nothing (re-armed by `next`/`reset`) |
//! | [`Stdin`] | a read of standard input would not block | changes nothing |
//!
//! [`wait_any`] waits for **one** of several objects and acquires exactly one, the lowest-indexed signalled one.
//! [`wait_all`] waits until **all** of them are signalled at the same moment and acquires them in one atomic step: it
//! never holds part of its set, so it cannot take part in a hold-and-wait deadlock (the dining philosophers). A wait
//! ends as a [`WaitResult`]: `Signaled(i)`, `Abandoned(i)` (you got a mutex whose owner died holding it), `TimedOut`,
//! or `Alerted`. Timeouts are `Option<Duration>`: `None` waits for ever, `Some(Duration::ZERO)` polls. Invalid waits —
//! an empty or duplicated set, an infinite wait on your own thread — are [`WaitError`]s, never hangs or panics.
//!
//! A mutex belongs to a thread. When a thread ends while owning mutexes, they are **abandoned**: the next waiter
//! acquires them and learns it. A [`Thread`] handle is itself waitable and carries the exit code. Each thread also has
//! an APC queue: [`Thread::queue_apc`] hands it a closure that runs on that thread the next time it waits
//! *alertably* ([`sleep_alertable`], [`wait_any_alertable`], [`wait_all_alertable`]), and that wait returns
//! `Alerted`.
//!
//! Objects are handles: cloning one gives another handle to the same object, which lives until the last handle (and
//! the last wait on it) is gone.
//!
//! ```
//! use iocomp_sync::{wait_all, wait_any, Event, Mutex, Semaphore, Thread, WaitResult, Waitable};
//! use std::time::Duration;
//!
//! let ready = Event::new(true, false); // manual-reset, not set
//! let slots = Semaphore::new(1, 1).unwrap();
//! let lock = Mutex::new(false);
//!
//! // A worker waits for the event, then takes the slot and the mutex together, atomically.
//! let worker = {
//!     let (ready, slots, lock) = (ready.clone(), slots.clone(), lock.clone());
//!     Thread::spawn(move || {
//!         ready.wait(None).unwrap();
//!         assert_eq!(wait_all(&[&slots, &lock], None), Ok(WaitResult::Signaled(0)));
//!         lock.release().unwrap();
//!         slots.release(1).unwrap();
//!         42 // the exit code
//!     })
//! };
//!
//! ready.set();
//! // The worker is signalled when it exits; the event is the lowest index but it stays set (manual-reset)…
//! assert_eq!(wait_any(&[&ready, &worker], Some(Duration::ZERO)), Ok(WaitResult::Signaled(0)));
//! // …so wait for the thread alone.
//! assert_eq!(worker.wait(Some(Duration::from_secs(10))), Ok(WaitResult::Signaled(0)));
//! assert_eq!(worker.exit_code(), Some(42));
//! assert_eq!(slots.count(), 1); // nothing leaked
//! ```
//!
//! # Named objects (shared between processes)
//!
//! [`Event::create_named`], [`Mutex::create_named`] and [`Semaphore::create_named`] create an object other processes
//! of the same user can open by name ([`Event::open_named`] and friends), returning it and whether it already existed
//! (`ERROR_ALREADY_EXISTS`). Names are case-sensitive; `Global\` and `Local\` prefixes are accepted as Windows code
//! writes them; a name with `/` or NUL, or over [`MAX_NAME_LEN`] bytes, or one that belongs to another kind of object,
//! is a [`NamedError`]. The state lives in a shared-memory segment (`$XDG_RUNTIME_DIR/iocomp-sync/` when that is private to
//! the user, else `/dev/shm/iocomp-sync-<uid>/`; a directory only the user can enter) and waits sleep on futexes. An object disappears when its last handle in the last process is
//! dropped; segments whose every process died are cleaned up by the next user of the namespace. A named mutex whose
//! owning thread exits or whose **process** dies (SIGKILL, crash) is abandoned: the next waiter, in any process, gets
//! [`WaitResult::Abandoned`] — the kernel's robust-futex list reports the death, so there is no pid guessing and no
//! polling. Example `single_instance` uses this to run one copy of a program at a time.
//!
//! Named objects mix with local ones in [`wait_any`] (lowest index wins, exactly one acquired) and in [`wait_all`],
//! which stays atomic over the whole set: it holds every local object lock and every named object's state lock
//! (named ones in name order, an order all processes share) while it checks and takes, and otherwise changes
//! nothing. A wait holds at most [`MAX_NAMED`] named objects. [`signal_and_wait`] accepts named objects too, atomically.
//! `named.rs` and `named_wait.rs` explain the protocol.
//!
//! # How it works
//!
//! The algorithm is that of Linux's ntsync driver (the kernel's implementation of these semantics for Wine), in
//! userspace on std locks and thread parking: each object has one lock over its state and its waiters; each wait
//! queues one record with one atomic slot; whoever wins the compare-and-swap of that slot consumes the objects for
//! the waiter and wakes it, so a wake-up is neither lost nor doubled, even when it races a timeout; wait-all runs
//! under one process-wide lock, which state changes take only when a wait-all is queued on the object.
//!
//! **Fast paths.** While no wait is queued on an event, semaphore or mutex, its state lives in one atomic word; a wait
//! that can be satisfied at once, a poll that cannot, and a signal (which then has nobody to wake) are a
//! compare-and-swap on it — no lock, no allocation — and a wait-all over such objects holds their words for a few
//! instructions to check and take them atomically. Taking an object's lock moves the state under the lock
//! ("inflates") and releasing it with no waiter left moves it back, so the slow path above is unchanged. Woken threads
//! are unparked after the waker unlocks, each thread reuses its wait record, and a wait on a set with a mutex
//! retries briefly before it queues. A single-object wait on an unset event or semaphore queues, then spins on its own
//! wait record before it parks, for a budget per object that adapts to what spinning caught or would have caught (up
//! to 25 µs when recent waits were woken that soon from another CPU; halved down to none when the waker ran on the
//! waiter's own CPU, or waits were longer): a ping-pong between threads on two CPUs then hands off with no futex call
//! on either side, and since the spinning wait is queued, every outcome (set then reset, pulse, queue order) is the
//! one a parked wait would get.
//! The loom models (`tests/loom.rs`) cover each fast path. `object.rs`
//! explains the locking, `wait.rs` the wait, `local.rs` thread exit and abandonment, `apc.rs` the APCs.
//!
//! # Win32 → iocomp-sync
//!
//! | Win32 | iocomp-sync |
//! |---|---|
//! | `CreateEvent(NULL, manual, initial, NULL)` | [`Event::new(manual, initial)`](Event::new) |
//! | `SetEvent` / `ResetEvent` / `PulseEvent` | [`Event::set`] / [`Event::reset`] / [`Event::pulse`] (return the previous state) |
//! | `CreateMutex(NULL, owned, NULL)` | [`Mutex::new(owned)`](Mutex::new) |
//! | `ReleaseMutex` (`ERROR_NOT_OWNER`) | [`Mutex::release`] → previous count, or [`MutexError::NotOwner`] |
//! | `CreateSemaphore(NULL, initial, max, NULL)` | [`Semaphore::new(initial, max)`](Semaphore::new) |
//! | `ReleaseSemaphore(h, n, &prev)` (`ERROR_TOO_MANY_POSTS`) | [`Semaphore::release(n)`](Semaphore::release) → previous count, or [`SemaphoreError::TooManyPosts`] |
//! | `CreateThread(.., 0, ..)` / `CREATE_SUSPENDED` | [`Thread::spawn`] / [`Thread::spawn_suspended`] (closure returns the exit code) |
//! | `ResumeThread` | [`Thread::resume`] → previous suspend count |
//! | `GetCurrentThread` / `GetThreadId` | [`Thread::current`] / [`Thread::id`] (never reused) |
//! | `GetExitCodeThread` (`STILL_ACTIVE`) | [`Thread::exit_code`] (`None` while running) |
//! | `ExitThread(code)` | return `code` from the closure |
//! | `CreateEvent`/`CreateMutex`/`CreateSemaphore` with a name, `GetLastError() == ERROR_ALREADY_EXISTS` | [`Event::create_named`], [`Mutex::create_named`], [`Semaphore::create_named`] → `(object, existed)` |
//! | `OpenEvent`/`OpenMutex`/`OpenSemaphore` | [`Event::open_named`], [`Mutex::open_named`], [`Semaphore::open_named`] |
//! | `SignalObjectAndWait(sig, h, ms, alertable)` | [`signal_and_wait`], [`signal_and_wait_alertable`] (atomic: the wait is queued before anyone sees the signal) |
//! | `WaitForSingleObject(h, ms)` | [`Waitable::wait(timeout)`](Waitable::wait) or [`wait_one`] |
//! | `WaitForMultipleObjects(n, hs, FALSE, ms)` | [`wait_any(&[..], timeout)`](wait_any) |
//! | `WaitForMultipleObjects(n, hs, TRUE, ms)` | [`wait_all(&[..], timeout)`](wait_all) |
//! | `WaitFor*ObjectEx(.., TRUE)` | [`Waitable::wait_alertable`], [`wait_any_alertable`], [`wait_all_alertable`] |
//! | `SleepEx(ms, TRUE)` | [`sleep_alertable(duration)`](sleep_alertable) → [`SleepResult`] |
//! | `QueueUserAPC(f, h, data)` | [`Thread::queue_apc(closure)`](Thread::queue_apc) |
//! | `WAIT_OBJECT_0 + i` / `WAIT_ABANDONED_0 + i` | [`WaitResult::Signaled(i)`](WaitResult::Signaled) / [`WaitResult::Abandoned(i)`](WaitResult::Abandoned) |
//! | `WAIT_TIMEOUT` / `WAIT_IO_COMPLETION` | [`WaitResult::TimedOut`] / [`WaitResult::Alerted`] |
//! | `WAIT_FAILED` | `Err(`[`WaitError`]`)` |
//! | `INFINITE` / `0` ms | `None` / `Some(Duration::ZERO)` |
//! | `DuplicateHandle` / `CloseHandle` | `clone()` / `drop` |
//! | `OpenProcess(SYNCHRONIZE, FALSE, pid)` | [`Process::open(pid)`](Process::open), [`Process::from_child(&child)`](Process::from_child) (a pidfd) |
//! | `GetExitCodeProcess` (`STILL_ACTIVE`) | [`Process::exit_code`] / [`Process::exit_status`] (children only; `None` while running) |
//! | `FindFirstChangeNotification(dir, subtree, filter)` | [`ChangeNotification::new(dir, subtree, filter)`](ChangeNotification::new) (inotify) |
//! | `FILE_NOTIFY_CHANGE_FILE_NAME` … `_LAST_WRITE` | [`ChangeFilter::FILE_NAME`] … [`ChangeFilter::LAST_WRITE`] |
//! | `FindNextChangeNotification` | [`ChangeNotification::next`] (or [`reset`](ChangeNotification::reset), which discards recorded changes) |
//! | `FindCloseChangeNotification` | `drop` |
//! | `GetStdHandle(STD_INPUT_HANDLE)` in a wait | [`Stdin::new()`](Stdin::new) (signalled while a read would not block) |
//! | `SetThreadPriority(GetCurrentThread(), p)` / `GetThreadPriority` | [`set_current_thread_priority`] / [`current_thread_priority`] ([`Priority`] ↔ nice values) |
//!
//! Differences from Win32, each deliberate: no 64-object limit; an infinite wait on one's own thread handle is
//! [`WaitError::WouldDeadlock`] instead of a hang; `SuspendThread` and `TerminateThread` do not exist (stopping a thread
//! at an arbitrary point can leave any lock held); `Semaphore::release(0)` is an error as in Win32 (ntsync allows it).
//!
//! The kernel-backed objects ([`Process`], [`ChangeNotification`], [`Stdin`]) are fed by one lazily started reactor thread
//! that owns an epoll instance, and refreshed at each wait; `reactor.rs` explains and justifies the design. They are
//! not built under `--cfg loom` (the loom models cover the userspace hand-off they share with events). All calls into
//! libc, and so every `unsafe` block, are in the private `sys` module.
//!
//! Linux only (pidfds need Linux 5.3).

#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!("iocomp-sync supports Linux only");

mod apc;
#[cfg(not(loom))]
mod change;
mod error;
mod event;
mod local;
mod mutex;
#[cfg(not(loom))]
mod named;
#[cfg(not(loom))]
mod named_wait;
mod object;
mod priority;
#[cfg(not(loom))]
mod process;
#[cfg(not(loom))]
mod reactor;
mod semaphore;
mod signal;
#[cfg(not(loom))]
mod stdin;
mod sync;
mod sys;
mod thread;
mod wait;

pub use apc::{run_queued_apcs, set_apc_waker, sleep_alertable, ApcWaker, SleepResult};
#[cfg(not(loom))]
pub use change::{ChangeFilter, ChangeNotification, ChangeStatus};
#[cfg(not(loom))]
pub use error::NamedError;
pub use error::{
    ApcError, FdObjectError, MutexError, PriorityError, ProcessError, SemaphoreError,
    SignalAndWaitError, WaitError,
};
pub use event::Event;
pub use mutex::{Mutex, MutexState};
#[cfg(not(loom))]
pub use named::{NamedKind, MAX_NAME_LEN};
#[cfg(not(loom))]
pub use named_wait::MAX_NAMED;
pub use priority::{
    current_thread_nice, current_thread_priority, set_current_thread_priority, Priority,
};
#[cfg(not(loom))]
pub use process::Process;
pub use semaphore::Semaphore;
pub use signal::{signal_and_wait, signal_and_wait_alertable, Signal};
#[cfg(not(loom))]
pub use stdin::Stdin;
pub use thread::{Thread, ThreadId, PANIC_EXIT_CODE};
pub use wait::{
    wait_all, wait_all_alertable, wait_any, wait_any_alertable, wait_one, WaitResult, Waitable,
};
