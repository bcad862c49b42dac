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
            pieces: VecDeque::from([Piece::Bytes(out)]),
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

#[cfg(test)]
mod tests {
    use super::Slots;

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
