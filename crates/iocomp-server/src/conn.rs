//! One client connection: a small state machine driven by completion packets,
//! like the seed's `IO_TYPE` (Recv → Transmit/Send → Recv …), shared by both
//! protocols. The protocol is chosen from the first bytes; its handler looks at
//! the input and decides the next [`Step`]; this module turns steps into
//! operations and packets back into steps.
//!
//! The connection's state travels inside the operation in flight (its context),
//! as the seed's `PRE_IO_DATA` rode on its OVERLAPPED; exactly one operation is
//! in flight per connection, so whoever holds the packet owns the connection and
//! no lock is needed. Dropping the state closes the socket and counts the
//! connection out.

use std::collections::VecDeque;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use iocomp::{Handle, Op, Packet, Port, Recv, Send, Timeout, TransmitFile};
use tracing::debug;

use crate::access::Entry;
use crate::http::detect::{detect, Proto as Detected};
use crate::limit::Pace;
use crate::line::LineFramer;
use crate::metrics::ErrorKind;
use crate::server::Shared;
use crate::status::Transfer;
use crate::watch::{Wait, Watch};
use crate::{nc, status, web};

/// Which protocol a connection speaks.
pub(crate) enum Proto {
    /// Not decided yet: too few bytes.
    Unknown,
    /// The seed's line protocol.
    Line(LineFramer),
    /// HTTP/1.1 (and 1.0).
    Http,
    /// The last reply is sent and our side shut down: read and discard until
    /// the client closes too (or the header timeout), so that closing with
    /// unread input cannot reset the connection under the reply (nginx's
    /// lingering close).
    Lingering,
    /// A connection to the metrics listener (HTTP, its own router).
    Admin,
}

/// What a protocol handler decides to do next.
pub(crate) enum Step {
    /// More input is needed.
    Recv,
    /// Send these pieces in order; then go on, or close if `close`.
    Reply {
        pieces: VecDeque<Piece>,
        close: bool,
    },
    /// Answered without I/O: look at the input again.
    Again,
    /// Close the connection now.
    Close,
}

/// One operation's worth of a reply.
pub(crate) enum Piece {
    /// Bytes from memory (an error line, a response head, a listing).
    Bytes(Vec<u8>),
    /// `head`, then `len` bytes of the connection's current file from
    /// `offset`, then `tail`, zero-copy.
    File {
        head: Vec<u8>,
        offset: u64,
        len: u64,
        tail: Vec<u8>,
    },
}

/// A request being answered, for the access log.
pub(crate) struct Req {
    /// The request as logged: the name, or the request line.
    pub(crate) request: Vec<u8>,
    pub(crate) status: u16,
    pub(crate) start: Instant,
    /// Bytes sent so far.
    pub(crate) bytes: u64,
    /// Bytes of the response head among them (HTTP): the log counts the body,
    /// as CLF's `%b` does.
    pub(crate) head: u64,
    /// HTTP `Referer` and `User-Agent`, for the combined and JSON formats.
    pub(crate) referer: Option<Vec<u8>>,
    pub(crate) agent: Option<Vec<u8>>,
}

pub(crate) struct Conn {
    pub(crate) handle: Handle,
    pub(crate) peer: Option<SocketAddr>,
    /// Received bytes not yet consumed.
    pub(crate) inbuf: Vec<u8>,
    /// The client has half-closed.
    pub(crate) eof: bool,
    /// Whether a request was answered yet (a new connection waits under the
    /// header timeout, a served one under the idle timeout).
    pub(crate) served: bool,
    pub(crate) proto: Proto,
    pub(crate) shared: Arc<Shared>,
    watch: Arc<Watch>,
    pub(crate) port: Port,
    /// The file that `Piece::File` pieces read from.
    pub(crate) file: Option<Arc<File>>,
    /// The rest of the reply in flight.
    pending: VecDeque<Piece>,
    /// Close once the reply in flight is done.
    close_after: bool,
    pub(crate) req: Option<Req>,
    /// The reply in flight is paced (`--rate-limit`).
    pace: Option<Pace>,
    /// The file reply in flight, as the status page shows it.
    transfer: Option<Arc<Transfer>>,
    /// The client address counted in `--max-conns-per-ip`.
    pub(crate) per_ip: Option<IpAddr>,
    /// Over `--max-conns-per-ip`: answer the first request `busy` and close.
    pub(crate) over_limit: bool,
}

