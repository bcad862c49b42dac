//! What the backends share below the port: the transmit state machine's data
//! and its zero-copy turn (`sendfile` after the socket is writable, with a
//! page-cache probe), the small-file path, address conversion and descriptor
//! flags. Each backend drives these steps its own way (io_uring with
//! `PollAdd`/`Read`/`Send` requests, epoll with readiness and non-blocking
//! system calls); the decisions — how much per turn, when pages count as cold,
//! when a file is small enough to go out in one send — are made here once.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::handoff::{Wake, WakeSource};

use crate::op::TransmitFile;

/// Bytes read per step when a transmit has to copy (file pages not in cache).
pub(super) const CHUNK: usize = 256 * 1024;
/// Bytes `sendfile` may move per turn before the transmit waits for POLLOUT
/// again (nginx's `sendfile_max_chunk`): one fast client cannot starve the
/// others served by the same thread.
pub(super) const TURN: u64 = 2 * 1024 * 1024;
/// How far ahead one page-cache probe vouches for (both ends are checked).
const PROBE: u64 = 16 * 1024 * 1024;
/// Files up to this size whose pages are cached go out in one send together
/// with head and tail (one read, one send), instead of POLLOUT + `sendfile`.
const SMALL: u64 = 16 * 1024;
/// Bytes one pooled receive takes at most (the size of a pool buffer).
pub(super) const POOLED: usize = 4096;

/// Empty receive buffers kept per thread for pooled receives: a pooled
/// receive that has to wait for data (its request is in the kernel with a
/// pool to pick from, or its descriptor is not ready yet) gives its empty
/// buffer here, so that it waits holding no memory; one that completes into a
/// buffer without room takes one from here, so that a connection that hands
/// its drained input buffer back to each receive allocates nothing per
/// request. Buffers are parked only by the thread that owns the ring the
/// receive runs on, after the ring accepted it: that thread is the one that
/// completes it and takes a spare back (a thread that only submits, to
/// another thread's ring, parks nothing; an op refused at submit keeps its
/// buffer). At most [`SPARE_BUFS`] buffers of at most [`SPARE_BUF_MAX`] bytes
/// each; the list is freed when the thread's ring goes ([`free_spare_bufs`]).
const SPARE_BUFS: usize = 64;
/// The largest buffer kept (a bigger one is freed).
const SPARE_BUF_MAX: usize = 8 * 1024;

thread_local! {
    static BUFS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The buffer of a pooled receive that may wait without it: an empty buffer
/// with room, taken out of the op (`None` leaves the op as it is).
pub(super) fn take_parkable(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    if !buf.is_empty() || buf.capacity() == 0 {
        return None;
    }
    Some(std::mem::take(buf))
}

/// Parks the buffer of a pooled receive the owning thread's ring accepted
/// (see [`take_parkable`]): it goes to the thread's spares, or is freed if
/// it is too big or the list is full.
pub(super) fn park_pooled(buf: Vec<u8>) {
    if buf.capacity() > SPARE_BUF_MAX {
        return;
    }
    // Not during thread teardown (the list may be gone): then it is freed.
    let _ = BUFS.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            if b.len() < SPARE_BUFS {
                b.push(buf);
            }
        }
    });
}

/// [`take_parkable`] and [`park_pooled`] at once, for an op that is
/// accepted and waits on the owning thread.
pub(super) fn park_pooled_buf(buf: &mut Vec<u8>) {
    if let Some(b) = take_parkable(buf) {
        park_pooled(b);
    }
}

/// Before bytes of a pooled receive are appended to `buf`: a buffer with no
/// room takes one of the thread's spares instead of allocating.
pub(super) fn room_for_pooled(buf: &mut Vec<u8>) {
    if buf.capacity() != 0 {
        return;
    }
    if let Some(spare) = BUFS
        .try_with(|b| b.try_borrow_mut().ok().and_then(|mut b| b.pop()))
        .ok()
        .flatten()
    {
        *buf = spare;
    }
}

/// Frees the thread's spare buffers (its ring is gone: no receive of its
/// will take them back).
pub(super) fn free_spare_bufs() {
    let _ = BUFS.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            *b = Vec::new();
        }
    });
}

pub(super) fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The refusal of what is no I/O operation (a posted packet, work) at submit.
pub(super) fn not_io() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not an I/O operation")
}

