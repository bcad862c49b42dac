//! Completion packets: what [`Port::get`](crate::Port::get) hands back.
//!
//! A packet is Win32's `(lpNumberOfBytes, lpCompletionKey, lpOverlapped)` triple plus
//! the status `GetQueuedCompletionStatus` reports through its return value and
//! `GetLastError`. Here the "OVERLAPPED" is the operation itself, returned by value
//! with its buffers, so a buffer can only be touched again once its packet is
//! dequeued (IOCP rule C11), and dropping a packet frees everything it carried.

use std::fmt;
use std::io;

use crate::op::Op;

/// Identifies one submitted operation, as an `OVERLAPPED*` does on Windows.
///
/// Ids are never reused while a port lives (a generation counter is part of the
/// id), so a stale id given to [`Port::cancel`](crate::Port::cancel) answers
/// `NotFound` rather than cancelling an unrelated operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(pub(crate) u64);

impl OpId {
    /// The id that posted packets carry: they were never submitted as operations.
    pub const POSTED: OpId = OpId(0);

    /// The raw value (for logging, or to keep in an atomic).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// An id from its raw value. A value that names no operation in flight is
    /// harmless: `cancel` and `progress` answer that they cannot find it.
    pub fn from_u64(raw: u64) -> OpId {
        OpId(raw)
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({:#x})", self.0)
    }
}

/// One completion: an I/O operation that finished (successfully or not), or a
/// packet posted with [`Port::post`](crate::Port::post).
#[derive(Debug)]
pub struct Packet {
    /// The completion key: the one given to [`Port::associate`](crate::Port::associate)
    /// for the handle the operation ran on, or the one passed to `post`.
    pub key: u64,
    /// Bytes transferred (for a posted packet: the value passed to `post`).
    /// A `u64` because one transmit may exceed 4 GiB.
    pub bytes: u64,
    /// `Ok(())`, or the error the operation failed with. A cancelled operation
    /// fails with `ECANCELED` (see [`Packet::is_aborted`]).
    pub status: io::Result<()>,
    /// Which operation this is (`OpId::POSTED` for posted packets).
    pub id: OpId,
    /// The operation, handed back with its buffers and context.
    pub op: Op,
}

impl Packet {
    /// True when the operation was cancelled before it completed
    /// (Win32's `ERROR_OPERATION_ABORTED`).
    pub fn is_aborted(&self) -> bool {
        matches!(&self.status, Err(e) if e.raw_os_error() == Some(libc::ECANCELED))
    }

    /// True for packets produced by [`Port::post`](crate::Port::post).
    pub fn is_posted(&self) -> bool {
        matches!(self.op, Op::Posted { .. })
    }
}

/// Why [`Port::get`](crate::Port::get) returned without a packet.
///
/// Together with a packet whose `status` is `Err`, these are the three distinct
/// outcomes of `GetQueuedCompletionStatus` (IOCP rule C13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GetError {
    /// The timeout elapsed with no packet (`WAIT_TIMEOUT`).
    TimedOut,
    /// The port was closed (`ERROR_ABANDONED_WAIT_0`).
    Abandoned,
    /// An alertable wait ([`Port::get_alertable`](crate::Port::get_alertable))
    /// ran the thread's queued APCs before any packet arrived
    /// (`WAIT_IO_COMPLETION`).
    Alerted,
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GetError::TimedOut => "timed out waiting for a completion packet",
            GetError::Abandoned => "the completion port was closed",
            GetError::Alerted => "queued APCs ran during an alertable wait",
        })
    }
}

impl std::error::Error for GetError {}

impl From<GetError> for io::Error {
    fn from(e: GetError) -> io::Error {
        let kind = match e {
            GetError::TimedOut => io::ErrorKind::TimedOut,
            GetError::Abandoned => io::ErrorKind::BrokenPipe,
            GetError::Alerted => io::ErrorKind::Interrupted,
        };
        io::Error::new(kind, e)
    }
}
