//! The per-thread record: the thread's never-reused id, the mutexes it owns, and the exit sequence.
//!
//! Every thread that touches this crate gets a record on first use, in a thread-local: threads made by
//! [`Thread::spawn`](crate::Thread::spawn) get theirs installed before their closure runs, any other thread (the main
//! thread, `std::thread` threads) gets a fresh one. When the thread ends — its closure returns, or the thread-local is
//! destroyed for a foreign thread — the exit sequence runs once, in Wine's order: abandon the mutexes the thread still
//! owns, discard its queued APCs, then store the exit code and signal the thread object, so that a waiter on
//! {thread, mutex} sees a consistent state.
//!
//! Ownership is tracked by the owner itself: a wait registers the mutexes it acquired before it returns, and the
//! release that brings the count to zero unregisters them, so the list needs no lock. A thread cannot exit while one
//! of its waits is still in progress.
//!
//! Limits: a wait made from a thread-local destructor after this record has been destroyed runs as an anonymous
//! thread with a fresh id, and mutexes acquired after the exit sequence ran are never abandoned.

use std::cell::RefCell;

use crate::object::{Kind, Object};
use crate::sync::Arc;
use crate::thread::{ThreadId, ThreadShared};

struct Local {
    id: ThreadId,
    /// Mutexes this thread owns (count ≥ 1), each once.
    owned: Vec<Arc<Object>>,
    /// The shared half (thread object, APC queue), made on first need for foreign threads.
    shared: Option<Arc<ThreadShared>>,
    exited: bool,
}

/// What the exit sequence needs, taken out of the record so that it runs without the thread-local borrowed.
struct Exit {
    id: ThreadId,
    owned: Vec<Arc<Object>>,
    shared: Option<Arc<ThreadShared>>,
}

impl Local {
    fn new() -> Local {
        Local {
            id: ThreadId::next(),
            owned: Vec::new(),
            shared: None,
            exited: false,
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
            shared: self.shared.clone(),
        })
    }
}

impl Exit {
    fn run(self, code: u32) {
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

/// The calling thread's id.
pub(crate) fn current_id() -> ThreadId {
    with(|l| l.id).unwrap_or_else(ThreadId::next)
}

/// The calling thread's shared half (thread object, APC queue).
pub(crate) fn current_shared() -> Arc<ThreadShared> {
    with(Local::shared).unwrap_or_else(|| ThreadShared::new(ThreadId::next(), false))
}

/// Makes `shared` the record of the calling thread: the first thing a [`Thread::spawn`](crate::Thread::spawn) thread
/// does.
pub(crate) fn install(shared: Arc<ThreadShared>) {
    let _ = LOCAL.try_with(|cell| {
        if let Ok(mut local) = cell.try_borrow_mut() {
            *local = Some(Local {
                id: shared.id,
                owned: Vec::new(),
                shared: Some(shared),
                exited: false,
            });
        }
    });
}

/// Notes that the calling thread owns `mutex` (after a wait acquired it).
pub(crate) fn note_owned(mutex: &Arc<Object>) {
    with(|l| {
        if !l.owned.iter().any(|m| Arc::ptr_eq(m, mutex)) {
            l.owned.push(Arc::clone(mutex));
        }
    });
}

/// Notes that the calling thread released `mutex` completely.
pub(crate) fn note_released(mutex: &Arc<Object>) {
    with(|l| l.owned.retain(|m| !Arc::ptr_eq(m, mutex)));
}

/// Runs the exit sequence now with `code` (a [`Thread::spawn`](crate::Thread::spawn) thread whose closure ended).
pub(crate) fn exit_current(code: u32) {
    if let Some(exit) = with(Local::begin_exit).flatten() {
        exit.run(code);
    }
}
