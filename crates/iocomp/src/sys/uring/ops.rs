//! Operation state machines: what each operation asks of the kernel, and what
//! each completion does to it. Multi-step operations (a send continued after a
//! short write, a transmit's head, chunks and tail) stay in flight until their
//! last step and then yield one packet.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::types::{self, Fd, Timespec};
use io_uring::{cqueue, opcode, squeue};

use super::bufring::{self, BufRing};

use super::super::common::{
    errno, file_room, rest_of, sendfile_turn, settle, sockaddr_to_std, std_to_sockaddr,
    too_many_for_one_datagram, Msg,
};
use super::super::common::{not_io, room_for_pooled, take_parkable};
use super::super::common::{Phase, Transmit};
use crate::op::Op;
use crate::packet::{OpId, Packet};

/// An operation in flight plus the kernel-visible memory it needs.
pub(crate) struct OpState {
    pub(super) op: Op,
    pub(super) key: u64,
    pub(super) cancel: bool,
    pub(super) extra: Extra,
}

/// Where the kernel writes an accept's peer address and its length when the
/// accept completes: a heap allocation reached only through a raw pointer, so
/// that no Rust reference to the op's state (the `&mut OpState` the slab
/// hands out while the accept is in flight) covers memory the kernel writes.
pub(super) struct PeerAddr(std::ptr::NonNull<(libc::sockaddr_storage, libc::socklen_t)>);

// SAFETY: `PeerAddr` owns its allocation alone (as a `Box` would); the kernel
// writes it only while the op is in flight, and the op state, slab lock or
// owning thread orders every Rust access after the completion that ends it.
unsafe impl std::marker::Send for PeerAddr {}

impl PeerAddr {
    fn new() -> PeerAddr {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
        let addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        PeerAddr(std::ptr::NonNull::from(Box::leak(Box::new((addr, len)))))
    }

    /// The address and length pointers the accept entry gives the kernel
    /// (no reference is made: raw field pointers).
    fn ptrs(&self) -> (*mut libc::sockaddr, *mut libc::socklen_t) {
        let p = self.0.as_ptr();
        // SAFETY: `p` points to a live allocation we own (freed only by Drop);
        // `addr_of_mut!` makes no reference.
        unsafe {
            (
                std::ptr::addr_of_mut!((*p).0).cast(),
                std::ptr::addr_of_mut!((*p).1),
            )
        }
    }

    /// The peer address, once the kernel is done with the memory.
    fn read(&self) -> Option<std::net::SocketAddr> {
        // SAFETY: called only from `finish`, after the accept's final
        // completion was reaped (or it never reached the kernel): nothing
        // writes the memory any more, and it holds a valid value (zeroes, or
        // what the kernel wrote).
        let (addr, len) = unsafe { std::ptr::read(self.0.as_ptr()) };
        sockaddr_to_std(&addr, len)
    }
}

