//! Operation state machines for the epoll backend. Each operation is a
//! non-blocking system call, tried when the operation starts and again each
//! time its descriptor becomes ready; multi-step operations (a send continued
//! after a short write, a transmit's head, file and tail) keep their position
//! between tries and yield one packet at the end.
//!
//! The socket system calls, and their `unsafe`, are at the bottom of this file.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::super::common::{
    errno, file_room, rest_of, sendfile_turn, settle, sockaddr_to_std, std_to_sockaddr,
    too_many_for_one_datagram, Msg,
};
use super::super::common::{not_io, park_pooled_buf, room_for_pooled};
use super::super::common::{Phase, Transmit, Turn, TURN};
use super::pool::{Job, JobDone};
use crate::handle::Handle;
use crate::op::Op;
use crate::packet::{OpId, Packet};

/// An operation in flight.
pub(crate) struct OpState {
    pub(super) op: Op,
    key: u64,
    pub(super) cancel: bool,
    extra: Extra,
    /// A transmit's file read handed to the blocking pool.
    pub(super) offload: Offload,
}

/// Where a transmit's read of cold file pages stands (one byte: with
/// `cancel`, the op state is 136 bytes, a 144-byte allocation; issue 18).
#[derive(Default, Clone, Copy)]
pub(super) enum Offload {
    /// No read in the pool.
    #[default]
    Idle,
    /// The pool is reading; the transmit waits for it.
    Busy,
    /// The pool's read failed (or found the file shorter than promised):
    /// why is in the transmit's `failed`.
    Failed,
}

op_slot!(OpState, prepare: prepare, progress: OpState::progress);

enum Extra {
    Accept,
    Recv,
    Send {
        sent: usize,
    },
    Timeout(Instant),
    Transmit(Box<Transmit>),
    /// `connect(2)` was called (and said EINPROGRESS): wait for writability.
    Connect {
        started: bool,
    },
    /// A positional file operation: tried inline or run by the blocking pool,
    /// never queued on its descriptor (a regular file is always "ready", and
    /// positional I/O needs no order between operations: no lane).
    File,
    /// A datagram's message header and address.
    Msg(Msg),
    /// A vectored send: bytes sent so far, and the header of the next call;
    /// `too_big`: a datagram of more buffers than one `sendmsg` takes, which
    /// fails with EMSGSIZE without being sent.
    Vectored {
        sent: usize,
        msg: Msg,
        too_big: bool,
    },
}

/// Which readiness of a descriptor an operation waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Dir {
    /// Readable: accept, receive.
    Read,
    /// Writable: send, transmit, connect.
    Write,
}

/// What an operation waits on.
pub(super) enum Target {
    /// A deadline on the thread's timer heap.
    Timer(Instant),
    /// Readiness of a descriptor.
    Fd(RawFd, Dir),
    /// Nothing to wait for: a file operation, done inline or by the pool.
    File,
}

/// What one try did.
pub(super) enum Attempt {
    /// Would block: wait for the descriptor's next readiness edge.
    Blocked,
    /// Made progress and used its turn; may continue at once, after the others.
    Yield,
    /// Finished with this status and byte count.
    Done(io::Result<()>, u64),
    /// Needs a file read that would wait for the disk: hand it to the pool.
    Offload(Job),
    /// Waiting for the pool.
    Pending,
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
        Op::Accept(a) => {
            // Several threads may wait on one listener: the loser of a race must
            // get EAGAIN, not block.
            if let Err(e) = a.listener.ensure_nonblocking() {
                return Err((e, op));
            }
            Extra::Accept
        }
        Op::Recv(_) => Extra::Recv,
        Op::Send(_) => Extra::Send { sent: 0 },
        Op::Connect(c) => {
            if let Err(e) = c.socket.ensure_nonblocking() {
                return Err((e, op));
            }
            Extra::Connect { started: false }
        }
        Op::Timeout(t) => {
            let now = Instant::now();
            // Clamped to Timeout::MAX, which `Instant` holds on every Linux.
            Extra::Timeout(now.checked_add(t.clamped()).unwrap_or(now))
        }
        Op::TransmitFile(t) => match Transmit::start(t) {
            Ok(tr) => Extra::Transmit(tr),
            Err(e) => return Err((e, op)),
        },
        Op::ReadAt(_) | Op::WriteAt(_) | Op::Fsync(_) => Extra::File,
        Op::RecvFrom(_) | Op::SendTo(_) => Extra::Msg(Msg::new()),
        Op::SendVectored(s) => Extra::Vectored {
            sent: 0,
            msg: Msg::new(),
            too_big: too_many_for_one_datagram(s.handle.as_raw_fd(), &s.bufs),
        },
        Op::Posted { .. } | Op::Work(_) => return Err((not_io(), op)),
    };
    // Field by field into a spare box: no allocation per operation on a busy
    // thread, and the op is copied once.
    Ok(
        match SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten() {
            Some(mut b) => {
                b.op = op;
                b.key = key;
                b.cancel = false;
                b.extra = extra;
                b.offload = Offload::Idle;
                b
            }
            None => Box::new(OpState {
                op,
                key,
                cancel: false,
                extra,
                offload: Offload::Idle,
            }),
        },
    )
}