/// Where a transmit is. The file is sent by `Poll` turns (wait until the socket
/// is writable, then non-blocking `sendfile` on the owning thread: zero-copy)
/// while its pages are in the page cache, and by `Read` + `Chunk` (a read into
/// a buffer, then a send) when they are not.
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
    pub(super) inline: bool,
    pub(super) phase: Phase,
    /// Position inside head, chunk or tail.
    pub(super) pos: usize,
    pub(super) chunk: Vec<u8>,
    pub(super) file_off: u64,
    /// File bytes not yet read.
    pub(super) remaining: u64,
    /// The last probe found the pages cached up to here.
    pub(super) hot_until: u64,
    /// Bytes sent so far, head and tail included.
    pub(super) total: u64,
    /// Why the blocking pool's read failed (epoll: the op state's
    /// `Offload::Failed` says that it did; kept here so that every op state
    /// stays small, issue 18).
    pub(super) failed: Option<io::Error>,
}

impl Transmit {
    /// Checks a transmit (range inside the file) and builds its starting state;
    /// switches the socket to non-blocking mode. The synchronous part of submit.
    pub(super) fn start(t: &TransmitFile) -> io::Result<Box<Transmit>> {
        let (file_off, remaining) = match &t.file {
            None => (0, 0),
            // A given length is trusted without an fstat: a file shorter than
            // promised fails the transmit with UnexpectedEof when its end comes.
            // The range must end where a file offset (`off_t`) still reaches:
            // every later step adds to the offset without checking.
            Some(_) if t.len != 0 => match t.offset.checked_add(t.len) {
                Some(end) if end <= i64::MAX as u64 => (t.offset, t.len),
                _ => return Err(errno(libc::EINVAL)),
            },
            Some(f) => {
                let size = f.metadata()?.len();
                if t.offset > size {
                    return Err(errno(libc::EINVAL));
                }
                (t.offset, size - t.offset)
            }
        };
        t.socket.ensure_nonblocking()?;
        if let Some(tr) = inline_small(t, file_off, remaining) {
            return Ok(tr);
        }
        Ok(Box::new(Transmit {
            inline: false,
            phase: Phase::Head,
            pos: 0,
            chunk: Vec::new(),
            file_off,
            remaining,
            hot_until: 0,
            total: 0,
            failed: None,
        }))
    }

    /// The bytes the current send phase still has to send (empty in other phases).
    pub(super) fn pending<'a>(&'a self, op: &'a TransmitFile) -> &'a [u8] {
        match self.phase {
            Phase::Head => op.head.get(self.pos..).unwrap_or_default(),
            Phase::Tail => op.tail.get(self.pos..).unwrap_or_default(),
            Phase::Chunk => self.chunk.get(self.pos..).unwrap_or_default(),
            Phase::Poll | Phase::Read | Phase::Done => &[],
        }
    }

    /// Flags for sending the current phase: `MSG_MORE` on a head that file
    /// bytes follow, so the head and the first file bytes share a segment (as
    /// nginx and lighttpd do with TCP_CORK/TCP_NOPUSH, without two setsockopt).
    pub(super) fn send_flags(&self) -> i32 {
        if self.phase == Phase::Head && self.remaining > 0 && !self.inline {
            libc::MSG_NOSIGNAL | libc::MSG_MORE
        } else {
            libc::MSG_NOSIGNAL
        }
    }

    /// `n` bytes of the current send phase went out.
    pub(super) fn sent(&mut self, n: usize) {
        self.pos += n;
        self.total += n as u64;
    }

    /// `n` bytes were read from the file into `chunk` (already its length).
    pub(super) fn read_done(&mut self, n: usize) {
        self.file_off += n as u64;
        self.remaining -= (n as u64).min(self.remaining);
        self.pos = 0;
        self.phase = Phase::Chunk;
    }

    /// How many bytes the next copying read asks for; makes room for them.
    pub(super) fn read_want(&mut self) -> usize {
        let want = (self.remaining.min(CHUNK as u64)) as usize;
        if self.chunk.capacity() < want {
            self.chunk.reserve_exact(want);
        }
        self.chunk.clear();
        want
    }
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
        failed: None,
    }))
}

