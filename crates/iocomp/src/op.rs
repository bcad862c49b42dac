//! Overlapped operations: each one owns its buffers while the kernel works.
//!
//! On Windows the caller keeps an `OVERLAPPED` and its buffers alive and must not
//! touch them until the completion is dequeued. Here the operation value *is* the
//! OVERLAPPED: [`Port::submit`](crate::Port::submit) takes it by value and the
//! [`Packet`](crate::Packet) gives it back, buffers included, so the rule is kept
//! by the compiler. Every operation may also carry a [`Context`]: the per-I/O data
//! that the seed's `PRE_IO_DATA` appended to its OVERLAPPED (here: any owned value,
//! such as a connection's state, which travels with the operation and comes back
//! with its packet).

use std::any::Any;
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::completion::Completion;
use crate::connect::Connect;
use crate::handle::Handle;

/// Per-operation user data that travels with an operation and returns in its packet.
pub type Context = Box<dyn Any + std::marker::Send>;

/// An operation, as submitted and as handed back in a [`Packet`](crate::Packet).
#[non_exhaustive]
pub enum Op {
    /// A packet made by [`Port::post`](crate::Port::post); `token` is the value passed
    /// there (the `lpOverlapped` of `PostQueuedCompletionStatus`).
    Posted {
        /// The caller's value, returned untouched.
        token: u64,
    },
    /// Accept one connection (`AcceptEx`).
    Accept(Accept),
    /// Receive into a buffer's spare capacity (`WSARecv`).
    Recv(Recv),
    /// Send a whole buffer (`WSASend`).
    Send(Send),
    /// Complete after a delay.
    Timeout(Timeout),
    /// Connect a socket (`ConnectEx`).
    Connect(Connect),
    /// Send head, a file range and tail as one operation (`TransmitFile`).
    ///
    /// Boxed: the largest operation, and a rare one next to receives and
    /// sends, so that every [`Op`] and [`Packet`](crate::Packet) stays small
    /// enough to be moved without a `memcpy` call. Build it with
    /// `Op::from(transmit)` or `transmit.into()` (or pass the `TransmitFile`
    /// to a `submit*` call); a match reaches its fields through the box as
    /// before.
    TransmitFile(Box<TransmitFile>),
    /// Read from a file at an offset (`ReadFile` with `OVERLAPPED.Offset`).
    ReadAt(ReadAt),
    /// Write a whole buffer to a file at an offset (`WriteFile` with
    /// `OVERLAPPED.Offset`).
    WriteAt(WriteAt),
    /// Flush a file to its storage (`FlushFileBuffers`).
    Fsync(Fsync),
    /// Receive one datagram and its sender's address (`WSARecvFrom`).
    RecvFrom(RecvFrom),
    /// Send one datagram to an address (`WSASendTo`).
    SendTo(SendTo),
    /// Send several buffers as one stream of bytes (`WSASend` with several
    /// `WSABUF`s).
    SendVectored(SendVectored),
    /// A closure queued with [`Pool::queue`](crate::Pool::queue); pools run these
    /// themselves and never show them to handlers.
    #[doc(hidden)]
    Work(Work),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Posted { token } => write!(f, "Posted {{ token: {token} }}"),
            Op::Accept(a) => write!(f, "Accept {{ peer: {:?} }}", a.peer),
            Op::Recv(r) => write!(f, "Recv {{ len: {} }}", r.buf.len()),
            Op::Send(s) => write!(f, "Send {{ len: {} }}", s.buf.len()),
            Op::Timeout(t) => write!(f, "Timeout {{ {:?} }}", t.duration),
            Op::Connect(c) => write!(f, "Connect {{ addr: {} }}", c.addr),
            Op::TransmitFile(t) => {
                write!(f, "TransmitFile {{ offset: {}, len: {} }}", t.offset, t.len)
            }
            Op::ReadAt(r) => write!(f, "ReadAt {{ offset: {}, len: {} }}", r.offset, r.buf.len()),
            Op::WriteAt(w) => {
                write!(
                    f,
                    "WriteAt {{ offset: {}, len: {} }}",
                    w.offset,
                    w.buf.len()
                )
            }
            Op::Fsync(s) => write!(f, "Fsync {{ data_only: {} }}", s.data_only),
            Op::RecvFrom(r) => write!(f, "RecvFrom {{ len: {}, addr: {:?} }}", r.buf.len(), r.addr),
            Op::SendTo(s) => write!(f, "SendTo {{ len: {}, addr: {} }}", s.buf.len(), s.addr),
            Op::SendVectored(s) => write!(
                f,
                "SendVectored {{ bufs: {}, len: {} }}",
                s.bufs.len(),
                s.len()
            ),
            Op::Work(_) => f.write_str("Work"),
        }
    }
}

