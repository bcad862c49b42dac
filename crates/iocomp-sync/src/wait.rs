//! Waiting on objects: `WaitForSingleObject`, `WaitForMultipleObjects(Ex)`.
//!
//! One algorithm serves every wait (ntsync's `ntsync_wait_any`/`ntsync_wait_all`):
//! 1. queue a [`Waiter`] record on every object (and, for an alertable wait, on the thread's alert event, last);
//! 2. check whether the wait can be satisfied right now — for wait-any, object by object in index order, so the
//!    lowest signalled index wins (each object is queued on and checked under one hold of its lock, and once the
//!    record is won the later objects are not queued on); for wait-all, all objects at once under the wait-all lock;
//! 3. park until the record's slot is won or the deadline passes;
//! 4. leave every list it joined, then read the slot: whoever won it has already consumed the objects for us, so a win
//!    is reported even if the deadline passed meanwhile.
//!
//! A poll (`Some(Duration::ZERO)`) runs the same steps without parking, taking the object locks normally (never a
//! `try_lock`), so it is exact under contention.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::WaitError;
use crate::local;
#[cfg(not(loom))]
use crate::named_wait::{self, Item};
use crate::object::{
    fast_wait_all, try_wake_all_locked, Fast, Object, State, StateGuard, Tag, Waiter, NONE,
};
use crate::sync::{thread, wait_all_lock, Arc, Ordering};
use crate::thread::ThreadId;

pub(crate) mod sealed {
    /// Seals [`Waitable`](super::Waitable): only this crate's objects can be waited on.
    pub trait Sealed {
        /// The kernel object behind the handle.
        fn object(&self) -> &crate::sync::Arc<crate::object::Object>;

        /// The named (cross-process) object behind the handle, if it is one; `object()` is then unused.
        #[cfg(not(loom))]
        fn named(&self) -> Option<&crate::sync::Arc<crate::named::Named>> {
            None
        }

        /// Brings the object's state up to date with the kernel before a wait queues on it (fd-backed objects:
        /// see `reactor.rs`); nothing for userspace objects.
        fn refresh(&self) {}
    }
}

/// An object a thread can wait on: [`Event`](crate::Event), [`Mutex`](crate::Mutex),
/// [`Semaphore`](crate::Semaphore), [`Thread`](crate::Thread), and (not under loom) the kernel-backed
/// `Process`, `ChangeNotification` and `Stdin`. Sealed.
///
/// Use `&dyn Waitable` to mix kinds in one [`wait_any`]/[`wait_all`].
pub trait Waitable: sealed::Sealed {
    /// Waits until this object is signalled and acquires it (`WaitForSingleObject`); see [`wait_one`].
    #[inline]
    fn wait(&self, timeout: Option<Duration>) -> Result<WaitResult, WaitError> {
        self.refresh();
        #[cfg(not(loom))]
        if let Some(n) = self.named() {
            return named_wait::wait_items(&[Item::Named(n)], Mode::Any, timeout, false);
        }
        // The single-object fast path first: a deflated object is never the caller's own thread nor a mutex at its
        // recursion limit, so the checks of `wait_objects` cannot apply.
        let obj = self.object();
        let me = local::current_id();
        match fast_once(std::slice::from_ref(&obj), Mode::Any, me) {
            Some(WaitResult::TimedOut) if timeout == Some(Duration::ZERO) => {
                return Ok(WaitResult::TimedOut)
            }
            // Deflated and not signalled: an event or semaphore (never a thread: thread objects never deflate) has
            // nothing for `wait_objects` to check: it spins a while, then queues; a mutex takes the full path, which
            // checks its recursion count and spins briefly first.
            Some(WaitResult::TimedOut) if obj.tag() != Tag::Mutex => {
                return Ok(spin_then_block(obj, timeout, me));
            }
            Some(WaitResult::TimedOut) | None => {}
            Some(r) => return Ok(r),
        }
        wait_objects(&[obj], Mode::Any, timeout, false)
    }

    /// Like [`Waitable::wait`], but alertable (`WaitForSingleObjectEx(.., TRUE)`): queued APCs run and end the wait
    /// with [`WaitResult::Alerted`].
    fn wait_alertable(&self, timeout: Option<Duration>) -> Result<WaitResult, WaitError> {
        self.refresh();
        #[cfg(not(loom))]
        if let Some(n) = self.named() {
            return named_wait::wait_items(&[Item::Named(n)], Mode::Any, timeout, true);
        }
        wait_objects(&[self.object()], Mode::Any, timeout, true)
    }

    /// Test support: how many waits are queued on this object right now. Tests use it to know that a thread is
    /// blocked instead of sleeping for a while.
    #[doc(hidden)]
    fn waiter_count(&self) -> usize {
        #[cfg(not(loom))]
        if let Some(n) = self.named() {
            return n.sleepers();
        }
        self.object().waiter_count()
    }
}

/// How a wait ended (`WAIT_OBJECT_0 + i`, `WAIT_ABANDONED_0 + i`, `WAIT_TIMEOUT`, `WAIT_IO_COMPLETION`).
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitResult {
    /// The wait acquired its object(s). For a wait-any, the index of the object acquired (the lowest signalled one);
    /// for a wait-all, 0.
    Signaled(usize),
    /// The wait acquired its object(s) and at least one was a mutex abandoned by a thread that exited while owning
    /// it; the caller now owns it, but the data it guards may be inconsistent. The index is that mutex's (for a
    /// wait-all, the lowest such index).
    Abandoned(usize),
    /// The timeout passed first; nothing was acquired or changed.
    TimedOut,
    /// Alertable waits only: APCs queued to this thread ran and ended the wait; nothing was acquired.
    Alerted,
}

