//! Kernel objects and ntsync's wake algorithm.
//!
//! Every object ([`Object`]) has one lock over its state and its two waiter lists: `any` (wait-any waiters, and the
//! alert slot of alertable waits) and `all` (wait-all waiters). A wait builds one [`Waiter`] record with a single
//! atomic slot, `signaled`, that starts at [`NONE`]. Whoever wins the compare-and-swap of that slot from `NONE` to an
//! index (a thread changing an object's state, or the waiter checking for itself) consumes the object state on the
//! waiter's behalf — one semaphore count, an auto-reset event, mutex ownership — and unparks it. A record can be won
//! once, so an object is consumed at most once per wait and a wake-up is never lost: the waiter reads the slot after it
//! has left every list, and reports success if anybody won it, even if its deadline had passed (a timeout that lost the
//! race must not drop the count it was given).
//!
//! Wait-all needs several objects at once. It runs under the process-wide wait-all lock
//! ([`crate::sync::wait_all_lock`]), and holding that lock is the only way to hold more than one object lock, so the
//! locking cannot deadlock. A state change on an object takes the wait-all lock only when a wait-all waiter is queued
//! on that object (its `all` list is non-empty, read under the object lock): with no wait-all queued the global lock is
//! never touched. This is ntsync's `all_hint`, kept exact because both lists live under the object lock (ntsync keeps
//! `all_waiters` under the global lock and needs an atomic hint plus a `dev_locked` flag; userspace can simply hold
//! several std mutexes at once).

use crate::sync::thread::Thread;
use crate::sync::{
    lock, thread, wait_all_lock, Arc, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering,
};
use crate::thread::ThreadId;

/// The empty value of a waiter's slot: nobody has won it yet.
pub(crate) const NONE: usize = usize::MAX;

/// What an object is; fixed at creation, readable without the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    Event,
    Mutex,
    Semaphore,
    /// A thread object, with the id of the thread it stands for.
    Thread(ThreadId),
}

/// The signal state of an object.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Event {
        manual: bool,
        signaled: bool,
    },
    /// `count == u32::MAX` makes the mutex unacquirable (ntsync); the waits report that to the owner as an error.
    Mutex {
        owner: Option<ThreadId>,
        count: u32,
        abandoned: bool,
    },
    Semaphore {
        count: u32,
        max: u32,
    },
    /// Signalled for ever once the thread has exited.
    Thread {
        exit_code: Option<u32>,
    },
}

impl Kind {
    /// Whether some waiter could acquire the object now (for mutexes: if it is the right owner).
    #[inline]
    fn may_be_signaled(&self) -> bool {
        match *self {
            Kind::Event { signaled, .. } => signaled,
            Kind::Mutex { count, .. } => count < u32::MAX,
            Kind::Semaphore { count, .. } => count > 0,
            Kind::Thread { exit_code } => exit_code.is_some(),
        }
    }

    /// Whether a waiter of thread `owner` can acquire the object now.
    #[inline]
    pub(crate) fn is_signaled_for(&self, owner: ThreadId) -> bool {
        match *self {
            Kind::Mutex {
                owner: current,
                count,
                ..
            } => count < u32::MAX && current.map_or(true, |o| o == owner),
            _ => self.may_be_signaled(),
        }
    }

    /// Whether `owner` holds this mutex at the maximum recursion count, so that a wait by `owner` can never succeed.
    pub(crate) fn is_recursion_full(&self, owner: ThreadId) -> bool {
        matches!(*self, Kind::Mutex { owner: Some(o), count: u32::MAX, .. } if o == owner)
    }

    /// Acquires the object for `owner`, which [`Kind::is_signaled_for`] allows. Returns whether it was an abandoned
    /// mutex.
    #[inline]
    pub(crate) fn consume(&mut self, owner: ThreadId) -> bool {
        match self {
            Kind::Event { manual, signaled } => {
                if !*manual {
                    *signaled = false;
                }
                false
            }
            Kind::Mutex {
                owner: current,
                count,
                abandoned,
            } => {
                *count = count.saturating_add(1);
                *current = Some(owner);
                std::mem::replace(abandoned, false)
            }
            Kind::Semaphore { count, .. } => {
                *count = count.saturating_sub(1);
                false
            }
            Kind::Thread { .. } => false,
        }
    }
}