/// Boxes of finished operations kept for the next ones this thread prepares
/// (as the io_uring backend does): a busy worker allocates no op state per
/// request.
const SPARE_MAX: usize = 64;

thread_local! {
    // The allocations themselves are what is kept: the slab holds boxes.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<OpState>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl OpState {
    /// A pooled receive that found no data waits holding no memory: its
    /// empty buffer goes to this (the owning, completing) thread's spares.
    pub(super) fn park_pooled(&mut self) {
        if let Op::Recv(r) = &mut self.op {
            if r.pooled {
                park_pooled_buf(&mut r.buf);
            }
        }
    }

    /// What the operation waits on.
    pub(super) fn target(&self) -> Target {
        match (&self.op, &self.extra) {
            (_, Extra::Timeout(at)) => Target::Timer(*at),
            (_, Extra::File) => Target::File,
            (Op::Accept(a), _) => Target::Fd(a.listener.as_raw_fd(), Dir::Read),
            (Op::Recv(r), _) => Target::Fd(r.handle.as_raw_fd(), Dir::Read),
            (Op::Send(s), _) => Target::Fd(s.handle.as_raw_fd(), Dir::Write),
            (Op::TransmitFile(t), _) => Target::Fd(t.socket.as_raw_fd(), Dir::Write),
            (Op::Connect(c), _) => Target::Fd(c.socket.as_raw_fd(), Dir::Write),
            (Op::RecvFrom(r), _) => Target::Fd(r.handle.as_raw_fd(), Dir::Read),
            (Op::SendTo(s), _) => Target::Fd(s.handle.as_raw_fd(), Dir::Write),
            (Op::SendVectored(s), _) => Target::Fd(s.handle.as_raw_fd(), Dir::Write),
            // `prepare` admits nothing else; an expired timer is harmless.
            _ => Target::Timer(Instant::now()),
        }
    }

    /// The handle whose descriptor the operation waits on.
    pub(super) fn handle(&self) -> Option<&Handle> {
        self.op.handle()
    }

    /// Whether this is a positional file operation (which the blocking pool
    /// may hold: see [`OpState::file_attempt`]).
    pub(super) fn is_file(&self) -> bool {
        matches!(self.extra, Extra::File)
    }

    /// Starts a file operation: a read is tried inline with
    /// `preadv2(RWF_NOWAIT)` (page-cache hits never leave this thread); what
    /// would wait for the disk, every write and every flush become a job for
    /// the blocking pool (`Attempt::Offload`, the op's buffer moves into it).
    pub(super) fn file_attempt(&mut self) -> Attempt {
        if self.cancel {
            return Attempt::Done(Err(errno(libc::ECANCELED)), 0);
        }
        match &mut self.op {
            Op::ReadAt(r) => {
                // Read on while the pages are cached: a short count is either
                // end of file (the next read says 0) or the first page that
                // is not cached (the next read says EAGAIN: the pool goes on
                // from there). An error after some bytes is the packet's
                // error, carrying their count (as from the pool): a short
                // success means end of file only.
                let fd = r.handle.as_raw_fd();
                let mut n = 0usize;
                loop {
                    let want = file_room(r.offset + n as u64, r.buf.capacity() - r.buf.len());
                    if want == 0 {
                        return Attempt::Done(Ok(()), n as u64);
                    }
                    match pread_nowait_append(fd, &mut r.buf, r.offset + n as u64) {
                        Ok(0) => return Attempt::Done(Ok(()), n as u64),
                        Ok(k) => n += k,
                        Err(e) if nowait_refused(&e) => break,
                        Err(e) => return Attempt::Done(Err(e), n as u64),
                    }
                }
                Attempt::Offload(Job::ReadAt {
                    handle: r.handle.clone(),
                    off: r.offset + n as u64,
                    buf: std::mem::take(&mut r.buf),
                    before: n,
                })
            }
            // Buffered writes with RWF_NOWAIT are refused (EOPNOTSUPP) by
            // many filesystems (ext4 here): every write goes to the pool.
            Op::WriteAt(w) => Attempt::Offload(Job::WriteAt {
                handle: w.handle.clone(),
                off: w.offset,
                buf: std::mem::take(&mut w.buf),
            }),
            Op::Fsync(f) => Attempt::Offload(Job::Fsync {
                handle: f.handle.clone(),
                data: f.data_only,
            }),
            _ => Attempt::Done(Err(errno(libc::EINVAL)), 0),
        }
    }

    /// Puts back the buffer of a job taken back from the pool unrun; returns
    /// the bytes the op moved inline before it went there.
    pub(super) fn file_restore(&mut self, job: Job) -> u64 {
        let done = match &job {
            Job::ReadAt { before, .. } => *before,
            _ => 0,
        } as u64;
        let buf = job.into_buf();
        match &mut self.op {
            Op::ReadAt(r) => r.buf = buf,
            Op::WriteAt(w) => w.buf = buf,
            _ => {}
        }
        done
    }

    /// The pool ran this file operation: its buffer comes back, and the
    /// result is the operation's (also when a cancel was asked for meanwhile:
    /// the work is done).
    pub(super) fn file_returned(&mut self, done: JobDone) -> (io::Result<()>, u64) {
        let JobDone { res, partial, buf } = done;
        match &mut self.op {
            Op::ReadAt(r) => r.buf = buf,
            Op::WriteAt(w) => w.buf = buf,
            _ => {}
        }
        match res {
            Ok(n) => (Ok(()), n as u64),
            Err(e) => (Err(e), partial as u64),
        }
    }

    /// Bytes moved so far (a send or a transmit in progress).
    pub(super) fn progress(&self) -> u64 {
        match &self.extra {
            Extra::Send { sent } => *sent as u64,
            Extra::Vectored { sent, .. } => *sent as u64,
            Extra::Transmit(t) => t.total,
            _ => 0,
        }
    }

    /// Tries the operation's next step(s) without blocking on a socket.
    /// `scratch` is the thread's buffer for pooled receives.
    pub(super) fn attempt(&mut self, scratch: &mut [u8]) -> Attempt {
        if self.cancel {
            return Attempt::Done(Err(errno(libc::ECANCELED)), self.progress());
        }
        match (&mut self.op, &mut self.extra) {
            (Op::Accept(a), Extra::Accept) => match accept(a.listener.as_raw_fd()) {
                Ok((fd, peer)) => {
                    a.socket = Some(fd);
                    a.peer = peer;
                    Attempt::Done(Ok(()), 0)
                }
                Err(e) => failed(e, 0),
            },
            (Op::Recv(r), Extra::Recv) => {
                let fd = r.handle.as_raw_fd();
                let mut got = recv_any(&r.handle, fd, r.pooled, &mut r.buf, scratch);
                if not_socket(&mut got, &r.handle) {
                    got = recv_any(&r.handle, fd, r.pooled, &mut r.buf, scratch);
                }
                match got {
                    Ok(n) => Attempt::Done(Ok(()), n as u64),
                    Err(e) => failed(e, 0),
                }
            }
            (Op::Connect(c), Extra::Connect { started }) => {
                let fd = c.socket.as_raw_fd();
                if *started {
                    return connect_result(fd);
                }
                *started = true;
                match connect(fd, &c.addr) {
                    Ok(()) => Attempt::Done(Ok(()), 0),
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Attempt::Blocked,
                    Err(e) => Attempt::Done(Err(e), 0),
                }
            }
            (Op::Send(s), Extra::Send { sent }) => {
                let fd = s.handle.as_raw_fd();
                send_all(&s.handle, sent, s.buf.len(), false, |from, by_write| {
                    let rest = &s.buf[from..];
                    if by_write {
                        write(fd, rest)
                    } else {
                        send(fd, rest, libc::MSG_NOSIGNAL)
                    }
                })
            }
            (Op::RecvFrom(r), Extra::Msg(msg)) => {
                let spare = r.buf.spare_capacity_mut();
                let cap = spare.len();
                let hdr = msg.prepare_recv(spare.as_mut_ptr().cast(), cap);
                match recvmsg(r.handle.as_raw_fd(), hdr) {
                    Ok(n) => {
                        let n = n.min(cap);
                        let status = msg.finish_recv(&mut r.buf, n, &mut r.addr);
                        Attempt::Done(status, n as u64)
                    }
                    Err(e) => failed(e, 0),
                }
            }
            (Op::SendTo(s), Extra::Msg(msg)) => {
                let hdr = msg.prepare(
                    std::iter::once((s.buf.as_ptr(), s.buf.len())),
                    Some(&s.addr),
                );
                match sendmsg(s.handle.as_raw_fd(), hdr) {
                    Ok(n) => Attempt::Done(Ok(()), n as u64),
                    Err(e) => failed(e, 0),
                }
            }
            (Op::SendVectored(_), Extra::Vectored { too_big: true, .. }) => {
                Attempt::Done(Err(errno(libc::EMSGSIZE)), 0)
            }
            (Op::SendVectored(s), Extra::Vectored { sent, msg, .. }) => {
                let fd = s.handle.as_raw_fd();
                // At least one call: with nothing to send, a datagram socket
                // sends one empty datagram (as io_uring's one SENDMSG does);
                // a stream takes 0 bytes.
                send_all(&s.handle, sent, s.len(), true, |from, by_write| {
                    let hdr = msg.prepare(rest_of(&s.bufs, from), None);
                    if by_write {
                        writev(fd, msg)
                    } else {
                        sendmsg(fd, hdr)
                    }
                })
            }
            (Op::TransmitFile(op), Extra::Transmit(t)) => {
                let sock = op.socket.as_raw_fd();
                // One try moves at most one turn's worth, so a fast client does
                // not starve the other connections of this thread.
                let start = t.total;
                loop {
                    settle(t, op);
                    if t.total - start >= TURN && t.phase != Phase::Done {
                        return Attempt::Yield;
                    }
                    match t.phase {
                        Phase::Done => {
                            if op.disconnect {
                                // TF_DISCONNECT: the peer sees EOF after the last byte.
                                let _ = op.socket.shutdown(std::net::Shutdown::Write);
                            }
                            return Attempt::Done(Ok(()), t.total);
                        }
                        Phase::Head | Phase::Tail | Phase::Chunk => {
                            match send(sock, t.pending(op), t.send_flags()) {
                                Ok(0) => return Attempt::Done(Err(errno(libc::EPIPE)), t.total),
                                Ok(n) => t.sent(n),
                                Err(e) => return failed(e, t.total),
                            }
                        }
                        Phase::Poll => {
                            let Some(file) = op.file.as_ref().map(|f| f.as_raw_fd()) else {
                                return Attempt::Done(Err(errno(libc::EBADF)), t.total);
                            };
                            match sendfile_turn(t, sock, file) {
                                Ok(Turn::Full) => return Attempt::Blocked,
                                Ok(Turn::Cold) => {}
                                Ok(Turn::Spent) => {
                                    settle(t, op);
                                    if t.phase == Phase::Poll {
                                        return Attempt::Yield;
                                    }
                                }
                                Err(e) => return Attempt::Done(Err(e), t.total),
                            }
                        }
                        Phase::Read => {
                            // Cold pages: try a read that never waits; if the
                            // disk has to be asked, the blocking pool reads them
                            // (this thread goes on with other connections), and
                            // they are sent like head and tail.
                            match self.offload {
                                Offload::Busy => return Attempt::Pending,
                                Offload::Failed => {
                                    self.offload = Offload::Idle;
                                    let e = t.failed.take().unwrap_or_else(|| errno(libc::EIO));
                                    return Attempt::Done(Err(e), t.total);
                                }
                                Offload::Idle => {}
                            }
                            let Some(file) = op.file.as_ref() else {
                                return Attempt::Done(Err(errno(libc::EBADF)), t.total);
                            };
                            let want = t.read_want();
                            match pread_nowait(file.as_raw_fd(), &mut t.chunk, want, t.file_off) {
                                Ok(0) => {
                                    // The file is shorter than it was at the start.
                                    let e = io::ErrorKind::UnexpectedEof.into();
                                    return Attempt::Done(Err(e), t.total);
                                }
                                Ok(n) => t.read_done(n),
                                Err(e) if nowait_refused(&e) => {
                                    let buf = std::mem::take(&mut t.chunk);
                                    let job = Job::Chunk {
                                        file: file.clone(),
                                        off: t.file_off,
                                        want,
                                        buf,
                                    };
                                    return Attempt::Offload(job);
                                }
                                Err(e) => return Attempt::Done(Err(e), t.total),
                            }
                        }
                    }
                }
            }
            _ => Attempt::Done(Err(errno(libc::EINVAL)), 0),
        }
    }
}