/// Evaluates `$e` with `$o` bound to the operation struct inside `$op`, the
/// same code for each of the I/O operations; `$none` for a posted packet or
/// work. (Every I/O operation has the fields `ctx` and `completion`.)
macro_rules! each_io {
    ($op: expr, $o: ident => $e: expr, else $none: expr) => {
        match $op {
            Op::Accept($o) => $e,
            Op::Recv($o) => $e,
            Op::Send($o) => $e,
            Op::Timeout($o) => $e,
            Op::Connect($o) => $e,
            Op::TransmitFile($o) => $e,
            Op::ReadAt($o) => $e,
            Op::WriteAt($o) => $e,
            Op::Fsync($o) => $e,
            Op::RecvFrom($o) => $e,
            Op::SendTo($o) => $e,
            Op::SendVectored($o) => $e,
            Op::Posted { .. } | Op::Work(_) => $none,
        }
    };
}

impl Op {
    /// Takes the context out of the operation, if it carries one.
    pub fn take_ctx(&mut self) -> Option<Context> {
        each_io!(self, o => o.ctx.take(), else None)
    }

    /// How the operation's completion is reported, as the `submit*` call
    /// that took it chose ([`Completion`]); `None` for posted packets.
    pub fn completion(&self) -> Option<&Completion> {
        each_io!(self, o => Some(&o.completion), else None)
    }

    /// The operation's completion choice (`None` for posted packets and work).
    pub(crate) fn completion_mut(&mut self) -> Option<&mut Completion> {
        each_io!(self, o => Some(&mut o.completion), else None)
    }

    /// The handle the operation works on (`None` for timers, posted packets
    /// and work).
    pub(crate) fn handle(&self) -> Option<&Handle> {
        match self {
            Op::Accept(a) => Some(&a.listener),
            Op::Recv(r) => Some(&r.handle),
            Op::Send(s) => Some(&s.handle),
            Op::TransmitFile(t) => Some(&t.socket),
            Op::Connect(c) => Some(&c.socket),
            Op::ReadAt(r) => Some(&r.handle),
            Op::WriteAt(w) => Some(&w.handle),
            Op::Fsync(f) => Some(&f.handle),
            Op::RecvFrom(r) => Some(&r.handle),
            Op::SendTo(s) => Some(&s.handle),
            Op::SendVectored(s) => Some(&s.handle),
            Op::Timeout(_) | Op::Posted { .. } | Op::Work(_) => None,
        }
    }

    /// The completion key its packet carries: its handle's, or a timer's
    /// own; `None` for what is no I/O operation (posted packets, work).
    pub(crate) fn key(&self) -> Option<u64> {
        match self {
            Op::Timeout(t) => Some(t.key),
            op => op.handle().map(Handle::key),
        }
    }

    /// Whether the packet goes somewhere other than the port's queue: the one
    /// branch the hot path pays for the four completion modes.
    #[inline]
    pub(crate) fn is_routed(&self) -> bool {
        each_io!(self, o => o.completion.is_routed(), else false)
    }
}

