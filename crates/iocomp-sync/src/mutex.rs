//! Mutexes: `CreateMutex`, `ReleaseMutex`, abandonment.

use std::fmt;

use crate::error::MutexError;
use crate::local;
use crate::object::{Kind, Object, Tag};
use crate::sync::Arc;
use crate::thread::ThreadId;
use crate::wait::{sealed::Sealed, Waitable};

/// A mutex owned by a thread, with a recursion count (`CreateMutex`).
///
/// A wait acquires it when it is unowned, or when the waiter already owns it (the count goes up). Only the owner can
/// [`release`](Mutex::release) it; the release that brings the count to zero makes it unowned. If the owning thread
/// exits while owning it — by returning from its closure, panicking, or ending as any thread does — the mutex is
/// **abandoned**: it becomes unowned and the next wait that acquires it reports
/// [`WaitResult::Abandoned`](crate::WaitResult::Abandoned), because the data it guards may be half-updated.
///
/// Unlike `std::sync::Mutex` this is not a guard-based lock of some data: it is the Win32 object, meant to be mixed
/// with other objects in [`wait_any`](crate::wait_any)/[`wait_all`](crate::wait_all).
///
/// ```
/// use iocomp_sync::{Mutex, MutexError, WaitResult, Waitable};
///
/// let m = Mutex::new(false);
/// assert_eq!(m.wait(None), Ok(WaitResult::Signaled(0)));
/// assert_eq!(m.wait(None), Ok(WaitResult::Signaled(0))); // recursion
/// assert_eq!(m.release(), Ok(2));                         // previous count
/// assert_eq!(m.release(), Ok(1));
/// assert_eq!(m.release(), Err(MutexError::NotOwner));
/// ```
#[derive(Clone)]
pub struct Mutex {
    obj: Arc<Object>,
}

/// A snapshot of a mutex's state (ntsync's `MUTEX_READ`), for diagnostics and tests.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MutexState {
    /// The owning thread, if any.
    pub owner: Option<ThreadId>,
    /// The recursion count (0 when unowned).
    pub count: u32,
    /// Whether the last owner exited while owning it and no wait has acquired it since.
    pub abandoned: bool,
}

impl Mutex {
    /// Creates a mutex, owned by the calling thread (count 1) if `initially_owned` (`CreateMutex(NULL, owned, NULL)`).
    pub fn new(initially_owned: bool) -> Mutex {
        Mutex::with_owner_count(u32::from(initially_owned))
    }

    /// Test support: a mutex owned by the calling thread with recursion count `count` (unowned if 0), as ntsync's
    /// `CREATE_MUTEX {owner, count}` allows, so tests can reach the recursion limit without 2³² waits.
    #[doc(hidden)]
    pub fn with_owner_count(count: u32) -> Mutex {
        let owner = (count > 0).then(local::current_id);
        let obj = Object::new(
            Kind::Mutex {
                owner,
                count,
                abandoned: false,
            },
            Tag::Mutex,
        );
        if owner.is_some() {
            local::note_owned(&obj);
        }
        Mutex { obj }
    }

    /// Releases one level of ownership; returns the previous recursion count (`ReleaseMutex`; ntsync's
    /// `MUTEX_UNLOCK`). When the count reaches zero the mutex becomes unowned and the next waiter gets it.
    ///
    /// # Errors
    /// [`MutexError::NotOwner`] if the calling thread does not own the mutex; nothing changes.
    pub fn release(&self) -> Result<u32, MutexError> {
        let me = local::current_id();
        let previous = self.obj.signal(
            |kind| match kind {
                Kind::Mutex { owner, count, .. } if *owner == Some(me) && *count > 0 => {
                    let previous = *count;
                    *count -= 1;
                    if *count == 0 {
                        *owner = None;
                    }
                    Ok(previous)
                }
                _ => Err(MutexError::NotOwner),
            },
            |_| {},
        )?;
        if previous == 1 {
            local::note_released(&self.obj);
        }
        Ok(previous)
    }

    /// The current state (a snapshot).
    pub fn state(&self) -> MutexState {
        self.obj.read(|kind| match *kind {
            Kind::Mutex {
                owner,
                count,
                abandoned,
            } => MutexState {
                owner,
                count,
                abandoned,
            },
            _ => MutexState {
                owner: None,
                count: 0,
                abandoned: false,
            },
        })
    }
}

impl fmt::Debug for Mutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Mutex").field(&self.state()).finish()
    }
}

impl Sealed for Mutex {
    fn object(&self) -> &Arc<Object> {
        &self.obj
    }
}

impl Waitable for Mutex {}