/// EAGAIN waits for readiness; anything else ends the operation.
/// Sends everything from byte `*sent` to `total`, one step at a time:
/// `step(from, by_write)` sends what is left from byte `from` on, by
/// `write`/`writev` when `by_write` (a stream that is no socket: a pipe, which
/// the first `ENOTSOCK` reveals), else by `send`/`sendmsg`. `*sent` counts
/// what went out; an error ends the op with it, a zero-byte step stops. With
/// `at_least_once`, one step is made even when there is nothing to send (an
/// empty datagram).
fn send_all(
    h: &Handle,
    sent: &mut usize,
    total: usize,
    at_least_once: bool,
    mut step: impl FnMut(usize, bool) -> io::Result<usize>,
) -> Attempt {
    let mut first = at_least_once;
    while *sent < total || std::mem::take(&mut first) {
        first = false;
        let mut r = if h.streams_by_read_write() {
            h.ensure_nonblocking().and_then(|()| step(*sent, true))
        } else {
            step(*sent, false)
        };
        if not_socket(&mut r, h) {
            r = step(*sent, true);
        }
        match r {
            Ok(0) => break,
            Ok(n) => *sent += n,
            Err(e) => return failed(e, *sent as u64),
        }
    }
    Attempt::Done(Ok(()), *sent as u64)
}