/// Wait-any or wait-all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Any,
    All,
}

/// Waits until `obj` is signalled and acquires it (`WaitForSingleObject`).
///
/// `timeout`: `None` waits for ever (`INFINITE`); `Some(Duration::ZERO)` polls; a duration too large for the clock is
/// treated as `None`. Timeouts run on the monotonic clock from one deadline computed at the call.
///
/// # Errors
/// [`WaitError::WouldDeadlock`] for an infinite wait on the calling thread's own [`Thread`](crate::Thread) handle
/// (Windows hangs for ever; a finite wait returns [`WaitResult::TimedOut`]); [`WaitError::RecursionOverflow`] if the
/// caller owns a mutex at its maximum recursion count.
pub fn wait_one(obj: &dyn Waitable, timeout: Option<Duration>) -> Result<WaitResult, WaitError> {
    obj.wait(timeout)
}

/// Waits until at least one of `objs` is signalled, and acquires exactly one: the lowest-indexed signalled object,
/// whose index it returns (`WaitForMultipleObjects(.., FALSE, ..)`). The other objects are left untouched.
///
/// There is no 64-object limit. `timeout` as in [`wait_one`].
///
/// # Errors
/// [`WaitError::Empty`], [`WaitError::Duplicate`] (Win32 forbids repeating a handle), and the errors of [`wait_one`]
/// (`WouldDeadlock` when the only object is the caller's own thread).
pub fn wait_any(
    objs: &[&dyn Waitable],
    timeout: Option<Duration>,
) -> Result<WaitResult, WaitError> {
    wait_slice(objs, Mode::Any, timeout, false)
}

/// Waits until all of `objs` are signalled at the same time, and acquires them all in one atomic step
/// (`WaitForMultipleObjects(.., TRUE, ..)`): a wait-all never holds part of its set, so two wait-alls over
/// overlapping sets cannot deadlock each other. On timeout nothing has been changed. Returns
/// [`WaitResult::Signaled(0)`](WaitResult::Signaled), or [`WaitResult::Abandoned`] if a mutex in the set was
/// abandoned.
///
/// No fairness is promised (nor is it on Windows): a wait-all can starve while wait-any callers keep taking one of its
/// objects.
///
/// # Errors
/// As [`wait_any`]; `WouldDeadlock` when the set contains the caller's own thread and the wait is infinite.
pub fn wait_all(
    objs: &[&dyn Waitable],
    timeout: Option<Duration>,
) -> Result<WaitResult, WaitError> {
    wait_slice(objs, Mode::All, timeout, false)
}

/// [`wait_any`], alertable (`WaitForMultipleObjectsEx(.., FALSE, .., TRUE)`): if APCs are queued to this thread
/// (before or during the wait) and no object is signalled, they run on this thread and the wait returns
/// [`WaitResult::Alerted`]. Objects win when both are ready; the APCs then stay queued.
///
/// # Errors
/// As [`wait_any`], except that an infinite wait on the caller's own thread is allowed (an APC can end it).
pub fn wait_any_alertable(
    objs: &[&dyn Waitable],
    timeout: Option<Duration>,
) -> Result<WaitResult, WaitError> {
    wait_slice(objs, Mode::Any, timeout, true)
}

/// [`wait_all`], alertable: see [`wait_any_alertable`]. An alerted wait-all has acquired nothing.
///
/// # Errors
/// As [`wait_all`], except that an infinite wait including the caller's own thread is allowed.
pub fn wait_all_alertable(
    objs: &[&dyn Waitable],
    timeout: Option<Duration>,
) -> Result<WaitResult, WaitError> {
    wait_slice(objs, Mode::All, timeout, true)
}

fn wait_slice(
    objs: &[&dyn Waitable],
    mode: Mode,
    timeout: Option<Duration>,
    alertable: bool,
) -> Result<WaitResult, WaitError> {
    if objs.is_empty() {
        return Err(WaitError::Empty);
    }
    for o in objs {
        o.refresh();
    }
    #[cfg(not(loom))]
    if objs.iter().any(|o| o.named().is_some()) {
        let items: Vec<Item<'_>> = objs
            .iter()
            .map(|o| match o.named() {
                Some(n) => Item::Named(n),
                None => Item::Local(o.object()),
            })
            .collect();
        return named_wait::wait_items(&items, mode, timeout, alertable);
    }
    // Up to 8 objects on the stack: a wait the fast path satisfies allocates nothing.
    const INLINE: usize = 8;
    if objs.len() <= INLINE {
        let mut buf: [&Arc<Object>; INLINE] = [objs[0].object(); INLINE];
        for (slot, o) in buf.iter_mut().zip(objs) {
            *slot = o.object();
        }
        return wait_objects(&buf[..objs.len()], mode, timeout, alertable);
    }
    let objs: Vec<&Arc<Object>> = objs.iter().map(|o| o.object()).collect();
    wait_objects(&objs, mode, timeout, alertable)
}