impl Conn {
    pub(crate) fn new(
        port: &Port,
        handle: Handle,
        peer: Option<SocketAddr>,
        watch: Arc<Watch>,
        shared: Arc<Shared>,
    ) -> Box<Conn> {
        Box::new(Conn {
            handle,
            peer,
            inbuf: Vec::new(),
            eof: false,
            served: false,
            proto: Proto::Unknown,
            shared,
            watch,
            port: port.clone(),
            file: None,
            pending: VecDeque::new(),
            close_after: false,
            req: None,
            pace: None,
            transfer: None,
            per_ip: None,
            over_limit: false,
        })
    }

    /// Makes this a connection to the metrics listener.
    pub(crate) fn make_admin(&mut self) {
        self.proto = Proto::Admin;
    }

    /// A file reply of `size` body bytes starts: registers it for the status
    /// page (only with a metrics listener).
    pub(crate) fn transfer_begin(&mut self, name: &[u8], size: u64) {
        if let Some(t) = &self.shared.transfers {
            let key = self.handle.key();
            self.transfer = Some(t.begin(key, self.peer, name, size, &self.watch));
        }
    }

    /// [`transfer_begin`](Conn::transfer_begin) for a reply whose body is its
    /// file pieces.
    pub(crate) fn transfer_pieces(&mut self, name: &[u8], pieces: &[Piece]) {
        if self.shared.transfers.is_some() {
            let size = pieces
                .iter()
                .map(|p| match p {
                    Piece::File { len, .. } => *len,
                    Piece::Bytes(_) => 0,
                })
                .sum();
            if size > 0 {
                self.transfer_begin(name, size);
            }
        }
    }

    fn transfer_end(&mut self) {
        if self.transfer.take().is_some() {
            if let Some(t) = &self.shared.transfers {
                t.end(self.handle.key());
            }
        }
    }

    /// Starts an access-log record for the request being answered.
    pub(crate) fn begin(&mut self, request: &[u8], status: u16) {
        // A request answered without I/O (an empty file) is logged here.
        self.log();
        self.served = true;
        let log = self.shared.access.enabled();
        if log || self.shared.metrics.is_some() {
            self.req = Some(Req {
                request: if log { request.to_vec() } else { Vec::new() },
                status,
                start: Instant::now(),
                bytes: 0,
                head: 0,
                referer: None,
                agent: None,
            });
        }
    }