fn failed(e: io::Error, bytes: u64) -> Attempt {
    if e.raw_os_error() == Some(libc::EAGAIN) {
        Attempt::Blocked
    } else {
        Attempt::Done(Err(e), bytes)
    }
}

/// Turns a finished op into its packet.
pub(super) fn finish(id: OpId, st: Box<OpState>, status: io::Result<()>, bytes: u64) -> Packet {
    let mut st = st;
    // Only the op leaves the box; what else it held is dropped in place and
    // the box is kept for the next op.
    let op = std::mem::replace(&mut st.op, Op::Posted { token: 0 });
    let key = st.key;
    st.extra = Extra::Recv;
    st.offload = Offload::Idle;
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

/// Runs a system call that returns -1 and sets errno on failure, again on EINTR.
fn retry(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let rc = call();
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `accept4` of one connection: non-blocking and close-on-exec, with the peer.
fn accept(listener: RawFd) -> io::Result<(OwnedFd, Option<std::net::SocketAddr>)> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let fd = retry(|| {
        // SAFETY: `addr` and `len` are live locals of the sizes the kernel is
        // told; it writes at most `len` bytes of address.
        let rc = unsafe {
            libc::accept4(
                listener,
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        rc as isize
    })?;
    // SAFETY: accept4 succeeded: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    Ok((fd, sockaddr_to_std(&addr, len)))
}

/// Starts a non-blocking `connect(2)` (EINPROGRESS: it goes on in the kernel).
fn connect(fd: RawFd, addr: &std::net::SocketAddr) -> io::Result<()> {
    let (storage, len) = std_to_sockaddr(addr);
    // SAFETY: `storage` is a live local holding a socket address of `len`
    // bytes; the kernel reads it during the call only.
    syscall!(connect(
        fd,
        (&storage as *const libc::sockaddr_storage).cast(),
        len
    ))
    .map(drop)
}

/// How a connect that said EINPROGRESS ended, if it has: not yet writable
/// (or in error) means still connecting; then `SO_ERROR` has the verdict.
fn connect_result(fd: RawFd) -> Attempt {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd, a live local the kernel writes during the call only.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n == 0 || (n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)) {
        return Attempt::Blocked;
    }
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are live locals of the sizes the kernel is told.
    let rc = syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ERROR,
        (&mut err as *mut libc::c_int).cast(),
        &mut len,
    ));
    if let Err(e) = rc {
        return Attempt::Done(Err(e), 0);
    }
    if err != 0 {
        Attempt::Done(Err(errno(err)), 0)
    } else if pfd.revents & libc::POLLOUT != 0 {
        Attempt::Done(Ok(()), 0)
    } else {
        Attempt::Done(Err(errno(libc::ECONNABORTED)), 0)
    }
}

