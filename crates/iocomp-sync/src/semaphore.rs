//! Semaphores: `CreateSemaphore`, `ReleaseSemaphore`.

use std::fmt;

#[cfg(not(loom))]
use crate::error::NamedError;
use crate::error::SemaphoreError;
#[cfg(not(loom))]
use crate::named::{init_semaphore, Named, NamedKind};
use crate::object::{Kind, Object, Tag};
use crate::sync::Arc;
use crate::wait::{sealed::Sealed, Waitable};

/// A counting semaphore with a maximum (`CreateSemaphore`): signalled while its count is above zero; each satisfied
/// wait takes one. Nobody owns it, so any thread may release it.
///
/// Cloning makes another handle to the same semaphore.
///
/// ```
/// use iocomp_sync::{Semaphore, SemaphoreError, WaitResult, Waitable};
/// use std::time::Duration;
///
/// let sem = Semaphore::new(0, 2).unwrap();
/// assert_eq!(sem.release(2), Ok(0));                  // previous count
/// assert!(matches!(sem.release(1), Err(SemaphoreError::TooManyPosts { .. })));
/// assert_eq!(sem.count(), 2);                         // unchanged by the failed release
/// assert_eq!(sem.wait(Some(Duration::ZERO)), Ok(WaitResult::Signaled(0)));
/// assert_eq!(sem.count(), 1);
/// ```
#[derive(Clone)]
pub struct Semaphore {
    obj: Arc<Object>,
    /// For a named semaphore, its shared segment (and `obj` is unused).
    #[cfg(not(loom))]
    named: Option<Arc<Named>>,
}

impl Semaphore {
    /// Creates a semaphore with count `initial` and maximum `max`.
    ///
    /// # Errors
    /// [`SemaphoreError::ZeroMaximum`] if `max == 0`; [`SemaphoreError::InitialAboveMaximum`] if `initial > max`.
    pub fn new(initial: u32, max: u32) -> Result<Semaphore, SemaphoreError> {
        if max == 0 {
            return Err(SemaphoreError::ZeroMaximum);
        }
        if initial > max {
            return Err(SemaphoreError::InitialAboveMaximum { initial, max });
        }
        Ok(Semaphore {
            obj: Object::new(
                Kind::Semaphore {
                    count: initial,
                    max,
                },
                Tag::Semaphore,
            ),
            #[cfg(not(loom))]
            named: None,
        })
    }

    /// Creates a named semaphore shared between processes, or opens it if the name exists
    /// (`CreateSemaphore(NULL, initial, max, name)`); returns it and whether it already existed
    /// (`ERROR_ALREADY_EXISTS`; the counts are then ignored, as in Win32). Names as in
    /// [`Event::create_named`](crate::Event::create_named).
    ///
    /// # Errors
    /// [`NamedError::Semaphore`] for invalid counts (checked first, as Win32 does), then the errors of
    /// [`Event::create_named`](crate::Event::create_named).
    #[cfg(not(loom))]
    pub fn create_named(
        name: &str,
        initial: u32,
        max: u32,
    ) -> Result<(Semaphore, bool), NamedError> {
        Semaphore::new(initial, max).map_err(NamedError::Semaphore)?;
        let (named, existed) =
            Named::create(name, NamedKind::Semaphore, init_semaphore(initial, max))?;
        Ok((Semaphore::from_named(named), existed))
    }

    /// Opens an existing named semaphore (`OpenSemaphore`).
    ///
    /// # Errors
    /// As [`Event::open_named`](crate::Event::open_named).
    #[cfg(not(loom))]
    pub fn open_named(name: &str) -> Result<Semaphore, NamedError> {
        Named::open(name, NamedKind::Semaphore).map(Semaphore::from_named)
    }

    #[cfg(not(loom))]
    fn from_named(named: Arc<Named>) -> Semaphore {
        Semaphore {
            obj: Object::new(Kind::Semaphore { count: 0, max: 1 }, Tag::Semaphore),
            named: Some(named),
        }
    }

    /// Adds `n` to the count and releases that many waiters; returns the previous count (`ReleaseSemaphore`).
    ///
    /// # Errors
    /// [`SemaphoreError::ZeroRelease`] if `n == 0`; [`SemaphoreError::TooManyPosts`] if the count would exceed the
    /// maximum (`ERROR_TOO_MANY_POSTS`). Either way the count is unchanged.
    pub fn release(&self, n: u32) -> Result<u32, SemaphoreError> {
        if n == 0 {
            return Err(SemaphoreError::ZeroRelease);
        }
        #[cfg(not(loom))]
        if let Some(named) = &self.named {
            return named.semaphore_release(n);
        }
        self.obj.signal(|kind| release_change(kind, n), |_| {})
    }

    /// The current count (a snapshot; ntsync's `SEM_READ`).
    pub fn count(&self) -> u32 {
        #[cfg(not(loom))]
        if let Some(n) = &self.named {
            return n.semaphore_read().0;
        }
        self.obj.read(|kind| match *kind {
            Kind::Semaphore { count, .. } => count,
            _ => 0,
        })
    }

    /// The maximum count.
    pub fn max(&self) -> u32 {
        #[cfg(not(loom))]
        if let Some(n) = &self.named {
            return n.semaphore_read().1;
        }
        self.obj.read(|kind| match *kind {
            Kind::Semaphore { max, .. } => max,
            _ => 0,
        })
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("count", &self.count())
            .field("max", &self.max())
            .finish()
    }
}

impl Sealed for Semaphore {
    fn object(&self) -> &Arc<Object> {
        &self.obj
    }

    #[cfg(not(loom))]
    fn named(&self) -> Option<&Arc<Named>> {
        self.named.as_ref()
    }
}

impl Waitable for Semaphore {}

/// `ReleaseSemaphore(n)`'s state change (`n > 0`): returns the previous count.
pub(crate) fn release_change(kind: &mut Kind, n: u32) -> Result<u32, SemaphoreError> {
    match kind {
        Kind::Semaphore { count, max } => {
            let previous = *count;
            match previous.checked_add(n) {
                Some(new) if new <= *max => {
                    *count = new;
                    Ok(previous)
                }
                _ => Err(SemaphoreError::TooManyPosts {
                    count: previous,
                    max: *max,
                    release: n,
                }),
            }
        }
        _ => Err(SemaphoreError::ZeroMaximum),
    }
}