/// One wait in progress: ntsync's `struct ntsync_q`.
pub(crate) struct Waiter {
    /// [`NONE`], or the index of the object that satisfied the wait (0 for a wait-all; the object count for the alert
    /// slot). Written once, by the compare-and-swap winner.
    pub(crate) signaled: AtomicUsize,
    /// [`NONE`], or the lowest index of an abandoned mutex the winner acquired for this wait. Written by the winner
    /// under the object locks; read by the waiter after it has taken those locks again to unqueue.
    pub(crate) abandoned: AtomicUsize,
    /// The thread the wait acquires mutexes for.
    pub(crate) owner: ThreadId,
    /// The CPU the thread that woke this wait ran on (`u32::MAX`: none yet): a hint for the spin budget (see
    /// `wait::spin_then_block`), written before the unpark, read relaxed; no part of the hand-off.
    #[cfg(not(loom))]
    pub(crate) waker_cpu: std::sync::atomic::AtomicU32,
    /// How to wake the waiting thread.
    wake: Wake,
    /// For a wait-all, its objects (in order), so that a state change on one of them can check all of them.
    objs: Vec<Arc<Object>>,
}

/// How a waiter sleeps, so how to wake it.
#[derive(Clone)]
pub(crate) enum Wake {
    /// Parked (`thread::park`): waits on this process's objects only.
    Park(Thread),
    /// Asleep in `futex_waitv` on this word (process-private) beside the futex words of named objects: a wake-up
    /// bumps the word and wakes it.
    #[cfg(not(loom))]
    Futex(Arc<std::sync::atomic::AtomicU32>),
}

impl Wake {
    fn unpark(&self) {
        match self {
            Wake::Park(t) => t.unpark(),
            #[cfg(not(loom))]
            Wake::Futex(word) => {
                word.fetch_add(1, std::sync::atomic::Ordering::Release);
                crate::sys::futex_wake(word, 1, false);
            }
        }
    }
}

impl Waiter {
    pub(crate) fn new(owner: ThreadId, thread: Thread, all_objs: Vec<Arc<Object>>) -> Waiter {
        Waiter::with_wake(owner, Wake::Park(thread), all_objs)
    }

    pub(crate) fn with_wake(owner: ThreadId, wake: Wake, all_objs: Vec<Arc<Object>>) -> Waiter {
        Waiter {
            signaled: AtomicUsize::new(NONE),
            abandoned: AtomicUsize::new(NONE),
            owner,
            #[cfg(not(loom))]
            waker_cpu: std::sync::atomic::AtomicU32::new(u32::MAX),
            wake,
            objs: all_objs,
        }
    }

    /// Makes a finished, unshared record ready for another wait of the same thread: slot empty, `all_objs` its set.
    pub(crate) fn reuse(&mut self, all_objs: &[&Arc<Object>]) {
        self.signaled.store(NONE, Ordering::Relaxed);
        self.abandoned.store(NONE, Ordering::Relaxed);
        #[cfg(not(loom))]
        self.waker_cpu
            .store(u32::MAX, std::sync::atomic::Ordering::Relaxed);
        if !self.objs.is_empty() || !all_objs.is_empty() {
            self.objs.clear();
            self.objs.extend(all_objs.iter().map(|o| Arc::clone(o)));
        }
    }