/// One receive for a `Recv`: `recv`, or `read` on a stream that is no
/// socket (a pipe, FIFO, terminal); `pooled` lands in `scratch` first and is
/// copied onto the end of `buf` (idle connections hold nothing).
fn recv_any(
    h: &Handle,
    fd: RawFd,
    pooled: bool,
    buf: &mut Vec<u8>,
    scratch: &mut [u8],
) -> io::Result<usize> {
    let by_read = h.streams_by_read_write();
    if by_read {
        // The kind may have been learnt elsewhere (a refused ReadAt): this
        // thread must never wait in read(2).
        h.ensure_nonblocking()?;
    }
    match (pooled, by_read) {
        (true, false) => recv(fd, scratch).inspect(|&n| append_pooled(buf, &scratch[..n])),
        (true, true) => read(fd, scratch).inspect(|&n| append_pooled(buf, &scratch[..n])),
        (false, false) => recv_spare(fd, buf),
        (false, true) => read_spare(fd, buf),
    }
}

/// Appends what a pooled receive got to its buffer (one of the thread's
/// spare buffers if it has no room).
fn append_pooled(buf: &mut Vec<u8>, got: &[u8]) {
    if !got.is_empty() {
        room_for_pooled(buf);
        buf.extend_from_slice(got);
    }
}