impl Drop for PeerAddr {
    fn drop(&mut self) {
        // SAFETY: the allocation came from `Box::leak` in `new` and is freed
        // once, here; the op state (and so this) is dropped only after the
        // kernel is done with the accept (a ring the kernel never let go of
        // leaks its slab instead).
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

pub(super) enum Extra {
    Accept(PeerAddr),
    Timeout(Timespec),
    /// The peer's address, where the kernel reads it (boxed: a connect is
    /// rare, and the address would make every op's state large to move).
    Connect(Box<(libc::sockaddr_storage, libc::socklen_t)>),
    /// `pooled`: the kernel picks a buffer from the ring's pool when data arrives.
    Recv {
        pooled: bool,
    },
    Send {
        sent: usize,
    },
    Transmit(Box<Transmit>),
    /// A flush: one request, no state.
    File,
    /// A positional read: bytes read so far (a short read short of end of
    /// file is continued).
    ReadAt {
        read: usize,
    },
    /// A positional write: bytes written so far.
    WriteAt {
        written: usize,
    },
    /// A datagram's message header (and address), where the kernel reads
    /// and writes it.
    Msg(Msg),
    /// A vectored send: bytes sent so far, and the header of the next step;
    /// `too_big`: a datagram of more buffers than one `sendmsg` takes, which
    /// fails with EMSGSIZE without being sent (a no-op stands for it).
    Vectored {
        sent: usize,
        msg: Msg,
        too_big: bool,
    },
}

op_slot!(OpState, prepare: prepare, progress: progress);

/// What a completion did to an operation.
pub(super) enum Advance {
    /// Another step was submitted; the op stays in flight.
    Again,
    /// Finished with this status and byte count.
    Done(io::Result<()>, u64),
}

/// Checks an op and builds its in-flight state (the synchronous part of submit).
pub(super) fn prepare(mut op: Op) -> Result<Box<OpState>, (io::Error, Op)> {
    // A reused op: no sender until this receive has one.
    if let Op::RecvFrom(r) = &mut op {
        r.addr = None;
    }
    let Some(key) = op.key() else {
        return Err((not_io(), op));
    };
    let extra = match &op {
        Op::Accept(_) => Extra::Accept(PeerAddr::new()),
        Op::Recv(r) => Extra::Recv { pooled: r.pooled },
        Op::Send(_) => Extra::Send { sent: 0 },
        Op::Timeout(t) => Extra::Timeout(Timespec::from(t.clamped())),
        Op::Connect(c) => Extra::Connect(Box::new(std_to_sockaddr(&c.addr))),
        Op::TransmitFile(t) => match Transmit::start(t) {
            Ok(tr) => Extra::Transmit(tr),
            Err(e) => return Err((e, op)),
        },
        Op::ReadAt(_) => Extra::ReadAt { read: 0 },
        Op::WriteAt(_) => Extra::WriteAt { written: 0 },
        Op::Fsync(_) => Extra::File,
        Op::RecvFrom(_) | Op::SendTo(_) => Extra::Msg(Msg::new()),
        Op::SendVectored(s) => Extra::Vectored {
            sent: 0,
            msg: Msg::new(),
            too_big: too_many_for_one_datagram(s.handle.as_raw_fd(), &s.bufs),
        },
        Op::Posted { .. } | Op::Work(_) => return Err((not_io(), op)),
    };
    // Field by field into a spare box: the op is copied once, not built on
    // the stack and then copied in.
    Ok(
        match SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten() {
            Some(mut b) => {
                b.op = op;
                b.key = key;
                b.cancel = false;
                b.extra = extra;
                b
            }
            None => Box::new(OpState {
                op,
                key,
                cancel: false,
                extra,
            }),
        },
    )
}

/// Boxes of finished operations kept for the next ones this thread prepares:
/// a busy worker then allocates no op state per request.
const SPARE_MAX: usize = 64;

thread_local! {
    // The allocations themselves are what is kept: the slab holds boxes.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<OpState>>> = const { RefCell::new(Vec::new()) };
}

/// The extra a spare box holds: owns nothing (its op is a posted one).
fn placeholder_extra() -> Extra {
    Extra::Send { sent: 0 }
}

/// The socket and direction of an op that moves a byte stream (sends and
/// transmits write, receives read): one socket's writes must reach it in the
/// order they were issued, and so must its receives (AFD fills pending
/// receives on a stream socket in the order they were posted).
pub(super) fn stream_fd(st: &OpState) -> Option<(std::os::fd::RawFd, bool)> {
    match &st.op {
        Op::Send(s) => Some((s.handle.as_raw_fd(), false)),
        Op::TransmitFile(t) => Some((t.socket.as_raw_fd(), false)),
        Op::Recv(r) => Some((r.handle.as_raw_fd(), true)),
        Op::SendTo(s) => Some((s.handle.as_raw_fd(), false)),
        Op::SendVectored(s) => Some((s.handle.as_raw_fd(), false)),
        Op::RecvFrom(r) => Some((r.handle.as_raw_fd(), true)),
        _ => None,
    }
}

pub(super) fn progress(st: &OpState) -> u64 {
    match &st.extra {
        Extra::Send { sent } => *sent as u64,
        Extra::WriteAt { written } => *written as u64,
        Extra::ReadAt { read } => *read as u64,
        Extra::Vectored { sent, .. } => *sent as u64,
        Extra::Transmit(t) => t.total,
        _ => 0,
    }
}

/// Turns a finished op into its packet, filling in results.
pub(super) fn finish(id: OpId, st: Box<OpState>, status: io::Result<()>, bytes: u64) -> Packet {
    let mut st = st;
    // Only the op leaves the box (the state stays put, its extra is dropped
    // in place): one copy of the op on its way to the packet.
    let mut op = std::mem::replace(&mut st.op, Op::Posted { token: 0 });
    if let (Op::Accept(a), Extra::Accept(peer)) = (&mut op, &st.extra) {
        a.peer = peer.read();
    }
    let key = st.key;
    st.extra = placeholder_extra();
    // Not during thread teardown (the list may be gone): then the box is freed.
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_MAX {
            s.push(st);
        }
    });
    Packet {
        key,
        bytes,
        status,
        id,
        op,
    }
}

