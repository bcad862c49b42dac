//! A descriptor's queue of operations in one direction (its receives, or its
//! sends and transmits), oldest first, as both backends keep it per socket:
//! the front is the one being tried (epoll) or in the kernel (io_uring), the
//! others wait for it.
//!
//! Nearly always there is one operation per socket and direction at a time,
//! so the front is kept inline and only the ops behind it (rare: several
//! sends issued before the first completed) get an allocation, freed when
//! they are gone. An idle keep-alive connection's queues then cost 16 bytes
//! each in the backend's table and nothing on the heap (a `VecDeque` cost 32
//! bytes plus a 48-byte allocation that stayed after its first op; issue 18,
//! bench/README.md "what an idle connection costs").

use std::collections::VecDeque;

use crate::packet::OpId;

/// Operations queued on one descriptor in one direction, oldest first.
#[derive(Default)]
pub(super) struct OpQueue {
    /// The front op's id, 0 when the queue is empty (a slab id is never 0:
    /// its generation is at least 1).
    front: u64,
    /// The ops behind the front, oldest first; `None` when there are none.
    // The box is the point: 8 bytes in every entry instead of a `VecDeque`'s 32.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<OpId>>>,
}

impl OpQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.front == 0
    }

    pub(super) fn len(&self) -> usize {
        if self.front == 0 {
            0
        } else {
            1 + self.rest.as_ref().map_or(0, |r| r.len())
        }
    }

    pub(super) fn front(&self) -> Option<OpId> {
        (self.front != 0).then_some(OpId(self.front))
    }

    pub(super) fn push_back(&mut self, id: OpId) {
        debug_assert_ne!(id.0, 0, "a slab id is never 0");
        if self.front == 0 {
            self.front = id.0;
        } else {
            self.rest.get_or_insert_with(Box::default).push_back(id);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<OpId> {
        let front = self.front()?;
        self.front = match self.rest.as_mut().and_then(|r| r.pop_front()) {
            Some(next) => next.0,
            None => 0,
        };
        self.shrink();
        Some(front)
    }

    /// Removes `id` wherever it waits; whether it was there and where (its
    /// index, 0 = the front).
    pub(super) fn remove(&mut self, id: OpId) -> Option<usize> {
        if self.front == 0 {
            return None;
        }
        if self.front == id.0 {
            self.pop_front();
            return Some(0);
        }
        let rest = self.rest.as_mut()?;
        let i = rest.iter().position(|&x| x == id)?;
        rest.remove(i);
        self.shrink();
        Some(i + 1)
    }

    /// Where `id` waits (0 = the front).
    pub(super) fn position(&self, id: OpId) -> Option<usize> {
        if self.front == 0 {
            return None;
        }
        if self.front == id.0 {
            return Some(0);
        }
        let i = self.rest.as_ref()?.iter().position(|&x| x == id)?;
        Some(i + 1)
    }

    /// Takes out every op behind the front, oldest first.
    pub(super) fn take_behind_front(&mut self) -> VecDeque<OpId> {
        self.rest.take().map(|r| *r).unwrap_or_default()
    }

    fn shrink(&mut self) {
        if self.rest.as_ref().is_some_and(|r| r.is_empty()) {
            self.rest = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue keeps call order across the inline front and the rest, and
    /// removal anywhere keeps the order of the others.
    #[test]
    fn keeps_order_through_front_and_rest() {
        let mut q = OpQueue::default();
        assert!(q.is_empty() && q.front().is_none() && q.pop_front().is_none());
        for i in 1..=5 {
            q.push_back(OpId(i));
        }
        assert_eq!(q.len(), 5);
        assert_eq!(q.position(OpId(4)), Some(3));
        assert_eq!(q.remove(OpId(3)), Some(2));
        assert_eq!(q.remove(OpId(9)), None);
        assert_eq!(q.pop_front(), Some(OpId(1)));
        assert_eq!(q.remove(OpId(2)), Some(0));
        assert_eq!(q.front(), Some(OpId(4)));
        q.push_back(OpId(6));
        let behind: Vec<_> = q.take_behind_front().into_iter().collect();
        assert_eq!(behind, vec![OpId(5), OpId(6)]);
        assert_eq!((q.len(), q.front()), (1, Some(OpId(4))));
        assert_eq!(q.pop_front(), Some(OpId(4)));
        assert!(q.is_empty() && q.rest.is_none());
    }
}