/// Whether `r` is `recv`/`send`'s ENOTSOCK: then the handle switches to
/// `read`/`write` (made non-blocking: this thread must never wait in them)
/// and the caller tries again. A descriptor that cannot be made
/// non-blocking keeps ENOTSOCK as its error. On a closing handle the
/// descriptor may already be `/dev/null`: the error becomes EBADF (the
/// handle is gone) instead of a switch.
fn not_socket<T>(r: &mut io::Result<T>, h: &Handle) -> bool {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            if h.is_closing() {
                *r = Err(io::Error::from_raw_os_error(libc::EBADF));
                return false;
            }
            h.note_not_socket();
            h.ensure_nonblocking().is_ok()
        }
        _ => false,
    }
}

/// One `read` into `buf` (the descriptor is non-blocking).
fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which
        // we borrow mutably for the call.
        unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
    })
}

/// One `read` into `buf`'s spare capacity; the bytes read extend `buf`.
fn read_spare(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let n = retry(|| {
        // SAFETY: the kernel writes at most `spare.len()` bytes into the spare
        // capacity, which `buf` owns and we borrow mutably for the call.
        unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) }
    })?;
    let n = n.min(spare.len());
    // SAFETY: the kernel initialised `n` bytes of the spare capacity (at most
    // its length), so the first `len + n` bytes are initialised.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// One `write` of `buf` (the descriptor is non-blocking). A pipe whose
/// reader is gone says EPIPE (SIGPIPE is ignored by Rust programs).
fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`, which
        // we borrow for the call.
        unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }
    })
}

/// One non-blocking `recv` into `buf`.
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which
        // we borrow mutably for the call.
        unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) }
    })
}

/// One non-blocking `recv` into `buf`'s spare capacity (which may be empty: a
/// readiness probe); the bytes received extend `buf`.
fn recv_spare(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let n = retry(|| {
        // SAFETY: the kernel writes at most `spare.len()` bytes into the spare
        // capacity, which `buf` owns and we borrow mutably for the call.
        unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        }
    })?;
    let n = n.min(spare.len());
    // SAFETY: the kernel initialised `n` bytes of the spare capacity (at most
    // its length), so the first `len + n` bytes are initialised.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// One non-blocking `send` of `buf` with `flags` (which include
/// MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE).
fn send(fd: RawFd, buf: &[u8], flags: i32) -> io::Result<usize> {
    retry(|| {
        // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`, which
        // we borrow for the call.
        unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | flags,
            )
        }
    })
}

/// One non-blocking `recvmsg` with the header `hdr` (from [`Msg`]).
fn recvmsg(fd: RawFd, hdr: *mut libc::msghdr) -> io::Result<usize> {
    retry(|| {
        // SAFETY: `hdr` is a live header from `Msg::prepare_recv`: its iovec
        // covers spare capacity the op owns and borrows mutably for the call,
        // its name the op's address storage; the kernel keeps nothing.
        unsafe { libc::recvmsg(fd, hdr, libc::MSG_DONTWAIT) }
    })
}

/// One non-blocking `sendmsg` with the header `hdr` (from [`Msg`]); never
/// SIGPIPE (MSG_NOSIGNAL).
fn sendmsg(fd: RawFd, hdr: *mut libc::msghdr) -> io::Result<usize> {
    retry(|| {
        // SAFETY: `hdr` is a live header from `Msg::prepare`: its iovecs
        // cover bytes the op owns and does not change during the call, its
        // name (if any) the op's address storage; the kernel reads them
        // during the call only.
        unsafe { libc::sendmsg(fd, hdr, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) }
    })
}