pub(super) fn first_entry(st: &mut OpState, pool: bool) -> io::Result<squeue::Entry> {
    if let (Extra::Transmit(t), Op::TransmitFile(op)) = (&mut st.extra, &st.op) {
        settle(t, op);
        if t.phase == Phase::Done {
            // Nothing to send at all: a no-op still yields the one packet.
            return Ok(opcode::Nop::new().build());
        }
    }
    next_entry(st, pool)
}

/// The buffer a pooled receive may wait without: its request, just built,
/// lets the kernel pick a pool buffer, and its own buffer is empty with room.
/// The owning thread parks it once the request is in the kernel
/// ([`park_pooled`](super::super::common::park_pooled)); a refusal before
/// that puts it back into the op.
pub(super) fn parkable_buf(st: &mut OpState) -> Option<Vec<u8>> {
    match (&mut st.op, &st.extra) {
        (Op::Recv(r), Extra::Recv { pooled: true }) => take_parkable(&mut r.buf),
        _ => None,
    }
}

/// Puts a buffer [`parkable_buf`] took back into its op (a refused submit).
pub(super) fn unpark_buf(op: &mut Op, buf: Option<Vec<u8>>) {
    if let (Op::Recv(r), Some(b)) = (op, buf) {
        r.buf = b;
    }
}

