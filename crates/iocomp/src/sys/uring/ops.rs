//! Operation state machines: what each operation asks of the kernel, and what
//! each completion does to it. Multi-step operations (a send continued after a
//! short write, a transmit's head, chunks and tail) stay in flight until their
//! last step and then yield one packet.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::types::{Fd, Timespec};
use io_uring::{cqueue, opcode, squeue};

use super::bufring::{self, BufRing};

use crate::op::{Op, TransmitFile};
use crate::packet::{OpId, Packet};

/// Bytes read per step when a transmit has to copy (file pages not in cache).
const CHUNK: usize = 256 * 1024;
/// Bytes `sendfile` may move per turn before the transmit waits for POLLOUT
/// again (nginx's `sendfile_max_chunk`): one fast client cannot starve the
/// others served by the same thread.
const TURN: u64 = 2 * 1024 * 1024;
/// How far ahead one page-cache probe vouches for (both ends are checked).
const PROBE: u64 = 16 * 1024 * 1024;

/// An operation in flight plus the kernel-visible memory it needs.
pub(super) struct OpState {
    pub(super) op: Op,
    pub(super) key: u64,
    pub(super) cancel: bool,
    pub(super) extra: Extra,
}

pub(super) enum Extra {
    Accept {
        addr: libc::sockaddr_storage,
        len: libc::socklen_t,
    },
    Timeout(Timespec),
    /// `pooled`: the kernel picks a buffer from the ring's pool when data arrives.
    Recv {
        pooled: bool,
    },
    Send {
        sent: usize,
    },
    Transmit(Box<Transmit>),
}

/// Where a transmit is. The file is sent by `Poll` turns (wait until the socket
/// is writable, then non-blocking `sendfile` on this thread: zero-copy) while its
/// pages are in the page cache, and by `Read` + `Chunk` (an io_uring read into
/// a buffer, then a send) when they are not, so a cold page never blocks the
/// thread that owns the ring.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub(super) enum Phase {
    Head,
    Poll,
    Read,
    Chunk,
    Tail,
    Done,
}

pub(super) struct Transmit {
    /// Head, file and tail were read into `chunk` and go out as one send.
    inline: bool,
    phase: Phase,
    /// Position inside head, chunk or tail.
    pos: usize,
    chunk: Vec<u8>,
    file_off: u64,
    /// File bytes not yet read.
    remaining: u64,
    /// The last probe found the pages cached up to here.
    hot_until: u64,
    total: u64,
}

/// What a completion did to an operation.
pub(super) enum Advance {
    /// Another step was submitted; the op stays in flight.
    Again,
    /// Finished with this status and byte count.
    Done(io::Result<()>, u64),
}