/// One `writev` of the iovecs `msg` was prepared with (the descriptor is
/// non-blocking).
fn writev(fd: RawFd, msg: &Msg) -> io::Result<usize> {
    let (iov, n) = msg.iov();
    retry(|| {
        // SAFETY: `iov` points at `n` iovecs from `Msg::prepare`, over bytes
        // the op owns and does not change during the call.
        unsafe { libc::writev(fd, iov, n as libc::c_int) }
    })
}

/// What the blocking pool read for a transmit: its buffer back, and then the
/// transmit goes on (or fails) the next time it is tried.
impl OpState {
    pub(super) fn read_returned(&mut self, done: JobDone) {
        let JobDone { res, buf, .. } = done;
        let Extra::Transmit(t) = &mut self.extra else {
            return;
        };
        t.chunk = buf;
        self.offload = match res {
            Ok(0) => {
                t.failed = Some(io::ErrorKind::UnexpectedEof.into());
                Offload::Failed
            }
            Ok(n) => {
                t.read_done(n);
                Offload::Idle
            }
            Err(e) => {
                t.failed = Some(e);
                Offload::Failed
            }
        };
    }
}

/// `preadv2(RWF_NOWAIT)` of up to `want` bytes at `off` into `buf`'s spare
/// capacity, replacing its contents: EAGAIN instead of waiting for the disk.
fn pread_nowait(fd: RawFd, buf: &mut Vec<u8>, want: usize, off: u64) -> io::Result<usize> {
    buf.clear();
    let spare = buf.spare_capacity_mut();
    let want = want.min(spare.len());
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: want,
    };
    let n = retry(|| {
        // SAFETY: one iovec over `want` bytes of spare capacity that `buf` owns
        // and we borrow mutably; the kernel writes at most that and keeps nothing.
        unsafe { preadv2_nowait(fd, &iov, off) }
    })?;
    let n = n.min(want);
    // SAFETY: the kernel initialised the first `n` bytes (at most `want`).
    unsafe { buf.set_len(n) };
    Ok(n)
}

/// Whether a `preadv2(RWF_NOWAIT)` error sends the read to the blocking
/// pool instead of ending the operation: EAGAIN (a page is not cached), or
/// the non-waiting read being unavailable here — ENOSYS (no `preadv2`, before
/// Linux 4.6, or a seccomp filter's answer), EPERM (refused by a seccomp
/// filter), EOPNOTSUPP (a filesystem without `RWF_NOWAIT`), EINVAL (a kernel
/// that does not know the flag, before 4.14). The pool's plain `pread` then
/// gives the read's real result, a real EINVAL or EPERM included.
fn nowait_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP | libc::EINVAL)
    )
}

/// Set once a `preadv2` system call said ENOSYS: the call does not exist
/// here (a kernel before 4.6, or a seccomp filter that answers ENOSYS), for
/// every file and for good, so later reads go to the pool without trying.
/// Only ENOSYS: EPERM can be one file's answer (an fanotify listener's
/// FAN_DENY on a read gives EPERM), EINVAL can be (O_DIRECT alignment), and
/// EOPNOTSUPP is (a filesystem without `RWF_NOWAIT`).
static NO_PREADV2: AtomicBool = AtomicBool::new(false);

/// `preadv2(fd, iov, 1, off, RWF_NOWAIT)`, or -1 with the error that
/// `nowait-*` of `IOCOMP_EPOLL_COMPAT` forces (a test of the fallback), or
/// -1 with ENOSYS at once once the system call said ENOSYS ([`NO_PREADV2`]).
/// The system call is made directly: glibc's `preadv2` turns the kernel's
/// ENOSYS into EOPNOTSUPP when flags are given, which is also a per-file
/// answer.
///
/// # Safety
///
/// As `preadv2(2)`: `iov` describes writable memory the caller owns for the
/// call.
unsafe fn preadv2_nowait(fd: RawFd, iov: &libc::iovec, off: u64) -> isize {
    let compat = super::pool::compat();
    let mut iov = *iov;
    if let Some(e) = compat.nowait_errno {
        if off >= compat.nowait_from {
            // SAFETY: errno is this thread's; setting it is what a failing
            // system call does.
            unsafe { *libc::__errno_location() = e };
            return -1;
        }
        // A real read that stops where the forced error starts.
        iov.iov_len = iov.iov_len.min((compat.nowait_from - off) as usize);
    }
    if NO_PREADV2.load(Ordering::Relaxed) {
        // SAFETY: errno is this thread's; setting it is what a failing
        // system call does.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    }
    // SAFETY: the caller's promise: one iovec over memory it owns (`iov` is
    // a copy of it, at most as long); the offset goes as the kernel's low
    // and high halves (on 64-bit targets the high half is ignored).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_preadv2,
            fd,
            &iov as *const libc::iovec,
            1 as libc::c_int,
            off as libc::c_long,
            (off >> 32) as libc::c_long,
            libc::RWF_NOWAIT,
        )
    } as isize;
    if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        NO_PREADV2.store(true, Ordering::Relaxed);
    }
    rc
}

