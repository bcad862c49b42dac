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
/// Either object may be a named object shared with other processes; the step stays atomic (the wait is registered on
/// a named `to_wait` under its state lock, in the same critical section as the signal).
///
/// # Errors
/// [`SignalAndWaitError::Mutex`] (`ERROR_NOT_OWNER`) or [`SignalAndWaitError::Semaphore`] (`ERROR_TOO_MANY_POSTS`)
/// if the signal fails — then nothing was signalled and no wait happened; [`SignalAndWaitError::Wait`] for the wait
/// errors of [`wait_one`](crate::wait_one) (checked before signalling).
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
    let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
    let me = local::current_id();
    #[cfg(not(loom))]
    if let Some(wait_named) = to_wait.named() {
        return named_wait(to_signal, wait_named, deadline, alertable);
    }
    to_wait.refresh();
    let wait: &Arc<Object> = to_wait.object();
    if deadline.is_none() && !alertable && wait.tag() == Tag::Thread(me) {
        return Err(WaitError::WouldDeadlock.into());
    }
    if wait.tag() == Tag::Mutex && wait.read(|k| k.is_recursion_full(me)) {
        return Err(WaitError::RecursionOverflow { index: 0 }.into());
    }
    let q = Arc::new(Waiter::new(me, thread::current(), Vec::new()));
    #[cfg(not(loom))]
    if let Some(signal_named) = to_signal.named() {
        // Lock order as everywhere: the wait-all lock, then (here) the named state lock, then the object lock.
        let all = crate::sync::wait_all_lock();
        let mut g = signal_named.lock();
        g.signal()?;
        wait.lock_state().push_any(&q, 0);
        drop(g);
        drop(all);
        return finish_local(&q, wait, deadline, alertable);
    }
    let same = Arc::ptr_eq(to_signal.object(), wait);
    to_signal.signal_then(&mut |st: &mut State| {
        if same {
            st.push_any(&q, 0);
        } else {
            wait.lock_state().push_any(&q, 0);
        }
    })?;
    finish_local(&q, wait, deadline, alertable)
}

/// `signal_and_wait` waiting on the named object `wait`: the signal is applied and the wait registered on `wait`
/// (counted as a sleeper, its pulse generation read) under `wait`'s state lock — with the signalled object's lock
/// held too, both named locks taken in name order — so whoever answers the signal, even with a pulse, finds the wait
/// in place; then the wait proper is the named wait loop.
#[cfg(not(loom))]
fn named_wait(
    to_signal: &dyn Signal,
    wait: &Arc<crate::named::Named>,
    deadline: Option<Instant>,
    alertable: bool,
) -> Result<WaitResult, SignalAndWaitError> {
    use crate::named::NamedKind;
    if wait.kind() == NamedKind::Mutex && wait.mutex_recursion_full() {
        return Err(WaitError::RecursionOverflow { index: 0 }.into());
    }
    let pulse_seen = match to_signal.named() {
        Some(sig) => {
            let same = sig.key() == wait.key();
            let (first, second) = if sig.key() <= wait.key() {
                (sig, wait)
            } else {
                (wait, sig)
            };
            let mut g1 = first.lock();
            if same {
                g1.signal()?;
                g1.register_waiter()
            } else {
                let mut g2 = second.lock();
                let (g_sig, g_wait) = if std::ptr::eq(first, sig) {
                    (&mut g1, &mut g2)
                } else {
                    (&mut g2, &mut g1)
                };
                g_sig.signal()?;
                g_wait.register_waiter()
            }
            // Both locks are released here, the registration made.
        }
        None => {
            let mut seen = None;
            to_signal.signal_then(&mut |_st: &mut State| {
                // Under the wait-all lock and the signalled object's lock (the usual order: named locks last).
                seen = wait.lock().register_waiter();
            })?;
            seen
        }
    };
    Ok(crate::named_wait::wait_registered(
        wait, pulse_seen, deadline, alertable,
    ))
}

/// The wait proper of a `signal_and_wait` on an object of this process, `q` queued on `wait` already.
fn finish_local(
    q: &Arc<Waiter>,
    wait: &Arc<Object>,
    deadline: Option<Instant>,
    alertable: bool,
) -> Result<WaitResult, SignalAndWaitError> {
    // The wait proper, from its check on: `to_wait` first, then the alert.
    let shared = alertable.then(local::current_shared);
    let alert = shared.as_ref().map(|s| &s.apc.alert);
    if let Some(a) = alert {
        a.lock_state().push_any(q, 1);
    }
    for o in std::iter::once(wait).chain(alert) {
        if q.is_signaled() {
            break;
        }
        o.lock_state().try_wake_any();
    }
    let queued = 1 + usize::from(alert.is_some());
    let result = sleep_and_finish(q, &[wait], Mode::Any, deadline, None, alert, queued);
    match (result, &shared) {
        // A stale alert (its APCs already ran): the signal is made, keep waiting as a plain alertable wait.
        (WaitResult::Alerted, Some(s)) if s.apc.run_pending() == 0 => {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            Ok(wait_objects(&[wait], Mode::Any, left, true)?)
        }
        (r, _) => Ok(r),
    }
}
