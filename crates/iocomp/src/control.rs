//! The port's control plane: the packet queue, the LIFO stack of waiting
//! threads and the running count — the state Windows keeps in a `KQUEUE`.
//!
//! Everything here sits behind one mutex that is taken only when a thread enters
//! or leaves `get`, when a packet is posted or forwarded, and when a thread
//! attaches or detaches; an operation issued and completed on the same worker
//! never touches it (design D in `docs/iocp-behaviours.md`).
//!
//! The rules (IOCP checklist ids):
//! - C18: a packet is handed to the most recently parked waiter (a stack), and
//!   packets leave the queue oldest first.
//! - C19: `running` counts attached threads that are not inside `get`; a queued
//!   packet releases a waiter only while `running < max`.
//! - C20: a thread entering `get` stops counting and, if a packet is queued and
//!   `running < max`, takes it at once without parking.

use std::collections::VecDeque;

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, Ordering};
#[cfg(loom)]
use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
#[cfg(not(loom))]
use std::sync::{Mutex, MutexGuard};

use crate::handoff::Wake;
use crate::packet::Packet;

/// What one pass of the `get` loop decided.
pub enum Step {
    /// A packet for the caller.
    Got(Packet),
    /// Nothing yet: park until woken.
    Park,
    /// Nothing, and the deadline passed.
    TimedOut,
    /// The port is closed.
    Abandoned,
}

struct Consumer<W> {
    /// A packet handed over directly by a poster while this thread was parked.
    handed: Option<Packet>,
    waker: Arc<W>,
    /// Counted in `running`.
    counted: bool,
    /// On the waiter stack.
    waiting: bool,
}

struct State<W> {
    queue: VecDeque<Packet>,
    waiters: Vec<usize>,
    consumers: Vec<Option<Consumer<W>>>,
    running: usize,
    closed: bool,
}

/// The control plane of one port (see the module documentation). `W` is what
/// wakes a parked consumer: its ring, or a model of one under loom.
pub struct Control<W> {
    max: usize,
    strict: bool,
    state: Mutex<State<W>>,
    /// A copy of `State::closed` that `submit` reads on every operation
    /// without taking the control lock.
    closed: AtomicBool,
}

/// Wakers to call once the lock is released.
type Wakes<W> = Vec<Arc<W>>;

fn wake_all<W: Wake>(wakes: Wakes<W>) {
    for w in wakes {
        w.wake();
    }
}

impl<W: Wake> Control<W> {
    /// A control plane for at most `max` running threads.
    pub fn new(max: usize, strict: bool) -> Control<W> {
        Control {
            max,
            strict,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                waiters: Vec::new(),
                consumers: Vec::new(),
                running: 0,
                closed: false,
            }),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<W>> {
        // A panic while holding this lock leaves the state consistent (every
        // update is a few field writes), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The concurrency limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Registers a thread that will call `get`; returns its id.
    pub fn attach(&self, waker: Arc<W>) -> usize {
        let mut st = self.lock();
        let rec = Consumer {
            handed: None,
            waker,
            counted: false,
            waiting: false,
        };
        if let Some(i) = st.consumers.iter().position(Option::is_none) {
            st.consumers[i] = Some(rec);
            i
        } else {
            st.consumers.push(Some(rec));
            st.consumers.len() - 1
        }
    }

    /// Removes a thread (it exits, or detaches); a packet handed to it is queued
    /// again and its running slot may release another waiter.
    pub fn detach(&self, id: usize) {
        let mut st = self.lock();
        let Some(rec) = st.consumers.get_mut(id).and_then(Option::take) else {
            return;
        };
        if rec.waiting {
            st.waiters.retain(|&w| w != id);
        }
        if rec.counted {
            st.running -= 1;
        }
        let mut dropped = None;
        if let Some(p) = rec.handed {
            if st.closed {
                dropped = Some(p);
            } else {
                st.queue.push_front(p);
            }
        }
        let wakes = self.release(&mut st);
        drop(st);
        wake_all(wakes);
        // Not under the lock: the packet's Drop may call the port (and
        // `later` drops it at once if the thread is being torn down).
        if let Some(p) = dropped {
            crate::defer::later(p);
        }
    }

    /// The thread stops counting as running without entering `get` (it moved
    /// its association to another port, or is about to block, C21). A waiter
    /// may be released in its place. Returns whether it was counted.
    pub fn uncount(&self, id: usize) -> bool {
        let mut st = self.lock();
        if let Some(Some(rec)) = st.consumers.get_mut(id) {
            if rec.counted {
                rec.counted = false;
                st.running -= 1;
                let wakes = self.release(&mut st);
                drop(st);
                wake_all(wakes);
                return true;
            }
        }
        false
    }

    /// The thread runs again after blocking: it counts again, even if that puts
    /// `running` above the limit (C21: no new releases until it drops below).
    pub fn recount(&self, id: usize) {
        let mut st = self.lock();
        if let Some(Some(rec)) = st.consumers.get_mut(id) {
            if !rec.counted {
                rec.counted = true;
                st.running += 1;
            }
        }
    }

    /// Hands queued packets to waiters, newest waiter first, while the
    /// concurrency limit allows.
    fn release(&self, st: &mut State<W>) -> Wakes<W> {
        let mut wakes = Vec::new();
        while st.running < self.max && !st.queue.is_empty() {
            let Some(w) = st.waiters.pop() else { break };
            let p = st.queue.pop_front();
            if let Some(Some(rec)) = st.consumers.get_mut(w) {
                rec.waiting = false;
                rec.handed = p;
                rec.counted = true;
                wakes.push(rec.waker.clone());
                st.running += 1;
            }
        }
        wakes
    }

    /// Queues packets (posted, or forwarded from a ring) and wakes waiters.
    /// Returns the packets back if the port is closed.
    // `Err(())` means "closed"; public only to the loom models.
    #[allow(clippy::result_unit_err)]
    pub fn enqueue(&self, packets: impl IntoIterator<Item = Packet>) -> Result<(), ()> {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            // Dropped when the thread leaves the engine: the caller may hold
            // a borrow, and their Drop may call the port.
            crate::defer::later(packets.into_iter().collect::<Vec<_>>());
            return Err(());
        }
        st.queue.extend(packets);
        let wakes = self.release(&mut st);
        drop(st);
        wake_all(wakes);
        Ok(())
    }