/// `pread` of up to `want` bytes at `off` into `buf`'s spare capacity (which
/// must hold `want`), replacing its contents. May wait for the disk: only the
/// blocking pool calls it.
pub(super) fn pread(fd: RawFd, buf: &mut Vec<u8>, want: usize, off: u64) -> io::Result<usize> {
    buf.clear();
    let spare = buf.spare_capacity_mut();
    let want = want.min(spare.len());
    let n = retry(|| {
        // SAFETY: the kernel writes at most `want` bytes (within the spare
        // capacity, which `buf` owns and we borrow mutably) and keeps nothing.
        unsafe { libc::pread(fd, spare.as_mut_ptr().cast(), want, off as libc::off_t) }
    })?;
    let n = n.min(want);
    // SAFETY: the kernel initialised the first `n` bytes (at most `want`).
    unsafe { buf.set_len(n) };
    Ok(n)
}

/// `preadv2(RWF_NOWAIT)` at `off` into `buf`'s spare capacity, appending:
/// EAGAIN instead of waiting for the disk (a short count when only the first
/// pages are cached; 0 at or after end of file).
fn pread_nowait_append(fd: RawFd, buf: &mut Vec<u8>, off: u64) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let want = file_room(off, spare.len());
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: want,
    };
    let n = retry(|| {
        // SAFETY: one iovec over the spare capacity, which `buf` owns and we
        // borrow mutably; the kernel writes at most `want` bytes, keeps nothing.
        unsafe { preadv2_nowait(fd, &iov, off) }
    })?;
    let n = n.min(want);
    // SAFETY: the kernel initialised `n` more bytes (at most the spare capacity).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// `pread` at `off` into `buf`'s spare capacity, appending, again after a
/// short count until it is full or end of file. May wait for the disk: only
/// the blocking pool calls it. Bytes read before a failure stay in `buf`; on
/// failure, the error and how many bytes were appended before it.
pub(super) fn pread_append(
    fd: RawFd,
    buf: &mut Vec<u8>,
    off: u64,
) -> Result<usize, (io::Error, usize)> {
    let mut total = 0usize;
    loop {
        let spare = buf.spare_capacity_mut();
        let at = off + total as u64;
        let want = file_room(at, spare.len());
        if want == 0 {
            return Ok(total);
        }
        let at = at as libc::off_t;
        let n = retry(|| {
            // SAFETY: the kernel writes at most `want` bytes into the spare
            // capacity, which `buf` owns and we borrow mutably; keeps nothing.
            unsafe { libc::pread(fd, spare.as_mut_ptr().cast(), want, at) }
        })
        .map_err(|e| (e, total))?;
        let n = n.min(want);
        // SAFETY: the kernel initialised `n` more bytes (at most `want`).
        unsafe { buf.set_len(buf.len() + n) };
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// `pwrite` of all of `buf` at `off`, continuing after short counts. May
/// wait for the disk: only the blocking pool calls it. On failure, the error
/// and the bytes written before it.
pub(super) fn pwrite_all(fd: RawFd, buf: &[u8], off: u64) -> Result<usize, (io::Error, usize)> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &buf[done..];
        let at = (off + done as u64) as libc::off_t;
        let n = retry(|| {
            // SAFETY: the kernel reads at most `rest.len()` bytes from `rest`,
            // which we borrow for the call.
            unsafe { libc::pwrite(fd, rest.as_ptr().cast(), rest.len(), at) }
        })
        .map_err(|e| (e, done))?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// `fsync(2)`, or `fdatasync(2)` if `data`. May wait for the disk.
pub(super) fn fsync(fd: RawFd, data: bool) -> io::Result<()> {
    retry(|| {
        // SAFETY: the calls take a descriptor and touch no memory of ours.
        (unsafe {
            if data {
                libc::fdatasync(fd)
            } else {
                libc::fsync(fd)
            }
        }) as isize
    })
    .map(|_| ())
}
