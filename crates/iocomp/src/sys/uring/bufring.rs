//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): a pool of receive
//! buffers that the kernel picks from only when data arrives, so a connection
//! waiting for its next request holds no buffer of its own.
//!
//! All the unsafe code for the pool lives here: the page-aligned ring of
//! buffer descriptors the kernel reads, the tail index it watches, and the
//! buffer memory it writes into.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id the pool is registered under.
pub(super) const GROUP: u16 = 0;
/// Bytes per pooled buffer: a line-protocol name or a typical request head.
pub(super) const SIZE: usize = 4096;
/// Buffers per ring (a power of two): 1 MiB per worker thread.
pub(super) const ENTRIES: u16 = 256;

pub(super) struct BufRing {
    /// `entries` descriptors, page-aligned, shared with the kernel.
    ring: NonNull<BufRingEntry>,
    layout: Layout,
    mask: u16,
    /// Our copy of the tail: descriptors handed to the kernel so far.
    tail: u16,
    /// `entries` buffers of `size` bytes each.
    data: Box<[u8]>,
    size: usize,
    registered: bool,
}

impl BufRing {
    /// Registers `entries` (a power of two) buffers of `size` bytes.
    pub(super) fn new(uring: &IoUring, entries: u16, size: usize) -> io::Result<BufRing> {
        debug_assert!(entries.is_power_of_two());
        let bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let layout =
            Layout::from_size_align(bytes, 4096).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: the layout has a non-zero size (entries >= 1).
        let ptr = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        let ring = NonNull::new(ptr).ok_or(io::ErrorKind::OutOfMemory)?;
        let mut me = BufRing {
            ring,
            layout,
            mask: entries - 1,
            tail: 0,
            data: vec![0u8; usize::from(entries) * size].into_boxed_slice(),
            size,
            registered: false,
        };
        // SAFETY: `ring` points to `entries` zeroed, page-aligned descriptors that
        // stay allocated until `Drop`, which runs only after `unregister` (or after
        // the ring that could use them is gone).
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                ring.as_ptr() as u64,
                entries,
                GROUP,
                0,
            )?
        };
        me.registered = true;
        for bid in 0..entries {
            me.push(bid);
        }
        me.publish();
        Ok(me)
    }

    /// Writes the descriptor for buffer `bid` at the tail (not yet visible).
    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & self.mask);
        let addr = self.data[usize::from(bid) * self.size..].as_ptr() as u64;
        // SAFETY: `slot` < entries, so the pointer stays inside the allocation;
        // the kernel reads a descriptor only between the old and new tail, and
        // this slot is past the published tail until `publish`.
        let entry = unsafe { &mut *self.ring.as_ptr().add(slot) };
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed descriptors visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field lives inside the first descriptor of our
        // allocation, which is valid and properly aligned for a u16; the kernel
        // only reads it, and we publish with release ordering so the descriptors
        // written before are visible first.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Appends the `len` bytes the kernel put in buffer `bid` to `out`, then
    /// gives the buffer back to the pool.
    pub(super) fn take(&mut self, bid: u16, len: usize, out: &mut Vec<u8>) {
        let start = usize::from(bid) * self.size;
        if let Some(bytes) = self.data.get(start..start + len.min(self.size)) {
            out.extend_from_slice(bytes);
        }
        self.recycle(bid);
    }

    /// Gives buffer `bid` back to the pool without reading it.
    pub(super) fn recycle(&mut self, bid: u16) {
        if usize::from(bid) * self.size < self.data.len() {
            self.push(bid);
            self.publish();
        }
    }

    /// Unregisters the pool; after this the kernel never touches its memory.
    pub(super) fn unregister(&mut self, uring: &IoUring) {
        if self.registered && uring.submitter().unregister_buf_ring(GROUP).is_ok() {
            self.registered = false;
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // Still registered (unregister failed or was skipped): the kernel may
            // hold the address, so leak rather than free memory it could write.
            let data = std::mem::take(&mut self.data);
            std::mem::forget(data);
            return;
        }
        // SAFETY: allocated in `new` with this layout and not freed since.
        unsafe { dealloc(self.ring.as_ptr().cast(), self.layout) };
    }
}
