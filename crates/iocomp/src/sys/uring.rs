//! The io_uring backend: one ring per consumer thread.
//!
//! Each thread that waits on a port owns one ring (`SINGLE_ISSUER`,
//! `COOP_TASKRUN`: only that thread submits, and completion work runs when it
//! enters the kernel). It parks inside its ring, so its own completions and a
//! wake-up from another thread (an eventfd with a read always pending in the
//! ring) end the same wait. Operations live in boxed slots of a slab until their
//! final completion, so every pointer given to the kernel stays valid; the slab
//! sits behind a mutex that only the owner takes on the hot path (uncontended),
//! and that other threads take to cancel or to hand over an operation.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};

use crate::op::Op;
use crate::packet::{OpId, Packet};

/// user_data of the pending eventfd read.
const WAKE_TAG: u64 = u64::MAX;
/// user_data of our own cancel requests (their completions carry nothing).
const CANCEL_TAG: u64 = u64::MAX - 1;

/// Bytes read from a file per step of a copying transmit.
const CHUNK: usize = 64 * 1024;

/// Keeps the first ring of a port open so later rings can share its kernel
/// worker pool (`IORING_SETUP_ATTACH_WQ`). It never submits anything.
pub(crate) struct WqAnchor {
    ring: IoUring,
}

impl WqAnchor {
    /// Creates the anchor ring; failing here means io_uring is unusable.
    pub(crate) fn new() -> io::Result<WqAnchor> {
        Ok(WqAnchor {
            ring: IoUring::builder().build(8)?,
        })
    }
}

fn build_ring(anchor: &WqAnchor) -> io::Result<IoUring> {
    let tuned = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_attach_wq(anchor.ring.as_raw_fd())
        .setup_cqsize(4096)
        .build(256);
    match tuned {
        Ok(r) => Ok(r),
        // Older kernels lack some setup flags: fall back to a plain ring.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            IoUring::builder().setup_cqsize(4096).build(256)
        }
        Err(e) => Err(e),
    }
}

/// The part of a ring other threads may touch: its wake-up eventfd and its slab.
pub(crate) struct RingShared {
    index: u16,
    eventfd: OwnedFd,
    slab: Mutex<Slab>,
    remote: AtomicBool,
}

/// What control-plane code wakes: a ring owner.
pub(crate) type Waker = RingShared;

#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots inserted by other threads, not yet given to the kernel.
    remote_submit: Vec<u32>,
    /// Cancels asked for by any thread, not yet given to the kernel.
    remote_cancel: Vec<OpId>,
}

#[derive(Default)]
struct Slot {
    gen: u32,
    state: Option<Box<OpState>>,
}

/// An operation in flight plus the kernel-visible memory it needs.
struct OpState {
    op: Op,
    key: u64,
    cancel: bool,
    extra: Extra,
}

enum Extra {
    None,
    Accept {
        addr: libc::sockaddr_storage,
        len: libc::socklen_t,
    },
    Timeout(Timespec),
    Send {
        sent: usize,
    },
    Transmit(Box<Transmit>),
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Head,
    Read,
    Chunk,
    Tail,
    Done,
}

struct Transmit {
    phase: Phase,
    /// Position inside head, chunk or tail.
    pos: usize,
    chunk: Vec<u8>,
    file_off: u64,
    /// File bytes not yet read.
    remaining: u64,
    total: u64,
}