pub(super) fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Checks an op and builds its in-flight state (the synchronous part of submit).
pub(super) fn prepare(op: Op) -> Result<Box<OpState>, (io::Error, Op)> {
    let (key, extra) = match &op {
        Op::Accept(a) => (
            a.listener.key(),
            Extra::Accept {
                // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
                addr: unsafe { std::mem::zeroed() },
                len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
            },
        ),
        Op::Recv(r) => (r.handle.key(), Extra::Recv { pooled: r.pooled }),
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
            if let Err(e) = set_nonblocking(t.socket.as_raw_fd()) {
                return Err((e, op));
            }
            if let Some(tr) = inline_small(t, file_off, remaining) {
                let key = t.socket.key();
                return Ok(Box::new(OpState {
                    op,
                    key,
                    cancel: false,
                    extra: Extra::Transmit(tr),
                }));
            }
            let tr = Transmit {
                inline: false,
                phase: Phase::Head,
                pos: 0,
                chunk: Vec::new(),
                file_off,
                remaining,
                hot_until: 0,
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

pub(super) fn progress(st: &OpState) -> u64 {
    match &st.extra {
        Extra::Send { sent } => *sent as u64,
        Extra::Transmit(t) => t.total,
        _ => 0,
    }
}

/// Turns a finished op into its packet, filling in results.
pub(super) fn finish(id: OpId, st: Box<OpState>, status: io::Result<()>, bytes: u64) -> Packet {
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

pub(super) fn sockaddr_to_std(
    addr: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
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

/// The next kernel request for an op, from its current state.
pub(super) fn next_entry(st: &mut OpState, pool: bool) -> io::Result<squeue::Entry> {
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
        (Op::Recv(r), Extra::Recv { pooled }) if *pooled && pool => {
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
                // No pool on this ring, or it ran dry: receive into our own buffer.
                *pooled = false;
                r.buf.reserve(bufring::SIZE);
            }
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
                Phase::Poll => opcode::PollAdd::new(sock, libc::POLLOUT as u32).build(),
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
pub(super) fn settle(t: &mut Transmit, op: &TransmitFile) {
    loop {
        let empty = match t.phase {
            Phase::Head => t.pos >= op.head.len(),
            Phase::Poll | Phase::Read => t.remaining == 0,
            Phase::Chunk => t.pos >= t.chunk.len(),
            Phase::Tail => t.inline || t.pos >= op.tail.len(),
            Phase::Done => return,
        };
        if !empty {
            return;
        }
        t.pos = 0;
        t.phase = match t.phase {
            Phase::Head | Phase::Chunk if t.remaining > 0 => Phase::Poll,
            Phase::Head | Phase::Poll | Phase::Read | Phase::Chunk => Phase::Tail,
            Phase::Tail | Phase::Done => Phase::Done,
        };
    }
}

/// Files up to this size whose pages are cached go out in one send together
/// with head and tail (one read, one send), instead of POLLOUT + `sendfile`.
const SMALL: u64 = 16 * 1024;

/// The small-file path: if the whole range is in the page cache, reads it
/// (without blocking: `RWF_NOWAIT`) into one buffer between head and tail.
fn inline_small(t: &TransmitFile, off: u64, len: u64) -> Option<Box<Transmit>> {
    let file = t.file.as_ref()?;
    if len == 0 || len > SMALL || t.head.len() + t.tail.len() > SMALL as usize {
        return None;
    }
    let len = len as usize;
    let mut buf = Vec::with_capacity(t.head.len() + len + t.tail.len());
    buf.extend_from_slice(&t.head);
    let start = buf.len();
    // SAFETY: the iovec covers `len` bytes of spare capacity that `buf` owns and
    // that nothing else references; the kernel writes at most that many bytes
    // and keeps no reference after returning.
    let n = unsafe {
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().add(start).cast(),
            iov_len: len,
        };
        libc::preadv2(
            file.as_raw_fd(),
            &iov,
            1,
            off as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    if n != len as isize {
        // Not cached (EAGAIN), short (the file shrank), or an error: the general
        // path handles each case.
        return None;
    }
    // SAFETY: the kernel initialised exactly `len` bytes after `start`.
    unsafe { buf.set_len(start + len) };
    buf.extend_from_slice(&t.tail);
    Some(Box::new(Transmit {
        inline: true,
        phase: Phase::Chunk,
        pos: 0,
        chunk: buf,
        file_off: off + len as u64,
        remaining: 0,
        hot_until: 0,
        total: 0,
    }))
}

/// Puts a socket in non-blocking mode (`sendfile` must never wait on it).
fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFL/F_SETFL) on a descriptor the caller keeps open
    // touches no memory of ours.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether the file's pages at both ends of `[off, off + len)` are in the page
/// cache: a one-byte `preadv2(RWF_NOWAIT)` at each end. Anything but EAGAIN
/// (a filesystem without RWF_NOWAIT, say) counts as cached: `sendfile` then does
/// what it always does.
fn cached(file: i32, off: u64, len: u64) -> bool {
    let probe = |at: u64| {
        let mut byte = 0u8;
        let iov = libc::iovec {
            iov_base: (&mut byte as *mut u8).cast(),
            iov_len: 1,
        };
        // SAFETY: one iovec pointing at a live local byte; the kernel writes at
        // most that byte and keeps no reference after returning.
        let rc = unsafe { libc::preadv2(file, &iov, 1, at as libc::off_t, libc::RWF_NOWAIT) };
        rc >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
    };
    probe(off) && (len <= 1 || probe(off + len - 1))
}

/// One turn of zero-copy sending after POLLOUT: non-blocking `sendfile` until
/// the socket is full, the turn's budget is spent, or the file range is done.
/// Switches to the copying path when the next pages are not cached.
fn sendfile_turn(t: &mut Transmit, sock: i32, file: i32) -> io::Result<()> {
    let mut budget = TURN;
    while t.remaining > 0 && budget > 0 {
        let want = t.remaining.min(budget);
        if t.file_off + want > t.hot_until {
            // Probe a window ahead, not every turn: two `preadv2` per PROBE bytes.
            let window = t.remaining.min(PROBE);
            if !cached(file, t.file_off, window) {
                t.phase = Phase::Read;
                return Ok(());
            }
            t.hot_until = t.file_off + window;
        }
        let mut off = t.file_off as libc::off_t;
        // SAFETY: sendfile between two descriptors the op keeps open; `off` is a
        // live local the kernel updates; no other memory of ours is touched.
        let n = unsafe { libc::sendfile(sock, file, &mut off, want as usize) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(()),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        if n == 0 {
            // The file is shorter than it was when the transmit started.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = n as u64;
        t.file_off += n;
        t.remaining -= n.min(t.remaining);
        t.total += n;
        budget -= n.min(budget);
    }
    Ok(())
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
            // The pool is empty right now: retry with a buffer of our own.
            *pooled = false;
            r.buf.reserve(bufring::SIZE);
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
        (Op::TransmitFile(op), Extra::Transmit(t)) => {
            match t.phase {
                Phase::Poll => {
                    // The socket is writable (or in error: sendfile will say).
                    let sock = op.socket.as_raw_fd();
                    let Some(file) = op.file.as_ref().map(|f| f.as_raw_fd()) else {
                        return Err((Err(errno(libc::EBADF)), t.total));
                    };
                    if let Err(e) = sendfile_turn(t, sock, file) {
                        return Err((Err(e), t.total));
                    }
                }
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
