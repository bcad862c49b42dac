//! `SignalObjectAndWait`: signal one object and wait on another, in one atomic step.
//!
//! Windows documents that another thread may see the signal before the wait has started. Here the signal is applied
//! under the signalled object's lock and the process-wide wait-all lock, and the waiter is queued on the awaited
//! object before either lock is released (see [`Object::signal_then`](crate::object::Object::signal_then)): whoever
//! reacts to the signal — even with a [`pulse`](crate::Event::pulse), which releases only waits already queued —
//! finds the wait in place.

use std::time::{Duration, Instant};

use crate::error::{SignalAndWaitError, WaitError};
use crate::local;
use crate::object::{Object, State, Tag, Waiter};
use crate::sync::{thread, Arc};
use crate::wait::{sealed::Sealed, sleep_and_finish, wait_objects, Mode, WaitResult, Waitable};
use crate::{Event, Mutex, Semaphore};

pub(crate) mod sealed {
    /// Seals [`Signal`](super::Signal).
    pub trait SealedSignal {
        /// Applies this object's signal (set, release one) under `Object::signal_then`, queueing with `queue`.
        fn signal_then(
            &self,
            queue: &mut dyn FnMut(&mut crate::object::State),
        ) -> Result<(), crate::SignalAndWaitError>;
    }
}

/// An object [`signal_and_wait`] can signal: [`Event`] (set), [`Semaphore`] (release one), [`Mutex`] (release one
/// level) — the kinds `SignalObjectAndWait` accepts. Sealed.
pub trait Signal: sealed::SealedSignal + Waitable {}

impl sealed::SealedSignal for Event {
    fn signal_then(&self, queue: &mut dyn FnMut(&mut State)) -> Result<(), SignalAndWaitError> {
        self.object()
            .signal_then(
                |k| Ok::<_, SignalAndWaitError>(crate::event::set_change(k)),
                queue,
            )
            .map(drop)
    }
}
impl Signal for Event {}

impl sealed::SealedSignal for Semaphore {
    fn signal_then(&self, queue: &mut dyn FnMut(&mut State)) -> Result<(), SignalAndWaitError> {
        self.object()
            .signal_then(|k| crate::semaphore::release_change(k, 1), queue)
            .map(drop)
            .map_err(SignalAndWaitError::Semaphore)
    }
}
impl Signal for Semaphore {}

impl sealed::SealedSignal for Mutex {
    fn signal_then(&self, queue: &mut dyn FnMut(&mut State)) -> Result<(), SignalAndWaitError> {
        let me = local::current_id();
        let previous = self
            .object()
            .signal_then(|k| crate::mutex::release_change(k, me), queue)
            .map_err(SignalAndWaitError::Mutex)?;
        if previous == 1 {
            local::note_released(self.object());
        }
        Ok(())
    }
}
impl Signal for Mutex {}

/// Signals `to_signal` and waits on `to_wait`, the signal and the start of the wait being one atomic step
/// (`SignalObjectAndWait(.., FALSE)`): no thread can observe the signal before this wait is queued on `to_wait`.
/// The wait then behaves as [`Waitable::wait`]. `to_signal` and `to_wait` may be the same object.
///
/// Both objects must belong to this process (not named objects).
///
/// # Errors
/// [`SignalAndWaitError::Mutex`] (`ERROR_NOT_OWNER`) or [`SignalAndWaitError::Semaphore`] (`ERROR_TOO_MANY_POSTS`)
/// if the signal fails — then nothing was signalled and no wait happened; [`SignalAndWaitError::Wait`] for the wait
/// errors of [`wait_one`](crate::wait_one) (checked before signalling), and
/// [`WaitError::NamedSignalAndWait`] for named objects.
pub fn signal_and_wait(
    to_signal: &dyn Signal,
    to_wait: &dyn Waitable,
    timeout: Option<Duration>,
) -> Result<WaitResult, SignalAndWaitError> {
    run(to_signal, to_wait, timeout, false)
}

/// [`signal_and_wait`], alertable (`SignalObjectAndWait(.., TRUE)`): APCs queued to this thread end the wait with
/// [`WaitResult::Alerted`] after running (the signal has been made either way).
///
/// # Errors
/// As [`signal_and_wait`], except that an infinite wait on the caller's own thread is allowed.
pub fn signal_and_wait_alertable(
    to_signal: &dyn Signal,
    to_wait: &dyn Waitable,
    timeout: Option<Duration>,
) -> Result<WaitResult, SignalAndWaitError> {
    run(to_signal, to_wait, timeout, true)
}

fn run(
    to_signal: &dyn Signal,
    to_wait: &dyn Waitable,
    timeout: Option<Duration>,
    alertable: bool,
) -> Result<WaitResult, SignalAndWaitError> {
    #[cfg(not(loom))]
    if to_signal.named().is_some() || to_wait.named().is_some() {
        return Err(WaitError::NamedSignalAndWait.into());
    }
    to_wait.refresh();
    let wait: &Arc<Object> = to_wait.object();
    let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
    let me = local::current_id();
    if deadline.is_none() && !alertable && wait.tag() == Tag::Thread(me) {
        return Err(WaitError::WouldDeadlock.into());
    }
    if wait.tag() == Tag::Mutex && wait.read(|k| k.is_recursion_full(me)) {
        return Err(WaitError::RecursionOverflow { index: 0 }.into());
    }
    let q = Arc::new(Waiter::new(me, thread::current(), Vec::new()));
    let same = Arc::ptr_eq(to_signal.object(), wait);
    to_signal.signal_then(&mut |st: &mut State| {
        if same {
            st.push_any(&q, 0);
        } else {
            wait.lock_state().push_any(&q, 0);
        }
    })?;
    // The wait proper, from its check on: `to_wait` first, then the alert.
    let shared = alertable.then(local::current_shared);
    let alert = shared.as_ref().map(|s| &s.apc.alert);
    if let Some(a) = alert {
        a.lock_state().push_any(&q, 1);
    }
    for o in std::iter::once(wait).chain(alert) {
        if q.is_signaled() {
            break;
        }
        o.lock_state().try_wake_any();
    }
    let result = sleep_and_finish(&q, &[wait], Mode::Any, deadline, alert);
    match (result, &shared) {
        // A stale alert (its APCs already ran): the signal is made, keep waiting as a plain alertable wait.
        (WaitResult::Alerted, Some(s)) if s.apc.run_pending() == 0 => {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            Ok(wait_objects(&[wait], Mode::Any, left, true)?)
        }
        (r, _) => Ok(r),
    }
}