/// The first repeated object, as (index of its first occurrence, index of the repeat).
fn find_duplicate(objs: &[&Arc<Object>]) -> Option<(usize, usize)> {
    if objs.len() <= 16 {
        (1..objs.len()).find_map(|j| {
            (0..j)
                .find(|&i| Arc::ptr_eq(objs[i], objs[j]))
                .map(|i| (i, j))
        })
    } else {
        let mut seen = HashMap::with_capacity(objs.len());
        objs.iter().enumerate().find_map(|(j, o)| {
            let key: *const Object = &***o;
            seen.insert(key, j).map(|i| (i, j))
        })
    }
}

/// Validates, then waits. `objs` may be empty only for an alertable wait (alertable sleep).
pub(crate) fn wait_objects(
    objs: &[&Arc<Object>],
    mode: Mode,
    timeout: Option<Duration>,
    alertable: bool,
) -> Result<WaitResult, WaitError> {
    if objs.is_empty() && !alertable {
        return Err(WaitError::Empty);
    }
    if let Some((first, second)) = find_duplicate(objs) {
        return Err(WaitError::Duplicate { first, second });
    }
    let me = local::current_id();
    // Instant is CLOCK_MONOTONIC. A deadline beyond the clock's range means "never". Read the clock only when needed
    // (the fast path does not need it).
    let deadline_of = || timeout.and_then(|d| Instant::now().checked_add(d));
    if !alertable {
        let own = |o: &&Arc<Object>| o.tag() == Tag::Thread(me);
        let hopeless = match mode {
            Mode::All => objs.iter().any(own),
            Mode::Any => objs.iter().all(own),
        };
        if hopeless && deadline_of().is_none() {
            return Err(WaitError::WouldDeadlock);
        }
    }
    // Only `me` changes the count of a mutex `me` owns, so this check cannot go stale before the wait queues.
    if let Some(index) = objs
        .iter()
        .position(|o| o.tag() == Tag::Mutex && o.read(|k| k.is_recursion_full(me)))
    {
        return Err(WaitError::RecursionOverflow { index });
    }
    if let Some(result) = fast(
        objs,
        mode,
        me,
        timeout == Some(Duration::ZERO) && !alertable,
    ) {
        return Ok(result);
    }
    if !alertable {
        return Ok(block_fresh(objs, mode, timeout, me));
    }
    let deadline = deadline_of();
    let shared = local::current_shared();
    loop {
        match block(objs, mode, deadline, None, me, Some(&shared.apc.alert)) {
            // The alert event can be left set by an APC that an earlier alertable wait already ran; such a stale alert
            // ran nothing, so keep waiting (a passed deadline makes the next round a poll).
            WaitResult::Alerted if shared.apc.run_pending() == 0 => continue,
            result => return Ok(result),
        }
    }
}

/// The fast path (see [`Object`]'s "fast word"): with every object deflated, a wait that can be satisfied now, or a
/// poll that cannot, completes with compare-and-swaps alone — no lock, no allocation. `None`: take the slow path.
/// `poll`: a non-alertable zero-timeout wait, which may report `TimedOut` here.
#[inline]
fn fast(objs: &[&Arc<Object>], mode: Mode, me: ThreadId, poll: bool) -> Option<WaitResult> {
    // Like std's mutex, retry briefly before sleeping: an owner about to release, or a wait-all holding the words for
    // a few instructions, is often done within a few hundred cycles. A poll does not spin.
    // Spin here only when a mutex is involved (an owner's hold is usually short); a single-object wait on an event or
    // semaphore spins after it has queued instead (`spin_then_block`), and a multi-object wait does not spin.
    let spins = if poll || !objs.iter().any(|o| o.tag() == Tag::Mutex) {
        1
    } else {
        SPINS
    };
    for round in 0..spins {
        match fast_once(objs, mode, me) {
            Some(WaitResult::TimedOut) | None if round + 1 < spins => std::hint::spin_loop(),
            Some(WaitResult::TimedOut) => return poll.then_some(WaitResult::TimedOut),
            other => return other,
        }
    }
    None
}

/// How many times a blocking wait retries the fast path before it queues (once under loom: spinning only multiplies
/// the interleavings to explore, and a queued wait covers the same outcomes).
#[cfg(not(loom))]
const SPINS: u32 = 256;
#[cfg(loom)]
const SPINS: u32 = 1;

/// One fast-path attempt: `Some(TimedOut)` means "deflated, not signalled" (nothing changed).
#[inline(always)]
fn fast_once(objs: &[&Arc<Object>], mode: Mode, me: ThreadId) -> Option<WaitResult> {
    let note = |o: &Arc<Object>| {
        if o.tag() == Tag::Mutex {
            local::note_owned(o);
        }
    };
    match mode {
        // Objects are checked one by one, in index order, with no lock over the set: the result is the lowest index
        // signalled *when it was checked*. One signalled just after its check, while a higher index is taken, is left
        // set (Windows checks the whole set at one instant; documented in docs/win32-map.md).
        Mode::Any => {
            for (i, o) in objs.iter().enumerate() {
                match o.try_fast_acquire(me) {
                    Fast::Acquired(abandoned) => {
                        note(o);
                        return Some(if abandoned {
                            WaitResult::Abandoned(i)
                        } else {
                            WaitResult::Signaled(i)
                        });
                    }
                    Fast::NotSignaled => continue,
                    // An inflated object may be signalled: the lowest index needs the slow path's order.
                    Fast::Slow => return None,
                }
            }
            Some(WaitResult::TimedOut)
        }
        Mode::All => match fast_wait_all(objs, me) {
            (Fast::Acquired(_), abandoned) => {
                objs.iter().for_each(|o| note(o));
                Some(match abandoned {
                    0 => WaitResult::Signaled(0),
                    i => WaitResult::Abandoned(i - 1),
                })
            }
            (Fast::NotSignaled, _) => Some(WaitResult::TimedOut),
            (Fast::Slow, _) => None,
        },
    }
}

