//! Waits whose set contains named objects (alone or beside local ones).
//!
//! - **Wait-any**: local objects get the usual [`Waiter`] record queued (so their signallers claim it and wake us);
//!   named objects are checked by the waiter itself under their state lock, winning the same slot before consuming
//!   (see `named.rs`). Checks run in index order, so the lowest signalled index wins, and exactly one object is
//!   acquired.
//! - **Wait-all**: atomic over the whole set, local and named objects alike. The waiter takes the process's wait-all
//!   lock, every local object lock (index order), then every named state lock in name order (a total order every
//!   process agrees on, so two wait-alls in different processes cannot deadlock; signallers of a named object only
//!   ever hold its one lock and no local lock), checks that all are signalled for it, and consumes them all at once
//!   — or changes nothing. It never holds part of its set. Local objects see the waiter as a *watcher*: their
//!   signallers wake it to check again, never acquire for it.
//!
//! Sleeping is one `futex_waitv` over a private word (bumped by local signallers through
//! the waiter's `Wake`), each named object's `seq`, and the `own` word of each named
//! mutex owned elsewhere (woken by the kernel when its owner dies).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::WaitError;
use crate::local;
use crate::named::{Armed, Named, NamedKind};
use crate::object::{Object, StateGuard, Tag, Waiter, Wake, NONE};
use crate::sync::wait_all_lock;
use crate::sys::TryLock;
use crate::thread::ThreadId;
use crate::wait::{Mode, WaitResult};

/// At most this many named objects in one wait (`futex_waitv` takes 128 words: one private, and up to two per named
/// object).
pub const MAX_NAMED: usize = 63;

/// The longest a named wait sleeps before it looks again (see `block`).
const RECHECK: Duration = Duration::from_secs(1);

