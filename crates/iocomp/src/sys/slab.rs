//! The slab of operations in flight, shared by the backends: stable boxed
//! slots, and the ids that name them. An id is (ring, generation, slot); the
//! generation changes each time a slot is reused, so a stale id never names a
//! newer operation.
//!
//! Ids never repeat within a port, by construction: a slot's generation only
//! grows, a slot whose generation reached [`GEN_MAX`] is retired (never used
//! again), and when a thread detaches, the generations of its ring's slots are
//! kept by the port ([`Slab::gens_left`]) and carried over to the next ring
//! that takes the same ring index ([`Slab::with_gens`]).

use std::io;

use crate::packet::OpId;

/// An operation's in-flight state, as a backend keeps it.
pub(super) trait InFlight {
    /// Marks the operation for cancellation.
    fn mark_cancel(&mut self);
    /// Whether a cancel was asked for.
    fn cancelled(&self) -> bool;
    /// Whether the operation's handle is being closed
    /// ([`Handle::close`](crate::Handle::close)): then it is refused at
    /// insertion, under the slab lock that the close's cancel scan takes, so
    /// every operation is either counted by that scan or refused.
    fn handle_closing(&self) -> bool {
        false
    }
}

pub(super) struct Slab<T> {
    pub(super) slots: Vec<Slot<T>>,
    pub(super) free: Vec<u32>,
    /// Slots inserted by other threads, not yet started by the owner.
    pub(super) remote_submit: Vec<u32>,
    /// Cancels asked for by any thread, not yet carried out by the owner.
    pub(super) remote_cancel: Vec<OpId>,
    /// Set when the owner drains: nothing may be inserted any more.
    pub(super) closed: bool,
}

/// The last generation a slot takes; a slot that reached it is retired.
pub(super) const GEN_MAX: u32 = 0xff_ffff;
/// The most slots one ring has (the slot field of an id is 24 bits).
const SLOTS_MAX: usize = 0xff_ffff;

impl<T> Slab<T> {
    /// A slab whose slots continue from the generations a previous ring at the
    /// same index left (empty for a new index).
    pub(crate) fn with_gens(gens: Vec<u32>) -> Slab<T> {
        let free = (0..gens.len() as u32)
            .rev()
            .filter(|&i| gens[i as usize] < GEN_MAX)
            .collect();
        Slab {
            slots: gens
                .into_iter()
                .map(|gen| Slot { gen, state: None })
                .collect(),
            free,
            remote_submit: Vec::new(),
            remote_cancel: Vec::new(),
            closed: false,
        }
    }

    /// The generations of every slot, for the next ring at this index. A slot
    /// still occupied (a ring whose kernel never let go) is retired.
    pub(crate) fn gens_left(&mut self) -> Vec<u32> {
        self.slots
            .iter()
            .map(|s| if s.state.is_some() { GEN_MAX } else { s.gen })
            .collect()
    }
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab::with_gens(Vec::new())
    }
}

pub(super) struct Slot<T> {
    pub(super) gen: u32,
    pub(super) state: Option<Box<T>>,
}

impl OpId {
    pub(super) fn new(ring: u16, gen: u32, slot: u32) -> OpId {
        OpId((u64::from(ring) << 48) | (u64::from(gen & 0xff_ffff) << 24) | u64::from(slot))
    }
    pub(crate) fn ring(self) -> u16 {
        (self.0 >> 48) as u16
    }
    pub(super) fn gen(self) -> u32 {
        ((self.0 >> 24) & 0xff_ffff) as u32
    }
    pub(super) fn slot(self) -> u32 {
        (self.0 & 0xff_ffff) as u32
    }
}

impl<T: InFlight> Slab<T> {
    /// Stores an operation; hands it back if the slab is full or closed.
    pub(super) fn insert(&mut self, ring: u16, st: Box<T>) -> Result<OpId, (io::Error, Box<T>)> {
        if self.closed {
            let e = io::Error::new(
                io::ErrorKind::NotConnected,
                "the thread owning this ring has detached",
            );
            return Err((e, st));
        }
        if st.handle_closing() {
            // ERROR_INVALID_HANDLE: Handle::close was called.
            return Err((io::Error::from_raw_os_error(libc::EBADF), st));
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                if self.slots.len() >= SLOTS_MAX {
                    let e =
                        io::Error::new(io::ErrorKind::OutOfMemory, "too many operations in flight");
                    return Err((e, st));
                }
                self.slots.push(Slot {
                    gen: 0,
                    state: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        // Below GEN_MAX: retired slots are never on the free list.
        s.gen += 1;
        s.state = Some(st);
        Ok(OpId::new(ring, s.gen, slot))
    }

    /// The id of whatever occupies `slot` now (for ids queued by slot number).
    /// Inserts an operation handed over by another thread; the owner starts
    /// it when it next looks at its remote queue.
    pub(super) fn hand_over(&mut self, ring: u16, st: Box<T>) -> Result<OpId, (io::Error, Box<T>)> {
        let id = self.insert(ring, st)?;
        self.remote_submit.push(id.slot());
        Ok(id)
    }

    /// Marks `id` for cancellation and queues the request for its owner:
    /// `Ok(true)` if the owner must be woken, `Ok(false)` if a cancel was
    /// already asked for, `NotFound` if the operation is not in flight.
    pub(super) fn request_cancel(&mut self, id: OpId) -> io::Result<bool> {
        let Some(st) = self.get(id) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such operation in flight",
            ));
        };
        if st.cancelled() {
            return Ok(false);
        }
        st.mark_cancel();
        self.remote_cancel.push(id);
        Ok(true)
    }

