//! The per-thread record: the thread's never-reused id, the mutexes it owns, and the exit sequence.
//!
//! Every thread that touches this crate gets a record on first use, in a thread-local: threads made by
//! [`Thread::spawn`](crate::Thread::spawn) get theirs installed before their closure runs, any other thread (the main
//! thread, `std::thread` threads) gets a fresh one. When the thread ends — its closure returns, or the thread-local is
//! destroyed for a foreign thread — the exit sequence runs once, in Wine's order: abandon the mutexes the thread still
//! owns, discard its queued APCs, then store the exit code and signal the thread object, so that a waiter on
//! {thread, mutex} sees a consistent state.
//!
//! Ownership is tracked by the owner itself: a wait registers the mutexes it acquired before it returns (a full release
//! leaves the entry, see [`note_owned`]), so the list needs no lock. A thread cannot exit while one of its waits is
//! still in progress. The thread's wait record is kept between waits (`take_waiter`/`put_waiter`), in a thread-local
//! of its own (in this record under loom).
//!
//! Limits: a wait made from a thread-local destructor after this record has been destroyed runs as an anonymous
//! thread with a fresh id, and mutexes acquired after the exit sequence ran are never abandoned.

use std::cell::RefCell;

use crate::object::{Kind, Object, Waiter};
use crate::sync::Arc;
use crate::thread::{ThreadId, ThreadShared};

struct Local {
    id: ThreadId,
    /// Mutexes this thread owns (count ≥ 1), each once.
    owned: Vec<Arc<Object>>,
    /// The shared half (thread object, APC queue), made on first need for foreign threads.
    shared: Option<Arc<ThreadShared>>,
    exited: bool,
    /// The wait record of this thread's last wait, kept for the next one (under loom; otherwise in `WAITER`).
    #[cfg(loom)]
    waiter: Option<Arc<Waiter>>,
    /// Named mutexes this thread owns, each once (by mapping). Strong: while the thread owns one, its mapping must
    /// stay (glibc's robust list points into it) even if every handle is dropped; the entry goes when the thread
    /// releases the mutex to zero (then the mapping can go with the last handle) or exits (after abandoning it).
    #[cfg(not(loom))]
    owned_named: Vec<Arc<crate::named::Named>>,
}

/// What the exit sequence needs, taken out of the record so that it runs without the thread-local borrowed.
struct Exit {
    id: ThreadId,
    owned: Vec<Arc<Object>>,
    #[cfg(not(loom))]
    owned_named: Vec<Arc<crate::named::Named>>,
    shared: Option<Arc<ThreadShared>>,
}

impl Local {
    fn new() -> Local {
        Local {
            id: ThreadId::next(),
            owned: Vec::new(),
            shared: None,
            exited: false,
            #[cfg(loom)]
            waiter: None,
            #[cfg(not(loom))]
            owned_named: Vec::new(),
        }
    }

    fn shared(&mut self) -> Arc<ThreadShared> {
        let id = self.id;
        Arc::clone(self.shared.get_or_insert_with(|| {
            // Made on the thread itself: it is running, its kernel id is ours.
            let shared = ThreadShared::new(id, false);
            shared.started();
            shared
        }))
    }

    fn begin_exit(&mut self) -> Option<Exit> {
        if self.exited {
            return None;
        }
        self.exited = true;
        Some(Exit {
            id: self.id,
            owned: std::mem::take(&mut self.owned),
            #[cfg(not(loom))]
            owned_named: std::mem::take(&mut self.owned_named),
            shared: self.shared.clone(),
        })
    }
}

impl Exit {
    fn run(self, code: u32) {
        // Named mutexes too are abandoned before the thread object is signalled (the kernel's robust-list walk at
        // the thread's death comes later, and stays the net for mutexes acquired outside this record).
        #[cfg(not(loom))]
        for named in self.owned_named {
            named.abandon_if_mine();
        }
        for mutex in self.owned {
            abandon(&mutex, self.id);
        }
        if let Some(shared) = self.shared {
            shared.finish(code);
        }
    }
}