/// Accept a connection on a listening socket. The packet's key is the listener's.
///
/// On the epoll backend the listener is switched to non-blocking mode (several
/// threads may wait on it; the ones that lose the race must not block).
#[non_exhaustive]
pub struct Accept {
    /// The listening socket.
    pub listener: Handle,
    /// After completion: the accepted socket (non-blocking, close-on-exec).
    pub socket: Option<OwnedFd>,
    /// After completion: the peer's address.
    pub peer: Option<SocketAddr>,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl Accept {
    /// An accept on `listener`.
    pub fn new(listener: &Handle) -> Accept {
        Accept {
            listener: listener.clone(),
            socket: None,
            peer: None,
            ctx: None,
            completion: Completion::default(),
        }
    }
}

/// Receive once; on success the bytes are appended to `buf` and `buf.len()`
/// grows by the bytes received. Zero bytes with success means the peer closed
/// its side (EOF).
///
/// A plain receive ([`Recv::new`]) lands in `buf`'s spare capacity (which may
/// be zero: a readiness probe, C26). A pooled receive ([`Recv::pooled`]) holds
/// no memory while it waits: the kernel takes a buffer from the thread's pool
/// only when data arrives, and the bytes are copied onto the end of `buf` —
/// the way to keep thousands of idle connections cheap.
#[non_exhaustive]
pub struct Recv {
    /// The socket.
    pub handle: Handle,
    /// The buffer the bytes are appended to.
    pub buf: Vec<u8>,
    /// Take a buffer from the pool when data arrives instead of using `buf`'s
    /// spare capacity.
    pub pooled: bool,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl Recv {
    /// A receive on `handle` into `buf`'s spare capacity.
    pub fn new(handle: &Handle, buf: Vec<u8>) -> Recv {
        Recv {
            handle: handle.clone(),
            buf,
            pooled: false,
            ctx: None,
            completion: Completion::default(),
        }
    }

    /// A pooled receive on `handle`: no buffer is held while waiting; what
    /// arrives (at most 4 KiB per receive) is appended to `buf`.
    ///
    /// An empty `buf` that has room (a drained input buffer) is not held
    /// either while the receive waits for data: the thread that runs the
    /// receive (the one whose ring it went to: the submitting thread if it
    /// waits on the port, else the port's thread it was handed to) keeps it
    /// among its spare buffers — at most 64 of at most 8 KiB each; a bigger
    /// one is freed, and a thread frees its spares when it detaches — and
    /// bytes that arrive for a pooled receive of that thread whose buffer
    /// has no room land in one of its spares, so that a connection that
    /// hands its drained buffer to each receive allocates nothing per
    /// request. The packet's `buf` then holds exactly the bytes received
    /// (its capacity, and the allocation, may differ from the one given; a
    /// cancelled or failed receive, or one that got 0 bytes, may come back
    /// with an empty buffer of no capacity). Where the bytes cannot come
    /// from a pool buffer (a pipe, FIFO or terminal; io_uring without its
    /// buffer pool, or with the pool empty at that moment) the receive
    /// reads into `buf` itself (grown to 4 KiB of room if it has less), or
    /// into a spare if `buf` has no room. A receive refused at submit
    /// (`Err`) comes back with `buf` as it was given.
    pub fn pooled(handle: &Handle, buf: Vec<u8>) -> Recv {
        Recv {
            handle: handle.clone(),
            buf,
            pooled: true,
            ctx: None,
            completion: Completion::default(),
        }
    }
}

/// Send all of `buf` (short sends are continued inside the engine; the packet's
/// `bytes` says how much went out, also on error).
///
/// On a socket it never raises `SIGPIPE` (`MSG_NOSIGNAL`). On a pipe or FIFO
/// whose reader is gone, the `write` raises `SIGPIPE` unless the program
/// ignores it (Rust binaries do by default; the engine leaves the process's
/// signal actions alone), and then fails with `EPIPE`.
#[non_exhaustive]
pub struct Send {
    /// The socket.
    pub handle: Handle,
    /// The bytes to send.
    pub buf: Vec<u8>,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl Send {
    /// A send of all of `buf` on `handle`.
    pub fn new(handle: &Handle, buf: Vec<u8>) -> Send {
        Send {
            handle: handle.clone(),
            buf,
            ctx: None,
            completion: Completion::default(),
        }
    }
}

/// Completes with success after `duration` (or `ECANCELED` if cancelled first).
#[non_exhaustive]
pub struct Timeout {
    /// How long to wait. Longer than [`Timeout::MAX`] (about 136 years) counts
    /// as `Timeout::MAX`, on every backend.
    pub duration: Duration,
    /// The key its packet carries.
    pub key: u64,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl Timeout {
    /// The longest timer: `duration` is clamped to this (2³² − 1 seconds,
    /// about 136 years), so that `Duration::MAX` means "until cancelled" on
    /// every backend.
    pub const MAX: Duration = Duration::from_secs(u32::MAX as u64);

    /// The duration the timer really waits: `duration` clamped to
    /// [`Timeout::MAX`].
    pub(crate) fn clamped(&self) -> Duration {
        self.duration.min(Timeout::MAX)
    }

    /// A timer of `duration` whose packet carries `key`.
    pub fn new(duration: Duration, key: u64) -> Timeout {
        Timeout {
            duration,
            key,
            ctx: None,
            completion: Completion::default(),
        }
    }
}

/// Send `head`, then `len` bytes of `file` from `offset` (0 = to the end of the
/// file), then `tail`, as one operation with one packet (`TransmitFile`). `bytes`
/// counts everything sent, head and tail included, and may exceed 4 GiB.
///
/// A file that turns out shorter than promised (truncated while being sent)
/// fails the operation with `UnexpectedEof`, so the receiver never waits for
/// bytes that cannot come. A range that ends past the largest file offset
/// (`offset + len` above `i64::MAX`), or an `offset` past the end of the file
/// when `len` is 0, is refused at submit with `InvalidInput` (`EINVAL`).
///
/// The file is sent zero-copy: the owning thread waits for the socket to be
/// writable, then calls a non-blocking `sendfile(2)`, at most 2 MiB per turn so
/// that other connections get their share. Pages that are not in the page cache
/// are read by io_uring into a buffer and sent from there instead, so the thread
/// never blocks on the disk (on the epoll backend a `preadv2(RWF_NOWAIT)` is
/// tried first and, if the disk must be asked, a small blocking pool does the
/// read while the thread serves others). The socket is switched to
/// non-blocking mode.
#[non_exhaustive]
pub struct TransmitFile {
    /// The connected stream socket.
    pub socket: Handle,
    /// The file, or `None` to send only `head` and `tail`. Shared, so that one
    /// open file (from a cache, say) can feed many transfers at once; only its
    /// descriptor is used (positional reads: its file offset is never moved).
    pub file: Option<Arc<File>>,
    /// Where in the file to start.
    pub offset: u64,
    /// How many bytes of the file to send; 0 means up to the end of the file.
    pub len: u64,
    /// Sent before the file.
    pub head: Vec<u8>,
    /// Sent after the file.
    pub tail: Vec<u8>,
    /// Shut down the sending side after the last byte (`TF_DISCONNECT`).
    pub disconnect: bool,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl TransmitFile {
    /// Transmit all of `file` on `socket`.
    pub fn new(socket: &Handle, file: impl Into<Arc<File>>) -> TransmitFile {
        TransmitFile {
            file: Some(file.into()),
            ..TransmitFile::buffers(socket, Vec::new(), Vec::new())
        }
    }

    /// Transmit `head` then `tail` on `socket`, with no file (set `file`,
    /// `offset` and `len` to send a file range between them).
    pub fn buffers(socket: &Handle, head: Vec<u8>, tail: Vec<u8>) -> TransmitFile {
        TransmitFile {
            socket: socket.clone(),
            file: None,
            offset: 0,
            len: 0,
            head,
            tail,
            disconnect: false,
            ctx: None,
            completion: Completion::default(),
        }
    }
}

/// Read from a file at `offset` into `buf`'s spare capacity, once
/// (`ReadFile` with `OVERLAPPED.Offset`/`OffsetHigh`): on success the bytes
/// are appended to `buf` and the packet's `bytes` says how many. A read that
/// starts at or after the end of the file completes with 0 bytes; one across
/// the end with the bytes that are there.
///
/// Any `u64` offset up to the largest file offset (`i64::MAX`); a larger one is
/// refused at submit with `InvalidInput`. The read is positional: the file's
/// own position is neither used nor moved, so several reads of one file may be
/// in flight at once, and they need no ordering between them (unlike a
/// socket's receives, file operations take no per-handle lane).
///
/// On io_uring this is the kernel's READ request (a cold page never blocks a
/// worker thread). On epoll a `preadv2(RWF_NOWAIT)` is tried at once and, if
/// the disk must be asked, a small pool of blocking threads runs `pread`.
#[non_exhaustive]
pub struct ReadAt {
    /// The file.
    pub handle: Handle,
    /// The buffer the bytes are appended to.
    pub buf: Vec<u8>,
    /// Where in the file to read.
    pub offset: u64,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl ReadAt {
    /// A read of up to `buf`'s spare capacity from `handle` at `offset`.
    pub fn new(handle: &Handle, buf: Vec<u8>, offset: u64) -> ReadAt {
        ReadAt {
            handle: handle.clone(),
            buf,
            offset,
            ctx: None,
            completion: Completion::default(),
        }
    }
}

/// Write all of `buf` to a file at `offset` (`WriteFile` with
/// `OVERLAPPED.Offset`/`OffsetHigh`); short writes are continued inside the
/// engine, and the packet's `bytes` says how much was written, also on error.
/// Offsets as for [`ReadAt`] (`offset + buf.len()` above `i64::MAX` is refused
/// at submit with `InvalidInput`); the file's own position is not moved. On
/// epoll the write runs on the blocking pool. It never raises `SIGPIPE`: a
/// pipe, FIFO or socket is refused at submit (`ESPIPE`), as for [`ReadAt`].
#[non_exhaustive]
pub struct WriteAt {
    /// The file.
    pub handle: Handle,
    /// The bytes to write.
    pub buf: Vec<u8>,
    /// Where in the file to write.
    pub offset: u64,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl WriteAt {
    /// A write of all of `buf` to `handle` at `offset`.
    pub fn new(handle: &Handle, buf: Vec<u8>, offset: u64) -> WriteAt {
        WriteAt {
            handle: handle.clone(),
            buf,
            offset,
            ctx: None,
            completion: Completion::default(),
        }
    }
}

/// Flush a file's written data to its storage (`FlushFileBuffers`): `fsync(2)`,
/// or `fdatasync(2)` for [`Fsync::data`] (the data and what is needed to read
/// it back, not every piece of metadata). Completes with 0 bytes. It orders
/// nothing: writes still in flight when it is submitted may or may not be
/// covered — submit it after their packets arrived.
#[non_exhaustive]
pub struct Fsync {
    /// The file.
    pub handle: Handle,
    /// `fdatasync` instead of `fsync`.
    pub data_only: bool,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl Fsync {
    /// A full flush (`fsync`) of `handle`.
    pub fn new(handle: &Handle) -> Fsync {
        Fsync {
            handle: handle.clone(),
            data_only: false,
            ctx: None,
            completion: Completion::default(),
        }
    }

    /// A data-only flush (`fdatasync`) of `handle`.
    pub fn data(handle: &Handle) -> Fsync {
        Fsync {
            data_only: true,
            ..Fsync::new(handle)
        }
    }
}

/// Receive one datagram (`WSARecvFrom`): on success its bytes are appended to
/// `buf` (they land in its spare capacity), the packet's `bytes` says how
/// many, and `addr` holds the sender's address (`lpFrom`; `None` if the
/// socket's family has none to give, such as an unnamed Unix socket).
///
/// A datagram longer than the spare capacity is cut, as Windows does it
/// (`WSAEMSGSIZE`): the bytes that fit are appended, `bytes` counts them,
/// `addr` is filled, and the packet's status is the error `EMSGSIZE`; the
/// rest of the datagram is gone. A zero-length datagram completes with
/// success and 0 bytes. On a connection-oriented socket (TCP) it receives
/// like [`Recv`] and `addr` is `None` (Linux's `recvmsg` gives no address
/// there; Windows ignores `lpFrom` on such sockets). A receive that fails
/// has `addr` `None` too: it is cleared when the operation is submitted.
///
/// Several receives pending on one socket take its datagrams in the order
/// they were submitted, as [`Recv`]s do. io_uring runs it as `RECVMSG`, epoll
/// as `recvmsg(2)` once the socket is readable.
#[non_exhaustive]
pub struct RecvFrom {
    /// The datagram socket.
    pub handle: Handle,
    /// The buffer the datagram is appended to.
    pub buf: Vec<u8>,
    /// After completion: the sender's address.
    pub addr: Option<SocketAddr>,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl RecvFrom {
    /// A receive of one datagram on `handle` into `buf`'s spare capacity.
    pub fn new(handle: &Handle, buf: Vec<u8>) -> RecvFrom {
        RecvFrom {
            handle: handle.clone(),
            buf,
            addr: None,
            ctx: None,
            completion: Completion::default(),
        }
    }
}

/// Send `buf` as one datagram to `addr` (`WSASendTo`); the packet's `bytes`
/// says how much was sent (all of it: a datagram is never cut). A datagram
/// larger than the socket allows fails with `EMSGSIZE`; a socket of another
/// family than `addr`'s, or a stream socket, fails with the kernel's error
/// (`EAFNOSUPPORT`, `EISCONN`, `ENOTCONN`, `EPIPE`...) in the packet. Never
/// raises `SIGPIPE` (`MSG_NOSIGNAL`). Sends on one socket go out in the
/// order they were submitted, as [`Send`]s do. io_uring runs it as
/// `SENDMSG`, epoll as `sendmsg(2)` once the socket is writable.
#[non_exhaustive]
pub struct SendTo {
    /// The datagram socket.
    pub handle: Handle,
    /// The datagram.
    pub buf: Vec<u8>,
    /// Where to send it.
    pub addr: SocketAddr,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl SendTo {
    /// A send of `buf` as one datagram to `addr` on `handle`.
    pub fn new(handle: &Handle, buf: Vec<u8>, addr: SocketAddr) -> SendTo {
        SendTo {
            handle: handle.clone(),
            buf,
            addr,
            ctx: None,
            completion: Completion::default(),
        }
    }
}

/// Send every buffer of `bufs`, in order, as one stream of bytes (`WSASend`
/// with several `WSABUF`s; gather output, `sendmsg(2)` with several iovecs):
/// a head and a body go out in one operation without being copied together.
///
/// It behaves as a [`Send`] of the buffers joined: short sends are continued
/// inside the engine, from the byte where the socket stopped, across buffer
/// boundaries; the packet's `bytes` says how much went out in all, also on
/// error; empty buffers are allowed. It takes the socket's write lane like
/// `Send` and [`TransmitFile`], so sends on one socket go out in the order
/// they were submitted. On a pipe or FIFO it writes with `writev(2)`. Never
/// raises `SIGPIPE` on a socket (`MSG_NOSIGNAL`); on a pipe whose reader is
/// gone it does unless the program ignores it, as for [`Send`]. At most 1024
/// buffers are handed to the kernel per call (`IOV_MAX`); on a stream more
/// are sent in turns.
///
/// On a datagram socket (`SOCK_DGRAM`, `SOCK_SEQPACKET`) the buffers make one
/// datagram, as with `WSASend`: more than 1024 non-empty buffers cannot go
/// out as one, so the packet fails with `EMSGSIZE` and 0 bytes (nothing is
/// sent, never a part); no bytes at all send one zero-length datagram.
#[non_exhaustive]
pub struct SendVectored {
    /// The socket.
    pub handle: Handle,
    /// The buffers, sent in order.
    pub bufs: Vec<Vec<u8>>,
    /// User data.
    pub ctx: Option<Context>,
    /// How the completion is reported: set by the `submit*` call used.
    pub(crate) completion: Completion,
}

impl SendVectored {
    /// A send of all of `bufs`, in order, on `handle`.
    pub fn new(handle: &Handle, bufs: Vec<Vec<u8>>) -> SendVectored {
        SendVectored {
            handle: handle.clone(),
            bufs,
            ctx: None,
            completion: Completion::default(),
        }
    }

    /// The bytes of all the buffers together.
    pub fn len(&self) -> usize {
        self.bufs.iter().map(Vec::len).sum()
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A queued closure (see [`Pool::queue`](crate::Pool::queue)).
#[doc(hidden)]
pub struct Work(pub(crate) Box<dyn FnOnce() + std::marker::Send>);

impl Work {
    /// Runs the closure.
    pub fn run(self) {
        (self.0)()
    }
}

macro_rules! into_op {
    ($($t:ident),*) => { $(impl From<$t> for Op { fn from(o: $t) -> Op { Op::$t(o) } })* };
}
impl From<TransmitFile> for Op {
    fn from(o: TransmitFile) -> Op {
        Op::TransmitFile(Box::new(o))
    }
}

impl From<Box<TransmitFile>> for Op {
    fn from(o: Box<TransmitFile>) -> Op {
        Op::TransmitFile(o)
    }
}

into_op!(
    Accept,
    Recv,
    Send,
    Timeout,
    Connect,
    ReadAt,
    WriteAt,
    Fsync,
    RecvFrom,
    SendTo,
    SendVectored
);