/// The next kernel request for an op, from its current state.
pub(super) fn next_entry(st: &mut OpState, pool: bool) -> io::Result<squeue::Entry> {
    if st.cancel {
        return Err(errno(libc::ECANCELED));
    }
    let send_flags = libc::MSG_NOSIGNAL;
    let entry = match (&mut st.op, &mut st.extra) {
        (Op::Accept(a), Extra::Accept(peer)) => {
            let fd = a.listener.as_raw_fd();
            let (addr, len) = peer.ptrs();
            opcode::Accept::new(Fd(fd), addr, len)
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
        }
        (Op::Recv(r), Extra::Recv { pooled })
            if *pooled && pool && !r.handle.streams_by_read_write() =>
        {
            opcode::Recv::new(Fd(r.handle.as_raw_fd()), std::ptr::null_mut(), 0)
                .buf_group(bufring::GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        }
        (Op::Recv(r), extra) => {
            if let Extra::Recv {
                pooled: pooled @ true,
            } = extra
            {
                // No pool on this ring, or it ran dry: receive into our own
                // buffer (the caller's, or a spare if it has no room).
                *pooled = false;
                room_for_pooled(&mut r.buf);
                r.buf.reserve(bufring::SIZE);
            }
            let spare = r.buf.spare_capacity_mut();
            let len = spare.len().min(u32::MAX as usize) as u32;
            let fd = Fd(r.handle.as_raw_fd());
            if r.handle.streams_by_read_write() {
                // A pipe, FIFO or terminal: read(2) at the current position
                // (io_uring's offset -1; streams have none).
                opcode::Read::new(fd, spare.as_mut_ptr().cast(), len)
                    .offset(u64::MAX)
                    .build()
            } else {
                opcode::Recv::new(fd, spare.as_mut_ptr().cast(), len).build()
            }
        }
        (Op::Send(s), Extra::Send { sent }) => {
            let rest = &s.buf[*sent..];
            let len = rest.len().min(u32::MAX as usize) as u32;
            let fd = Fd(s.handle.as_raw_fd());
            if s.handle.streams_by_read_write() {
                opcode::Write::new(fd, rest.as_ptr(), len)
                    .offset(u64::MAX)
                    .build()
            } else {
                opcode::Send::new(fd, rest.as_ptr(), len)
                    .flags(send_flags)
                    .build()
            }
        }
        (Op::RecvFrom(r), Extra::Msg(msg)) => {
            let spare = r.buf.spare_capacity_mut();
            // The header points at the spare capacity, which stays put (the
            // op owns the buffer and nothing grows it while in flight).
            let hdr = msg.prepare_recv(spare.as_mut_ptr().cast(), spare.len());
            opcode::RecvMsg::new(Fd(r.handle.as_raw_fd()), hdr).build()
        }
        (Op::SendTo(s), Extra::Msg(msg)) => {
            let hdr = msg.prepare(
                std::iter::once((s.buf.as_ptr(), s.buf.len())),
                Some(&s.addr),
            );
            opcode::SendMsg::new(Fd(s.handle.as_raw_fd()), hdr)
                .flags(send_flags as u32)
                .build()
        }
        (Op::SendVectored(_), Extra::Vectored { too_big: true, .. }) => opcode::Nop::new().build(),
        (Op::SendVectored(s), Extra::Vectored { sent, msg, .. }) => {
            let fd = Fd(s.handle.as_raw_fd());
            let hdr = msg.prepare(rest_of(&s.bufs, *sent), None);
            if s.handle.streams_by_read_write() {
                let (iov, n) = msg.iov();
                opcode::Writev::new(fd, iov, n as u32)
                    .offset(u64::MAX)
                    .build()
            } else {
                opcode::SendMsg::new(fd, hdr)
                    .flags(send_flags as u32)
                    .build()
            }
        }
        (Op::Timeout(_), Extra::Timeout(ts)) => opcode::Timeout::new(ts as *const Timespec).build(),
        (Op::ReadAt(r), Extra::ReadAt { read }) => {
            // Positional: `offset` was checked at submit to be at most
            // i64::MAX, so it is never io_uring's -1 ("the file position").
            let at = r.offset + *read as u64;
            let spare = r.buf.spare_capacity_mut();
            let len = file_room(at, spare.len()).min(u32::MAX as usize) as u32;
            opcode::Read::new(Fd(r.handle.as_raw_fd()), spare.as_mut_ptr().cast(), len)
                .offset(at)
                .build()
        }
        (Op::WriteAt(w), Extra::WriteAt { written }) => {
            let rest = &w.buf[*written..];
            let len = rest.len().min(u32::MAX as usize) as u32;
            opcode::Write::new(Fd(w.handle.as_raw_fd()), rest.as_ptr(), len)
                .offset(w.offset + *written as u64)
                .build()
        }
        (Op::Fsync(f), _) => {
            let flags = if f.data_only {
                types::FsyncFlags::DATASYNC
            } else {
                types::FsyncFlags::empty()
            };
            opcode::Fsync::new(Fd(f.handle.as_raw_fd()))
                .flags(flags)
                .build()
        }
        (Op::Connect(c), Extra::Connect(addr)) => opcode::Connect::new(
            Fd(c.socket.as_raw_fd()),
            (&addr.0 as *const libc::sockaddr_storage).cast(),
            addr.1,
        )
        .build(),
        (Op::TransmitFile(op), Extra::Transmit(t)) => {
            let sock = Fd(op.socket.as_raw_fd());
            let flags = t.send_flags();
            let send = |b: &[u8]| {
                let len = b.len().min(u32::MAX as usize) as u32;
                opcode::Send::new(sock, b.as_ptr(), len)
                    .flags(flags)
                    .build()
            };
            match t.phase {
                Phase::Head | Phase::Tail | Phase::Chunk => send(t.pending(op)),
                Phase::Poll => opcode::PollAdd::new(sock, libc::POLLOUT as u32).build(),
                Phase::Read => {
                    let Some(file) = &op.file else {
                        return Err(errno(libc::EBADF));
                    };
                    let want = t.read_want();
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

/// Whether `at` is known to be at or past the end of the file `fd`: a
/// regular file whose `fstat` size is not 0 and is reached. A size of 0
/// (procfs, which also gives short reads of about a page), a file that is
/// not regular, or a failed `fstat` say nothing: the read goes on until one
/// returns 0 bytes.
fn at_end(fd: std::os::fd::RawFd, at: u64) -> bool {
    matches!(super::super::common::file_size(fd), Some(size) if size > 0 && at >= size)
}

/// Applies one completion result to an op. `Err` carries a final failure.
pub(super) fn advance(
    st: &mut OpState,
    res: i32,
    flags: u32,
    bufs: Option<&mut BufRing>,
) -> Result<Advance, (io::Result<()>, u64)> {
    let done = progress(st);
    if let (Some(bid), Some(bufs)) = (cqueue::buffer_select(flags), bufs) {
        // The kernel picked buffer `bid` of the pool for this completion.
        match &mut st.op {
            Op::Recv(r) if res > 0 => {
                room_for_pooled(&mut r.buf);
                bufs.take(bid, res as usize, &mut r.buf);
                return Ok(Advance::Done(Ok(()), res as u64));
            }
            _ => bufs.recycle(bid),
        }
    }
    if res == -libc::ENOBUFS {
        if let (
            Extra::Recv {
                pooled: pooled @ true,
            },
            Op::Recv(r),
        ) = (&mut st.extra, &mut st.op)
        {
            // The pool is empty right now: retry with a buffer of our own
            // (the one parked at submit, if it is still there).
            *pooled = false;
            room_for_pooled(&mut r.buf);
            r.buf.reserve(bufring::SIZE);
            return Ok(Advance::Again);
        }
    }
    if res == -libc::ENOTSOCK {
        // Recv/Send on a stream that is no socket: again with read/write.
        let h = match &st.op {
            Op::Recv(r) => Some(&r.handle),
            Op::Send(s) => Some(&s.handle),
            Op::SendVectored(s) => Some(&s.handle),
            _ => None,
        };
        if let Some(h) = h.filter(|h| !h.streams_by_read_write()) {
            if h.is_closing() {
                // The descriptor may already be `/dev/null`: no switch to
                // read/write on it; the handle is gone (EBADF).
                return Err((Err(errno(libc::EBADF)), done));
            }
            h.note_not_socket();
            if let (Extra::Recv { pooled }, Op::Recv(r)) = (&mut st.extra, &mut st.op) {
                if *pooled {
                    *pooled = false;
                    room_for_pooled(&mut r.buf);
                    r.buf.reserve(bufring::SIZE);
                }
            }
            return Ok(Advance::Again);
        }
    }
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
        (Op::ReadAt(r), Extra::ReadAt { read }) => {
            let new_len = (r.buf.len() + n).min(r.buf.capacity());
            // SAFETY: the kernel initialised `n` bytes of the spare capacity it was
            // given (never more than that capacity), so these bytes are initialised.
            unsafe { r.buf.set_len(new_len) };
            *read += n;
            // As on epoll: the buffer is filled unless the file ends first. A
            // short read that stops at the end of the file (the common case:
            // a read across it) completes now, without a second request that
            // would say 0 — so a cached read across the end still completes
            // inside `submit_inline`; one short of the end (rare: the kernel
            // continues short buffered reads itself) is continued.
            let at = r.offset + *read as u64;
            let full = file_room(at, r.buf.capacity() - r.buf.len()) == 0;
            if n == 0 || full || st.cancel || at_end(r.handle.as_raw_fd(), at) {
                Ok(Advance::Done(Ok(()), *read as u64))
            } else {
                Ok(Advance::Again)
            }
        }
        (Op::WriteAt(w), Extra::WriteAt { written }) => {
            // A short write (a full disk, a file size limit) is continued at
            // the next offset; the one after it says why it stopped.
            *written += n;
            if *written >= w.buf.len() || n == 0 {
                Ok(Advance::Done(Ok(()), *written as u64))
            } else if st.cancel {
                Err((Err(errno(libc::ECANCELED)), *written as u64))
            } else {
                Ok(Advance::Again)
            }
        }
        (Op::Fsync(_), _) => Ok(Advance::Done(Ok(()), 0)),
        (Op::RecvFrom(r), Extra::Msg(msg)) => {
            let status = msg.finish_recv(&mut r.buf, n, &mut r.addr);
            Ok(Advance::Done(status, n as u64))
        }
        (Op::SendTo(_), _) => Ok(Advance::Done(Ok(()), n as u64)),
        (Op::SendVectored(_), Extra::Vectored { too_big: true, .. }) => {
            Err((Err(errno(libc::EMSGSIZE)), 0))
        }
        (Op::SendVectored(s), Extra::Vectored { sent, .. }) => {
            *sent += n;
            if *sent >= s.len() || n == 0 {
                Ok(Advance::Done(Ok(()), *sent as u64))
            } else if st.cancel {
                Err((Err(errno(libc::ECANCELED)), *sent as u64))
            } else {
                Ok(Advance::Again)
            }
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
        (Op::Timeout(_) | Op::Connect(_), _) => Ok(Advance::Done(Ok(()), 0)),
        (Op::TransmitFile(op), Extra::Transmit(t)) => {
            match t.phase {
                Phase::Poll => {
                    // The socket is writable (or in error: sendfile will say).
                    let sock = op.socket.as_raw_fd();
                    let Some(file) = op.file.as_ref().map(|f| f.as_raw_fd()) else {
                        return Err((Err(errno(libc::EBADF)), t.total));
                    };
                    // However the turn ended, the next step follows from the
                    // phase: another POLLOUT, a read of cold pages, or the tail.
                    if let Err(e) = sendfile_turn(t, sock, file) {
                        return Err((Err(e), t.total));
                    }
                }
                Phase::Head | Phase::Tail | Phase::Chunk => {
                    if n == 0 {
                        return Err((Err(errno(libc::EPIPE)), t.total));
                    }
                    t.sent(n);
                    settle(t, op);
                    if t.phase == Phase::Poll && !st.cancel {
                        // The socket just took bytes: it most likely takes file
                        // bytes too. Send them now instead of after a POLLOUT
                        // round trip through the ring; a full socket (EAGAIN)
                        // leaves the phase at Poll and POLLOUT is armed.
                        let sock = op.socket.as_raw_fd();
                        let Some(file) = op.file.as_ref().map(|f| f.as_raw_fd()) else {
                            return Err((Err(errno(libc::EBADF)), t.total));
                        };
                        if let Err(e) = sendfile_turn(t, sock, file) {
                            return Err((Err(e), t.total));
                        }
                    }
                }
                Phase::Read => {
                    if n == 0 {
                        // The file is shorter than it was at the start.
                        return Err((Err(io::ErrorKind::UnexpectedEof.into()), t.total));
                    }
                    // SAFETY: the kernel wrote `n` bytes (at most the length we asked,
                    // which is within the capacity reserved) into the chunk.
                    unsafe { t.chunk.set_len(n) };
                    t.read_done(n);
                }
                Phase::Done => {}
            }
            settle(t, op);
            if t.phase == Phase::Done {
                if op.disconnect {
                    // TF_DISCONNECT: the peer sees EOF after the last byte.
                    let _ = op.socket.shutdown(std::net::Shutdown::Write);
                }
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
