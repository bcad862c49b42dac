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
use crate::sync::{lock, wait_all_lock, Arc, AtomicUsize, Mutex, MutexGuard, Ordering};
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
#[derive(Debug)]
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
    fn may_be_signaled(&self) -> bool {
        match *self {
            Kind::Event { signaled, .. } => signaled,
            Kind::Mutex { count, .. } => count < u32::MAX,
            Kind::Semaphore { count, .. } => count > 0,
            Kind::Thread { exit_code } => exit_code.is_some(),
        }
    }

    /// Whether a waiter of thread `owner` can acquire the object now.
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
    /// How to wake the waiting thread.
    wake: Wake,
    /// For a wait-all, its objects (in order), so that a state change on one of them can check all of them.
    objs: Vec<Arc<Object>>,
}

/// How a waiter sleeps, so how to wake it.
pub(crate) enum Wake {
    /// Parked (`thread::park`): waits on this process's objects only.
    Park(Thread),
    /// Asleep in `futex_waitv` on this word (process-private) beside the futex words of named objects: a wake-up
    /// bumps the word and wakes it.
    #[cfg(not(loom))]
    Futex(Arc<std::sync::atomic::AtomicU32>),
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
            wake,
            objs: all_objs,
        }
    }

    /// Wakes the waiting thread (it re-checks its slot).
    pub(crate) fn unpark(&self) {
        match &self.wake {
            Wake::Park(t) => t.unpark(),
            #[cfg(not(loom))]
            Wake::Futex(word) => {
                word.fetch_add(1, std::sync::atomic::Ordering::Release);
                crate::sys::futex_wake(word, 1, false);
            }
        }
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

/// An object's lock-protected part.
///
/// (Public only so that the sealed `Signal` trait can name it; the module is private.)
pub struct State {
    pub(crate) kind: Kind,
    any: Vec<Entry>,
    all: Vec<Entry>,
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
        let State { kind, any, .. } = self;
        for e in any.iter() {
            if !kind.may_be_signaled() {
                break;
            }
            if e.watch {
                e.q.unpark();
                continue;
            }
            if !kind.is_signaled_for(e.q.owner) {
                continue; // a mutex owned by someone else: a later waiter may be its owner
            }
            if e.q.claim(e.index) {
                if kind.consume(e.q.owner) {
                    e.q.abandoned.store(e.index, Ordering::Relaxed);
                }
                e.q.unpark();
            }
        }
    }
}

/// ntsync's `try_wake_all`: if every object of the wait-all `q` is signaled for it, claims `q` and consumes them all.
/// `states[i]` is the locked state of `q.objs[i]`; the caller holds the wait-all lock.
pub(crate) fn try_wake_all_locked(q: &Waiter, states: &mut [&mut State]) {
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
        q.unpark();
    }
}

/// ntsync's `try_wake_all_obj`: gives every wait-all waiter queued on `obj` (whose locked state is `st`) a chance.
/// The caller holds the wait-all lock, which allows locking the waiters' other objects.
fn try_wake_all_obj(obj: &Object, st: &mut State) {
    let waiters: Vec<Arc<Waiter>> = st.all.iter().map(|e| Arc::clone(&e.q)).collect();
    for q in waiters {
        let mut guards: Vec<Option<MutexGuard<'_, State>>> = q
            .objs
            .iter()
            .map(|o| (!std::ptr::eq(&**o, obj)).then(|| lock(&o.state)))
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

/// A kernel object: an event, mutex, semaphore or thread, shared by every handle to it.
///
/// (Public only so that the sealed `Waitable` trait can name it; the module is private.)
pub struct Object {
    tag: Tag,
    state: Mutex<State>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("kind", &lock(&self.state).kind)
            .finish()
    }
}

impl Object {
    pub(crate) fn new(kind: Kind, tag: Tag) -> Arc<Object> {
        Arc::new(Object {
            tag,
            state: Mutex::new(State {
                kind,
                any: Vec::new(),
                all: Vec::new(),
            }),
        })
    }

    pub(crate) fn tag(&self) -> Tag {
        self.tag
    }

    /// The object lock alone (queueing, unqueueing, checks, and changes that only make the object less signaled).
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Reads the state under the lock.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Kind) -> R) -> R {
        f(&self.lock_state().kind)
    }

    /// Changes the state with `change`, wakes every waiter the new state satisfies (wait-all waiters first, then
    /// wait-any waiters in FIFO order), then runs `after` (pulse's reset) — all in one critical section.
    pub(crate) fn signal<R>(
        &self,
        change: impl FnOnce(&mut Kind) -> R,
        after: impl FnOnce(&mut Kind),
    ) -> R {
        let mut st = lock(&self.state);
        // ntsync_lock_obj: escalate to the wait-all lock only when a wait-all is queued here. The global lock must
        // come first, so drop the object lock, take both in order and look again.
        let _all = if st.all.is_empty() {
            None
        } else {
            drop(st);
            let all = wait_all_lock();
            st = lock(&self.state);
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
        let mut st = lock(&self.state);
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