/// What a descriptor is, as far as the engine cares ([`fd_kind`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum FdKind {
    /// A socket: `recv`/`send` apply; no file position.
    Socket = 1,
    /// A pipe or FIFO: `read`/`write`, no file position (`pread` is ESPIPE).
    Pipe = 2,
    /// A character device (a terminal, `/dev/zero`): `read`/`write`; some
    /// have a position, some do not (the kernel says, per call).
    Char = 3,
    /// A regular file, a directory, a block device: positional.
    File = 4,
}

/// The kind of descriptor `fd` is, from `fstat(2)`.
pub(crate) fn fd_kind(fd: i32) -> io::Result<FdKind> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into the memory we give it (a
    // live local of that type) and keeps nothing.
    syscall!(fstat(fd, st.as_mut_ptr()))?;
    // SAFETY: fstat succeeded, so it initialised the whole structure.
    let mode = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    Ok(match mode {
        libc::S_IFSOCK => FdKind::Socket,
        libc::S_IFIFO => FdKind::Pipe,
        libc::S_IFCHR => FdKind::Char,
        _ => FdKind::File,
    })
}

/// `/dev/null`, opened once for the whole process (close-on-exec), for
/// [`retire_fd`]: a close then needs no new descriptor, so it cannot fail
/// for want of one (EMFILE). Opened when the first port is built. A lock,
/// not a once-cell: [`retire_fd`] replaces it if its number was closed
/// behind the crate's back.
static DEV_NULL: std::sync::Mutex<Option<OwnedFd>> = std::sync::Mutex::new(None);

/// A new descriptor of `/dev/null`, read-write, close-on-exec (std's
/// default).
fn open_null() -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    Ok(f.into())
}

/// Opens the process's `/dev/null` for [`retire_fd`] if it is not open yet:
/// called by every port's creation, so that a port that exists never needs
/// a new descriptor to retire one.
pub(crate) fn open_dev_null() -> io::Result<()> {
    let mut null = DEV_NULL.lock().unwrap_or_else(|e| e.into_inner());
    if null.is_none() {
        *null = Some(open_null()?);
    }
    Ok(())
}

/// Whether `fd` is open on `/dev/null` (the character device 1:3).
fn is_dev_null(fd: i32) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into the memory we give it (a
    // live local of that type) and keeps nothing.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } < 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it initialised the whole structure.
    let st = unsafe { st.assume_init() };
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3)
}

/// The size of the regular file `fd`; `None` for anything else, or if
/// `fstat` fails.
pub(super) fn file_size(fd: i32) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into the memory we give it (a
    // live local of that type) and keeps nothing.
    syscall!(fstat(fd, st.as_mut_ptr())).ok()?;
    // SAFETY: fstat succeeded, so it initialised the whole structure.
    let st = unsafe { st.assume_init() };
    (st.st_mode & libc::S_IFMT == libc::S_IFREG).then_some(st.st_size as u64)
}

/// Replaces the file behind descriptor `fd` by `/dev/null` (`dup3`): our
/// reference to the old file is dropped (a pipe's reader sees EOF, a socket
/// is released) while the number stays taken, so nothing can reuse it under
/// the handles that still name it. Needs no new descriptor: `dup3` reuses
/// `fd`'s number, and `/dev/null` was opened when the port was built.
///
/// The kept `/dev/null` is checked first (`fstat`): a program may have
/// closed its number behind the crate's back (a close-all loop,
/// `close_range`) and the number may now be another file, which must never
/// be copied over `fd`. Then it is forgotten (not closed: the number is not
/// ours any more) and `/dev/null` opened again. If that fails, so does this
/// call, and `fd` keeps its file.
pub(crate) fn retire_fd(fd: i32) -> io::Result<()> {
    // Held across the check and the dup3: no other close replaces the
    // descriptor between them.
    let mut null = DEV_NULL.lock().unwrap_or_else(|e| e.into_inner());
    if null.as_ref().is_some_and(|n| !is_dev_null(n.as_raw_fd())) {
        let _ = null.take().map(std::os::fd::IntoRawFd::into_raw_fd);
    }
    let null = match &mut *null {
        Some(n) => n,
        empty => empty.insert(open_null()?),
    };
    // SAFETY: dup3 takes two descriptors open for the call (`fd` belongs to
    // a live handle; `null` was just checked to be our `/dev/null`, kept for
    // the process's life) and touches no memory of ours; `fd` stays a valid
    // open descriptor afterwards.
    syscall!(dup3(null.as_raw_fd(), fd, libc::O_CLOEXEC)).map(drop)
}