    /// One pass of `get` for consumer `id`. `local` holds completions of the
    /// thread's own ring, which it may take ahead of the queue (unless strict).
    pub fn step(&self, id: usize, local: &mut VecDeque<Packet>, expired: bool) -> Step {
        let mut st = self.lock();
        if st.closed {
            Self::unpark(&mut st, id);
            // A packet handed over just before the close is dropped too, not
            // left for `detach` (which may run when this thread exits).
            let handed = st
                .consumers
                .get_mut(id)
                .and_then(|r| r.as_mut())
                .and_then(|r| r.handed.take());
            drop(st);
            // Not under the lock: their Drop may call the port.
            let mut left: Vec<Packet> = local.drain(..).collect();
            left.extend(handed);
            if !left.is_empty() {
                crate::defer::later(left);
            }
            return Step::Abandoned;
        }
        let st = &mut *st;
        let Some(Some(rec)) = st.consumers.get_mut(id) else {
            return Step::Abandoned;
        };
        if let Some(p) = rec.handed.take() {
            // `release` already counted us and popped us off the stack.
            return Step::Got(p);
        }
        if rec.counted {
            rec.counted = false;
            st.running -= 1;
        }
        let parked = rec.waiting;
        if self.strict {
            st.queue.extend(local.drain(..));
            if parked {
                // Strict: a parked thread gets packets only as the port hands them
                // out, newest waiter first, even when its own ring woke it.
                let wakes = self.release(st);
                let mine = st
                    .consumers
                    .get_mut(id)
                    .and_then(|r| r.as_mut())
                    .and_then(|r| r.handed.take());
                wake_all(wakes);
                if let Some(p) = mine {
                    return Step::Got(p);
                }
                if expired {
                    Self::unpark(st, id);
                    return Step::TimedOut;
                }
                return Step::Park;
            }
        }
        if st.running < self.max {
            if let Some(p) = local.pop_front().or_else(|| st.queue.pop_front()) {
                st.running += 1;
                if let Some(Some(rec)) = st.consumers.get_mut(id) {
                    rec.counted = true;
                }
                Self::unpark(st, id);
                let wakes = self.release(st);
                wake_all(wakes);
                return Step::Got(p);
            }
        } else if !local.is_empty() {
            // Over the limit: the completions wait for the next thread that may run.
            st.queue.extend(local.drain(..));
        }
        if expired {
            Self::unpark(st, id);
            return Step::TimedOut;
        }
        if let Some(Some(rec)) = st.consumers.get_mut(id) {
            if !rec.waiting {
                rec.waiting = true;
                st.waiters.push(id);
            }
        }
        Step::Park
    }

    /// Takes up to `max` more packets for a thread that already holds one
    /// (`get_many`: the batch counts as one running thread, C15).
    pub fn take_more<O>(&self, local: &mut VecDeque<Packet>, out: &mut O, max: usize)
    where
        O: Extend<Packet>,
    {
        // Whole runs of packets move at once (`extend` from a `drain`): one
        // copy of each packet, not a pop and a push.
        let mut want = max;
        if self.strict {
            if !local.is_empty() && self.enqueue(local.drain(..)).is_err() {
                return;
            }
        } else {
            let n = want.min(local.len());
            out.extend(local.drain(..n));
            want -= n;
        }
        if want == 0 {
            return;
        }
        let mut st = self.lock();
        let n = want.min(st.queue.len());
        out.extend(st.queue.drain(..n));
    }

    /// Takes consumer `id` off the waiter stack: it leaves `get` for a moment
    /// to run user code (dropping values [`crate::defer`] kept). A packet
    /// handed to it before this stays for its next `step`.
    pub fn stop_waiting(&self, id: usize) {
        Self::unpark(&mut self.lock(), id);
    }

    fn unpark(st: &mut State<W>, id: usize) {
        if let Some(Some(rec)) = st.consumers.get_mut(id) {
            if rec.waiting {
                rec.waiting = false;
                st.waiters.retain(|&w| w != id);
            }
        }
    }

    /// Closes the port: every waiter wakes with `Abandoned`, queued packets are
    /// dropped (their buffers and handles freed), later posts fail.
    pub fn close(&self) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        self.closed.store(true, Ordering::Release);
        let dropped: Vec<Packet> = st.queue.drain(..).collect();
        let wakes: Wakes<W> = st
            .consumers
            .iter()
            .flatten()
            .map(|c| c.waker.clone())
            .collect();
        drop(st);
        drop(dropped);
        wake_all(wakes);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The ring of the most recently parked thread: the best place for an
    /// operation submitted by a thread that does not wait on the port.
    pub(crate) fn top_waiter(&self) -> Option<Arc<W>> {
        let st = self.lock();
        let id = *st.waiters.last()?;
        st.consumers.get(id)?.as_ref().map(|c| c.waker.clone())
    }

    /// Threads parked in `get` right now (for tests that order waiters).
    pub fn waiters(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Attached threads counted as running (a test hook).
    #[cfg(any(feature = "test-hooks", loom))]
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Packets queued and not yet taken (a test hook).
    #[cfg(any(feature = "test-hooks", loom))]
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }
}
