//! User values the engine lets go of while it holds a lock or a borrow —
//! packets (their contexts and buffers), completion routines, `Overlapped`
//! state nobody waits on — are not dropped there: their `Drop` may call back
//! into the port (post, submit, `get`), which would deadlock on the lock or
//! panic on the borrow. They are moved to a per-thread list instead and
//! dropped by [`flush`] when the thread leaves the engine (the end of `get`,
//! `post`, `detach`…), where no lock or borrow is held.

use std::any::Any;
use std::cell::RefCell;

thread_local! {
    static LATER: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Drops `v` at the next [`flush`] on this thread — or at once if the thread
/// is being torn down and its list is gone (thread-local destructors run
/// newest first, and this list may be newer than the port's consumers). So
/// never call it while holding an engine lock: take the value out, unlock,
/// then hand it here.
pub(crate) fn later<T: 'static>(v: T) {
    let mut v = Some(v);
    let _ = LATER.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            if let Some(v) = v.take() {
                l.push(Box::new(v));
            }
        }
    });
    drop(v);
}

/// Drops everything [`later`] kept on this thread, including what those drops
/// hand to `later` in turn. Call only where no engine lock or borrow is held.
pub(crate) fn flush() {
    loop {
        let batch = LATER
            .try_with(|l| l.try_borrow_mut().map(|mut l| std::mem::take(&mut *l)))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if batch.is_empty() {
            return;
        }
        drop(batch);
    }
}

/// Whether [`later`] kept something on this thread.
pub(crate) fn pending() -> bool {
    LATER
        .try_with(|l| l.try_borrow().is_ok_and(|l| !l.is_empty()))
        .unwrap_or(false)
}
