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
/// never has it: it is the top bit of the ring index, bits 48–63 of an id,
/// and a port makes at most [`MAX_RINGS`] rings).
const MORE: u64 = 1 << 63;

/// The most rings (threads attached) one port may have: their indices stay
/// below `0x8000`, so no op id has [`MORE`]'s bit (a review found 32,768 and
/// more allowed, whose ids lost their top bit in a queue).
pub(crate) const MAX_RINGS: usize = 0x7fff;

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
        let more = self.0 & MORE != 0;
        self.0 = 0;
        // Nothing behind (nearly always): no look in the side table.
        if !more {
            return Some(front);
        }
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
        if self.0 & MORE == 0 {
            return None;
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
        if self.0 & MORE == 0 {
            return None;
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

    use std::collections::HashMap;

    /// Random pushes, pops, removals, look-ups, take-alls and clears on six
    /// queues sharing one side table, against a `VecDeque` per queue (the
    /// review's model): every queue agrees after every step, and the side
    /// table has an entry exactly for the queues with ops behind the front.
    #[test]
    fn op_queue_matches_a_vecdeque_per_queue() {
        let keys: [QueueKey; 6] = [
            (3, true),
            (3, false),
            (4, true),
            (4, false),
            (0, true),
            (0, false),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let mut behind = Behind::default();
            let mut qs: HashMap<QueueKey, OpQueue> = HashMap::new();
            let mut model: HashMap<QueueKey, VecDeque<OpId>> = HashMap::new();
            let mut fresh = 1u32;
            for step in 0..400 {
                let k = keys[(next() % 6) as usize];
                let q = qs.entry(k).or_default();
                let m = model.entry(k).or_default();
                let what = next() % 10;
                match what {
                    0..=3 => {
                        let id = OpId::new(
                            (next() % 0x7fff) as u16,
                            1 + (fresh >> 8),
                            fresh & 0xff_ffff,
                        );
                        fresh += 1;
                        q.push_back(&mut behind, k, id);
                        m.push_back(id);
                    }
                    4 | 5 => {
                        assert_eq!(q.pop_front(&mut behind, k), m.pop_front(), "{round}/{step}")
                    }
                    6 => {
                        // Remove an id that is there (or one that is not).
                        let id = if !m.is_empty() && next() % 4 != 0 {
                            m[(next() as usize) % m.len()]
                        } else {
                            OpId::new(1, 1, 0xff_fff0)
                        };
                        let want = m.iter().position(|&x| x == id);
                        if let Some(i) = want {
                            m.remove(i);
                        }
                        assert_eq!(q.remove(&mut behind, k, id), want, "{round}/{step}");
                    }
                    7 => {
                        let id = if m.is_empty() {
                            OpId::new(2, 2, 2)
                        } else {
                            m[(next() as usize) % m.len()]
                        };
                        assert_eq!(q.position(&behind, k, id), m.iter().position(|&x| x == id));
                    }
                    8 => {
                        let got: Vec<OpId> =
                            q.take_behind_front(&mut behind, k).into_iter().collect();
                        let want: Vec<OpId> = m.drain(m.len().min(1)..).collect();
                        assert_eq!(got, want, "{round}/{step}");
                    }
                    _ => {
                        if next() % 8 == 0 {
                            assert_eq!(q.clear(&mut behind, k), m.len());
                            m.clear();
                        }
                    }
                }
                // Every queue agrees with its model after every step.
                for k in keys {
                    let q = qs.get(&k).copied().unwrap_or_default();
                    let m = model.get(&k).cloned().unwrap_or_default();
                    assert_eq!(q.len(&behind, k), m.len(), "{round}/{step} {k:?}");
                    assert_eq!(q.front(), m.front().copied(), "{round}/{step} {k:?}");
                    assert_eq!(q.is_empty(), m.is_empty());
                    assert_eq!(
                        behind.0.contains_key(&k),
                        m.len() > 1,
                        "{round}/{step} {k:?}: side table entry without ops behind (or none with)"
                    );
                }
            }
            for k in keys {
                if let Some(q) = qs.get_mut(&k) {
                    q.clear(&mut behind, k);
                }
            }
            assert!(behind.0.is_empty(), "entries left in the side table");
        }
    }

    /// The highest ring index a port gives out passes through a queue
    /// unchanged (found by review: from 0x8000 on, an id's top bit was taken
    /// for the queue's mark).
    #[test]
    fn ids_of_the_last_ring_go_through_the_queue_unchanged() {
        const { assert!(MAX_RINGS <= 0x8000) };
        let mut behind = Behind::default();
        let k = (3, false);
        let mut q = OpQueue::default();
        let ring = (MAX_RINGS - 1) as u16;
        let (first, second) = (OpId::new(ring, 1, 0), OpId::new(ring, 1, 1));
        q.push_back(&mut behind, k, first);
        q.push_back(&mut behind, k, second);
        assert_eq!(q.front(), Some(first));
        assert_eq!(q.remove(&mut behind, k, first), Some(0));
        assert_eq!(q.front(), Some(second));
        assert_eq!(q.pop_front(&mut behind, k), Some(second));
        assert!(q.is_empty() && behind.0.is_empty());
    }
}