/// The spin budget's ceiling (ns): a wait that ended later than this after it started would not have been served by
/// spinning, so the budget never grows past it. Chosen above the wake-up latency of an idle vCPU on the 2-core VM the
/// benchmarks run on (~12 µs: a sleeping ping-pong round trip there is ~25 µs), so that a ping-pong can leave the
/// sleeping regime; see [`spin_then_block`].
#[cfg(not(loom))]
const SPIN_MAX_NS: u32 = 25_000;
/// A budget halved below this (ns) becomes zero: no spin at all (a wait then pays two clock reads and a CPU number,
/// so that the budget can grow again).
#[cfg(not(loom))]
const SPIN_MIN_NS: u32 = 250;
/// How many looks at its record a spin makes between clock reads.
#[cfg(not(loom))]
const SPIN_BATCH: u32 = 16;
/// The least budget a spin that caught its signal leaves (ns; see [`caught_spin_budget`]).
#[cfg(not(loom))]
const SPIN_KEEP_NS: u32 = 4_000;

/// A non-alertable single-object wait on a deflated, unsignalled event or semaphore: queue (as every blocking wait
/// does), then, before parking, spin on the wait's own record for the object's adaptive budget.
///
/// Why: a wait that sleeps costs its thread a futex sleep and its signaller a futex wake, and on a VM an idle vCPU's
/// wake-up costs ~10 µs of latency. A signal that arrives while the waiter spins claims the queued record as it
/// would claim a parked one; the unpark then finds the thread not parked and makes no system call (std's parker
/// leaves a token, which the next park of this thread consumes without sleeping). The wait is queued before it
/// spins, so spinning changes no outcome: `set` followed at once by `reset`, and `pulse`, release a spinning wait as
/// they release a parked one, and the queue's order is kept. The spin only replaces the first part of the sleep.
///
/// The budget (per object, `Object::spin_ns`) adapts to what spinning achieved, or would have:
/// - signal caught while spinning, `w` after the wait started: the budget becomes `max(2w, SPIN_KEEP_NS)` if that is
///   smaller (it follows the signals down, so a wait never spins much longer than its signals took lately);
/// - spun to the end of its budget and parked, then woken by a thread on the CPU this one spun on: the signaller
///   needed this CPU (both threads share one core: pinned, or the other cores are busy), so spinning only delayed it:
///   the budget halves;
/// - parked and woken from another CPU, `waited` after the wait started: under [`SPIN_MAX_NS`], a spin of
///   `waited * 5/4` would have caught the signal, so that becomes the budget (this is how a ping-pong whose two
///   threads both sleep leaves that regime); a longer wait, or a timeout, halves it; a waker's CPU not known leaves
///   it as it was.
///
/// So a wait spins at most [`SPIN_MAX_NS`] of CPU, and only on an object whose recent waits ended within it. The
/// worst case is a signal that keeps arriving from another CPU just inside the ceiling: each wait then spins that
/// long instead of sleeping (a sleep and wake cost the waiting thread ~3 µs of CPU here), trading CPU for latency as
/// adaptive mutexes do. No `sched_yield` (on a loaded machine it hands the CPU to an unrelated process for a whole
/// slice). Under loom the spin is left out: it only reads the record's slot, as the park loop does.
#[inline(never)]
fn spin_then_block(obj: &Arc<Object>, timeout: Option<Duration>, me: ThreadId) -> WaitResult {
    let objs = std::slice::from_ref(&obj);
    #[cfg(loom)]
    {
        block_fresh(objs, Mode::Any, timeout, me)
    }
    #[cfg(not(loom))]
    {
        let start = Instant::now();
        let deadline = timeout.and_then(|d| start.checked_add(d));
        let budget = obj.spin_budget();
        let spin = Duration::from_nanos(u64::from(budget)).min(timeout.unwrap_or(Duration::MAX));
        let cpu = crate::sys::current_cpu();
        let (r, waker_cpu, how) = block_spinning(objs, deadline, timeout, spin, me);
        let next = match how {
            Ended::AtQueueing => budget,
            Ended::Spinning(w) => budget.min(caught_spin_budget(w)),
            Ended::Parked => {
                let woken = matches!(r, WaitResult::Signaled(_) | WaitResult::Abandoned(_));
                if woken && waker_cpu == u32::MAX {
                    budget
                } else {
                    next_spin_budget(budget, woken, waker_cpu == cpu, start.elapsed())
                }
            }
        };
        obj.set_spin_budget(budget, next);
        r
    }
}

/// How a spinning wait ended (see [`spin_then_block`]).
#[cfg(not(loom))]
enum Ended {
    /// Won while queueing (the object was signalled in between): the spin played no part.
    AtQueueing,
    /// The signal was seen while spinning, this long after the wait started.
    Spinning(Duration),
    /// Spun its whole budget (or none), then parked: woken, or timed out.
    Parked,
}

