//! Handles: descriptors associated with a port, each with its completion key.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

pub(crate) use crate::lane::Lane;
use crate::sys::FdKind;
use std::sync::Arc;

/// A socket or file associated with a [`Port`](crate::Port), carrying its
/// completion key (`CreateIoCompletionPort(handle, port, key, 0)`).
///
/// A `Handle` is a shared reference: every operation in flight on it holds a
/// clone, so the descriptor is closed only when the last user and the last
/// operation are done with it. It can never be closed or reused under the kernel.
/// [`Handle::close`] ends it with operations pending (`closesocket`).
#[derive(Clone)]
pub struct Handle(pub(crate) Arc<HandleInner>);

pub(crate) struct HandleInner {
    pub(crate) fd: OwnedFd,
    pub(crate) key: u64,
    pub(crate) port: u64,
    /// `O_NONBLOCK` is known to be set (so it is not checked again per op).
    pub(crate) nonblocking: std::sync::atomic::AtomicBool,
    /// What the descriptor is ([`FdKind`] as a number; 0 = not looked at yet).
    pub(crate) kind: std::sync::atomic::AtomicU8,
    /// The socket's receives (`[0]`) and writes (`[1]`) in flight: which ring
    /// runs them, so that later ones queue behind them in call order.
    pub(crate) lanes: [Lane; 2],
    /// The port, for [`Handle::close`]'s cancels.
    pub(crate) core: std::sync::Weak<crate::port::Core>,
    /// [`Handle::close`] was called: new operations are refused.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Operations of a closing handle not yet completed, plus [`CLOSE_BIG`]
    /// until `close` has counted them.
    pub(crate) close_pending: std::sync::atomic::AtomicI64,
    /// The operations [`Handle::close`]'s scan counted and that have not
    /// completed yet: only their packets count `close_pending` down. Boxed,
    /// made by the first: a handle never closed with I/O pending holds none
    /// (16 bytes less per handle: an idle connection's, issue 18).
    // The box is the point: 8 bytes in every handle instead of a `Vec`'s 24.
    #[allow(clippy::box_collection)]
    pub(crate) counted: std::sync::Mutex<Option<Box<Vec<crate::OpId>>>>,
    /// The descriptor was retired (done once).
    pub(crate) closed: std::sync::atomic::AtomicBool,
}

/// What `close_pending` starts at: packets that arrive while `close` counts
/// cannot bring it to 0 before `close` has subtracted this.
pub(crate) const CLOSE_BIG: i64 = 1 << 40;

/// The lane an op belongs to, if it moves a byte stream.
pub(crate) fn lane_of(op: &crate::op::Op) -> Option<&Lane> {
    use crate::op::Op;
    match op {
        Op::Recv(r) => Some(&r.handle.0.lanes[0]),
        Op::Send(s) => Some(&s.handle.0.lanes[1]),
        Op::TransmitFile(t) => Some(&t.socket.0.lanes[1]),
        Op::RecvFrom(r) => Some(&r.handle.0.lanes[0]),
        Op::SendTo(s) => Some(&s.handle.0.lanes[1]),
        Op::SendVectored(s) => Some(&s.handle.0.lanes[1]),
        _ => None,
    }
}

/// Whether `op` works on `h`'s descriptor (its socket, listener or file).
pub(crate) fn is_on(op: &crate::op::Op, h: &Handle) -> bool {
    op.handle().is_some_and(|o| Arc::ptr_eq(&o.0, &h.0))
}

/// Leaves the lane of the op a refused submission hands back.
pub(crate) fn unlane<T>(
    r: Result<T, (std::io::Error, crate::op::Op)>,
) -> Result<T, (std::io::Error, crate::op::Op)> {
    r.map_err(|(e, op)| {
        if let Some(l) = lane_of(&op) {
            l.leave();
        }
        (e, op)
    })
}