/// What a completion did to an operation.
enum Advance {
    /// Another step was submitted; the op stays in flight.
    Again,
    /// Finished with this status and byte count.
    Done(io::Result<()>, u64),
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl OpId {
    fn new(ring: u16, gen: u32, slot: u32) -> OpId {
        OpId((u64::from(ring) << 48) | (u64::from(gen & 0xff_ffff) << 24) | u64::from(slot))
    }
    pub(crate) fn ring(self) -> u16 {
        (self.0 >> 48) as u16
    }
    fn gen(self) -> u32 {
        ((self.0 >> 24) & 0xff_ffff) as u32
    }
    fn slot(self) -> u32 {
        (self.0 & 0xff_ffff) as u32
    }
}

impl Slab {
    fn insert(&mut self, ring: u16, st: Box<OpState>) -> io::Result<OpId> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                if self.slots.len() >= 0xff_ffff {
                    return Err(io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        "too many operations in flight",
                    ));
                }
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.gen = (s.gen % 0xff_ffff) + 1;
        s.state = Some(st);
        Ok(OpId::new(ring, s.gen, slot))
    }

    fn get(&mut self, id: OpId) -> Option<&mut Box<OpState>> {
        let s = self.slots.get_mut(id.slot() as usize)?;
        if s.gen != id.gen() {
            return None;
        }
        s.state.as_mut()
    }

    fn remove(&mut self, id: OpId) -> Option<Box<OpState>> {
        let s = self.slots.get_mut(id.slot() as usize)?;
        if s.gen != id.gen() {
            return None;
        }
        let st = s.state.take()?;
        self.free.push(id.slot());
        Some(st)
    }
}

impl RingShared {
    fn lock(&self) -> MutexGuard<'_, Slab> {
        self.slab.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the owner if it is parked (or makes its next park return at once).
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to an eventfd we own; an
        // error (the counter saturated) still leaves the eventfd readable.
        let _ = unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Inserts an operation from a thread that does not own this ring.
    pub(crate) fn submit_remote(&self, op: Op) -> Result<OpId, (io::Error, Op)> {
        let st = prepare(op)?;
        let mut slab = self.lock();
        let id = match slab.insert(self.index, st) {
            Ok(id) => id,
            Err(e) => {
                // insert failed before taking the box: nothing to return but the error.
                return Err((e, Op::Posted { token: 0 }));
            }
        };
        slab.remote_submit.push(id.slot());
        drop(slab);
        self.remote.store(true, Ordering::Release);
        self.wake();
        Ok(id)
    }

    /// Asks for `id` to be cancelled. `NotFound` if it is not in flight here.
    pub(crate) fn cancel(&self, id: OpId) -> io::Result<()> {
        let mut slab = self.lock();
        match slab.get(id) {
            Some(st) if !st.cancel => {
                slab.remote_cancel.push(id);
                drop(slab);
                self.remote.store(true, Ordering::Release);
                self.wake();
                Ok(())
            }
            Some(_) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such operation in flight",
            )),
        }
    }
}

/// Checks an op and builds its in-flight state (the synchronous part of submit).
fn prepare(op: Op) -> Result<Box<OpState>, (io::Error, Op)> {
    let (key, extra) = match &op {
        Op::Accept(a) => (
            a.listener.key(),
            Extra::Accept {
                // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
                addr: unsafe { std::mem::zeroed() },
                len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
            },
        ),
        Op::Recv(r) => (r.handle.key(), Extra::None),
        Op::Send(s) => (s.handle.key(), Extra::Send { sent: 0 }),
        Op::Timeout(t) => (t.key, Extra::Timeout(Timespec::from(t.duration))),
        Op::TransmitFile(t) => {
            let (file_off, remaining) = match &t.file {
                None => (0, 0),
                Some(f) => {
                    let size = match f.metadata() {
                        Ok(m) => m.len(),
                        Err(e) => return Err((e, op)),
                    };
                    if t.offset > size {
                        return Err((errno(libc::EINVAL), op));
                    }
                    let len = if t.len == 0 { size - t.offset } else { t.len };
                    (t.offset, len)
                }
            };
            let tr = Transmit {
                phase: Phase::Head,
                pos: 0,
                chunk: Vec::new(),
                file_off,
                remaining,
                total: 0,
            };
            (t.socket.key(), Extra::Transmit(Box::new(tr)))
        }
        Op::Posted { .. } | Op::Work(_) => {
            return Err((
                io::Error::new(io::ErrorKind::InvalidInput, "not an I/O operation"),
                op,
            ))
        }
    };
    Ok(Box::new(OpState {
        op,
        key,
        cancel: false,
        extra,
    }))
}

/// The owner's side of a ring.
pub(crate) struct Ring {
    uring: IoUring,
    shared: Arc<RingShared>,
    /// Where the pending eventfd read lands. Boxed: the kernel holds its address.
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Operations given to the kernel and not yet completed.
    inflight: usize,
}