    /// Asks for every operation `on` picks to be cancelled (as
    /// [`Slab::request_cancel`] does for one): returns how many were in
    /// flight and whether the owner must be woken.
    pub(super) fn request_cancel_where(
        &mut self,
        ring: u16,
        mut on: impl FnMut(&T, OpId) -> bool,
    ) -> (usize, bool) {
        let (mut n, mut wake) = (0, false);
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(st) = s.state.as_mut() else { continue };
            if !on(st, OpId::new(ring, s.gen, i as u32)) {
                continue;
            }
            n += 1;
            if !st.cancelled() {
                st.mark_cancel();
                self.remote_cancel.push(OpId::new(ring, s.gen, i as u32));
                wake = true;
            }
        }
        (n, wake)
    }

    pub(super) fn id_at(&self, ring: u16, slot: u32) -> OpId {
        let gen = self.slots.get(slot as usize).map_or(0, |s| s.gen);
        OpId::new(ring, gen, slot)
    }

    pub(super) fn get(&mut self, id: OpId) -> Option<&mut Box<T>> {
        let s = self.slots.get_mut(id.slot() as usize)?;
        if s.gen != id.gen() {
            return None;
        }
        s.state.as_mut()
    }

    pub(super) fn remove(&mut self, id: OpId) -> Option<Box<T>> {
        let s = self.slots.get_mut(id.slot() as usize)?;
        if s.gen != id.gen() {
            return None;
        }
        let st = s.state.take()?;
        if s.gen < GEN_MAX {
            self.free.push(id.slot());
        }
        Some(st)
    }

    /// Marks every operation for cancellation (used when the ring drains).
    pub(super) fn cancel_all(&mut self) {
        for s in self.slots.iter_mut().filter_map(|s| s.state.as_mut()) {
            s.mark_cancel();
        }
    }

    /// Takes every operation out (used when a ring drains without a kernel
    /// that still holds their memory).
    pub(super) fn take_all(&mut self, ring: u16) -> Vec<(OpId, Box<T>)> {
        let mut all = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some(st) = s.state.take() {
                all.push((OpId::new(ring, s.gen, i as u32), st));
                if s.gen < GEN_MAX {
                    self.free.push(i as u32);
                }
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dummy(bool);

    impl InFlight for Dummy {
        fn mark_cancel(&mut self) {
            self.0 = true;
        }
        fn cancelled(&self) -> bool {
            self.0
        }
    }

    /// A slot whose generation reaches its last value is retired: the id
    /// that value made is never made again (issue 14, item 3: forced wrap).
    #[test]
    fn a_slot_at_its_last_generation_is_retired_not_wrapped() {
        let mut slab = Slab::<Dummy>::with_gens(vec![GEN_MAX - 1]);
        let last = slab.insert(3, Box::new(Dummy(false))).ok().unwrap();
        assert_eq!((last.slot(), last.gen()), (0, GEN_MAX));
        assert!(slab.remove(last).is_some());
        let next = slab.insert(3, Box::new(Dummy(false))).ok().unwrap();
        assert_ne!(next.slot(), 0, "the retired slot came back");
        assert_eq!(next.gen(), 1);
        // Carried over to the next ring at this index, the slot stays retired.
        assert!(slab.remove(next).is_some());
        let gens = slab.gens_left();
        assert_eq!(gens, vec![GEN_MAX, 1]);
        let mut again = Slab::<Dummy>::with_gens(gens);
        let id = again.insert(3, Box::new(Dummy(false))).ok().unwrap();
        assert_eq!((id.slot(), id.gen()), (1, 2));
    }

    /// Every id a slab hands out over many reuses of its slots is new.
    #[test]
    fn reused_slots_never_repeat_an_id() {
        let mut slab = Slab::<Dummy>::with_gens(vec![GEN_MAX - 50, 7]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let a = slab.insert(1, Box::new(Dummy(false))).ok().unwrap();
            let b = slab.insert(1, Box::new(Dummy(false))).ok().unwrap();
            assert!(seen.insert(a) && seen.insert(b));
            slab.remove(a);
            slab.remove(b);
        }
    }
}