/// One object of a wait.
#[derive(Clone, Copy)]
pub(crate) enum Item<'a> {
    Local(&'a Arc<Object>),
    Named(&'a Arc<Named>),
}

/// Validates, then waits (the alertable loop of `wait_objects`).
pub(crate) fn wait_items(
    items: &[Item<'_>],
    mode: Mode,
    timeout: Option<Duration>,
    alertable: bool,
) -> Result<WaitResult, WaitError> {
    if items.is_empty() {
        return Err(WaitError::Empty);
    }
    let named_count = items.iter().filter(|i| matches!(i, Item::Named(_))).count();
    if named_count > MAX_NAMED {
        return Err(WaitError::TooManyNamed { max: MAX_NAMED });
    }
    for j in 1..items.len() {
        for i in 0..j {
            let same = match (items[i], items[j]) {
                (Item::Local(a), Item::Local(b)) => Arc::ptr_eq(a, b),
                (Item::Named(a), Item::Named(b)) => a.key() == b.key(),
                _ => false,
            };
            if same {
                return Err(WaitError::Duplicate {
                    first: i,
                    second: j,
                });
            }
        }
    }
    let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
    let me = local::current_id();
    if deadline.is_none() && !alertable {
        let own = |i: &Item<'_>| matches!(i, Item::Local(o) if o.tag() == Tag::Thread(me));
        let hopeless = match mode {
            Mode::All => items.iter().any(own),
            Mode::Any => items.iter().all(own),
        };
        if hopeless {
            return Err(WaitError::WouldDeadlock);
        }
    }
    for (index, item) in items.iter().enumerate() {
        let full = match item {
            Item::Local(o) => o.tag() == Tag::Mutex && o.read(|k| k.is_recursion_full(me)),
            Item::Named(n) => n.kind() == NamedKind::Mutex && n.mutex_recursion_full(),
        };
        if full {
            return Err(WaitError::RecursionOverflow { index });
        }
    }
    if !alertable {
        return Ok(block(items, mode, deadline, me, None, None));
    }
    let shared = local::current_shared();
    loop {
        match block(items, mode, deadline, me, Some(&shared.apc.alert), None) {
            WaitResult::Alerted if shared.apc.run_pending() == 0 => continue,
            result => return Ok(result),
        }
    }
}

fn block(
    items: &[Item<'_>],
    mode: Mode,
    deadline: Option<Instant>,
    me: ThreadId,
    alert: Option<&Arc<Object>>,
    registered: Option<Vec<Option<u32>>>,
) -> WaitResult {
    let n = items.len();
    let word = Arc::new(AtomicU32::new(0));
    let q = Arc::new(Waiter::with_wake(
        me,
        Wake::Futex(Arc::clone(&word)),
        Vec::new(),
    ));
    let named: Vec<(usize, &Arc<Named>)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| match it {
            Item::Named(n) => Some((i, *n)),
            Item::Local(_) => None,
        })
        .collect();
    for (i, it) in items.iter().enumerate() {
        if let Item::Local(o) = it {
            let mut st = o.lock_state();
            match mode {
                Mode::Any => st.push_any(&q, i),
                Mode::All => st.push_watch(&q, i),
            }
        }
    }
    if let Some(a) = alert {
        a.lock_state().push_any(&q, n);
    }
    // A pulse releases the waits registered before it: read each event's pulse generation first, then register as a
    // sleeper (which is what "waiting" means to a pulser and to the test-only waiter count).
    // (`registered`: done already, under the object's lock, by `signal_and_wait`.)
    let mut pulse_seen: Vec<Option<u32>> = match registered {
        Some(seen) => seen,
        None => {
            let mut seen = vec![None; n];
            for &(i, nm) in &named {
                if nm.kind() == NamedKind::Event {
                    seen[i] = Some(nm.shared().pulse_gen.load(Ordering::SeqCst));
                }
                nm.shared().sleepers.fetch_add(1, Ordering::SeqCst);
            }
            seen
        }
    };
    // Name order, for wait-all's locking.
    let mut sorted = named.clone();
    sorted.sort_by(|a, b| a.1.key().cmp(b.1.key()));

    loop {
        let w = word.load(Ordering::Acquire);
        let seqs: Vec<u32> = named
            .iter()
            .map(|(_, nm)| nm.shared().seq.load(Ordering::SeqCst))
            .collect();
        match mode {
            Mode::Any => {
                for (i, it) in items.iter().enumerate() {
                    if q.is_signaled() {
                        break;
                    }
                    match it {
                        Item::Local(o) => o.lock_state().try_wake_any(),
                        Item::Named(nm) => nm.try_acquire(&q, i, &mut pulse_seen[i]),
                    }
                }
            }
            Mode::All => try_all(items, &sorted, &q, me, &mut pulse_seen),
        }
        if let Some(a) = alert {
            if !q.is_signaled() {
                a.lock_state().try_wake_any();
            }
        }
        if q.is_signaled() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut words: Vec<(&AtomicU32, u32, bool)> = vec![(&*word, w, false)];
        let mut dead = false;
        for ((_, nm), seq) in named.iter().zip(&seqs) {
            words.push((&nm.shared().seq, *seq, true));
            match nm.arm_owner_word() {
                Armed::Sleep(own, v) => words.push((own, v, true)),
                Armed::Unowned => {}
                Armed::Dead => {
                    // Whoever sees a dead owner reaps it at once (and wakes every sleeper): the kernel's one wake-up
                    // may have been spent on a wait that cannot use it, or the owner died after our checks.
                    nm.reap_dead_owner();
                    dead = true;
                }
            }
        }
        if dead {
            continue;
        }
        // Never sleep longer than RECHECK: a process killed inside a state lock's critical section (after changing
        // the state, before its wake-up) wakes nobody, and only the next locker learns of it (`EOWNERDEAD`, which
        // bumps and wakes). Looking again now and then bounds that rare loss; it costs one check a second per wait.
        let nap = Instant::now() + RECHECK;
        crate::sys::futex_waitv(&words, Some(deadline.map_or(nap, |d| d.min(nap))));
    }

    for (_, nm) in &named {
        nm.shared().sleepers.fetch_sub(1, Ordering::SeqCst);
        // The kernel's one wake-up for a dead owner may have come to us: pass it on.
        nm.reap_dead_owner();
    }
    for it in items {
        if let Item::Local(o) = it {
            o.lock_state().remove(&q);
        }
    }
    if let Some(a) = alert {
        a.lock_state().remove(&q);
    }
    let index = q.signaled.load(Ordering::Acquire);
    if index == NONE {
        return WaitResult::TimedOut;
    }
    if alert.is_some() && index == n {
        return WaitResult::Alerted;
    }
    let acquired = |it: &Item<'_>| match it {
        Item::Local(o) if o.tag() == Tag::Mutex => local::note_owned(o),
        Item::Named(nm) if nm.kind() == NamedKind::Mutex => local::note_owned_named(nm),
        _ => {}
    };
    match mode {
        Mode::All => items.iter().for_each(acquired),
        Mode::Any => {
            if let Some(it) = items.get(index) {
                acquired(it);
            }
        }
    }
    match q.abandoned.load(Ordering::Relaxed) {
        NONE => WaitResult::Signaled(index),
        abandoned => WaitResult::Abandoned(abandoned),
    }
}

/// The wait of `signal_and_wait` on the named object `nm`, already registered (see
/// [`Locked::register_waiter`](crate::named::Locked::register_waiter), which returned `pulse_seen`) atomically with
/// the signal. Validation (recursion) is the caller's, before signalling.
pub(crate) fn wait_registered(
    nm: &Arc<Named>,
    pulse_seen: Option<u32>,
    deadline: Option<Instant>,
    alertable: bool,
) -> WaitResult {
    let items = [Item::Named(nm)];
    let me = local::current_id();
    let wait = |alert: Option<&Arc<Object>>, registered| {
        block(&items, Mode::Any, deadline, me, alert, registered)
    };
    if !alertable {
        return wait(None, Some(vec![pulse_seen]));
    }
    let shared = local::current_shared();
    match wait(Some(&shared.apc.alert), Some(vec![pulse_seen])) {
        // A stale alert (its APCs already ran): the signal is made, keep waiting as a plain alertable wait.
        WaitResult::Alerted if shared.apc.run_pending() == 0 => loop {
            match wait(Some(&shared.apc.alert), None) {
                WaitResult::Alerted if shared.apc.run_pending() == 0 => continue,
                result => return result,
            }
        },
        result => result,
    }
}

/// The wait-all check: all locks, all signalled → claim slot 0 and consume everything; otherwise change nothing.
///
/// A named event counts as signalled when it is set, or when a pulse came after this wait registered (`pulse_seen`)
/// and may still release a wait: `PulseEvent` releases a wait-all whose other objects are signalled at that moment.
fn try_all(
    items: &[Item<'_>],
    sorted: &[(usize, &Arc<Named>)],
    q: &Waiter,
    me: ThreadId,
    pulse_seen: &mut [Option<u32>],
) {
    let _all = wait_all_lock();
    let mut local_guards: Vec<(usize, StateGuard<'_>)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| match it {
            Item::Local(o) => Some((i, o.lock_state())),
            Item::Named(_) => None,
        })
        .collect();
    let mut named_guards: Vec<(usize, &Arc<Named>, crate::named::Locked<'_>)> =
        sorted.iter().map(|&(i, nm)| (i, nm, nm.lock())).collect();
    if q.is_signaled() {
        return;
    }
    let mut ok = local_guards.iter().all(|(_, g)| g.kind.is_signaled_for(me));
    // Named mutexes not yet ours must be taken (their `own` lock) to know; remember which to give back on failure.
    let mut taken: HashSet<usize> = HashSet::new();
    if ok {
        for (i, nm, g) in named_guards.iter_mut() {
            let s = g.shared();
            let signaled = match nm.kind() {
                NamedKind::Event => {
                    let gen = s.pulse_gen.load(Ordering::Relaxed);
                    let seen = *pulse_seen[*i].get_or_insert(gen);
                    s.value.load(Ordering::Relaxed) != 0
                        || (gen != seen && s.pulse_tokens.load(Ordering::Relaxed) > 0)
                }
                NamedKind::Semaphore => s.value.load(Ordering::Relaxed) > 0,
                NamedKind::Mutex => {
                    if g.owned_by_me() {
                        s.value.load(Ordering::Relaxed) < u32::MAX
                    } else {
                        match s.own.try_lock() {
                            TryLock::Busy => false,
                            got => {
                                if got == TryLock::OwnerDied {
                                    g.mark_abandoned();
                                }
                                taken.insert(*i);
                                true
                            }
                        }
                    }
                }
            };
            if !signaled {
                ok = false;
                break;
            }
        }
    }
    if !ok || !q.claim(0) {
        for (i, _, g) in named_guards.iter() {
            if taken.contains(i) {
                g.shared().own.unlock();
            }
        }
        return;
    }
    let mut abandoned = NONE;
    for (i, g) in local_guards.iter_mut() {
        if g.kind.consume(me) {
            abandoned = abandoned.min(*i);
        }
    }
    for (i, nm, g) in named_guards.iter_mut() {
        let s = g.shared();
        match nm.kind() {
            NamedKind::Event => {
                if s.param.load(Ordering::Relaxed) == 0 {
                    if s.value.load(Ordering::Relaxed) != 0 {
                        s.value.store(0, Ordering::Relaxed);
                    } else {
                        // Released by a pulse: an auto-reset pulse releases one wait.
                        s.pulse_tokens.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            NamedKind::Semaphore => {
                s.value.fetch_sub(1, Ordering::Relaxed);
            }
            NamedKind::Mutex => {
                if taken.contains(i) {
                    if g.take_ownership() {
                        abandoned = abandoned.min(*i);
                    }
                } else {
                    s.value.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    q.abandoned.store(abandoned, Ordering::Relaxed);
    drop(named_guards);
    drop(local_guards);
}