impl Ring {
    pub(crate) fn new(anchor: &WqAnchor, index: u16) -> io::Result<Ring> {
        let uring = build_ring(anchor)?;
        // SAFETY: eventfd(2) with valid flags returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by eventfd and is owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let shared = Arc::new(RingShared {
            index,
            eventfd,
            slab: Mutex::new(Slab::default()),
            remote: AtomicBool::new(false),
        });
        let mut ring = Ring {
            uring,
            shared,
            wake_buf: Box::new(0),
            wake_armed: false,
            inflight: 0,
        };
        ring.arm_wake()?;
        Ok(ring)
    }

    pub(crate) fn shared(&self) -> &Arc<RingShared> {
        &self.shared
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry built in this file points only into memory that
            // outlives its completion: buffers and addresses inside a boxed OpState
            // that stays in the slab until its final CQE is reaped, or `wake_buf`,
            // which is freed only after `drain` saw the read's CQE.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            // Submission queue full: hand what is there to the kernel and retry.
            match self.uring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let buf: *mut u64 = &mut *self.wake_buf;
        let e = opcode::Read::new(Fd(self.shared.eventfd.as_raw_fd()), buf.cast(), 8)
            .build()
            .user_data(WAKE_TAG);
        self.push(e)?;
        self.wake_armed = true;
        Ok(())
    }

    /// Submits an operation issued on the owning thread.
    pub(crate) fn submit_local(&mut self, op: Op) -> Result<OpId, (io::Error, Op)> {
        let mut st = prepare(op)?;
        let shared = self.shared.clone();
        let mut slab = shared.lock();
        // Build the first entry before inserting: the box's address does not move.
        let entry = match first_entry(&mut st) {
            Ok(e) => e,
            Err(e) => return Err((e, st.op)),
        };
        let id = match slab.insert(shared.index, st) {
            Ok(id) => id,
            Err(e) => return Err((e, Op::Posted { token: 0 })),
        };
        drop(slab);
        if let Err(e) = self.push(entry.user_data(id.0)) {
            // Never reached the kernel: hand the op back, no packet.
            let st = shared.lock().remove(id);
            return Err((e, st.map(|s| s.op).unwrap_or(Op::Posted { token: 0 })));
        }
        self.inflight += 1;
        Ok(id)
    }

    /// Gives the kernel what other threads queued here (ops and cancels).
    fn take_remote(&mut self, out: &mut VecDeque<Packet>) {
        if !self.shared.remote.swap(false, Ordering::Acquire) {
            return;
        }
        let shared = self.shared.clone();
        let mut slab = shared.lock();
        let subs = std::mem::take(&mut slab.remote_submit);
        let cancels = std::mem::take(&mut slab.remote_cancel);
        let ring = shared.index;
        for slot in subs {
            let gen = slab.slots[slot as usize].gen;
            let id = OpId::new(ring, gen, slot);
            let Some(st) = slab.get(id) else { continue };
            let entry = if st.cancel {
                Err(errno(libc::ECANCELED))
            } else {
                first_entry(st)
            };
            match entry.and_then(|e| self.push(e.user_data(id.0))) {
                Ok(()) => self.inflight += 1,
                Err(e) => {
                    if let Some(st) = slab.remove(id) {
                        out.push_back(finish(id, st, Err(e), 0));
                    }
                }
            }
        }
        for id in cancels {
            let pending = slab.remote_submit.contains(&id.slot());
            if let Some(st) = slab.get(id) {
                st.cancel = true;
                if !pending {
                    let e = opcode::AsyncCancel::new(id.0).build().user_data(CANCEL_TAG);
                    let _ = self.push(e);
                }
            }
        }
    }

    /// Collects finished operations into `out` without blocking.
    pub(crate) fn reap(&mut self, out: &mut VecDeque<Packet>) {
        self.take_remote(out);
        {
            let mut sq = self.uring.submission();
            sq.sync();
            let needed = !sq.is_empty() || sq.taskrun() || sq.cq_overflow();
            drop(sq);
            if needed {
                let _ = self.uring.submit();
            }
        }
        let shared = self.shared.clone();
        loop {
            let cqes: Vec<(u64, i32)> = self
                .uring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            if cqes.is_empty() {
                break;
            }
            let mut slab = shared.lock();
            for (ud, res) in cqes {
                match ud {
                    WAKE_TAG => {
                        self.wake_armed = false;
                    }
                    CANCEL_TAG => {}
                    _ => {
                        let id = OpId(ud);
                        let Some(st) = slab.get(id) else { continue };
                        match advance(st, res) {
                            Ok(Advance::Again) => match next_entry(st) {
                                Ok(e) => {
                                    if self.push(e.user_data(id.0)).is_err() {
                                        self.inflight -= 1;
                                        if let Some(st) = slab.remove(id) {
                                            out.push_back(finish(id, st, Err(errno(libc::EIO)), 0));
                                        }
                                    }
                                }
                                Err(e) => {
                                    self.inflight -= 1;
                                    if let Some(st) = slab.remove(id) {
                                        let total = progress(&st);
                                        out.push_back(finish(id, st, Err(e), total));
                                    }
                                }
                            },
                            Ok(Advance::Done(status, bytes)) | Err((status, bytes)) => {
                                self.inflight -= 1;
                                if let Some(st) = slab.remove(id) {
                                    out.push_back(finish(id, st, status, bytes));
                                }
                            }
                        }
                    }
                }
            }
        }
        if !self.wake_armed {
            // Drain the counter so the next read waits for a new wake-up.
            let mut v: u64 = 0;
            // SAFETY: reads at most 8 bytes into a live local from our eventfd
            // (non-blocking: EAGAIN when already drained).
            let _ = unsafe {
                libc::read(
                    self.shared.eventfd.as_raw_fd(),
                    (&mut v as *mut u64).cast(),
                    8,
                )
            };
            let _ = self.arm_wake();
        }
    }

    /// Sleeps until a completion, a wake-up, or `timeout`.
    pub(crate) fn park(&mut self, timeout: Option<Duration>) {
        let res = match timeout {
            None => self.uring.submit_and_wait(1),
            Some(d) => {
                let ts = Timespec::from(d);
                let args = SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(1, &args)
            }
        };
        if let Err(e) = res {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Cancels everything in flight and waits until the kernel is done with it;
    /// returns the packets (every op still yields exactly one).
    pub(crate) fn drain(&mut self) -> VecDeque<Packet> {
        let mut out = VecDeque::new();
        {
            let mut slab = self.shared.lock();
            // Ops handed over but never submitted complete as aborted right here.
            let subs = std::mem::take(&mut slab.remote_submit);
            for slot in subs {
                let gen = slab.slots[slot as usize].gen;
                let id = OpId::new(self.shared.index, gen, slot);
                if let Some(st) = slab.remove(id) {
                    out.push_back(finish(id, st, Err(errno(libc::ECANCELED)), 0));
                }
            }
            slab.remote_cancel.clear();
            for s in slab.slots.iter_mut().flatten_state() {
                s.cancel = true;
            }
        }
        self.shared.remote.store(false, Ordering::Release);
        let mut rounds = 0u32;
        while self.inflight > 0 || self.wake_armed {
            let e = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(CANCEL_TAG);
            let _ = self.push(e);
            let _ = self.uring.submit_and_wait(1);
            self.reap_final(&mut out);
            rounds += 1;
            if rounds > 10_000 {
                // The kernel refuses to let go: leak the ring rather than free
                // memory it may still write to.
                Box::leak(std::mem::take(&mut self.wake_buf));
                std::mem::forget(self.shared.clone());
                self.inflight = 0;
                self.wake_armed = false;
                break;
            }
        }
        out
    }

    /// Reaping during `drain`: nothing is resubmitted.
    fn reap_final(&mut self, out: &mut VecDeque<Packet>) {
        let shared = self.shared.clone();
        let cqes: Vec<(u64, i32)> = self
            .uring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        let mut slab = shared.lock();
        for (ud, res) in cqes {
            match ud {
                WAKE_TAG => self.wake_armed = false,
                CANCEL_TAG => {}
                _ => {
                    let id = OpId(ud);
                    let Some(st) = slab.get(id) else { continue };
                    let (status, bytes) = match advance(st, res) {
                        Ok(Advance::Done(s, b)) | Err((s, b)) => (s, b),
                        Ok(Advance::Again) => (Err(errno(libc::ECANCELED)), progress(st)),
                    };
                    self.inflight -= 1;
                    if let Some(st) = slab.remove(id) {
                        out.push_back(finish(id, st, status, bytes));
                    }
                }
            }
        }
    }
}

trait FlattenState<'a> {
    fn flatten_state(self) -> Box<dyn Iterator<Item = &'a mut Box<OpState>> + 'a>;
}