/// How many bytes a positional transfer of up to `want` bytes at `off` may
/// move: the range must end at or before the largest file offset
/// (`i64::MAX`), or the kernel refuses it with EINVAL. A read there is a
/// read past the end of any file (0 bytes), as on Windows.
pub(super) fn file_room(off: u64, want: usize) -> usize {
    let room = (i64::MAX as u64).saturating_sub(off);
    want.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Puts a descriptor in non-blocking mode (`sendfile` and `accept4` must never
/// wait on it); returns whether it was blocking before (this call changed it).
pub(crate) fn set_nonblocking(fd: i32) -> io::Result<bool> {
    set_flag(fd, libc::O_NONBLOCK, true)
}

/// Sets or clears a file status flag; returns whether it changed.
fn set_flag(fd: i32, flag: i32, on: bool) -> io::Result<bool> {
    // SAFETY: fcntl(F_GETFL/F_SETFL) on a descriptor the caller keeps open
    // touches no memory of ours.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    if (flags & flag != 0) == on {
        return Ok(false);
    }
    let new = if on { flags | flag } else { flags & !flag };
    // SAFETY: as above.
    syscall!(fcntl(fd, libc::F_SETFL, new))?;
    Ok(true)
}

/// Whether the file's pages at both ends of `[off, off + len)` are in the page
/// cache: a one-byte `preadv2(RWF_NOWAIT)` at each end. Anything but EAGAIN
/// (a filesystem without RWF_NOWAIT, say) counts as cached: `sendfile` then does
/// what it always does.
///
/// Up to [`PROBE_ONE`] bytes only the last page is probed: the kernel reads
/// ahead from the start, so a range whose end is cached is almost always
/// cached whole (and a miss costs a short wait, never a wrong byte).
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
    if len <= PROBE_ONE {
        return probe(off + len.max(1) - 1);
    }
    probe(off) && probe(off + len - 1)
}

/// Ranges up to this size are probed at their end only.
const PROBE_ONE: u64 = 1024 * 1024;

/// How a zero-copy turn ended.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub(super) enum Turn {
    /// The socket is full (EAGAIN): wait until it is writable again.
    Full,
    /// The next pages are not cached: the transmit switched to `Phase::Read`.
    Cold,
    /// The turn's budget is spent or the file range is done; the socket may
    /// still be writable.
    Spent,
}

/// One turn of zero-copy sending after POLLOUT: non-blocking `sendfile` until
/// the socket is full, the turn's budget is spent, or the file range is done.
/// Switches to the copying path when the next pages are not cached.
pub(super) fn sendfile_turn(t: &mut Transmit, sock: i32, file: i32) -> io::Result<Turn> {
    let mut budget = TURN;
    while t.remaining > 0 && budget > 0 {
        let want = t.remaining.min(budget);
        if t.file_off + want > t.hot_until {
            // Probe a window ahead, not every turn: two `preadv2` per PROBE bytes.
            let window = t.remaining.min(PROBE);
            if !cached(file, t.file_off, window) {
                t.phase = Phase::Read;
                return Ok(Turn::Cold);
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
                Some(libc::EAGAIN) => return Ok(Turn::Full),
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
    Ok(Turn::Spent)
}

/// A socket address from what `accept` filled in.
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

/// A socket address in the kernel's form, for `connect`.
pub(super) fn std_to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is smaller than and alignment-compatible with
            // sockaddr_storage, which we own exclusively here.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// An eventfd: the wake primitive of both backends (the ring keeps a read
/// pending on it; epoll watches it, level-triggered).
pub(super) struct EventFd(OwnedFd);

impl EventFd {
    /// A new non-blocking, close-on-exec eventfd with a zero counter.
    pub(super) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd(2) with valid flags returns a new descriptor or -1.
        syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))
            .map(|fd| EventFd(super::owned(fd)))
    }

    pub(super) fn raw(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

impl Wake for EventFd {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to an eventfd we own; an
        // error (the counter saturated) still leaves the eventfd readable.
        let _ = syscall!(write(self.raw(), (&one as *const u64).cast(), 8));
    }
}

impl WakeSource for EventFd {
    fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live local from our eventfd
        // (non-blocking: EAGAIN when already drained).
        let _ = syscall!(read(self.raw(), (&mut v as *mut u64).cast(), 8));
    }
}