impl Handle {
    /// Puts the descriptor in non-blocking mode once; later calls cost an
    /// atomic load. It stays so after the handle goes, as with tokio and
    /// mio: the flag belongs to the open file, which another handle may
    /// share and rely on (see [`Port::associate`](crate::Port::associate)).
    pub(crate) fn ensure_nonblocking(&self) -> std::io::Result<()> {
        if !self.0.nonblocking.load(Ordering::Relaxed) {
            crate::sys::set_nonblocking(self.as_raw_fd())?;
            self.0.nonblocking.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// What kind of descriptor this is: `fstat` once, then an atomic load.
    pub(crate) fn kind(&self) -> std::io::Result<FdKind> {
        let k = self.0.kind.load(Ordering::Relaxed);
        let kind = match k {
            1 => FdKind::Socket,
            2 => FdKind::Pipe,
            3 => FdKind::Char,
            4 => FdKind::File,
            _ => {
                let kind = crate::sys::fd_kind(self.as_raw_fd())?;
                self.0.kind.store(kind as u8, Ordering::Relaxed);
                kind
            }
        };
        Ok(kind)
    }

    /// Whether `Recv`/`Send` on this descriptor use `read`/`write`: it was
    /// found not to be a socket (a pipe, a FIFO, a terminal, a file).
    #[inline]
    pub(crate) fn streams_by_read_write(&self) -> bool {
        self.0.kind.load(Ordering::Relaxed) > FdKind::Socket as u8
    }

    /// Notes `id` as counted by [`Handle::close`]'s scan.
    pub(crate) fn note_counted(&self, id: crate::OpId) {
        self.0
            .counted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(Box::default)
            .push(id);
    }

    /// Whether `id` was counted by [`Handle::close`]'s scan (and forgets it).
    pub(crate) fn take_counted(&self, id: crate::OpId) -> bool {
        let mut c = self.0.counted.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = c.as_mut() else {
            return false;
        };
        match c.iter().position(|x| *x == id) {
            Some(i) => {
                c.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Whether [`Handle::close`] was called on this handle.
    pub(crate) fn is_closing(&self) -> bool {
        self.0.closing.load(Ordering::Acquire)
    }

    /// `recv`/`send` said ENOTSOCK: from now on `Recv`/`Send` on this handle
    /// use `read`/`write` (also when `fstat` fails: the kernel said it is no
    /// socket).
    pub(crate) fn note_not_socket(&self) {
        let kind = crate::sys::fd_kind(self.as_raw_fd())
            .ok()
            .filter(|k| *k != FdKind::Socket)
            .unwrap_or(FdKind::Pipe);
        self.0.kind.store(kind as u8, Ordering::Relaxed);
    }

    /// Closes the handle with I/O pending (`closesocket` / `CloseHandle`):
    /// new operations on it are refused (`EBADF`), every operation pending
    /// on it is cancelled as by [`Port::cancel_handle`](crate::Port::cancel_handle)
    /// (each still yields its one packet), and when the last of them has
    /// completed the descriptor is retired: a socket is shut down in both
    /// directions (the peer sees the connection end) and the descriptor is
    /// replaced by `/dev/null` (a pipe's reader sees EOF, a file is
    /// released). The descriptor number itself stays reserved until the last
    /// clone of the handle — the packets' operations hold some — is dropped,
    /// so it is never reused under anyone. The `/dev/null` used is one the
    /// process opened when its first port was built, checked before each use
    /// (and opened again if its number was closed behind the crate's back);
    /// if `/dev/null` cannot be opened at all, the descriptor keeps its file
    /// (a socket is still shut down) until the last clone goes.
    ///
    /// An operation submitted on another thread at the very moment of the
    /// call may escape the cancel; it then completes with whatever the
    /// retired descriptor gives it.
    pub fn close(self) {
        if self.0.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let n = match self.0.core.upgrade() {
            Some(core) => crate::port::Port { core }
                .cancel_handle_counting(&self, true)
                .unwrap_or(0),
            None => 0,
        };
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let prev = self
            .0
            .close_pending
            .fetch_sub(CLOSE_BIG - n, Ordering::AcqRel);
        if prev - (CLOSE_BIG - n) <= 0 {
            self.retire();
        }
    }

    /// One operation of a closing handle completed (its packet exists): the
    /// last one retires the descriptor.
    pub(crate) fn closing_op_done(&self) {
        if self.0.close_pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.retire();
        }
    }

    /// Shuts a socket down and puts `/dev/null` in the descriptor's place
    /// (once).
    fn retire(&self) {
        if self.0.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if matches!(self.kind(), Ok(FdKind::Socket)) {
            let _ = self.shutdown(std::net::Shutdown::Both);
        }
        let _ = crate::sys::retire_fd(self.as_raw_fd());
    }

    /// The completion key every packet for this handle carries.
    pub fn key(&self) -> u64 {
        self.0.key
    }

    /// Shuts down part of a full-duplex connection (`shutdown(2)`), synchronously.
    pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        crate::sys::shutdown(self.0.fd.as_fd(), how)
    }
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("fd", &self.as_raw_fd())
            .field("key", &self.0.key)
            .finish()
    }
}