    /// Makes a kept wait-any record (no objects) ready for another wait of the same thread, through a shared
    /// reference: once its wait has ended, no list holds the record, so nobody can claim it any more; the only other
    /// holders are wakers that claimed it and have yet to unpark it (see [`Wakes`]), and they read nothing else. So it
    /// need not be unshared: the late unpark is a spurious wake-up of the next wait.
    pub(crate) fn rearm(&self) {
        debug_assert!(self.objs.is_empty());
        self.signaled.store(NONE, Ordering::Relaxed);
        self.abandoned.store(NONE, Ordering::Relaxed);
        #[cfg(not(loom))]
        self.waker_cpu
            .store(u32::MAX, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wakes the waiting thread, noting the CPU it is woken from.
    fn wake_up(&self) {
        #[cfg(not(loom))]
        self.waker_cpu.store(
            crate::sys::current_cpu(),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.wake.unpark();
    }

    pub(crate) fn is_signaled(&self) -> bool {
        self.signaled.load(Ordering::Acquire) != NONE
    }

    /// Claims the slot for `index`; only the winner may consume object state for this waiter.
    pub(crate) fn claim(&self, index: usize) -> bool {
        self.signaled
            .compare_exchange(NONE, index, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

struct Entry {
    q: Arc<Waiter>,
    index: usize,
    /// A watcher (a wait-all that includes named objects): woken when the object may be signalled, never claimed
    /// from here; it checks its whole set itself under all the locks.
    watch: bool,
}

/// Waiters claimed under an object lock, to unpark once the lock is released (a woken waiter then does not run into
/// the lock its waker still holds). Inline: collecting them allocates nothing; past four, the rest are unparked at
/// once, which is only slower. A claimed entry's record moves here from the list it leaves, so a wake-up costs no
/// reference-count traffic.
#[derive(Default)]
pub(crate) struct Wakes {
    q: [Option<Arc<Waiter>>; 4],
}

impl Wakes {
    fn push(&mut self, q: Arc<Waiter>) {
        match self.q.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(q),
            None => q.wake_up(),
        }
    }

    /// Whether nobody is to be unparked (slots fill in order, so the first tells).
    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.q[0].is_none()
    }

    fn take(&mut self) -> Wakes {
        Wakes {
            q: std::mem::take(&mut self.q),
        }
    }
}

impl Drop for Wakes {
    /// Unparks through the records, then lets go of them. A waiter may already be on its next wait with the same record
    /// (see [`Waiter::rearm`]): the unpark is then a spurious one, which every sleep tolerates.
    fn drop(&mut self) {
        for q in self.q.iter().flatten() {
            q.wake_up();
        }
    }
}

/// An object's lock-protected part.
///
/// (Public only so that the sealed `Signal` trait can name it; the module is private.)
pub struct State {
    /// The state while the object is inflated (see [`Object::fast`]); stale otherwise.
    pub(crate) kind: Kind,
    any: Vec<Entry>,
    all: Vec<Entry>,
    /// Claimed waiters to unpark after unlocking.
    wakes: Wakes,
}

impl State {
    pub(crate) fn push_any(&mut self, q: &Arc<Waiter>, index: usize) {
        self.any.push(Entry {
            q: Arc::clone(q),
            index,
            watch: false,
        });
    }

    /// Queues `q` as a watcher (see [`Entry::watch`]).
    #[cfg(not(loom))]
    pub(crate) fn push_watch(&mut self, q: &Arc<Waiter>, index: usize) {
        self.any.push(Entry {
            q: Arc::clone(q),
            index,
            watch: true,
        });
    }

    pub(crate) fn push_all(&mut self, q: &Arc<Waiter>, index: usize) {
        self.all.push(Entry {
            q: Arc::clone(q),
            index,
            watch: false,
        });
    }

    /// Takes `q` off both lists (FIFO order of the others kept).
    pub(crate) fn remove(&mut self, q: &Arc<Waiter>) {
        self.any.retain(|e| !Arc::ptr_eq(&e.q, q));
        self.all.retain(|e| !Arc::ptr_eq(&e.q, q));
    }

    /// ntsync's `try_wake_any_*`: hands the object to queued wait-any waiters in FIFO order while it stays signaled.
    pub(crate) fn try_wake_any(&mut self) {
        let State {
            kind, any, wakes, ..
        } = self;
        // A claimed entry leaves the list at once (its waiter knows: the slot holds this object's index), so the
        // waiter need not lock this object again, and the object can deflate when its last waiter is served.
        let mut i = 0;
        while i < any.len() {
            if !kind.may_be_signaled() {
                break;
            }
            let e = &any[i];
            if e.watch {
                wakes.push(Arc::clone(&e.q));
                i += 1;
                continue;
            }
            if !kind.is_signaled_for(e.q.owner) {
                i += 1;
                continue; // a mutex owned by someone else: a later waiter may be its owner
            }
            if e.q.claim(e.index) {
                if kind.consume(e.q.owner) {
                    e.q.abandoned.store(e.index, Ordering::Relaxed);
                }
                // The last entry (the only one, in a ping-pong) pops without a move of the rest.
                let e = if i + 1 == any.len() {
                    any.pop()
                } else {
                    Some(any.remove(i))
                };
                if let Some(e) = e {
                    wakes.push(e.q);
                }
                continue;
            }
            i += 1;
        }
    }
}

/// ntsync's `try_wake_all`: if every object of the wait-all `q` is signaled for it, claims `q` and consumes them all.
/// `states[i]` is the locked state of `q.objs[i]`; the caller holds the wait-all lock.
pub(crate) fn try_wake_all_locked(q: &Arc<Waiter>, states: &mut [&mut State]) {
    if q.is_signaled() || !states.iter().all(|s| s.kind.is_signaled_for(q.owner)) {
        return;
    }
    if q.claim(0) {
        let mut abandoned = NONE;
        for (i, s) in states.iter_mut().enumerate() {
            if s.kind.consume(q.owner) && abandoned == NONE {
                abandoned = i;
            }
        }
        q.abandoned.store(abandoned, Ordering::Relaxed);
        if let Some(s) = states.first_mut() {
            s.wakes.push(Arc::clone(q));
        }
    }
}

/// ntsync's `try_wake_all_obj`: gives every wait-all waiter queued on `obj` (whose locked state is `st`) a chance.
/// The caller holds the wait-all lock, which allows locking the waiters' other objects.
fn try_wake_all_obj(obj: &Object, st: &mut State) {
    let waiters: Vec<Arc<Waiter>> = st.all.iter().map(|e| Arc::clone(&e.q)).collect();
    for q in waiters {
        let mut guards: Vec<Option<StateGuard<'_>>> = q
            .objs
            .iter()
            .map(|o| (!std::ptr::eq(&**o, obj)).then(|| o.lock_state()))
            .collect();
        let mut this = Some(&mut *st);
        let mut states: Vec<&mut State> = guards
            .iter_mut()
            .filter_map(|g| match g {
                Some(g) => Some(&mut **g),
                None => this.take(),
            })
            .collect();
        if states.len() == q.objs.len() {
            try_wake_all_locked(&q, &mut states);
        }
    }
}

/// [`Object::fast`]: the state is in [`State::kind`], under the lock.
const INFLATED: u64 = 1 << 63;
/// [`Object::fast`]: a fast wait-all holds the word for a few instructions (see [`fast_wait_all`]).
const BUSY: u64 = 1 << 62;
/// How long a fast signal waits out a busy word before it takes the lock (once under loom, which must not spin).
#[cfg(not(loom))]
const BUSY_SPINS: u32 = 64;
#[cfg(loom)]
const BUSY_SPINS: u32 = 0;
/// The spin budget of a new object (ns; see `wait::spin_then_block`).
#[cfg(not(loom))]
pub(crate) const SPIN_START_NS: u32 = 2_000;
/// Mutex counts and owner ids up to this fit the fast word; beyond, the mutex stays inflated.
const FAST_LIMIT: u64 = 1 << 30;

/// A kernel object: an event, mutex, semaphore or thread, shared by every handle to it.
///
/// (Public only so that the sealed `Waitable` trait can name it; the module is private.)
///
/// # The fast word
///
/// While no wait is queued on an event, semaphore or mutex and nobody holds its lock, its whole state fits one atomic
/// word, `fast` (*deflated*): event = manual and signalled bits; semaphore = count (the maximum is fixed); mutex =
/// owner id, abandoned bit and count. Then a wait that can be satisfied at once, a poll that cannot, and a signal —
/// which has no waiter to wake — are one compare-and-swap, with no lock and no allocation. Taking the lock
/// *inflates* the object: a compare-and-swap moves the state into [`State::kind`] and leaves [`INFLATED`], which
/// sends every fast path to the lock. Releasing the lock with no waiter queued deflates it again. A fast operation
/// and an inflation are compare-and-swaps on one word, so each fast operation happens entirely before or entirely
/// after the lock holder's view of the state: the slow-path algorithm (ntsync's) is unchanged, and a queued waiter is
/// never bypassed, because an object with a queued waiter is inflated.
pub struct Object {
    tag: Tag,
    /// The fast word (see above).
    fast: AtomicU64,
    /// A semaphore's maximum (fixed at creation).
    max: u32,
    /// How long (ns) a single-object wait on this event or semaphore spins on the fast word before it queues: adapted
    /// by the waits themselves (see `wait::spin_then_block`). A hint only, read and written relaxed; no part of the
    /// hand-off.
    #[cfg(not(loom))]
    spin_ns: std::sync::atomic::AtomicU32,
    state: Mutex<State>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.read(|k| format!("{k:?}"));
        f.debug_struct("Object").field("kind", &kind).finish()
    }
}

/// What a fast-path attempt on one object found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fast {
    /// Acquired (for a mutex: whether it had been abandoned).
    Acquired(bool),
    /// Deflated and not signalled for the caller: nothing changed.
    NotSignaled,
    /// Inflated or busy: take the lock.
    Slow,
}

impl Object {
    pub(crate) fn new(kind: Kind, tag: Tag) -> Arc<Object> {
        let max = match kind {
            Kind::Semaphore { max, .. } => max,
            _ => 0,
        };
        let mut obj = Object {
            tag,
            fast: AtomicU64::new(INFLATED),
            max,
            #[cfg(not(loom))]
            spin_ns: std::sync::atomic::AtomicU32::new(SPIN_START_NS),
            state: Mutex::new(State {
                kind,
                any: Vec::new(),
                all: Vec::new(),
                wakes: Wakes::default(),
            }),
        };
        if let Some(w) = obj.encode(&lock(&obj.state).kind) {
            obj.fast = AtomicU64::new(w);
        }
        Arc::new(obj)
    }

    pub(crate) fn tag(&self) -> Tag {
        self.tag
    }

    /// The current spin budget of a single-object wait (see [`Object::spin_ns`]).
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn spin_budget(&self) -> u32 {
        self.spin_ns.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the spin budget (written only when it changes: the word shares the fast word's cache line).
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn set_spin_budget(&self, old: u32, new: u32) {
        if new != old {
            self.spin_ns
                .store(new, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The fast word for `kind`, if it fits one.
    #[inline(always)]
    fn encode(&self, kind: &Kind) -> Option<u64> {
        match (*kind, self.tag) {
            (Kind::Event { manual, signaled }, Tag::Event) => {
                Some(u64::from(manual) << 1 | u64::from(signaled))
            }
            (Kind::Semaphore { count, .. }, Tag::Semaphore) => Some(u64::from(count)),
            (
                Kind::Mutex {
                    owner,
                    count,
                    abandoned,
                },
                Tag::Mutex,
            ) => {
                let owner = owner.map_or(0, ThreadId::as_u64);
                (owner < FAST_LIMIT && u64::from(count) < FAST_LIMIT)
                    .then(|| owner << 32 | u64::from(abandoned) << 30 | u64::from(count))
            }
            _ => None,
        }
    }

    /// The state a deflated word stands for.
    #[inline(always)]
    fn decode(&self, w: u64) -> Kind {
        match self.tag {
            Tag::Event => Kind::Event {
                manual: w & 2 != 0,
                signaled: w & 1 != 0,
            },
            Tag::Semaphore => Kind::Semaphore {
                count: (w & 0xffff_ffff) as u32,
                max: self.max,
            },
            Tag::Mutex => Kind::Mutex {
                owner: ThreadId::from_u64(w >> 32 & 0x3fff_ffff),
                count: (w & 0x3fff_ffff) as u32,
                abandoned: w & (1 << 30) != 0,
            },
            Tag::Thread(_) => Kind::Thread { exit_code: None }, // never deflated
        }
    }

    /// The object lock. Inflates the object (waiting out a fast wait-all's few instructions); the guard deflates it
    /// again if no waiter is left when it is dropped, and unparks the waiters claimed meanwhile after unlocking.
    pub(crate) fn lock_state(&self) -> StateGuard<'_> {
        #[cfg(all(test, not(loom)))]
        test_hooks::LOCKED.with(|l| {
            if let Some(v) = l.borrow_mut().as_mut() {
                v.push(self as *const Object as usize);
            }
        });
        let mut g = lock(&self.state);
        let mut w = self.fast.load(Ordering::Acquire);
        loop {
            if w & INFLATED != 0 {
                break;
            }
            if w & BUSY != 0 {
                thread::yield_now();
                w = self.fast.load(Ordering::Acquire);
                continue;
            }
            match self
                .fast
                .compare_exchange(w, INFLATED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    g.kind = self.decode(w);
                    break;
                }
                Err(now) => w = now,
            }
        }
        StateGuard {
            obj: self,
            g,
            wakes: None,
        }
    }

    /// Reads the state (lock-free while deflated).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Kind) -> R) -> R {
        let w = self.fast.load(Ordering::Acquire);
        if w & (INFLATED | BUSY) == 0 {
            return f(&self.decode(w));
        }
        f(&self.lock_state().kind)
    }

    /// The fast path of a wait on this object by `me`: acquire it with one compare-and-swap if it is deflated and
    /// signalled for `me`.
    #[inline(always)]
    pub(crate) fn try_fast_acquire(&self, me: ThreadId) -> Fast {
        let mut w = self.fast.load(Ordering::Acquire);
        loop {
            if w & (INFLATED | BUSY) != 0 {
                return Fast::Slow;
            }
            let mut kind = self.decode(w);
            if !kind.is_signaled_for(me) {
                return Fast::NotSignaled;
            }
            let abandoned = kind.consume(me);
            let Some(new) = self.encode(&kind) else {
                return Fast::Slow;
            };
            if new == w {
                return Fast::Acquired(abandoned); // a manual-reset event: acquiring changes nothing
            }
            match self
                .fast
                .compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Fast::Acquired(abandoned),
                Err(now) => w = now,
            }
        }
    }

    /// The fast path of a signal: while deflated (so with no waiter to wake), apply `change` then `after` to the word.
    /// `None`: inflated, take the lock. The closures are pure and may run more than once.
    #[inline(always)]
    fn try_fast_signal<R>(
        &self,
        change: &impl Fn(&mut Kind) -> R,
        after: &impl Fn(&mut Kind),
    ) -> Option<R> {
        let mut w = self.fast.load(Ordering::Acquire);
        let mut busy_spins = 0;
        loop {
            if w & INFLATED != 0 {
                return None;
            }
            if w & BUSY != 0 {
                // A fast wait-all holds the word for a few instructions: wait briefly rather than take the lock.
                busy_spins += 1;
                if busy_spins > BUSY_SPINS {
                    return None;
                }
                std::hint::spin_loop();
                w = self.fast.load(Ordering::Acquire);
                continue;
            }
            let mut kind = self.decode(w);
            let r = change(&mut kind);
            after(&mut kind);
            let new = self.encode(&kind)?;
            if new == w {
                return Some(r);
            }
            match self
                .fast
                .compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(r),
                Err(now) => w = now,
            }
        }
    }

    /// Changes the state with `change`, wakes every waiter the new state satisfies (wait-all waiters first, then
    /// wait-any waiters in FIFO order), then runs `after` (pulse's reset) — all in one critical section, or in one
    /// compare-and-swap of the fast word when no wait is queued. `change` and `after` must be pure functions of the
    /// state (the fast path may run them more than once).
    #[inline]
    pub(crate) fn signal<R>(
        &self,
        change: impl Fn(&mut Kind) -> R,
        after: impl Fn(&mut Kind),
    ) -> R {
        if let Some(r) = self.try_fast_signal(&change, &after) {
            return r;
        }
        let mut st = self.lock_state();
        // ntsync_lock_obj: escalate to the wait-all lock only when a wait-all is queued here. The global lock must
        // come first, so drop the object lock, take both in order and look again.
        let _all = if st.all.is_empty() {
            None
        } else {
            drop(st);
            let all = wait_all_lock();
            st = self.lock_state();
            Some(all)
        };
        let r = change(&mut st.kind);
        if _all.is_some() {
            try_wake_all_obj(self, &mut st);
        }
        st.try_wake_any();
        after(&mut st.kind);
        drop(st);
        r
    }

    /// `SignalObjectAndWait`'s first half: holding the wait-all lock and this object's lock, applies `change`; if it
    /// succeeds, runs `queue` (which queues a waiter — on this object through the `State` it is given, or on another
    /// object, which holding the wait-all lock allows locking), then wakes the waiters the change satisfies. Nobody can
    /// see the change before the waiter is queued, so the signal and the start of the wait are one atomic step.
    pub(crate) fn signal_then<R, E>(
        &self,
        change: impl FnOnce(&mut Kind) -> Result<R, E>,
        queue: &mut dyn FnMut(&mut State),
    ) -> Result<R, E> {
        let all = wait_all_lock();
        let mut st = self.lock_state();
        let r = change(&mut st.kind)?;
        queue(&mut st);
        try_wake_all_obj(self, &mut st);
        st.try_wake_any();
        drop(st);
        drop(all);
        Ok(r)
    }

    /// How many waits are queued on this object (tests order threads with it instead of sleeping).
    pub(crate) fn waiter_count(&self) -> usize {
        let st = self.lock_state();
        st.any.len() + st.all.len()
    }
}

/// A held object lock (see [`Object::lock_state`]).
pub(crate) struct StateGuard<'a> {
    obj: &'a Object,
    /// Dropped first: unlocks.
    g: MutexGuard<'a, State>,
    /// Dropped second: unparks the waiters claimed under the lock (`None`, the common case, when there are none:
    /// nothing to move or drop).
    wakes: Option<Wakes>,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.g
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.g
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        // Still locked here: deflate if no waiter is left (only the lock holder writes an inflated word), and take the
        // wake-ups out so that they run after the unlock (field drop order).
        if self.g.any.is_empty() && self.g.all.is_empty() {
            if let Some(w) = self.obj.encode(&self.g.kind) {
                self.obj.fast.store(w, Ordering::Release);
            }
        }
        if !self.g.wakes.is_empty() {
            self.wakes = Some(self.g.wakes.take());
        }
    }
}