/// The most iovecs one `sendmsg`/`writev` is given (Linux's `IOV_MAX`); a
/// vectored send on a stream with more buffers goes out in turns (on a
/// datagram socket it fails: [`too_many_for_one_datagram`]).
pub(super) const IOV_MAX: usize = 1024;

/// Whether a vectored send of `bufs` on `fd` cannot go out as the one
/// datagram it must be (`WSASend` on a datagram socket): more non-empty
/// buffers than one `sendmsg` takes, on a message-keeping socket. Splitting
/// it into several datagrams would be wrong; it fails with EMSGSIZE instead.
/// Asks the kernel (`SO_TYPE`) only past [`IOV_MAX`] buffers.
pub(super) fn too_many_for_one_datagram(fd: i32, bufs: &[Vec<u8>]) -> bool {
    if bufs.len() <= IOV_MAX || bufs.iter().filter(|b| !b.is_empty()).count() <= IOV_MAX {
        return false;
    }
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live local int and
    // its length into a live local; it keeps no reference.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // Not a socket (a pipe): a stream of bytes, sent in turns.
    rc == 0
        && matches!(
            ty,
            libc::SOCK_DGRAM | libc::SOCK_SEQPACKET | libc::SOCK_RAW | libc::SOCK_RDM
        )
}

/// The `(pointer, length)` pieces of `bufs` not yet sent after the first
/// `sent` bytes, empty ones skipped, at most [`IOV_MAX`] of them.
pub(super) fn rest_of(
    bufs: &[Vec<u8>],
    sent: usize,
) -> impl Iterator<Item = (*const u8, usize)> + '_ {
    let mut skip = sent;
    bufs.iter()
        .filter_map(move |b| {
            if skip >= b.len() {
                skip -= b.len();
                return None;
            }
            let rest = &b[skip..];
            skip = 0;
            Some((rest.as_ptr(), rest.len()))
        })
        .take(IOV_MAX)
}

/// The message header of one `sendmsg`/`recvmsg` (io_uring's SENDMSG and
/// RECVMSG, or the epoll backend's calls), with the socket address and the
/// iovecs it points at, at a stable heap address for as long as the
/// operation lives. Reached only through a raw pointer, so that no Rust
/// reference to the op's state covers memory the kernel writes while the
/// request is in flight (the address, its length, the flags).
pub(super) struct Msg(std::ptr::NonNull<MsgInner>);

struct MsgInner {
    hdr: libc::msghdr,
    addr: libc::sockaddr_storage,
    iov: Vec<libc::iovec>,
}

// SAFETY: `Msg` owns its allocation alone (as a `Box` would), and the raw
// pointers inside it point into that allocation or into buffers the same
// operation owns; the kernel uses them only while the op is in flight, and
// the slab lock or the owning thread orders every Rust access after the
// completion that ends it.
unsafe impl std::marker::Send for Msg {}

impl Msg {
    pub(super) fn new() -> Msg {
        // SAFETY: msghdr and sockaddr_storage are plain old data; all zeroes
        // is a valid value of each (null pointers, zero lengths).
        let (hdr, addr) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let inner = MsgInner {
            hdr,
            addr,
            iov: Vec::new(),
        };
        Msg(std::ptr::NonNull::from(Box::leak(Box::new(inner))))
    }