impl Drop for Local {
    /// A foreign thread's record is destroyed with its thread-locals: run the exit sequence with exit code 0 (the code
    /// such a thread returned is not known here).
    fn drop(&mut self) {
        if let Some(exit) = self.begin_exit() {
            exit.run(0);
        }
    }
}

/// ntsync's `MUTEX_KILL`: if `owner` still owns `mutex`, it becomes unowned and abandoned, and the next waiter gets it.
fn abandon(mutex: &Object, owner: ThreadId) {
    mutex.signal(
        |kind| {
            if let Kind::Mutex {
                owner: current,
                count,
                abandoned,
            } = kind
            {
                if *current == Some(owner) {
                    *current = None;
                    *count = 0;
                    *abandoned = true;
                }
            }
        },
        |_| {},
    );
}

#[cfg(not(loom))]
std::thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

#[cfg(loom)]
loom::thread_local! {
    static LOCAL: RefCell<Option<Local>> = RefCell::new(None);
}

/// Runs `f` on this thread's record (made on first use); `None` once the record is destroyed. `f` never calls back
/// into this module, so the borrow cannot be taken twice.
fn with<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    LOCAL
        .try_with(|cell| {
            let mut local = cell.try_borrow_mut().ok()?;
            Some(f(local.get_or_insert_with(Local::new)))
        })
        .ok()
        .flatten()
}

// Caches for the fast path (not under loom, whose threads share one OS thread): this thread's id, and the address of
// the mutex `note_owned` saw last — an entry of `owned`, kept alive by it, so the address cannot be reused while
// cached (pruning clears it).
#[cfg(not(loom))]
std::thread_local! {
    static CACHED_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static LAST_OWNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The calling thread's id.
#[inline]
pub(crate) fn current_id() -> ThreadId {
    #[cfg(not(loom))]
    if let Some(id) = CACHED_ID
        .try_with(|c| c.get())
        .ok()
        .and_then(ThreadId::from_u64)
    {
        return id;
    }
    let id = with(|l| l.id).unwrap_or_else(ThreadId::next);
    #[cfg(not(loom))]
    let _ = CACHED_ID.try_with(|c| c.set(id.as_u64()));
    id
}

/// The calling thread's shared half (thread object, APC queue).
pub(crate) fn current_shared() -> Arc<ThreadShared> {
    with(Local::shared).unwrap_or_else(|| ThreadShared::new(ThreadId::next(), false))
}

/// Makes `shared` the record of the calling thread: the first thing a [`Thread::spawn`](crate::Thread::spawn) thread
/// does.
pub(crate) fn install(shared: Arc<ThreadShared>) {
    #[cfg(not(loom))]
    let _ = CACHED_ID.try_with(|c| c.set(shared.id.as_u64()));
    let _ = LOCAL.try_with(|cell| {
        if let Ok(mut local) = cell.try_borrow_mut() {
            *local = Some(Local {
                id: shared.id,
                owned: Vec::new(),
                shared: Some(shared),
                exited: false,
                #[cfg(loom)]
                waiter: None,
                #[cfg(not(loom))]
                owned_named: Vec::new(),
            });
        }
    });
}

/// Notes that the calling thread owns `mutex` (after a wait acquired it).
///
/// A full release does not take the mutex off the list (see [`note_released`]): re-acquiring a mutex the thread used
/// before then costs no reference-count traffic, which keeps the uncontended acquire + release fast. The list may
/// so hold mutexes the thread no longer owns — harmless, since the exit sequence abandons only what the thread still
/// owns. It is pruned of those when it grows past [`OWNED_PRUNE`] entries, so at most that many mutexes are kept
/// alive by a thread that no longer owns them.
#[inline]
pub(crate) fn note_owned(mutex: &Arc<Object>) {
    #[cfg(not(loom))]
    let addr = Arc::as_ptr(mutex) as usize;
    #[cfg(not(loom))]
    if LAST_OWNED.try_with(|c| c.get()) == Ok(addr) {
        return;
    }
    let noted = with(|l| {
        if !l.owned.iter().any(|m| Arc::ptr_eq(m, mutex)) {
            if l.owned.len() >= OWNED_PRUNE {
                let me = l.id;
                l.owned.retain(|m| {
                    m.read(|k| matches!(k, Kind::Mutex { owner: Some(o), .. } if *o == me))
                });
            }
            l.owned.push(Arc::clone(mutex));
        }
    });
    #[cfg(not(loom))]
    if noted.is_some() {
        let _ = LAST_OWNED.try_with(|c| c.set(addr));
    }
    #[cfg(loom)]
    drop(noted);
}

/// See [`note_owned`].
pub(crate) const OWNED_PRUNE: usize = 16;

/// Notes that the calling thread released `mutex` completely: nothing to do (see [`note_owned`]).
pub(crate) fn note_released(_mutex: &Arc<Object>) {}

/// Records that this thread acquired the named mutex `named` (for the exit sequence; keeps the mapping).
#[cfg(not(loom))]
pub(crate) fn note_owned_named(named: &Arc<crate::named::Named>) {
    let pruned = with(|l| {
        if l.owned_named.iter().any(|n| Arc::ptr_eq(n, named)) {
            return Vec::new();
        }
        let mut pruned = Vec::new();
        if l.owned_named.len() >= OWNED_PRUNE {
            // Entries of mutexes no longer owned (released through a path that did not note it).
            let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut l.owned_named)
                .into_iter()
                .partition(|n| n.mutex_owned_by_me());
            l.owned_named = keep;
            pruned = gone;
        }
        l.owned_named.push(Arc::clone(named));
        pruned
    });
    // Dropped outside the record's borrow (a last handle unmaps).
    drop(pruned);
}

