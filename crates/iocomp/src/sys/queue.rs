//! A descriptor's queue of operations in one direction (its receives, or its
//! sends and transmits), oldest first, as both backends keep it per socket:
//! the front is the one being tried (epoll) or in the kernel (io_uring), the
//! others wait for it.
//!
//! Nearly always there is one operation per socket and direction at a time,
//! so a queue is one word, its front, kept in the backend's per-descriptor
//! table; the ops behind it (rare: several sends issued before the first
//! completed) wait in a side table, [`Behind`], shared by all descriptors of
//! the thread, and leave it when they are gone. An idle keep-alive
//! connection's queue then costs 8 bytes in the backend's table and nothing
//! on the heap (a `VecDeque` cost 32 bytes plus a 48-byte allocation that
//! stayed after its first op; issue 18, bench/README.md "what an idle
//! connection costs").

use std::collections::VecDeque;
use std::os::fd::RawFd;

use rustc_hash::FxHashMap;

use crate::packet::OpId;

/// The bit of [`OpQueue`]'s word that says ops wait behind the front (an id
/// never has it: it is the top bit of the ring index, and there are far fewer
/// rings).
const MORE: u64 = 1 << 63;

/// A queue's key in [`Behind`]: the descriptor, and whether it is the
/// receive (read) direction.
pub(super) type QueueKey = (RawFd, bool);

/// The ops waiting behind the fronts of a thread's queues, by queue; a queue
/// with none has no entry.
#[derive(Default)]
pub(super) struct Behind(FxHashMap<QueueKey, VecDeque<OpId>>);

/// Operations queued on one descriptor in one direction, oldest first: the
/// front's id (0 when empty: a slab id is never 0, its generation is at
/// least 1), with [`MORE`] set when ops wait behind it in [`Behind`].
#[derive(Default, Clone, Copy)]
pub(super) struct OpQueue(u64);

impl OpQueue {
    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(super) fn front(self) -> Option<OpId> {
        (self.0 != 0).then_some(OpId(self.0 & !MORE))
    }

    pub(super) fn len(self, behind: &Behind, key: QueueKey) -> usize {
        match self.0 {
            0 => 0,
            w if w & MORE == 0 => 1,
            _ => 1 + behind.0.get(&key).map_or(0, VecDeque::len),
        }
    }

    pub(super) fn push_back(&mut self, behind: &mut Behind, key: QueueKey, id: OpId) {
        debug_assert!(id.0 != 0 && id.0 & MORE == 0, "not a slab id: {:#x}", id.0);
        if self.0 == 0 {
            self.0 = id.0;
        } else {
            behind.0.entry(key).or_default().push_back(id);
            self.0 |= MORE;
        }
    }

    pub(super) fn pop_front(&mut self, behind: &mut Behind, key: QueueKey) -> Option<OpId> {
        let front = self.front()?;
        self.0 = 0;
        if let Some(rest) = behind.0.get_mut(&key) {
            if let Some(next) = rest.pop_front() {
                self.0 = next.0 | if rest.is_empty() { 0 } else { MORE };
            }
            if rest.is_empty() {
                behind.0.remove(&key);
            }
        }
        Some(front)
    }

    /// Removes `id` wherever it waits; where it was (0 = the front).
    pub(super) fn remove(&mut self, behind: &mut Behind, key: QueueKey, id: OpId) -> Option<usize> {
        if self.front()? == id {
            self.pop_front(behind, key);
            return Some(0);
        }
        let rest = behind.0.get_mut(&key)?;
        let i = rest.iter().position(|&x| x == id)?;
        rest.remove(i);
        if rest.is_empty() {
            behind.0.remove(&key);
            self.0 &= !MORE;
        }
        Some(i + 1)
    }

    /// Where `id` waits (0 = the front).
    pub(super) fn position(self, behind: &Behind, key: QueueKey, id: OpId) -> Option<usize> {
        if self.front()? == id {
            return Some(0);
        }
        let i = behind.0.get(&key)?.iter().position(|&x| x == id)?;
        Some(i + 1)
    }

    /// Takes out every op behind the front, oldest first.
    pub(super) fn take_behind_front(
        &mut self,
        behind: &mut Behind,
        key: QueueKey,
    ) -> VecDeque<OpId> {
        self.0 &= !MORE;
        behind.0.remove(&key).unwrap_or_default()
    }

    /// Empties the queue; how many ops it held.
    pub(super) fn clear(&mut self, behind: &mut Behind, key: QueueKey) -> usize {
        let n = self.len(behind, key);
        self.take_behind_front(behind, key);
        self.0 = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue keeps call order across the inline front and the side
    /// table, removal anywhere keeps the order of the others, and two queues
    /// sharing the side table never see each other's ops.
    #[test]
    fn keeps_order_through_front_and_side_table() {
        let mut behind = Behind::default();
        let (k, other) = ((7, true), (7, false));
        let mut q = OpQueue::default();
        let mut o = OpQueue::default();
        assert!(q.is_empty() && q.front().is_none());
        assert!(q.pop_front(&mut behind, k).is_none());
        for i in 1..=5 {
            q.push_back(&mut behind, k, OpId(i));
            o.push_back(&mut behind, other, OpId(100 + i));
        }
        assert_eq!((q.len(&behind, k), o.len(&behind, other)), (5, 5));
        assert_eq!(q.position(&behind, k, OpId(4)), Some(3));
        assert_eq!(q.position(&behind, k, OpId(104)), None);
        assert_eq!(q.remove(&mut behind, k, OpId(3)), Some(2));
        assert_eq!(q.remove(&mut behind, k, OpId(9)), None);
        assert_eq!(q.pop_front(&mut behind, k), Some(OpId(1)));
        assert_eq!(q.remove(&mut behind, k, OpId(2)), Some(0));
        assert_eq!(q.front(), Some(OpId(4)));
        q.push_back(&mut behind, k, OpId(6));
        let rest: Vec<_> = q.take_behind_front(&mut behind, k).into_iter().collect();
        assert_eq!(rest, vec![OpId(5), OpId(6)]);
        assert_eq!((q.len(&behind, k), q.front()), (1, Some(OpId(4))));
        assert_eq!(q.pop_front(&mut behind, k), Some(OpId(4)));
        assert!(q.is_empty());
        // The other queue is untouched, and clearing it leaves nothing behind.
        assert_eq!(o.front(), Some(OpId(101)));
        assert_eq!(o.clear(&mut behind, other), 5);
        assert!(o.is_empty() && behind.0.is_empty());
    }
}