    /// Points the header at `pieces` and, with `to`, at that address (else
    /// none: a connected socket); returns the header for the kernel. Call
    /// only while no request of this op is in flight.
    pub(super) fn prepare(
        &mut self,
        pieces: impl Iterator<Item = (*const u8, usize)>,
        to: Option<&SocketAddr>,
    ) -> *mut libc::msghdr {
        let p = self.0.as_ptr();
        // SAFETY: `p` is our live allocation, and no request uses it now (the
        // caller's contract): nothing else reads or writes it during these
        // writes, which go through the raw pointer (no reference to memory
        // the kernel may write later outlives them). The iovecs point into
        // buffers the op owns, which stay put until the request completes.
        unsafe {
            let iov = &mut (*p).iov;
            iov.clear();
            iov.extend(pieces.map(|(base, len)| libc::iovec {
                iov_base: base as *mut libc::c_void,
                iov_len: len,
            }));
            let (iov_ptr, iov_len) = (iov.as_mut_ptr(), iov.len());
            let hdr = std::ptr::addr_of_mut!((*p).hdr);
            (*hdr).msg_iov = iov_ptr;
            (*hdr).msg_iovlen = iov_len as _;
            (*hdr).msg_control = std::ptr::null_mut();
            (*hdr).msg_controllen = 0;
            (*hdr).msg_flags = 0;
            match to {
                Some(a) => {
                    let (storage, len) = std_to_sockaddr(a);
                    std::ptr::addr_of_mut!((*p).addr).write(storage);
                    (*hdr).msg_name = std::ptr::addr_of_mut!((*p).addr).cast();
                    (*hdr).msg_namelen = len;
                }
                None => {
                    (*hdr).msg_name = std::ptr::null_mut();
                    (*hdr).msg_namelen = 0;
                }
            }
            hdr
        }
    }

    /// Points the header at `len` bytes at `into` and at the address
    /// storage, for a `recvmsg` that fills both; returns the header.
    pub(super) fn prepare_recv(&mut self, into: *mut u8, len: usize) -> *mut libc::msghdr {
        let hdr = self.prepare(std::iter::once((into as *const u8, len)), None);
        let p = self.0.as_ptr();
        // SAFETY: as in `prepare`: our allocation, no request in flight.
        unsafe {
            (*hdr).msg_name = std::ptr::addr_of_mut!((*p).addr).cast();
            (*hdr).msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        hdr
    }

    /// The iovecs `prepare` set, for `writev`: pointer and count.
    pub(super) fn iov(&self) -> (*const libc::iovec, usize) {
        let p = self.0.as_ptr();
        // SAFETY: our live allocation; reading the Vec's pointer and length
        // (never written by the kernel) makes no lasting reference.
        unsafe {
            let iov = &(*p).iov;
            (iov.as_ptr(), iov.len())
        }
    }

    /// After a `recvmsg` completed: the sender's address and whether the
    /// datagram was cut (`MSG_TRUNC`). Call only once the kernel is done.
    pub(super) fn received(&self) -> (Option<SocketAddr>, bool) {
        let p = self.0.as_ptr();
        // SAFETY: the request completed: nothing writes the allocation any
        // more, and it holds valid values (zeroes, or what the kernel wrote).
        let (addr, len, flags) = unsafe {
            (
                std::ptr::read(std::ptr::addr_of!((*p).addr)),
                (*p).hdr.msg_namelen,
                (*p).hdr.msg_flags,
            )
        };
        (sockaddr_to_std(&addr, len), flags & libc::MSG_TRUNC != 0)
    }

    /// Finishes a `RecvFrom` whose `recvmsg` (prepared by
    /// [`Msg::prepare_recv`] over `buf`'s spare capacity) took `n` bytes:
    /// they join `buf`, `addr` becomes the sender's, and a datagram cut to
    /// the room is the error `EMSGSIZE` (`WSAEMSGSIZE`: the bytes that fit,
    /// and the error). Call only once the kernel is done.
    pub(super) fn finish_recv(
        &self,
        buf: &mut Vec<u8>,
        n: usize,
        addr: &mut Option<SocketAddr>,
    ) -> io::Result<()> {
        let new_len = (buf.len() + n).min(buf.capacity());
        // SAFETY: the kernel initialised `n` bytes of the spare capacity it
        // was given (never more than that capacity), so the bytes up to
        // `new_len` are initialised.
        unsafe { buf.set_len(new_len) };
        let (from, cut) = self.received();
        *addr = from;
        if cut {
            Err(errno(libc::EMSGSIZE))
        } else {
            Ok(())
        }
    }
}

impl Drop for Msg {
    fn drop(&mut self) {
        // SAFETY: the allocation came from `Box::leak` in `new` and is freed
        // once, here; the op state that owns it is dropped only after the
        // kernel is done with the request (a ring the kernel never let go of
        // leaks its slab instead).
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}