/// Records that this thread released the named mutex at `named` to zero: its mapping may go with its last handle.
/// Returns the record's reference, to be dropped by the caller outside any lock of the object.
#[cfg(not(loom))]
pub(crate) fn note_released_named(
    named: *const crate::named::Named,
) -> Option<Arc<crate::named::Named>> {
    with(|l| {
        let i = l
            .owned_named
            .iter()
            .position(|n| std::ptr::eq(Arc::as_ptr(n), named))?;
        Some(l.owned_named.swap_remove(i))
    })
    .flatten()
}

/// Runs the exit sequence now with `code` (a [`Thread::spawn`](crate::Thread::spawn) thread whose closure ended).
pub(crate) fn exit_current(code: u32) {
    if let Some(exit) = with(Local::begin_exit).flatten() {
        exit.run(code);
    }
}

/// This thread's kept wait record, if any (see [`put_waiter`]).
pub(crate) fn take_waiter() -> Option<Arc<Waiter>> {
    #[cfg(not(loom))]
    return WAITER.try_with(std::cell::Cell::take).ok().flatten();
    #[cfg(loom)]
    with(|l| l.waiter.take()).flatten()
}

/// Keeps `q`, a wait record no list refers to any more, for this thread's next wait.
pub(crate) fn put_waiter(q: Arc<Waiter>) {
    #[cfg(not(loom))]
    let _ = WAITER.try_with(|w| w.set(Some(q)));
    #[cfg(loom)]
    with(|l| l.waiter = Some(q));
}

// The kept wait record lives in a thread-local of its own (not under loom): a `Cell`, so taking and keeping it is a
// move, without the record's `RefCell` borrow.
#[cfg(not(loom))]
std::thread_local! {
    static WAITER: std::cell::Cell<Option<Arc<Waiter>>> = const { std::cell::Cell::new(None) };
}