/// The budget after a spin that caught its signal `w` after the wait started: twice that, but not below
/// `SPIN_KEEP_NS` (a ping-pong whose partner also spins sees signals within a microsecond; halving its budget to that
/// would send the next wait that finds its partner asleep to sleep too).
#[cfg(not(loom))]
fn caught_spin_budget(w: Duration) -> u32 {
    let twice = u32::try_from(w.as_nanos().saturating_mul(2)).unwrap_or(u32::MAX);
    twice.clamp(SPIN_KEEP_NS, SPIN_MAX_NS)
}

/// [`block_noting`] for one object, spinning on the queued record for `spin` before the first park.
#[cfg(not(loom))]
fn block_spinning(
    objs: &[&Arc<Object>],
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    spin: Duration,
    me: ThreadId,
) -> (WaitResult, u32, Ended) {
    let mut how = Ended::Parked;
    let first_sleep = deadline.and(timeout);
    let (r, cpu) = block_inner(objs, Mode::Any, deadline, first_sleep, me, None, |q| {
        if q.is_signaled() {
            how = Ended::AtQueueing;
            return true;
        }
        if spin.is_zero() {
            return false;
        }
        #[cfg(test)]
        tests::SPINNING_ON.store(
            Arc::as_ptr(objs[0]) as usize,
            std::sync::atomic::Ordering::SeqCst,
        );
        let t0 = Instant::now();
        loop {
            for _ in 0..SPIN_BATCH {
                if q.is_signaled() {
                    how = Ended::Spinning(t0.elapsed());
                    return true;
                }
                std::hint::spin_loop();
            }
            if t0.elapsed() >= spin {
                // The first sleep's length was read before the spin: sleep to the deadline instead.
                return true;
            }
        }
    });
    (r, cpu, how)
}

/// The spin budget after a wait that spun its whole `budget` then parked (see [`spin_then_block`]): `woken` (not timed
/// out) by a thread on the CPU it spun on (`same_cpu`), `waited` after the wait started.
#[cfg(not(loom))]
fn next_spin_budget(budget: u32, woken: bool, same_cpu: bool, waited: Duration) -> u32 {
    match u32::try_from(waited.as_nanos()) {
        Ok(w) if woken && !same_cpu && w < SPIN_MAX_NS => w.saturating_add(w / 4).min(SPIN_MAX_NS),
        // Below SPIN_MIN_NS a spin is not worth its clock reads: none.
        _ if budget / 2 < SPIN_MIN_NS => 0,
        _ => budget / 2,
    }
}

/// A non-alertable [`block`] with the deadline `timeout` from now. A single-object wait-any's first sleep is the
/// whole `timeout` (one clock read fewer: queueing on one object takes a single lock hold, so the sleep ends at most
/// that late); every other wait sleeps until the deadline, read after queueing, so a long queueing (many objects,
/// contended locks, the wait-all lock) does not delay its timeout.
#[inline]
fn block_fresh(
    objs: &[&Arc<Object>],
    mode: Mode,
    timeout: Option<Duration>,
    me: ThreadId,
) -> WaitResult {
    let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
    let first_sleep = match (mode, objs.len()) {
        (Mode::Any, 1) => deadline.and(timeout),
        _ => None,
    };
    block(objs, mode, deadline, first_sleep, me, None)
}

/// Steps 1–4 of the module docs. With `alert`, the alert event is slot `objs.len()`, and winning it returns
/// [`WaitResult::Alerted`] (the caller runs the APCs).
fn block(
    objs: &[&Arc<Object>],
    mode: Mode,
    deadline: Option<Instant>,
    first_sleep: Option<Duration>,
    me: ThreadId,
    alert: Option<&Arc<Object>>,
) -> WaitResult {
    block_noting(objs, mode, deadline, first_sleep, me, alert).0
}

/// [`block`], also returning the CPU of the thread that woke the wait (`u32::MAX`: unknown, or nobody did; always
/// under loom).
fn block_noting(
    objs: &[&Arc<Object>],
    mode: Mode,
    deadline: Option<Instant>,
    first_sleep: Option<Duration>,
    me: ThreadId,
    alert: Option<&Arc<Object>>,
) -> (WaitResult, u32) {
    block_inner(objs, mode, deadline, first_sleep, me, alert, |_| false)
}

