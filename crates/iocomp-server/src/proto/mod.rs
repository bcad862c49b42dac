//! The protocol handlers and the seam between them and the connection driver.
//!
//! A handler is a function from "the bytes received so far" to the next
//! [`Step`]: receive more, send a [`Reply`], look again, or close. It sees its
//! connection only through the [`Connection`] trait — what it may read (the
//! input, end of input, whether the server drains, the connection's
//! over-limit flag) and the access-log record it may fill — and the server
//! only through a [`Site`]: the immutable [`Settings`], the path policy, the
//! observability state and the port (for `blocking` work). The driver
//! (`crate::conn`) owns the socket, the buffers, the timers and the limits,
//! implements [`Connection`], and turns steps into operations; handlers never
//! import it. This is hyper's `Dispatch` seam (`src/proto/h1/dispatch.rs`):
//! the dispatcher polls its `Dispatch` for messages and owns the I/O.
//!
//! - [`mod@line`]: the seed's line protocol (`nc`);
//! - [`http`]: HTTP/1.1 file serving;
//! - [`admin`]: the metrics listener's router (`/metrics`, `/status.json`,
//!   the status page).

pub(crate) mod admin;
pub(crate) mod http;
pub(crate) mod line;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use iocomp::Port;

use crate::config::Settings;
use crate::fs::Root;
use crate::http::date::{DateCache, DATE_LEN};
use crate::obs::Obs;

/// What a handler decides to do next.
pub(crate) enum Step {
    /// More input is needed.
    Recv,
    /// Send this reply; then go on, or close if it says so.
    Reply(Reply),
    /// Answered without I/O: look at the input again.
    Again,
    /// Close the connection now.
    Close,
}

/// A reply a handler hands to the driver.
pub(crate) struct Reply {
    /// The pieces, sent in order.
    pub(crate) pieces: VecDeque<Piece>,
    /// Close the connection once they are sent.
    pub(crate) close: bool,
    /// The file that [`Piece::File`] pieces read from.
    pub(crate) file: Option<Arc<File>>,
    /// The name the status page shows while the reply's file bytes go out
    /// (a transfer is registered only when there are file bytes).
    pub(crate) name: Option<Vec<u8>>,
}

impl Reply {
    /// A reply of bytes from memory only.
    pub(crate) fn bytes(out: Vec<u8>, close: bool) -> Step {
        Step::Reply(Reply {
            pieces: pieces_of(Piece::Bytes(out)),
            close,
            file: None,
            name: None,
        })
    }
}

/// One operation's worth of a reply.
pub(crate) enum Piece {
    /// Bytes from memory (an error line, a response head, a listing).
    Bytes(Vec<u8>),
    /// `head`, then `len` bytes of the reply's file from `offset`, then
    /// `tail`, zero-copy.
    File {
        /// Bytes sent before the file's.
        head: Vec<u8>,
        /// Where in the file to start.
        offset: u64,
        /// How many bytes of the file.
        len: u64,
        /// Bytes sent after the file's.
        tail: Vec<u8>,
    },
}

/// What a handler sees of the server: configuration and shared services.
pub(crate) struct Site<'a> {
    /// The immutable settings.
    pub(crate) settings: &'a Settings,
    /// The path policy (and its open-file cache).
    pub(crate) root: &'a Root,
    /// Access log, counters, transfers.
    pub(crate) obs: &'a Obs,
    /// The engine: for `blocking` work, the backend's name, operation progress.
    pub(crate) port: &'a Port,
    /// Room for directory listings in progress (each may hold a thread of
    /// the engine's blocking pool).
    pub(crate) listings: &'a Slots,
}

/// A bound on concurrent work, without waiting: at most `max` holders.
pub(crate) struct Slots {
    busy: AtomicUsize,
    max: usize,
}

/// A held slot; dropping it frees the slot.
pub(crate) struct Slot<'a>(&'a Slots);