    /// Writes the access-log line of the request just answered.
    fn log(&mut self) {
        if let Some(req) = self.req.take() {
            let http = matches!(self.proto, Proto::Http | Proto::Lingering);
            if let Some(m) = &self.shared.metrics {
                m.request(http, req.status, req.bytes, req.start.elapsed());
            }
            if !self.shared.access.enabled() {
                return;
            }
            self.shared.access.log(&Entry {
                peer: self.peer,
                request: &req.request,
                status: req.status,
                bytes: req.bytes.saturating_sub(req.head),
                http,
                referer: req.referer.as_deref(),
                agent: req.agent.as_deref(),
                duration: req.start.elapsed(),
            });
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.log();
        self.transfer_end();
        if let (Some(ip), Some(t)) = (self.per_ip, &self.shared.per_ip) {
            t.release(ip);
        }
        if matches!(self.proto, Proto::Admin) {
            self.shared.admin_active.fetch_sub(1, Ordering::Relaxed);
        }
        debug!(conn = self.handle.key(), peer = ?self.peer, "closed");
        self.shared
            .closed(&self.port, self.handle.key(), &self.watch);
    }
}

/// Starts a fresh connection: its first receive.
pub(crate) fn start(port: &Port, conn: Box<Conn>) {
    drive(port, conn);
}

/// Handles a packet of a connection's operation.
pub(crate) fn complete(port: &Port, mut packet: Packet) {
    let Some(ctx) = packet.op.take_ctx() else {
        return;
    };
    let Ok(mut conn) = ctx.downcast::<Conn>() else {
        return;
    };
    if let Some(req) = conn.req.as_mut() {
        if !matches!(packet.op, Op::Recv(_)) {
            req.bytes += packet.bytes;
        }
    }
    if let Some(t) = &conn.transfer {
        t.add(packet.bytes);
    }
    if let Err(e) = &packet.status {
        debug!(conn = packet.key, peer = ?conn.peer, "connection ends: {e}");
        if let Some(m) = &conn.shared.metrics {
            if e.raw_os_error() != Some(libc::ECANCELED) {
                m.error(ErrorKind::Io, 1);
            }
        }
        return;
    }
    match packet.op {
        Op::Recv(r) => {
            conn.inbuf = r.buf;
            if packet.bytes == 0 {
                conn.eof = true;
            }
        }
        Op::TransmitFile(t) => conn.file = t.file,
        // A paced reply's wait is over.
        Op::Send(_) | Op::Timeout(_) => {}
        _ => return,
    }
    if !conn.pending.is_empty() {
        // The reply goes on: its next piece.
        submit_piece(port, conn);
        return;
    }
    conn.log();
    conn.file = None;
    if conn.pace.is_some() || conn.transfer.is_some() {
        conn.pace = None;
        conn.transfer_end();
    }
    if conn.shared.draining.load(Ordering::Relaxed) {
        // Shutting down: this reply was the last.
        return;
    }
    if conn.close_after {
        if !matches!(conn.proto, Proto::Http) || conn.eof {
            return;
        }
        let _ = conn.handle.shutdown(std::net::Shutdown::Write);
        conn.proto = Proto::Lingering;
        conn.close_after = false;
    }
    drive(port, conn);
}

/// Runs the protocol until the connection has an operation in flight or is done.
fn drive(port: &Port, mut conn: Box<Conn>) {
    loop {
        let step = match conn.proto {
            Proto::Unknown => {
                conn.proto = match detect(&conn.inbuf) {
                    Detected::Http => Proto::Http,
                    Detected::Line => Proto::Line(LineFramer::new()),
                    // Too few bytes to tell; at the client's half-close they are
                    // a line-protocol name.
                    Detected::NeedMore if conn.eof => Proto::Line(LineFramer::new()),
                    Detected::NeedMore => {
                        drive_recv(port, conn);
                        return;
                    }
                };
                continue;
            }
            Proto::Line(_) => nc::step(&mut conn),
            Proto::Http => web::step(&mut conn),
            Proto::Admin => status::step(&mut conn),
            Proto::Lingering => {
                conn.inbuf.clear();
                Step::Recv
            }
        };
        match step {
            Step::Again => continue,
            Step::Close => return,
            Step::Recv => {
                if conn.eof || conn.shared.draining.load(Ordering::Relaxed) {
                    return;
                }
                let wait = if conn.inbuf.is_empty() && conn.served {
                    Wait::Idle
                } else {
                    Wait::Header
                };
                let mut buf = std::mem::take(&mut conn.inbuf);
                if buf.is_empty() {
                    // Between requests the connection keeps no memory: the pooled
                    // receive takes a buffer from the worker's pool only when bytes
                    // arrive.
                    buf = Vec::new();
                }
                let op = Op::Recv(Recv::pooled(&conn.handle, buf));
                submit(port, conn, op, wait);
                return;
            }
            Step::Reply { pieces, close } => {
                // The head's length, for the access log and the status page
                // (they count body bytes); not looked for when neither is on.
                if matches!(conn.proto, Proto::Http)
                    && (conn.req.is_some() || conn.transfer.is_some())
                {
                    let first = match pieces.front() {
                        Some(Piece::Bytes(b)) => b.as_slice(),
                        Some(Piece::File { head, .. }) => head.as_slice(),
                        None => &[],
                    };
                    let head = first
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(0, |p| p + 4);
                    if let Some(req) = conn.req.as_mut() {
                        req.head = head as u64;
                    }
                    if let Some(t) = &conn.transfer {
                        t.set_head(head as u64);
                    }
                }
                if conn.shared.rate.is_some() && !matches!(conn.proto, Proto::Admin) {
                    conn.pace = Some(Pace::new());
                }
                conn.pending = pieces;
                conn.close_after = close;
                submit_piece(port, conn);
                return;
            }
        }
    }
}

/// Receives more input (or closes, at end of input or when draining).
fn drive_recv(port: &Port, mut conn: Box<Conn>) {
    if conn.eof || conn.shared.draining.load(Ordering::Relaxed) {
        return;
    }
    let wait = if matches!(conn.proto, Proto::Lingering) || !conn.inbuf.is_empty() || !conn.served {
        Wait::Header
    } else {
        Wait::Idle
    };
    let mut buf = std::mem::take(&mut conn.inbuf);
    if buf.is_empty() {
        // Between requests the connection keeps no memory: the pooled receive
        // takes a buffer from the worker's pool only when bytes arrive.
        buf = Vec::new();
    }
    let op = Op::Recv(Recv::pooled(&conn.handle, buf));
    submit(port, conn, op, wait);
}

/// Sends the next piece of the reply in flight.
fn submit_piece(port: &Port, mut conn: Box<Conn>) {
    if let (Some(rate), Some(pace)) = (conn.shared.rate, conn.pace.as_mut()) {
        // Cuts the next piece to the allowance, or waits for it on a timer.
        if let Some(wait) = rate.shape(pace, &mut conn.pending) {
            let op = Op::Timeout(Timeout::new(wait, conn.handle.key()));
            submit(port, conn, op, Wait::Paced);
            return;
        }
    }
    let op = match conn.pending.pop_front() {
        None => return,
        Some(Piece::Bytes(b)) => Op::Send(Send::new(&conn.handle, b)),
        Some(Piece::File {
            head,
            offset,
            len,
            tail,
        }) => {
            // A piece with no file bytes sends only its head and tail, and leaves
            // the file for the pieces after it.
            let file = if len > 0 { conn.file.take() } else { None };
            if file.is_none() && len > 0 {
                debug!(
                    conn = conn.handle.key(),
                    "a file piece without a file: closing"
                );
                return;
            }
            Op::TransmitFile(TransmitFile {
                socket: conn.handle.clone(),
                file,
                offset,
                len,
                head,
                tail,
                disconnect: false,
                ctx: None,
                completion: Default::default(),
            })
        }
    };
    submit(port, conn, op, Wait::Sending);
}

fn submit(port: &Port, conn: Box<Conn>, mut op: Op, wait: Wait) {
    conn.shared.registry.set(&conn.watch, wait);
    let (shared, watch) = (conn.shared.clone(), conn.watch.clone());
    set_ctx(&mut op, conn);
    match port.submit(op) {
        Ok(id) => shared.registry.op(&watch, id),
        Err((e, mut op)) => {
            debug!("submit failed: {e}");
            // The op (and the connection inside it) is dropped: the socket closes.
            drop(op.take_ctx());
        }
    }
}

fn set_ctx(op: &mut Op, conn: Box<Conn>) {
    match op {
        Op::Recv(o) => o.ctx = Some(conn),
        Op::Send(o) => o.ctx = Some(conn),
        Op::TransmitFile(o) => o.ctx = Some(conn),
        Op::Timeout(o) => o.ctx = Some(conn),
        _ => {}
    }
}