impl<'a> FlattenState<'a> for std::slice::IterMut<'a, Slot> {
    fn flatten_state(self) -> Box<dyn Iterator<Item = &'a mut Box<OpState>> + 'a> {
        Box::new(self.filter_map(|s| s.state.as_mut()))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Whoever drops a ring without draining it loses the packets, but the
        // kernel must still be done with our memory first.
        if self.inflight > 0 || self.wake_armed {
            drop(self.drain());
        }
    }
}

fn progress(st: &OpState) -> u64 {
    match &st.extra {
        Extra::Send { sent } => *sent as u64,
        Extra::Transmit(t) => t.total,
        _ => 0,
    }
}

/// Turns a finished op into its packet, filling in results.
fn finish(id: OpId, st: Box<OpState>, status: io::Result<()>, bytes: u64) -> Packet {
    let OpState {
        mut op, key, extra, ..
    } = *st;
    if let (Op::Accept(a), Extra::Accept { addr, len }) = (&mut op, &extra) {
        a.peer = sockaddr_to_std(addr, *len);
    }
    Packet {
        key,
        bytes,
        status,
        id,
        op,
    }
}

fn sockaddr_to_std(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(addr.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is
            // smaller than and alignment-compatible with sockaddr_storage.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn first_entry(st: &mut OpState) -> io::Result<squeue::Entry> {
    if let Extra::Transmit(t) = &mut st.extra {
        settle(t, &st.op);
    }
    next_entry(st)
}

/// The next kernel request for an op, from its current state.
fn next_entry(st: &mut OpState) -> io::Result<squeue::Entry> {
    if st.cancel {
        return Err(errno(libc::ECANCELED));
    }
    let send_flags = libc::MSG_NOSIGNAL;
    let entry = match (&mut st.op, &mut st.extra) {
        (Op::Accept(a), Extra::Accept { addr, len }) => {
            let fd = a.listener.as_raw_fd();
            opcode::Accept::new(Fd(fd), (addr as *mut libc::sockaddr_storage).cast(), len)
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
        }
        (Op::Recv(r), _) => {
            let spare = r.buf.spare_capacity_mut();
            let len = spare.len().min(u32::MAX as usize) as u32;
            opcode::Recv::new(Fd(r.handle.as_raw_fd()), spare.as_mut_ptr().cast(), len).build()
        }
        (Op::Send(s), Extra::Send { sent }) => {
            let rest = &s.buf[*sent..];
            let len = rest.len().min(u32::MAX as usize) as u32;
            opcode::Send::new(Fd(s.handle.as_raw_fd()), rest.as_ptr(), len)
                .flags(send_flags)
                .build()
        }
        (Op::Timeout(_), Extra::Timeout(ts)) => opcode::Timeout::new(ts as *const Timespec).build(),
        (Op::TransmitFile(op), Extra::Transmit(t)) => {
            let sock = Fd(op.socket.as_raw_fd());
            let send = |b: &[u8]| {
                let len = b.len().min(u32::MAX as usize) as u32;
                opcode::Send::new(sock, b.as_ptr(), len)
                    .flags(send_flags)
                    .build()
            };
            match t.phase {
                Phase::Head => send(&op.head[t.pos..]),
                Phase::Tail => send(&op.tail[t.pos..]),
                Phase::Chunk => send(&t.chunk[t.pos..]),
                Phase::Read => {
                    let Some(file) = &op.file else {
                        return Err(errno(libc::EBADF));
                    };
                    let want = (t.remaining.min(CHUNK as u64)) as usize;
                    if t.chunk.capacity() < want {
                        t.chunk.reserve_exact(want);
                    }
                    t.chunk.clear();
                    opcode::Read::new(Fd(file.as_raw_fd()), t.chunk.as_mut_ptr(), want as u32)
                        .offset(t.file_off)
                        .build()
                }
                Phase::Done => return Err(errno(libc::EINVAL)),
            }
        }
        _ => return Err(errno(libc::EINVAL)),
    };
    Ok(entry)
}

/// Moves a transmit past empty phases.
fn settle(t: &mut Transmit, op: &Op) {
    let Op::TransmitFile(op) = op else { return };
    loop {
        let empty = match t.phase {
            Phase::Head => t.pos >= op.head.len(),
            Phase::Read => t.remaining == 0,
            Phase::Chunk => t.pos >= t.chunk.len(),
            Phase::Tail => t.pos >= op.tail.len(),
            Phase::Done => return,
        };
        if !empty {
            return;
        }
        t.pos = 0;
        t.phase = match t.phase {
            Phase::Head => Phase::Read,
            Phase::Read => Phase::Tail,
            Phase::Chunk => {
                if t.remaining > 0 {
                    Phase::Read
                } else {
                    Phase::Tail
                }
            }
            Phase::Tail | Phase::Done => Phase::Done,
        };
    }
}

/// Applies one completion result to an op. `Err` carries a final failure.
fn advance(st: &mut OpState, res: i32) -> Result<Advance, (io::Result<()>, u64)> {
    let done = progress(st);
    if res < 0 {
        let e = -res;
        if let (Op::Timeout(_), libc::ETIME) = (&st.op, e) {
            return Ok(Advance::Done(Ok(()), 0));
        }
        return Err((Err(errno(e)), done));
    }
    let n = res as usize;
    match (&mut st.op, &mut st.extra) {
        (Op::Accept(a), _) => {
            // SAFETY: a successful accept completion's result is a new descriptor
            // that nothing else owns.
            a.socket = Some(unsafe { OwnedFd::from_raw_fd(res) });
            Ok(Advance::Done(Ok(()), 0))
        }
        (Op::Recv(r), _) => {
            let new_len = (r.buf.len() + n).min(r.buf.capacity());
            // SAFETY: the kernel initialised `n` bytes of the spare capacity it was
            // given (never more than that capacity), so these bytes are initialised.
            unsafe { r.buf.set_len(new_len) };
            Ok(Advance::Done(Ok(()), n as u64))
        }
        (Op::Send(s), Extra::Send { sent }) => {
            *sent += n;
            if *sent >= s.buf.len() || n == 0 {
                Ok(Advance::Done(Ok(()), *sent as u64))
            } else if st.cancel {
                Err((Err(errno(libc::ECANCELED)), *sent as u64))
            } else {
                Ok(Advance::Again)
            }
        }
        (Op::Timeout(_), _) => Ok(Advance::Done(Ok(()), 0)),
        (Op::TransmitFile(_), Extra::Transmit(_)) => {
            let Extra::Transmit(t) = &mut st.extra else {
                unreachable!()
            };
            match t.phase {
                Phase::Head | Phase::Tail | Phase::Chunk => {
                    if n == 0 {
                        return Err((Err(errno(libc::EPIPE)), t.total));
                    }
                    t.pos += n;
                    t.total += n as u64;
                }
                Phase::Read => {
                    if n == 0 {
                        // The file is shorter than it was at the start.
                        return Err((Err(io::ErrorKind::UnexpectedEof.into()), t.total));
                    }
                    // SAFETY: the kernel wrote `n` bytes (at most the length we asked,
                    // which is within the capacity reserved) into the chunk.
                    unsafe { t.chunk.set_len(n) };
                    t.file_off += n as u64;
                    t.remaining -= (n as u64).min(t.remaining);
                    t.pos = 0;
                    t.phase = Phase::Chunk;
                }
                Phase::Done => {}
            }
            settle(t, &st.op);
            if t.phase == Phase::Done {
                Ok(Advance::Done(Ok(()), t.total))
            } else if st.cancel {
                Err((Err(errno(libc::ECANCELED)), t.total))
            } else {
                Ok(Advance::Again)
            }
        }
        _ => Ok(Advance::Done(Ok(()), n as u64)),
    }
}

impl RingShared {
    /// This ring's index in its port's ring table.
    pub(crate) fn index(&self) -> u16 {
        self.index
    }
}
