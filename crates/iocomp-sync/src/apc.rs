//! Asynchronous procedure calls and alertable sleep.
//!
//! Each thread has a FIFO queue of APCs and an internal auto-reset *alert* event, as Wine does on top of ntsync.
//! [`Thread::queue_apc`](crate::Thread::queue_apc) pushes a closure and sets the alert event. An alertable wait adds
//! the alert event as one more wait-any slot after the objects, so objects win when both are ready; if the alert slot
//! wins, the wait runs every queued APC on the waiting thread, oldest first, and returns
//! [`WaitResult::Alerted`](crate::WaitResult::Alerted) without acquiring anything. APCs never run in a non-alertable
//! wait; they stay queued for the next alertable one. When the thread exits, APCs still queued are dropped unrun and
//! later `queue_apc` calls fail with [`ApcError::ThreadExited`](crate::ApcError::ThreadExited).

use std::collections::VecDeque;
use std::time::Duration;

use crate::object::{Kind, Object, Tag};
use crate::sync::{lock, Arc, Mutex};
use crate::wait::{self, WaitResult};

type Apc = Box<dyn FnOnce() + Send + 'static>;

struct Queue {
    closed: bool,
    apcs: VecDeque<Apc>,
    /// The waker of a wait outside this crate that is blocked on this thread's behalf ([`set_apc_waker`]).
    waker: Option<ApcWaker>,
}

/// What [`set_apc_waker`] registers: called by [`Thread::queue_apc`](crate::Thread::queue_apc) after each APC it
/// queues to the thread, from the queuing thread, with no lock held.
pub type ApcWaker = std::sync::Arc<dyn Fn() + Send + Sync>;

/// One thread's APC queue and alert event.
pub(crate) struct ApcQueue {
    queue: Mutex<Queue>,
    /// Auto-reset; set by every successful push.
    pub(crate) alert: Arc<Object>,
}

impl ApcQueue {
    pub(crate) fn new() -> ApcQueue {
        ApcQueue {
            queue: Mutex::new(Queue {
                closed: false,
                apcs: VecDeque::new(),
                waker: None,
            }),
            alert: Object::new(
                Kind::Event {
                    manual: false,
                    signaled: false,
                },
                Tag::Event,
            ),
        }
    }

    /// Queues `apc`; gives it back if the thread has exited (so that it is dropped outside the lock).
    pub(crate) fn push(&self, apc: Apc) -> Result<(), Apc> {
        let waker = {
            let mut q = lock(&self.queue);
            if q.closed {
                return Err(apc);
            }
            q.apcs.push_back(apc);
            q.waker.clone()
        };
        self.alert.signal(
            |kind| {
                if let Kind::Event { signaled, .. } = kind {
                    *signaled = true;
                }
            },
            |_| {},
        );
        if let Some(w) = waker {
            w();
        }
        Ok(())
    }

    /// Replaces the waker; returns how many APCs are queued, under the same lock as `push`: a push either sees the new
    /// waker or is counted here.
    fn set_waker(&self, waker: Option<ApcWaker>) -> usize {
        let (n, old) = {
            let mut q = lock(&self.queue);
            (q.apcs.len(), std::mem::replace(&mut q.waker, waker))
        };
        drop(old);
        n
    }

    /// Runs queued APCs, oldest first, until the queue is empty (APCs queued meanwhile included). Returns how many
    /// ran. Each runs without any lock held, so it may wait, queue APCs or release objects.
    pub(crate) fn run_pending(&self) -> usize {
        let mut ran = 0;
        loop {
            let next = lock(&self.queue).apcs.pop_front();
            match next {
                Some(apc) => {
                    apc();
                    ran += 1;
                }
                None => return ran,
            }
        }
    }

    /// Refuses further APCs and drops the queued ones (outside the lock: dropping a closure may run any code).
    pub(crate) fn close(&self) {
        let dropped = {
            let mut q = lock(&self.queue);
            q.closed = true;
            (std::mem::take(&mut q.apcs), q.waker.take())
        };
        drop(dropped);
    }

    /// How many APCs are queued.
    pub(crate) fn len(&self) -> usize {
        lock(&self.queue).apcs.len()
    }
}

/// How an alertable sleep ended.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SleepResult {
    /// The whole duration passed (`SleepEx` returned 0).
    Elapsed,
    /// Queued APCs ran on this thread and ended the sleep early (`WAIT_IO_COMPLETION`).
    Alerted,
}

/// Sleeps for `duration`, or until APCs queued to the calling thread have run (`SleepEx(ms, TRUE)`).
///
/// APCs queued before the call run at once. `Duration::ZERO` only runs pending APCs; a duration too large for the
/// clock (such as `Duration::MAX`) sleeps until an APC arrives (`INFINITE`).
///
/// ```
/// use iocomp_sync::{sleep_alertable, SleepResult, Thread};
/// use std::time::Duration;
///
/// Thread::current().queue_apc(|| println!("hello from an APC")).unwrap();
/// assert_eq!(sleep_alertable(Duration::from_secs(10)), SleepResult::Alerted);
/// assert_eq!(sleep_alertable(Duration::ZERO), SleepResult::Elapsed);
/// ```
pub fn sleep_alertable(duration: Duration) -> SleepResult {
    match wait::wait_objects(&[], wait::Mode::Any, Some(duration), true) {
        Ok(WaitResult::Alerted) => SleepResult::Alerted,
        _ => SleepResult::Elapsed,
    }
}

/// Registers (or, with `None`, removes) the calling thread's APC waker, for an alertable wait that blocks outside this
/// crate (a completion port's `get_alertable`, blocked in `io_uring_enter` or `epoll_wait`). Returns how many APCs are
/// queued to the thread now.
///
/// The hand-off loses no wake-up: the waker is stored under the lock that [`Thread::queue_apc`](crate::Thread::queue_apc)
/// takes, so an APC queued after this call calls the waker, and one queued before is counted in the result. A wait
/// registers its waker, and blocks only if the result is 0 (and its wake primitive must keep a wake sent before it
/// blocks); it runs the APCs with [`run_queued_apcs`] and removes the waker when it ends.
pub fn set_apc_waker(waker: Option<ApcWaker>) -> usize {
    crate::local::current_shared().apc.set_waker(waker)
}

/// Runs the APCs queued to the calling thread, oldest first (APCs queued meanwhile included), and returns how many
/// ran: the alertable part of a wait built on [`set_apc_waker`].
pub fn run_queued_apcs() -> usize {
    crate::local::current_shared().apc.run_pending()
}