/// [`block_noting`] with `before_sleep`, run once on the queued record before the first park; when it returns true,
/// the first sleep is measured from `deadline` again (the hook took time).
fn block_inner(
    objs: &[&Arc<Object>],
    mode: Mode,
    deadline: Option<Instant>,
    mut first_sleep: Option<Duration>,
    me: ThreadId,
    alert: Option<&Arc<Object>>,
    before_sleep: impl FnOnce(&Waiter) -> bool,
) -> (WaitResult, u32) {
    let n = objs.len();
    let all_objs: &[&Arc<Object>] = match mode {
        Mode::All => objs,
        Mode::Any => &[],
    };
    // The thread's wait record from its last wait. A wait-any record has no objects and is rearmed in place, even if
    // a waker still holds it to unpark it (see `Waiter::rearm`); a wait-all one gets its objects, so it must be unshared.
    let q = match local::take_waiter() {
        Some(q) if q.owner == me && mode == Mode::Any => {
            q.rearm();
            q
        }
        Some(mut q) if q.owner == me => match Arc::get_mut(&mut q) {
            Some(w) => {
                w.reuse(all_objs);
                q
            }
            None => Arc::new(Waiter::new(
                me,
                thread::current(),
                all_objs.iter().copied().cloned().collect(),
            )),
        },
        _ => Arc::new(Waiter::new(
            me,
            thread::current(),
            all_objs.iter().copied().cloned().collect(),
        )),
    };

    // 1 + 2: queue, then check. `queued`: how many of `objs` (then `alert`) the record was queued on.
    let queued = match mode {
        Mode::All => {
            let all_lock = wait_all_lock();
            let mut guards: Vec<StateGuard<'_>> = objs.iter().map(|o| o.lock_state()).collect();
            for (i, g) in guards.iter_mut().enumerate() {
                g.push_all(&q, i);
            }
            let mut states: Vec<&mut State> = guards.iter_mut().map(|g| &mut **g).collect();
            try_wake_all_locked(&q, &mut states);
            drop(states);
            drop(guards);
            if let Some(a) = alert {
                a.lock_state().push_any(&q, n);
            }
            drop(all_lock);
            // The alert is checked only after the objects: objects win ties.
            if let Some(a) = alert {
                if !q.is_signaled() {
                    a.lock_state().try_wake_any();
                }
            }
            n + usize::from(alert.is_some())
        }
        Mode::Any => {
            // Queue on each object and check it under one hold of its lock, in index order, alert last: the lowest
            // object signalled when checked wins, and objects win ties with the alert. Once the record is won (by
            // this check or by a signal on an object already queued on), the rest need not be queued on.
            let mut queued = n + usize::from(alert.is_some());
            for (i, o) in objs.iter().copied().chain(alert).enumerate() {
                if q.is_signaled() {
                    queued = i;
                    break;
                }
                let mut st = o.lock_state();
                st.push_any(&q, i);
                st.try_wake_any();
            }
            queued
        }
    };

    if before_sleep(&q) {
        first_sleep = None;
    }
    let result = sleep_and_finish(&q, objs, mode, deadline, first_sleep, alert, queued);
    #[cfg(not(loom))]
    let waker_cpu = q.waker_cpu.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(loom)]
    let waker_cpu = u32::MAX;
    // Keep the record for the next wait: a wait-any record as it is (it has no objects); a wait-all record only if
    // nobody else holds it, and without its objects (it must not keep them alive).
    match mode {
        Mode::Any => local::put_waiter(q),
        Mode::All => {
            let mut q = q;
            if let Some(w) = Arc::get_mut(&mut q) {
                w.reuse(&[]);
                local::put_waiter(q);
            }
        }
    }
    (result, waker_cpu)
}