/// The fast path of a wait-all by `me`: if every object is deflated, holds each word ([`BUSY`], in index order, giving
/// up at the first that is not deflated), and if all are signalled for `me` consumes them all at once; otherwise puts
/// every word back unchanged. Lock holders wait out a busy word (a few instructions, never across a lock or a
/// sleep), so the step is atomic. `Acquired(abandoned)` carries the lowest abandoned index + 1 (0 for none).
pub(crate) fn fast_wait_all(objs: &[&Arc<Object>], me: ThreadId) -> (Fast, usize) {
    const MAX: usize = 8;
    if objs.len() > MAX {
        return (Fast::Slow, 0);
    }
    // Look before holding: a set that is not all signalled is answered with plain loads, without disturbing the
    // objects' owners (a busy word sends their signals to the lock).
    for o in objs {
        let w = o.fast.load(Ordering::Acquire);
        if w & (INFLATED | BUSY) != 0 {
            return (Fast::Slow, 0);
        }
        if !o.decode(w).is_signaled_for(me) {
            return (Fast::NotSignaled, 0);
        }
    }
    let mut held = [0u64; MAX];
    let mut n = 0;
    let give_back = |held: &[u64], n: usize| {
        for (o, w) in objs.iter().zip(held).take(n) {
            o.fast.store(*w, Ordering::Release);
        }
    };
    for (i, o) in objs.iter().enumerate() {
        let w = o.fast.load(Ordering::Acquire);
        if w & (INFLATED | BUSY) != 0
            || o.fast
                .compare_exchange(w, w | BUSY, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            give_back(&held, n);
            return (Fast::Slow, 0);
        }
        held[i] = w;
        n += 1;
    }
    let mut kinds: [Option<Kind>; MAX] = Default::default();
    for (i, o) in objs.iter().enumerate() {
        let k = o.decode(held[i]);
        if !k.is_signaled_for(me) {
            give_back(&held, n);
            return (Fast::NotSignaled, 0);
        }
        kinds[i] = Some(k);
    }
    let mut new = [0u64; MAX];
    let mut abandoned = 0;
    for (i, o) in objs.iter().enumerate() {
        let Some(k) = kinds[i].as_mut() else {
            give_back(&held, n);
            return (Fast::Slow, 0);
        };
        if k.consume(me) && abandoned == 0 {
            abandoned = i + 1;
        }
        match o.encode(k) {
            Some(w) => new[i] = w,
            None => {
                give_back(&held, n);
                return (Fast::Slow, 0);
            }
        }
    }
    for (o, w) in objs.iter().zip(new) {
        o.fast.store(w, Ordering::Release);
    }
    (Fast::Acquired(abandoned != 0), abandoned)
}

/// Unit tests: which objects this thread locked (their addresses, in order), while recording.
#[cfg(all(test, not(loom)))]
pub(crate) mod test_hooks {
    type Record = std::cell::RefCell<Option<Vec<usize>>>;

    std::thread_local! {
        pub(crate) static LOCKED: Record = const { std::cell::RefCell::new(None) };
    }

    /// Starts recording the objects this thread locks.
    pub(crate) fn record_locks() {
        LOCKED.with(|l| *l.borrow_mut() = Some(Vec::new()));
    }

    /// Stops recording; the objects this thread locked since [`record_locks`].
    pub(crate) fn take_locked() -> Vec<usize> {
        LOCKED.with(|l| l.borrow_mut().take().unwrap_or_default())
    }
}
