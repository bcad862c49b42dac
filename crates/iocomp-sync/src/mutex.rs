//! Mutexes: `CreateMutex`, `ReleaseMutex`, abandonment.

use std::fmt;

use crate::error::MutexError;
#[cfg(not(loom))]
use crate::error::NamedError;
use crate::local;
#[cfg(not(loom))]
use crate::named::{init_mutex, Named, NamedKind};
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
    /// For a named mutex, its shared segment (and `obj` is unused).
    #[cfg(not(loom))]
    named: Option<Arc<Named>>,
}

/// A snapshot of a mutex's state (ntsync's `MUTEX_READ`), for diagnostics and tests.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MutexState {
    /// The owning thread, if any. For a named mutex: `None` (its owner may be in another process; see
    /// `owner_process` and `owned_by_caller`).
    pub owner: Option<ThreadId>,
    /// Named mutexes: the id of the owning process, if any. `None` for local mutexes.
    pub owner_process: Option<u32>,
    /// Whether the calling thread owns the mutex.
    pub owned_by_caller: bool,
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
        Mutex {
            obj,
            #[cfg(not(loom))]
            named: None,
        }
    }

    /// Creates a named mutex shared between processes, or opens it if the name exists
    /// (`CreateMutex(NULL, owned, name)`); returns it and whether it already existed (`ERROR_ALREADY_EXISTS`;
    /// `initially_owned` is then ignored, as in Win32). Names as in [`Event::create_named`](crate::Event::create_named).
    ///
    /// A named mutex belongs to a thread of some process. When that thread ends, or its whole process dies (SIGKILL,
    /// a crash) while owning it, it is abandoned: the next wait that acquires it, in any process, returns
    /// [`WaitResult::Abandoned`](crate::WaitResult::Abandoned). Dropping the last handle of a process whose thread
    /// still owns the mutex keeps the object until that thread releases it or exits.
    ///
    /// # Errors
    /// As [`Event::create_named`](crate::Event::create_named).
    #[cfg(not(loom))]
    pub fn create_named(name: &str, initially_owned: bool) -> Result<(Mutex, bool), NamedError> {
        let (named, existed) = Named::create(name, NamedKind::Mutex, init_mutex(initially_owned))?;
        if initially_owned && !existed {
            crate::local::note_owned_named(&named);
        }
        Ok((Mutex::from_named(named), existed))
    }

    /// Opens an existing named mutex (`OpenMutex`).
    ///
    /// # Errors
    /// As [`Event::open_named`](crate::Event::open_named).
    #[cfg(not(loom))]
    pub fn open_named(name: &str) -> Result<Mutex, NamedError> {
        Named::open(name, NamedKind::Mutex).map(Mutex::from_named)
    }

    #[cfg(not(loom))]
    fn from_named(named: Arc<Named>) -> Mutex {
        Mutex {
            obj: Object::new(
                Kind::Mutex {
                    owner: None,
                    count: 0,
                    abandoned: false,
                },
                Tag::Mutex,
            ),
            named: Some(named),
        }
    }

    /// Releases one level of ownership; returns the previous recursion count (`ReleaseMutex`; ntsync's
    /// `MUTEX_UNLOCK`). When the count reaches zero the mutex becomes unowned and the next waiter gets it.
    ///
    /// # Errors
    /// [`MutexError::NotOwner`] if the calling thread does not own the mutex; nothing changes.
    #[inline]
    pub fn release(&self) -> Result<u32, MutexError> {
        #[cfg(not(loom))]
        if let Some(n) = &self.named {
            return n.mutex_release();
        }
        let me = local::current_id();
        let previous = self.obj.signal(|kind| release_change(kind, me), |_| {})?;
        if previous == 1 {
            local::note_released(&self.obj);
        }
        Ok(previous)
    }

    /// The current state (a snapshot).
    pub fn state(&self) -> MutexState {
        #[cfg(not(loom))]
        if let Some(n) = &self.named {
            let (owner_process, count, abandoned, owned_by_caller) = n.mutex_read();
            return MutexState {
                owner: None,
                owner_process,
                owned_by_caller,
                count,
                abandoned,
            };
        }
        let me = local::current_id();
        self.obj.read(|kind| match *kind {
            Kind::Mutex {
                owner,
                count,
                abandoned,
            } => MutexState {
                owner,
                owner_process: None,
                owned_by_caller: owner == Some(me),
                count,
                abandoned,
            },
            _ => MutexState {
                owner: None,
                owner_process: None,
                owned_by_caller: false,
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

    #[cfg(not(loom))]
    fn named(&self) -> Option<&Arc<Named>> {
        self.named.as_ref()
    }
}

impl Waitable for Mutex {}

/// `ReleaseMutex`'s state change by thread `me`: returns the previous count.
pub(crate) fn release_change(kind: &mut Kind, me: ThreadId) -> Result<u32, MutexError> {
    match kind {
        Kind::Mutex { owner, count, .. } if *owner == Some(me) && *count > 0 => {
            let previous = *count;
            *count -= 1;
            if *count == 0 {
                *owner = None;
            }
            Ok(previous)
        }
        _ => Err(MutexError::NotOwner),
    }
}