impl Slots {
    /// Room for `max` holders at once (at least one).
    pub(crate) fn new(max: usize) -> Slots {
        Slots {
            busy: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    /// A slot, or `None` when all are held.
    pub(crate) fn try_acquire(&self) -> Option<Slot<'_>> {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many connections are open, as the admin pages report them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Connections {
    /// Client connections (not those to the metrics listener).
    pub(crate) clients: u64,
    /// Connections to the metrics listener.
    pub(crate) admin: u64,
}

/// What a handler may read of its connection, and the request record it
/// fills; the connection driver implements it.
pub(crate) trait Connection {
    /// Received bytes not yet consumed: the handler removes from the front
    /// what it has consumed (and may take the buffer and put it back).
    fn input(&mut self) -> &mut Vec<u8>;
    /// The client has half-closed: no more input will come.
    fn eof(&self) -> bool;
    /// The connection's key (for debug logs).
    fn key(&self) -> u64;
    /// The client's address is over `--max-conns-per-ip`: answer `busy`.
    fn over_limit(&self) -> bool;
    /// The server is shutting down: no keep-alive.
    fn draining(&self) -> bool;
    /// The connection is encrypted (TLS): the request's scheme is `https`.
    fn secure(&self) -> bool;
    /// The server, as handlers see it.
    fn site(&self) -> Site<'_>;
    /// Connections open now.
    fn connections(&self) -> Connections;
    /// A request is being answered: starts its access-log record (and
    /// writes the previous one, if any); the connection counts as served.
    fn begin(&mut self, request: &[u8], status: u16);
    /// The status the current request's record is logged with.
    fn set_status(&mut self, status: u16);
    /// The client's `Referer` and `User-Agent`, for the combined and JSON logs.
    fn set_client(&mut self, referer: Option<&[u8]>, agent: Option<&[u8]>);
    /// The connection counts as served (the next wait is an idle one) without
    /// a request record.
    fn mark_served(&mut self);
}

thread_local! {
    /// One formatted `Date` per worker, refreshed once a second.
    static DATE: RefCell<DateCache> = RefCell::new(DateCache::new());
}

/// The `Date` header's value now (HTTP handlers), from the worker's cache.
pub(crate) fn date() -> [u8; DATE_LEN] {
    DATE.with(|d| *d.borrow_mut().now())
}

/// Buffers a worker keeps for reuse, of each kind. The engine hands a
/// worker its completions in batches (the receives of many connections, then
/// their sends), so the pool must cover a batch: one buffer a connection.
const POOLED: usize = 256;

/// The largest byte buffer kept for reuse (a larger one is freed).
const POOLED_BYTES_MAX: usize = 16 * 1024;

/// The bytes of all the buffers a worker keeps, at most.
const POOLED_BYTES_TOTAL: usize = 512 * 1024;

/// The most pieces a kept piece queue has room for.
const POOLED_PIECES_MAX: usize = 8;

thread_local! {
    /// Byte buffers of sends that completed on this worker: the next
    /// responses are written into them, with no allocation per response.
    static BYTES: RefCell<(Vec<Vec<u8>>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    /// Empty piece queues of replies this worker finished.
    static PIECES: RefCell<Vec<VecDeque<Piece>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for `cap` bytes: one the worker kept, if any.
pub(crate) fn out_buf(cap: usize) -> Vec<u8> {
    let mut buf = BYTES
        .try_with(|p| {
            let (pool, bytes) = &mut *p.borrow_mut();
            let buf = pool.pop()?;
            *bytes -= buf.capacity();
            Some(buf)
        })
        .ok()
        .flatten()
        .unwrap_or_default();
    buf.clear();
    buf.reserve(cap);
    buf
}

/// Keeps `buf` (a completed send's) for [`out_buf`], unless the worker
/// keeps enough already or it is large (the pool stays within
/// [`POOLED_BYTES_TOTAL`]).
pub(crate) fn recycle(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > POOLED_BYTES_MAX {
        return;
    }
    buf.clear();
    let _ = BYTES.try_with(|p| {
        let (pool, bytes) = &mut *p.borrow_mut();
        if pool.len() < POOLED && *bytes + buf.capacity() <= POOLED_BYTES_TOTAL {
            *bytes += buf.capacity();
            pool.push(buf);
        }
    });
}

/// A piece queue holding `piece`, in a queue the worker kept if any.
pub(crate) fn pieces_of(piece: Piece) -> VecDeque<Piece> {
    let mut q = PIECES
        .try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default();
    q.push_back(piece);
    q
}

/// Keeps an empty piece queue for [`pieces_of`] (a non-empty or large one
/// is dropped).
pub(crate) fn recycle_pieces(q: VecDeque<Piece>) {
    if !q.is_empty() || q.capacity() == 0 || q.capacity() > POOLED_PIECES_MAX {
        return;
    }
    let _ = PIECES.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED {
            p.push(q);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{out_buf, pieces_of, recycle, recycle_pieces, Piece, Slots};

    #[test]
    fn recycled_buffers_come_back_empty_and_bounded() {
        let mut b = out_buf(100);
        assert!(b.is_empty() && b.capacity() >= 100);
        b.extend_from_slice(b"stale bytes");
        let at = b.as_ptr();
        recycle(b);
        let again = out_buf(10);
        assert!(again.is_empty(), "a reused buffer holds nothing");
        assert_eq!(again.as_ptr(), at, "the kept buffer is reused");
        // Growing on demand.
        recycle(again);
        assert!(out_buf(200_000).capacity() >= 200_000);
        // A huge buffer is not kept.
        recycle(Vec::with_capacity(1 << 20));
        let small = out_buf(1);
        assert!(small.capacity() < 1 << 20, "the huge buffer was freed");

        let mut q = pieces_of(Piece::Bytes(b"a".to_vec()));
        assert_eq!(q.len(), 1);
        q.clear();
        recycle_pieces(q);
        let q = pieces_of(Piece::Bytes(Vec::new()));
        assert_eq!(q.len(), 1, "a reused queue holds only the new piece");
    }

    #[test]
    fn slots_bound_holders_and_free_on_drop() {
        let s = Slots::new(2);
        let a = s.try_acquire().expect("first");
        let b = s.try_acquire().expect("second");
        assert!(s.try_acquire().is_none(), "a third is refused");
        drop(a);
        let c = s.try_acquire().expect("freed by drop");
        assert!(s.try_acquire().is_none());
        drop((b, c));
        assert!(Slots::new(0).try_acquire().is_some(), "at least one");
    }
}
