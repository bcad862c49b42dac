//! Events: `CreateEvent`, `SetEvent`, `ResetEvent`, `PulseEvent`.

use std::fmt;

#[cfg(not(loom))]
use crate::error::NamedError;
#[cfg(not(loom))]
use crate::named::{init_event, Named, NamedKind};
use crate::object::{Kind, Object, Tag};
use crate::sync::Arc;
use crate::wait::{sealed::Sealed, Waitable};

/// An event: a boolean that threads wait to become set (`CreateEvent`).
///
/// - A **manual-reset** event stays set until [`Event::reset`]; while set, every waiter, current and future, gets
///   through.
/// - An **auto-reset** event lets exactly one waiter through, and that waiter's wait resets it. Set with no waiter,
///   it stays set until one comes. Sets do not count: setting a set event changes nothing, so two sets before any
///   wait release only one waiter.
///
/// Cloning makes another handle to the same event (`DuplicateHandle`).
///
/// ```
/// use iocomp_sync::{Event, WaitResult, Waitable};
/// use std::time::Duration;
///
/// let ev = Event::new(false, false); // auto-reset, not set
/// assert!(!ev.set());                // previous state: not set
/// assert!(ev.set());                 // sets coalesce
/// assert_eq!(ev.wait(Some(Duration::ZERO)), Ok(WaitResult::Signaled(0)));
/// assert!(!ev.is_set());             // the wait reset it
/// ```
#[derive(Clone)]
pub struct Event {
    obj: Arc<Object>,
    /// For a named event, its shared segment (and `obj` is unused).
    #[cfg(not(loom))]
    named: Option<Arc<Named>>,
}

impl Event {
    /// Creates an event: manual-reset or auto-reset, initially set or not (`CreateEvent(NULL, manual, initial,
    /// NULL)`).
    pub fn new(manual_reset: bool, initially_set: bool) -> Event {
        Event {
            obj: Object::new(
                Kind::Event {
                    manual: manual_reset,
                    signaled: initially_set,
                },
                Tag::Event,
            ),
            #[cfg(not(loom))]
            named: None,
        }
    }

    /// Creates a named event shared between processes, or opens it if the name exists
    /// (`CreateEvent(NULL, manual, initial, name)`); returns the event and whether it already existed
    /// (`ERROR_ALREADY_EXISTS`; `manual_reset` and `initially_set` are then ignored, as in Win32).
    ///
    /// Names are case-sensitive, one namespace per user; `Global\` and `Local\` prefixes are accepted (`Local\x` is
    /// `x`). The event lives until its last handle in the last process is dropped. See the crate docs, "Named
    /// objects".
    ///
    /// # Errors
    /// [`NamedError::InvalidName`], [`NamedError::TooLong`], [`NamedError::WrongKind`] if the name belongs to a
    /// mutex or semaphore, [`NamedError::Os`] if the shared segment cannot be made.
    #[cfg(not(loom))]
    pub fn create_named(
        name: &str,
        manual_reset: bool,
        initially_set: bool,
    ) -> Result<(Event, bool), NamedError> {
        let (named, existed) = Named::create(
            name,
            NamedKind::Event,
            init_event(manual_reset, initially_set),
        )?;
        Ok((Event::from_named(named), existed))
    }

    /// Opens an existing named event (`OpenEvent`).
    ///
    /// # Errors
    /// [`NamedError::NotFound`] if no object has this name, [`NamedError::WrongKind`] if another kind has it, and the
    /// name errors of [`Event::create_named`].
    #[cfg(not(loom))]
    pub fn open_named(name: &str) -> Result<Event, NamedError> {
        Named::open(name, NamedKind::Event).map(Event::from_named)
    }

    #[cfg(not(loom))]
    fn from_named(named: Arc<Named>) -> Event {
        Event {
            obj: Object::new(
                Kind::Event {
                    manual: false,
                    signaled: false,
                },
                Tag::Event,
            ),
            named: Some(named),
        }
    }

    /// Sets the event and releases the waiters it can (all for manual-reset, one for auto-reset); returns the previous
    /// state (`NtSetEvent`).
    pub fn set(&self) -> bool {
        #[cfg(not(loom))]
        if let Some(n) = &self.named {
            return n.event_set();
        }
        self.obj.signal(set_change, |_| {})
    }

    /// Resets the event; returns the previous state (`NtResetEvent`).
    pub fn reset(&self) -> bool {
        #[cfg(not(loom))]
        if let Some(n) = &self.named {
            return n.event_reset();
        }
        match &mut self.obj.lock_state().kind {
            Kind::Event { signaled, .. } => std::mem::replace(signaled, false),
            _ => false,
        }
    }

    /// Sets the event, releases the waiters that are waiting right now and can be released, then resets it, all in
    /// one step; returns the previous state (`PulseEvent`). Afterwards the event is not set.
    ///
    /// **Unreliable, as on Windows — prefer [`Event::set`] with a protocol.** A pulse with nobody waiting does
    /// nothing, and a thread that is momentarily not queued (on Windows: taken out of its wait by a kernel-mode APC;
    /// here: between two waits, or about to start one) misses it. (A wait that spins before it parks is queued
    /// first, so a pulse releases it.) A pulse also cannot satisfy a wait-all unless the other objects of that
    /// wait are signalled at that very moment.
    pub fn pulse(&self) -> bool {
        #[cfg(not(loom))]
        if let Some(n) = &self.named {
            return n.event_pulse();
        }
        self.obj.signal(
            |kind| match kind {
                Kind::Event { signaled, .. } => std::mem::replace(signaled, true),
                _ => false,
            },
            |kind| {
                if let Kind::Event { signaled, .. } = kind {
                    *signaled = false;
                }
            },
        )
    }

    /// Whether the event is set right now (a snapshot, for diagnostics and tests; ntsync's `EVENT_READ`).
    pub fn is_set(&self) -> bool {
        #[cfg(not(loom))]
        if let Some(n) = &self.named {
            return n.event_is_set();
        }
        self.obj
            .read(|kind| matches!(kind, Kind::Event { signaled: true, .. }))
    }

    /// Whether this is a manual-reset event.
    pub fn is_manual_reset(&self) -> bool {
        #[cfg(not(loom))]
        if let Some(n) = &self.named {
            return n.event_is_manual();
        }
        self.obj
            .read(|kind| matches!(kind, Kind::Event { manual: true, .. }))
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("manual_reset", &self.is_manual_reset())
            .field("set", &self.is_set())
            .finish()
    }
}

impl Sealed for Event {
    fn object(&self) -> &Arc<Object> {
        &self.obj
    }

    #[cfg(not(loom))]
    fn named(&self) -> Option<&Arc<Named>> {
        self.named.as_ref()
    }
}

impl Waitable for Event {}

/// `SetEvent`'s state change: returns the previous state.
pub(crate) fn set_change(kind: &mut Kind) -> bool {
    match kind {
        Kind::Event { signaled, .. } => std::mem::replace(signaled, true),
        _ => false,
    }
}