/// Steps 3 and 4 for a waiter `q` already queued on the first `queued` of `objs` then `alert` (a wait-any won while
/// it queued stops queueing; clean-up leaves the others alone: locking them would inflate them) and checked once.
/// `first_sleep`: the length of the first sleep, when the caller knows it
/// (`deadline` was just computed from it), saving a clock read.
///
/// A zero timeout (a poll, or a deadline already passed) never parks: parking for zero would still cost a futex call
/// and the timer slack (tens of microseconds).
pub(crate) fn sleep_and_finish(
    q: &Arc<Waiter>,
    objs: &[&Arc<Object>],
    mode: Mode,
    deadline: Option<Instant>,
    mut first_sleep: Option<Duration>,
    alert: Option<&Arc<Object>>,
    queued: usize,
) -> WaitResult {
    let n = objs.len();
    // 3: sleep. Spurious unparks (a token left by an earlier wake-up) just loop.
    while !q.is_signaled() {
        let Some(d) = deadline else {
            thread::park();
            continue;
        };
        let left = match first_sleep.take() {
            Some(left) => left,
            None => d.saturating_duration_since(Instant::now()),
        };
        if left.is_zero() {
            break;
        }
        thread::park_timeout(left);
    }

    // 4: unqueue, then read the slot. After this no one can reach `q`, and the object locks order the winner's
    // writes (`abandoned`, the consumed state) before our reads.
    // A wait-any slot won by an event or semaphore at index i was won by that object's own `try_wake_any`, which took
    // our entry off its list under its lock: no need to lock it again. A mutex is still locked, to order the winner's
    // `abandoned` write before our read.
    let claimed = q.signaled.load(Ordering::Acquire);
    for (i, o) in objs.iter().copied().chain(alert).enumerate().take(queued) {
        if mode == Mode::Any && i == claimed && o.tag() != Tag::Mutex {
            continue;
        }
        o.lock_state().remove(q);
    }
    let index = q.signaled.load(Ordering::Acquire);
    if index == NONE {
        return WaitResult::TimedOut;
    }
    if alert.is_some() && index == n {
        return WaitResult::Alerted;
    }
    match mode {
        Mode::All => {
            for o in objs.iter().filter(|o| o.tag() == Tag::Mutex) {
                local::note_owned(o);
            }
        }
        Mode::Any => {
            if let Some(o) = objs.get(index).filter(|o| o.tag() == Tag::Mutex) {
                local::note_owned(o);
            }
        }
    }
    match q.abandoned.load(Ordering::Relaxed) {
        NONE => WaitResult::Signaled(index),
        abandoned => WaitResult::Abandoned(abandoned),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::sealed::Sealed;
    use super::*;
    use crate::object::test_hooks;
    use crate::{Event, Semaphore};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

    /// The object a wait last started spinning on (its address): lets a test act while a wait spins.
    pub(super) static SPINNING_ON: AtomicUsize = AtomicUsize::new(0);

    /// Forgets which object a wait last spun on (a new object may reuse a dropped one's address).
    fn forget_spinning() {
        SPINNING_ON.store(0, SeqCst);
    }

    /// Waits (at most 1 s) until some wait spins on `e`'s object (after [`forget_spinning`]).
    fn until_spinning(e: &Event) {
        let me = Arc::as_ptr(e.object()) as usize;
        let start = Instant::now();
        while SPINNING_ON.load(SeqCst) != me {
            if start.elapsed() > Duration::from_secs(1) {
                // Not seen (another test's wait spun meanwhile, or this machine is slow): queued will do.
                until_waiters(e, 1);
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// SetEvent then ResetEvent at once releases a thread already waiting (Windows: "the state of an auto-reset event
    /// object remains signaled until a single waiting thread is released"; a manual-reset one releases every waiting
    /// thread): also a wait that is still spinning rather than parked (it is queued before it spins). And PulseEvent,
    /// which releases the waiting threads and resets, likewise.
    #[test]
    fn set_then_reset_and_pulse_release_a_wait_that_is_spinning() {
        for manual in [false, true] {
            for pulse in [false, true] {
                for round in 0..50 {
                    let e = Event::new(manual, false);
                    e.object()
                        .set_spin_budget(e.object().spin_budget(), SPIN_MAX_NS);
                    let e2 = e.clone();
                    forget_spinning();
                    let t = std::thread::spawn(move || e2.wait(Some(Duration::from_secs(60))));
                    until_spinning(&e);
                    if pulse {
                        e.pulse();
                    } else {
                        e.set();
                        e.reset();
                    }
                    assert_eq!(
                        t.join().unwrap(),
                        Ok(WaitResult::Signaled(0)),
                        "manual {manual}, pulse {pulse}, round {round}: the waiting thread missed the signal"
                    );
                    assert!(!e.is_set());
                }
            }
        }
    }

    /// A wait that spins holds its place in the queue: a later wait on the same auto-reset event is served after it.
    #[test]
    fn a_spinning_wait_is_served_before_a_later_one() {
        for round in 0..30 {
            let e = Event::new(false, false);
            e.object()
                .set_spin_budget(e.object().spin_budget(), SPIN_MAX_NS);
            let (go, b_done) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let (eb, gb, db) = (e.clone(), go.clone(), b_done.clone());
            let b = std::thread::spawn(move || {
                while !gb.load(SeqCst) {
                    std::hint::spin_loop();
                }
                let r = wait_any(&[&eb as &dyn Waitable], Some(Duration::from_secs(60)));
                db.store(true, SeqCst);
                r
            });
            let ea = e.clone();
            forget_spinning();
            let a = std::thread::spawn(move || ea.wait(Some(Duration::from_secs(60))));
            until_spinning(&e);
            go.store(true, SeqCst);
            until_waiters(&e, 2);
            e.set();
            assert_eq!(
                a.join().unwrap(),
                Ok(WaitResult::Signaled(0)),
                "round {round}"
            );
            assert!(
                !b_done.load(SeqCst),
                "round {round}: the later wait was served first"
            );
            e.set();
            assert_eq!(b.join().unwrap(), Ok(WaitResult::Signaled(0)));
        }
    }

    /// A spin that caught its signal leaves a budget that follows the signal's delay (twice it, between
    /// `SPIN_KEEP_NS` and `SPIN_MAX_NS`), never a larger one.
    #[test]
    fn a_caught_spin_shrinks_the_budget_toward_its_signals() {
        let us = Duration::from_micros;
        assert_eq!(caught_spin_budget(Duration::from_nanos(300)), SPIN_KEEP_NS);
        assert_eq!(caught_spin_budget(us(3)), 6_000);
        assert_eq!(caught_spin_budget(us(20)), SPIN_MAX_NS);
        assert!(caught_spin_budget(us(3)) < SPIN_MAX_NS);
    }

    /// Until `obj` has `n` queued waits (another thread blocked on it).
    fn until_waiters(obj: &dyn Waitable, n: usize) {
        while obj.waiter_count() < n {
            std::thread::yield_now();
        }
    }

    /// The spin budget's rule (see `spin_then_block`): a wait woken from another CPU within `SPIN_MAX_NS` makes the
    /// budget cover it with a quarter to spare; a wait woken from its own CPU (the signaller needed that CPU), a long
    /// wait or a timeout halves it, down to zero; it never exceeds `SPIN_MAX_NS`.
    #[test]
    fn spin_budget_follows_what_spinning_would_have_caught() {
        let us = |n: u64| Duration::from_micros(n);
        // Woken from another CPU 12 µs after the wait began (an idle vCPU's wake-up): the next spin covers 15 µs.
        assert_eq!(next_spin_budget(2_000, true, false, us(12)), 15_000);
        // Even if the budget was larger: it follows the last wait.
        assert_eq!(next_spin_budget(20_000, true, false, us(4)), 5_000);
        // Capped: 24 µs * 5/4 would be 30 µs.
        assert_eq!(next_spin_budget(2_000, true, false, us(24)), SPIN_MAX_NS);
        // Woken from the CPU the wait spun on: halves, down to zero below SPIN_MIN_NS.
        assert_eq!(next_spin_budget(8_000, true, true, us(3)), 4_000);
        assert_eq!(
            next_spin_budget(2 * SPIN_MIN_NS, true, true, us(3)),
            SPIN_MIN_NS
        );
        assert_eq!(next_spin_budget(2 * SPIN_MIN_NS - 2, true, true, us(3)), 0);
        assert_eq!(next_spin_budget(0, true, true, us(3)), 0);
        // A wait longer than SPIN_MAX_NS, or a timeout: halves.
        assert_eq!(next_spin_budget(8_000, true, false, us(26)), 4_000);
        assert_eq!(
            next_spin_budget(8_000, true, false, Duration::from_secs(5)),
            4_000
        );
        assert_eq!(next_spin_budget(8_000, false, false, us(3)), 4_000);
        // A zero budget grows back after a short wait woken from another CPU.
        assert_eq!(next_spin_budget(0, true, false, us(8)), 10_000);
    }

    /// A single-object event or semaphore wait that spins before it queues still honours its timeout: a timeout
    /// shorter than the spin budget ends the wait as `TimedOut`, never before the timeout, without parking for
    /// nothing; and the signal that arrives while it spins is taken by it, once.
    #[test]
    fn spinning_wait_keeps_its_timeout_and_takes_a_signal_once() {
        let e = Event::new(false, false);
        let s = Semaphore::new(0, 2).unwrap();
        for w in [&e as &dyn Waitable, &s] {
            w.object()
                .set_spin_budget(w.object().spin_budget(), SPIN_MAX_NS);
            let t = Duration::from_micros(5);
            let (start, parks) = (Instant::now(), thread::parks());
            assert_eq!(w.wait(Some(t)), Ok(WaitResult::TimedOut));
            assert!(start.elapsed() >= t);
            assert_eq!(
                thread::parks(),
                parks,
                "parked after the spin used up the timeout"
            );
        }
        // A signal while the other thread spins (with the largest budget): one wait gets it.
        for _ in 0..200 {
            e.object()
                .set_spin_budget(e.object().spin_budget(), SPIN_MAX_NS);
            let e2 = e.clone();
            let t = std::thread::spawn(move || e2.wait(Some(Duration::from_secs(60))));
            e.set();
            assert_eq!(t.join().unwrap(), Ok(WaitResult::Signaled(0)));
            assert!(!e.is_set(), "the set was not consumed exactly once");
        }
        assert_eq!(s.release(2), Ok(0));
        assert_eq!(s.count(), 2);
    }

    /// A poll (zero timeout) of objects that another thread already waits on cannot complete lock-free, so it takes
    /// the queueing path: it must still time out without parking (a park for zero costs a futex call and the timer
    /// slack each time).
    #[test]
    fn poll_of_an_object_with_a_queued_waiter_never_parks() {
        let e = Event::new(false, false);
        let s = Semaphore::new(0, 1).unwrap();
        let (e2, s2) = (e.clone(), s.clone());
        let waiter = std::thread::spawn(move || {
            (e2.wait(None), wait_any(&[&s2 as &dyn Waitable, &e2], None))
        });
        until_waiters(&e, 1);
        let parks = thread::parks();
        let zero = Some(Duration::ZERO);
        for _ in 0..100 {
            assert_eq!(e.wait(zero), Ok(WaitResult::TimedOut));
            assert_eq!(wait_any(&[&e], zero), Ok(WaitResult::TimedOut));
            assert_eq!(wait_any(&[&s, &e], zero), Ok(WaitResult::TimedOut));
            assert_eq!(wait_all(&[&e, &s], zero), Ok(WaitResult::TimedOut));
        }
        assert_eq!(thread::parks(), parks, "a zero-timeout wait parked");
        e.set();
        until_waiters(&s, 1);
        for _ in 0..100 {
            assert_eq!(s.wait(zero), Ok(WaitResult::TimedOut));
            assert_eq!(wait_all(&[&s, &e], zero), Ok(WaitResult::TimedOut));
        }
        assert_eq!(thread::parks(), parks, "a zero-timeout wait parked");
        s.release(1).unwrap();
        let (r1, r2) = waiter.join().unwrap();
        assert_eq!(r1, Ok(WaitResult::Signaled(0)));
        assert_eq!(r2, Ok(WaitResult::Signaled(0)));
    }

    /// A wait-any whose record is won by an object while it queues (index 0 here) stops queueing there, and its
    /// clean-up touches only the objects it queued on: the later ones are never locked (locking inflates them).
    #[test]
    fn wait_any_won_while_queueing_never_locks_the_later_objects() {
        // `first` is signalled but inflated (another thread's wait-all, which cannot complete, is queued on it), so
        // the wait takes the queueing path and wins it at index 0.
        let first = Event::new(true, true);
        let never = Event::new(false, false);
        let (f2, n2) = (first.clone(), never.clone());
        let other = std::thread::spawn(move || wait_all(&[&f2 as &dyn Waitable, &n2], None));
        until_waiters(&first, 1);
        let (a, b) = (Event::new(false, false), Semaphore::new(0, 1).unwrap());
        test_hooks::record_locks();
        assert_eq!(
            wait_any(&[&first, &a, &b], None),
            Ok(WaitResult::Signaled(0))
        );
        let locked = test_hooks::take_locked();
        let addr = |w: &dyn Waitable| Arc::as_ptr(w.object()) as usize;
        assert!(locked.contains(&addr(&first)), "{locked:?}");
        assert!(!locked.contains(&addr(&a)), "{locked:?}");
        assert!(!locked.contains(&addr(&b)), "{locked:?}");
        never.set();
        assert_eq!(other.join().unwrap(), Ok(WaitResult::Signaled(0)));
    }
}
