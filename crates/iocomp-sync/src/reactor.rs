//! Turning file-descriptor readiness into object state, for the kernel-backed objects ([`Process`](crate::Process),
//! [`ChangeNotification`](crate::ChangeNotification), [`Stdin`](crate::Stdin)).
//!
//! # Design
//!
//! Those objects are ordinary crate objects (a manual-reset event's state inside), so they take part in every wait —
//! wait-any, atomic wait-all, alertable waits — through the one wake hand-off of `object.rs`, and nothing in the wait
//! engine knows about file descriptors. Two things keep their state in step with the kernel:
//!
//! 1. **A check at wait time.** Before a wait queues, each fd-backed object refreshes itself
//!    (`Sealed::refresh`): `poll(fd, 0)` for a pidfd or standard input, a non-blocking drain for inotify. A wait
//!    therefore never misses what the kernel already knew when the wait began, a poll (`Some(Duration::ZERO)`) is
//!    exact, and tests need no sleeps.
//! 2. **One background reactor thread per process**, started lazily by the first fd-backed object, owning one epoll
//!    instance. Each object registers its descriptor **one-shot** (`EPOLLONESHOT`) with a never-reused token; when the
//!    descriptor becomes readable the reactor calls the object's [`Source::ready`], which sets the object through
//!    [`Object::signal`](crate::object::Object::signal) — the same path as `Event::set`, so blocked waiters are woken
//!    by the usual compare-and-swap winner. The object re-arms the registration when it is reset.
//!
//! Why this and not a per-wait `poll` over descriptors: a wait would then need a second blocking mechanism (an
//! eventfd per thread to be woken by userspace objects, a `poll` instead of a park), the wait-all atomicity of the
//! userspace lock would have to be rebuilt over two sources, and every wait would pay for it. With the reactor the
//! wait engine stays as it is, costs nothing when no fd object exists, and one thread serves all descriptors.
//! One-shot registration keeps a level-triggered descriptor that nobody drains (standard input) from spinning the
//! reactor. The reactor holds only weak references: dropping the last handle deregisters and closes the descriptor.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, Weak};

use crate::object::{Kind, Object, Tag};
use crate::sync::{lock, Arc};
use crate::sys;

/// An object whose descriptor the reactor watches.
pub(crate) trait Source: Send + Sync {
    /// The descriptor was reported readable (once; the registration is now disarmed until re-armed).
    fn ready(&self);
}

struct Reactor {
    epoll: OwnedFd,
    sources: Mutex<HashMap<u64, Weak<dyn Source>>>,
    next_token: AtomicU64,
}

static REACTOR: OnceLock<Result<Reactor, i32>> = OnceLock::new();

fn reactor() -> io::Result<&'static Reactor> {
    REACTOR
        .get_or_init(|| {
            let epoll = sys::epoll_create().map_err(errno)?;
            let reactor = Reactor {
                epoll,
                sources: Mutex::new(HashMap::new()),
                next_token: AtomicU64::new(1),
            };
            Ok(reactor)
        })
        .as_ref()
        .map_err(|&e| io::Error::from_raw_os_error(e))
        .and_then(|r| {
            start_thread(r)?;
            Ok(r)
        })
}

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Starts the reactor thread once (retried by the next registration if the OS refused a thread).
fn start_thread(r: &'static Reactor) -> io::Result<()> {
    static STARTED: Mutex<bool> = Mutex::new(false);
    let mut started = lock(&STARTED);
    if !*started {
        std::thread::Builder::new()
            .name("iocomp-sync-reactor".into())
            .spawn(move || r.run())?;
        *started = true;
    }
    Ok(())
}

impl Reactor {
    fn run(&self) {
        let mut tokens = Vec::new();
        loop {
            if sys::epoll_wait(self.epoll.as_fd(), &mut tokens).is_err() {
                // Only EBADF/EFAULT/EINVAL, impossible with our own epoll descriptor; keep serving.
                std::thread::yield_now();
                continue;
            }
            for token in &tokens {
                let source = lock(&self.sources).get(token).and_then(Weak::upgrade);
                // Called without the map lock: `ready` may drop the last handle, which deregisters.
                if let Some(source) = source {
                    source.ready();
                }
            }
        }
    }
}

/// One descriptor's registration. The owner keeps the descriptor open while registered and calls
/// [`Registration::deregister`] before closing it.
#[derive(Debug)]
pub(crate) struct Registration {
    token: u64,
}

impl Registration {
    /// Watches `fd` for readability (one-shot), calling `source.ready()` when it is readable.
    ///
    /// # Errors
    /// Creating the epoll instance or the thread failed, or epoll refused the descriptor (`EPERM` for a regular file,
    /// which is always readable).
    pub(crate) fn register(
        fd: BorrowedFd<'_>,
        source: Weak<dyn Source>,
    ) -> io::Result<Registration> {
        let r = reactor()?;
        let token = r.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&r.sources).insert(token, source);
        if let Err(e) = sys::epoll_ctl(r.epoll.as_fd(), libc::EPOLL_CTL_ADD, fd, token) {
            lock(&r.sources).remove(&token);
            return Err(e);
        }
        Ok(Registration { token })
    }

    /// Arms the registration again: the reactor reports the descriptor once more when it is readable (at once if it
    /// is readable now).
    pub(crate) fn rearm(&self, fd: BorrowedFd<'_>) {
        if let Some(Ok(r)) = REACTOR.get() {
            // Cannot fail for a registered, open descriptor.
            let _ = sys::epoll_ctl(r.epoll.as_fd(), libc::EPOLL_CTL_MOD, fd, self.token);
        }
    }

    /// Stops watching `fd` (which must still be open).
    pub(crate) fn deregister(&self, fd: BorrowedFd<'_>) {
        if let Some(Ok(r)) = REACTOR.get() {
            let _ = sys::epoll_ctl(r.epoll.as_fd(), libc::EPOLL_CTL_DEL, fd, self.token);
            lock(&r.sources).remove(&self.token);
        }
    }
}

/// A new object whose state is a manual-reset event, not set: the signalled state of an fd-backed object.
pub(crate) fn new_flag() -> Arc<Object> {
    Object::new(
        Kind::Event {
            manual: true,
            signaled: false,
        },
        Tag::Event,
    )
}

/// Sets the flag and wakes the waiters it satisfies (the wake hand-off of `Event::set`).
pub(crate) fn set_flag(obj: &Object) {
    obj.signal(
        |kind| {
            if let Kind::Event { signaled, .. } = kind {
                *signaled = true;
            }
        },
        |_| {},
    );
}

/// Clears the flag.
pub(crate) fn reset_flag(obj: &Object) {
    if let Kind::Event { signaled, .. } = &mut obj.lock_state().kind {
        *signaled = false;
    }
}

/// Whether the flag is set.
pub(crate) fn flag_is_set(obj: &Object) -> bool {
    obj.read(|kind| matches!(kind, Kind::Event { signaled: true, .. }))
}
