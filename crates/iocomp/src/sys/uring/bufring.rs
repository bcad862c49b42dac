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

use io_uring::IoUring;

/// The buffer group id the pool is registered under.
pub(super) const GROUP: u16 = 0;
/// Bytes per pooled buffer: a line-protocol name or a typical request head.
pub(super) const SIZE: usize = 4096;
/// Buffers per ring (a power of two): 1 MiB per worker thread.
pub(super) const ENTRIES: u16 = 256;

/// One buffer descriptor as the kernel reads it (`struct io_uring_buf`). In
/// the first descriptor, `resv` is the ring's tail (`struct io_uring_buf_ring`).
#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// Byte offset of the tail in the ring (the first descriptor's `resv`).
const TAIL_OFFSET: usize = 14;

pub(super) struct BufRing {
    /// `entries` descriptors, page-aligned, shared with the kernel. Only raw
    /// pointers reach them: the kernel reads them (and the tail) at any time.
    ring: NonNull<Desc>,
    layout: Layout,
    mask: u16,
    /// Our copy of the tail: descriptors handed to the kernel so far.
    tail: u16,
    /// `entries` buffers of `size` bytes each, which the kernel writes into
    /// whenever data arrives: a raw allocation, never behind a Rust
    /// reference except for the bytes of one completed receive.
    data: NonNull<u8>,
    data_layout: Layout,
    size: usize,
    registered: bool,
}

impl BufRing {
    /// Registers `entries` (a power of two) buffers of `size` bytes.
    pub(super) fn new(uring: &IoUring, entries: u16, size: usize) -> io::Result<BufRing> {
        debug_assert!(entries.is_power_of_two());
        debug_assert_eq!(std::mem::size_of::<Desc>(), 16);
        let bytes = usize::from(entries) * std::mem::size_of::<Desc>();
        let layout =
            Layout::from_size_align(bytes, 4096).map_err(|_| io::ErrorKind::InvalidInput)?;
        let data_layout = Layout::from_size_align(usize::from(entries) * size, 4096)
            .map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, size >= 1).
        let (ptr, data) = unsafe { (alloc_zeroed(layout), alloc_zeroed(data_layout)) };
        let (Some(ring), Some(data)) = (NonNull::new(ptr.cast::<Desc>()), NonNull::new(data))
        else {
            // SAFETY: whichever allocation succeeded was made with its layout
            // just above and is not used anywhere.
            unsafe {
                if !ptr.is_null() {
                    dealloc(ptr, layout);
                }
                if !data.is_null() {
                    dealloc(data, data_layout);
                }
            }
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut me = BufRing {
            ring,
            layout,
            mask: entries - 1,
            tail: 0,
            data,
            data_layout,
            size,
            registered: false,
        };
        // SAFETY: `ring` points to `entries` zeroed, page-aligned descriptors that
        // stay allocated until `Drop`, which frees them only once they are
        // unregistered (and leaks them otherwise).
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
        let addr = self.data.as_ptr() as u64 + (usize::from(bid) * self.size) as u64;
        // SAFETY: `slot` < entries, so the pointer stays inside the allocation;
        // the kernel reads a descriptor only between the old and new tail, and
        // this slot is past the published tail until `publish`. The fields are
        // written through raw pointers, one by one, so no reference covers the
        // tail, which shares the first descriptor and the kernel reads.
        unsafe {
            let d = self.ring.as_ptr().add(slot);
            std::ptr::addr_of_mut!((*d).addr).write(addr);
            std::ptr::addr_of_mut!((*d).len).write(self.size as u32);
            std::ptr::addr_of_mut!((*d).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed descriptors visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is the u16 at TAIL_OFFSET of our allocation (the
        // first descriptor's `resv`), 2-aligned in a page-aligned block; only
        // atomic accesses reach it from our side, and we publish with release
        // ordering so the descriptors written before are visible first.
        let tail =
            unsafe { &*(self.ring.as_ptr().cast::<u8>().add(TAIL_OFFSET) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Appends the `len` bytes the kernel put in buffer `bid` to `out`, then
    /// gives the buffer back to the pool.
    pub(super) fn take(&mut self, bid: u16, len: usize, out: &mut Vec<u8>) {
        if usize::from(bid) > usize::from(self.mask) {
            return;
        }
        let start = usize::from(bid) * self.size;
        // SAFETY: `bid` names one of our buffers (checked above), and `len` is
        // bounded by its size; the kernel wrote these bytes for the completion
        // the caller holds and does not touch this buffer again until it is
        // pushed back below, so nothing writes it while the slice lives.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.data.as_ptr().add(start), len.min(self.size))
        };
        out.extend_from_slice(bytes);
        self.recycle(bid);
    }

    /// Gives buffer `bid` back to the pool without reading it.
    pub(super) fn recycle(&mut self, bid: u16) {
        if usize::from(bid) <= usize::from(self.mask) {
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
            // Still registered (unregister failed, or the ring's kernel never
            // let go): the kernel may hold these addresses, so leak both
            // allocations rather than free memory it could read or write.
            return;
        }
        // SAFETY: allocated in `new` with these layouts and not freed since;
        // unregistered, so the kernel no longer uses them.
        unsafe {
            dealloc(self.ring.as_ptr().cast(), self.layout);
            dealloc(self.data.as_ptr(), self.data_layout);
        }
    }
}
