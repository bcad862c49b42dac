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

pub(crate) mod gate;
pub(crate) mod ktls;
pub(crate) mod limit;
pub(crate) mod tls;
pub(crate) mod watch;

use std::collections::VecDeque;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use iocomp::{Handle, Op, OpId, Packet, Port, Recv, Send, Timeout, TransmitFile};
use tracing::{debug, info};

use crate::config::Settings;
use crate::fs::Root;
use crate::http::detect::{detect, Proto as Detected};
use crate::obs::access::Entry;
use crate::obs::metrics::ErrorKind;
use crate::obs::transfers::{Sending, Transfer};
use crate::obs::Obs;
use crate::proto::line::Line;
use crate::proto::{self, Connection, Connections, Piece, Site, Slots, Step};
use gate::Gate;
use limit::{Pace, PerIp};
use tls::{Refused, Tls};
use watch::{Registry, Wait, Watch};

/// What every connection of a server shares: the immutable settings, the
/// path policy, the observability state, and the driver's live state.
pub(crate) struct Shared {
    /// Immutable.
    pub(crate) settings: Settings,
    /// The path policy and its open-file cache.
    pub(crate) root: Root,
    /// Access log, counters, transfers.
    pub(crate) obs: Obs,
    /// The driver's live state.
    pub(crate) live: Live,
}

/// The driver's live state: admission, timeouts, per-address counts, TLS
/// certificates.
pub(crate) struct Live {
    /// Listeners, connection slots, drain.
    pub(crate) gate: Gate,
    /// What every connection waits for, swept for timeouts.
    pub(crate) registry: Registry,
    /// Connections per client address (`--max-conns-per-ip`).
    pub(crate) per_ip: Option<PerIp>,
    /// Directory listings in progress.
    pub(crate) listings: Slots,
    /// The TLS listeners' certificates (replaced on reload), if any.
    pub(crate) certs: Option<Arc<tls::Certs>>,
}

/// Which protocol a connection speaks.
enum Proto {
    /// Not decided yet: too few bytes.
    Unknown,
    /// The seed's line protocol.
    Line(Line),
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

/// Request records kept per worker: at most this many, each whose request
/// line is at most [`SPARE_REQ_LINE`] bytes (a longer one is freed).
const SPARE_REQS: usize = 16;
const SPARE_REQ_LINE: usize = 8192;

thread_local! {
    // The allocations themselves are what is kept.
    #[allow(clippy::vec_box)]
    static SPARE_REQ: std::cell::RefCell<Vec<Box<Req>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A request record from the worker's spares: with an access log or metrics,
/// a request allocates no record (an idle connection keeps none).
fn spare_req() -> Option<Box<Req>> {
    SPARE_REQ
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten()
}

/// Gives a finished request's record back to the worker's spares.
fn recycle_req(mut req: Box<Req>) {
    if req.request.capacity() > SPARE_REQ_LINE {
        return;
    }
    (req.referer, req.agent) = (None, None);
    // Not during thread teardown (the list may be gone): then it is freed.
    let _ = SPARE_REQ.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.len() < SPARE_REQS {
                s.push(req);
            }
        }
    });
}

/// A request being answered, for the access log.
struct Req {
    /// The request as logged: the name, or the request line.
    request: Vec<u8>,
    status: u16,
    start: Instant,
    /// Bytes sent so far.
    bytes: u64,
    /// Bytes of the response head among them (HTTP): the log counts the body,
    /// as CLF's `%b` does.
    head: u64,
    /// HTTP `Referer` and `User-Agent`, for the combined and JSON formats.
    referer: Option<Vec<u8>>,
    agent: Option<Vec<u8>>,
}

/// A connection: its protocol state and everything else, apart, so that a
/// handler can hold its own state and the connection at once.
pub(crate) struct Conn {
    proto: Proto,
    io: Io,
}

/// A connection's socket, buffers, reply in flight and records: what the
/// driver owns, and what handlers reach through [`Connection`].
struct Io {
    handle: Handle,
    peer: Peer,
    /// Received bytes not yet consumed.
    inbuf: Vec<u8>,
    /// The client has half-closed.
    eof: bool,
    /// Whether a request was answered yet (a new connection waits under the
    /// header timeout, a served one under the idle timeout).
    served: bool,
    /// The connection speaks HTTP (its requests are logged as such).
    http: bool,
    /// A connection to the metrics listener.
    admin: bool,
    shared: Arc<Shared>,
    watch: Arc<Watch>,
    port: Port,
    /// The file that `Piece::File` pieces read from.
    file: Option<Arc<File>>,
    /// The rest of the reply in flight.
    pending: VecDeque<Piece>,
    /// Close once the reply in flight is done.
    close_after: bool,
    /// Boxed, and only with an access log or metrics: an idle connection
    /// holds none (issue 18; the box comes from the worker's spares, see
    /// [`Io::log`]).
    req: Option<Box<Req>>,
    /// The reply in flight is paced (`--rate-limit`; boxed: rare, and an idle
    /// connection holds none).
    pace: Option<Box<Pace>>,
    /// The file reply in flight, as the status page shows it.
    transfer: Option<Arc<Transfer>>,
    /// The client address (`peer`'s) is counted in `--max-conns-per-ip`.
    per_ip: bool,
    /// Over `--max-conns-per-ip`: answer the first request `busy` and close.
    over_limit: bool,
    /// The TLS session, on a TLS listener: `inbuf` then holds plaintext and
    /// replies are encrypted before they are sent.
    tls: Option<Box<Tls>>,
    /// On TLS, the last receive brought ciphertext but no plaintext (a
    /// partial record, or records without data): the client has started
    /// something, so it waits under the header timeout, counted from then, as
    /// a partial line does; receiving more of it restarts nothing.
    cipher_only: bool,
    /// The TLS session went to kernel TLS after its handshake (`tls` is
    /// then `None`): the connection runs as a plain one, the kernel
    /// encrypting and decrypting.
    ktls: bool,
    /// On kernel TLS: the records sent (estimated) and our `close_notify`.
    kbudget: ktls::Budget,
}

impl Conn {
    /// A new connection on `handle`; `admin`: to the metrics listener;
    /// `per_ip`: the address it is counted under, if any; `over_limit`: its
    /// address has too many connections already.
    pub(crate) fn new(
        port: &Port,
        handle: Handle,
        peer: Option<SocketAddr>,
        watch: Arc<Watch>,
        shared: Arc<Shared>,
        admin: bool,
    ) -> Box<Conn> {
        Box::new(Conn {
            proto: if admin { Proto::Admin } else { Proto::Unknown },
            io: Io {
                handle,
                peer: Peer::new(peer),
                inbuf: Vec::new(),
                eof: false,
                served: false,
                http: false,
                admin,
                shared,
                watch,
                port: port.clone(),
                file: None,
                pending: VecDeque::new(),
                close_after: false,
                req: None,
                pace: None,
                transfer: None,
                per_ip: false,
                over_limit: false,
                tls: None,
                cipher_only: false,
                ktls: false,
                kbudget: ktls::Budget::default(),
            },
        })
    }

    /// Counts the connection under `ip` for `--max-conns-per-ip` (released
    /// when it closes).
    pub(crate) fn count_per_ip(&mut self, ip: IpAddr) {
        // The address counted is the peer's (the accept's), so only that it
        // is counted needs keeping.
        debug_assert_eq!(self.io.peer().map(|p| p.ip()), Some(ip));
        self.io.per_ip = self.io.peer().is_some();
    }

    /// The connection speaks TLS under `config` (a connection to a TLS
    /// listener, before its first receive).
    pub(crate) fn start_tls(
        &mut self,
        config: &Arc<rustls::ServerConfig>,
    ) -> Result<(), rustls::Error> {
        self.io.tls = Some(Box::new(Tls::new(config)?));
        Ok(())
    }

    /// The connection's address is over `--max-conns-per-ip`.
    pub(crate) fn refuse_over_limit(&mut self) {
        self.io.over_limit = true;
    }
}

/// A client's address in 24 bytes (a `SocketAddr` takes 32): a v6
/// address's flow label, which nothing shows (`SocketAddrV6`'s `Display`
/// and `Debug` print address, scope id and port), is not kept (issue 18:
/// every byte of a connection's state counts 10,000 times).
#[derive(Clone, Copy)]
struct Peer {
    ip: [u8; 16],
    scope: u32,
    port: u16,
    /// 0: no address, 4 or 6.
    family: u8,
}

impl Peer {
    fn new(addr: Option<SocketAddr>) -> Peer {
        let mut p = Peer {
            ip: [0; 16],
            scope: 0,
            port: 0,
            family: 0,
        };
        match addr {
            Some(SocketAddr::V4(a)) => {
                p.ip[..4].copy_from_slice(&a.ip().octets());
                (p.port, p.family) = (a.port(), 4);
            }
            Some(SocketAddr::V6(a)) => {
                p.ip = a.ip().octets();
                (p.scope, p.port, p.family) = (a.scope_id(), a.port(), 6);
            }
            None => {}
        }
        p
    }

    fn get(&self) -> Option<SocketAddr> {
        match self.family {
            4 => {
                let ip = [self.ip[0], self.ip[1], self.ip[2], self.ip[3]];
                Some(SocketAddr::from((ip, self.port)))
            }
            6 => Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                self.ip.into(),
                self.port,
                0,
                self.scope,
            ))),
            _ => None,
        }
    }
}

impl Io {
    /// The client's address.
    fn peer(&self) -> Option<SocketAddr> {
        self.peer.get()
    }

    /// A file reply of `size` body bytes starts: registers it for the status
    /// page (only with a metrics listener).
    fn transfer_begin(&mut self, name: &[u8], size: u64) {
        if let Some(t) = &self.shared.obs.transfers {
            let key = self.handle.key();
            let conn: Arc<dyn Sending> = self.watch.clone();
            self.transfer = Some(t.begin(key, self.peer(), name, size, conn));
        }
    }

    /// [`transfer_begin`](Io::transfer_begin) for a reply whose body is its
    /// file pieces.
    fn transfer_pieces(&mut self, name: &[u8], pieces: &VecDeque<Piece>) {
        if self.shared.obs.transfers.is_some() {
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
            if let Some(t) = &self.shared.obs.transfers {
                t.end(self.handle.key());
            }
        }
    }

    /// Writes the access-log line of the request just answered; its record
    /// goes back to the worker's spares.
    fn log(&mut self) {
        if let Some(req) = self.req.take() {
            self.log_req(&req);
            recycle_req(req);
        }
    }

    fn log_req(&self, req: &Req) {
        let http = self.http;
        if let Some(m) = &self.shared.obs.metrics {
            m.request(http, req.status, req.bytes, req.start.elapsed());
        }
        if !self.shared.obs.access.enabled() {
            return;
        }
        self.shared.obs.access.log(&Entry {
            peer: self.peer(),
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

impl Connection for Io {
    fn input(&mut self) -> &mut Vec<u8> {
        &mut self.inbuf
    }

    fn eof(&self) -> bool {
        self.eof
    }

    fn key(&self) -> u64 {
        self.handle.key()
    }

    fn over_limit(&self) -> bool {
        self.over_limit
    }

    fn draining(&self) -> bool {
        // A kernel TLS connection near its record budget ends like a
        // draining one: its reply says `Connection: close`.
        self.shared.live.gate.draining() || self.kbudget.spent()
    }

    fn secure(&self) -> bool {
        self.tls.is_some() || self.ktls
    }

    fn site(&self) -> Site<'_> {
        Site {
            settings: &self.shared.settings,
            root: &self.shared.root,
            obs: &self.shared.obs,
            port: &self.port,
            listings: &self.shared.live.listings,
        }
    }

    fn connections(&self) -> Connections {
        Connections {
            clients: self.shared.live.gate.clients(),
            admin: self.shared.live.gate.admins(),
        }
    }

    fn begin(&mut self, request: &[u8], status: u16) {
        // A request answered without I/O (an empty file) is logged here.
        self.log();
        self.served = true;
        let log = self.shared.obs.access.enabled();
        if log || self.shared.obs.metrics.is_some() {
            let start = Instant::now();
            // A spare comes back from `recycle_req` without `referer` and
            // `agent`; everything else is set here.
            let mut req = spare_req().unwrap_or_else(|| {
                Box::new(Req {
                    request: Vec::new(),
                    status,
                    start,
                    bytes: 0,
                    head: 0,
                    referer: None,
                    agent: None,
                })
            });
            req.request.clear();
            if log {
                req.request.extend_from_slice(request);
            }
            req.status = status;
            req.start = start;
            (req.bytes, req.head) = (0, 0);
            self.req = Some(req);
        }
    }

    fn set_status(&mut self, status: u16) {
        if let Some(req) = self.req.as_mut() {
            req.status = status;
        }
    }

    fn set_client(&mut self, referer: Option<&[u8]>, agent: Option<&[u8]>) {
        if self.shared.obs.access.enabled() {
            if let Some(r) = self.req.as_mut() {
                r.referer = referer.map(<[u8]>::to_vec);
                r.agent = agent.map(<[u8]>::to_vec);
            }
        }
    }

    fn mark_served(&mut self) {
        self.served = true;
    }
}

impl Sending for Watch {
    fn sending(&self) -> Option<OpId> {
        let op = self.op_id();
        (self.state() == Wait::Sending && op != 0).then(|| OpId::from_u64(op))
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.log();
        self.transfer_end();
        if let (true, Some(peer), Some(t)) = (self.per_ip, self.peer(), &self.shared.live.per_ip) {
            t.release(peer.ip());
        }
        debug!(conn = self.handle.key(), peer = ?self.peer(), "closed");
        let live = &self.shared.live;
        live.registry.remove(&self.watch, self.handle.key());
        if self.over_limit {
            live.gate.closed_refused();
        } else {
            live.gate.closed(&self.port, self.admin);
        }
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
    let io = &mut conn.io;
    // On TLS, the plaintext that the completed send carried (the log and the
    // status page count what the handler sent, as on a plain connection).
    let sent = match (&mut io.tls, &mut packet.op) {
        (Some(tls), Op::Send(s)) => tls.sent(std::mem::take(&mut s.buf)),
        (_, Op::Recv(_)) => 0,
        _ => packet.bytes,
    };
    if let Some(req) = io.req.as_mut() {
        req.bytes += sent;
    }
    if let Some(t) = &io.transfer {
        t.add(sent);
    }
    if io.ktls && packet.status.is_ok() && matches!(packet.op, Op::Send(_) | Op::TransmitFile(_)) {
        io.kbudget.sent(packet.bytes);
    }
    if let Err(e) = &packet.status {
        debug!(conn = packet.key, peer = ?io.peer(), "connection ends: {e}");
        let cancelled = e.raw_os_error() == Some(libc::ECANCELED);
        // On kernel TLS a record that is not data (an alert, the client's
        // close_notify) fails the receive with EIO: counted, an error.
        if matches!(packet.op, Op::Recv(_)) {
            ktls::recv_eio(io, e);
        }
        if let Some(m) = &io.shared.obs.metrics {
            if !cancelled {
                m.error(ErrorKind::Io, 1);
            }
        }
        // A receive cut by a timeout or the drain: on TLS, the session ends
        // with our `close_notify`, as nginx ends a keep-alive connection.
        if cancelled && matches!(packet.op, Op::Recv(_)) {
            close(port, conn);
        }
        return;
    }
    match packet.op {
        Op::Recv(r) if io.tls.is_some() => {
            if packet.bytes == 0 {
                io.eof = true;
            } else if let Some(tls) = io.tls.as_mut() {
                let handshaking = tls.handshaking();
                let before = io.inbuf.len();
                let absorbed = tls.absorb(&r.buf, &mut io.inbuf);
                io.cipher_only = io.inbuf.len() == before;
                if let Some(m) = &io.shared.obs.metrics {
                    match &absorbed {
                        Ok(a) if a.handshake_done => m.handshake(true),
                        Err(_) if handshaking => m.handshake(false),
                        _ => {}
                    }
                }
                match absorbed {
                    Ok(a) => io.eof |= a.closed,
                    Err(Refused::PlainHttp) => {
                        let got = tls.sniffed().to_vec();
                        plain_http_on_tls(port, conn, &got);
                        return;
                    }
                    Err(Refused::Bad(why)) => {
                        debug!(conn = packet.key, peer = ?io.peer(), "TLS: {why}: closing");
                        if let Some(m) = &io.shared.obs.metrics {
                            m.error(ErrorKind::Io, 1);
                        }
                        // The fatal alert rustls queued (RFC 8446 §6.2: it
                        // tells the client why), then close.
                        let alert = io
                            .tls
                            .as_mut()
                            .filter(|t| t.wants_write())
                            .map(|t| t.output());
                        if let Some(out) = alert {
                            io.pending.clear();
                            io.close_after = true;
                            io.eof = true;
                            let op = Op::Send(Send::new(&io.handle, out));
                            submit(port, conn, op, Wait::Sending);
                        }
                        return;
                    }
                }
            }
        }
        Op::Recv(r) => {
            io.inbuf = r.buf;
            if packet.bytes == 0 {
                io.eof = true;
            }
        }
        Op::TransmitFile(t) => io.file = t.file,
        // The buffer a plain send carried is the worker's to reuse (on TLS
        // it was taken above).
        Op::Send(s) => proto::recycle(s.buf),
        // A paced reply's wait is over.
        Op::Timeout(_) => {}
        _ => return,
    }
    if !io.pending.is_empty() {
        // The reply goes on: its next piece.
        submit_piece(port, conn);
        return;
    }
    io.log();
    // The reply's empty queue goes back to the worker now, not when the next reply starts: an idle keep-alive
    // connection must not hold it (256 B each, found by review).
    proto::recycle_pieces(std::mem::take(&mut io.pending));
    io.file = None;
    if io.pace.is_some() || io.transfer.is_some() {
        io.pace = None;
        io.transfer_end();
    }
    if io.ktls {
        // The kernel never refreshes keys: past the budget, this response
        // was the last. A reply that ends the connection ends with our
        // close_notify, before the shutdown or close below (the user-space
        // path put it in the last record).
        let end = ktls::reply_end(&io.kbudget, io.close_after);
        io.close_after = end.close;
        if end.budget {
            if let Some(m) = &io.shared.obs.metrics {
                m.ktls_event(ktls::Event::Budget);
            }
        }
        if end.notify {
            ktls::close_notify(io);
        }
    }
    if io.shared.live.gate.draining() {
        // Shutting down: this reply was the last.
        return;
    }
    if io.close_after {
        if !matches!(conn.proto, Proto::Http) || conn.io.eof {
            return;
        }
        let _ = conn.io.handle.shutdown(std::net::Shutdown::Write);
        conn.proto = Proto::Lingering;
        conn.io.close_after = false;
    }
    drive(port, conn);
}

/// Runs the protocol until the connection has an operation in flight or is done.
fn drive(port: &Port, mut conn: Box<Conn>) {
    loop {
        let Conn { proto, io } = &mut *conn;
        if let Some(tls) = io.tls.as_mut() {
            if tls.wants_write() {
                // Handshake messages, tickets: before anything else. The
                // handshake, and all until the first request, counts against
                // the header timeout (a send of ours restarts no clock).
                let wait = if tls.handshaking() || !io.served || io.cipher_only {
                    Wait::Header
                } else {
                    Wait::Sending
                };
                let op = Op::Send(Send::new(&io.handle, tls.output()));
                submit(port, conn, op, wait);
                return;
            }
            // The handshake is over and all of it sent: kernel TLS, if it
            // can take the session (decided once; see `ktls`).
            if tls.kernel_candidate() && !ktls::hand_off(io) {
                return;
            }
        }
        let step = match proto {
            Proto::Unknown
                if io.tls.is_none() && !io.ktls && io.inbuf.first() == Some(&tls::HANDSHAKE) =>
            {
                info!(peer = ?io.peer(), "a TLS handshake on a plain port: closing");
                return;
            }
            Proto::Unknown => {
                *proto = match detect(&io.inbuf) {
                    Detected::Http => Proto::Http,
                    Detected::Line => Proto::Line(Line::new()),
                    // Too few bytes to tell; at the client's half-close they are
                    // a line-protocol name.
                    Detected::NeedMore if io.eof => Proto::Line(Line::new()),
                    Detected::NeedMore => {
                        drive_recv(port, conn);
                        return;
                    }
                };
                io.http = matches!(proto, Proto::Http);
                continue;
            }
            Proto::Line(line) => line.step(io),
            Proto::Http => proto::http::step(io),
            Proto::Admin => proto::admin::step(io),
            Proto::Lingering => {
                io.inbuf.clear();
                Step::Recv
            }
        };
        match step {
            Step::Again => continue,
            Step::Close => {
                // On TLS, a `close_notify` first, so that the client can tell
                // the end from a cut (not while draining, on either path).
                if !io.shared.live.gate.draining() {
                    ktls::close_notify(io);
                }
                if let Some(tls) = io.tls.as_mut() {
                    if !io.shared.live.gate.draining() && tls.close_notify() {
                        io.close_after = true;
                        let op = Op::Send(Send::new(&io.handle, tls.output()));
                        submit(port, conn, op, Wait::Sending);
                    }
                }
                return;
            }
            Step::Recv => {
                if io.eof || io.shared.live.gate.draining() {
                    close(port, conn);
                    return;
                }
                let wait = if io.over_limit {
                    Wait::Refused
                } else if io.inbuf.is_empty()
                    && io.served
                    && !io.cipher_only
                    && !matches!(proto, Proto::Lingering)
                {
                    Wait::Idle
                } else {
                    Wait::Header
                };
                let op = recv_op(io);
                submit(port, conn, op, wait);
                return;
            }
            Step::Reply(reply) => {
                let pieces = reply.pieces;
                if let Some(file) = reply.file {
                    io.file = Some(file);
                }
                if let Some(name) = reply.name {
                    io.transfer_pieces(&name, &pieces);
                }
                let mut pieces = pieces;
                if let (Proto::Http, true, Some(hsts)) = (
                    &proto,
                    io.tls.is_some() || io.ktls,
                    &io.shared.settings.hsts,
                ) {
                    tls::add_header(&mut pieces, hsts);
                }
                // The head's length, for the access log and the status page
                // (they count body bytes); not looked for when neither is on.
                if matches!(proto, Proto::Http) && (io.req.is_some() || io.transfer.is_some()) {
                    let first = match pieces.front() {
                        Some(Piece::Bytes(b)) => b.as_slice(),
                        Some(Piece::File { head, .. }) => head.as_slice(),
                        None => &[],
                    };
                    let head = first
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(0, |p| p + 4);
                    if let Some(req) = io.req.as_mut() {
                        req.head = head as u64;
                    }
                    if let Some(t) = &io.transfer {
                        t.set_head(head as u64);
                    }
                }
                if let (Some(rate), false) =
                    (io.shared.settings.rate, matches!(proto, Proto::Admin))
                {
                    io.pace = Some(Box::new(Pace::new(rate)));
                }
                // (The finished reply's empty queue went back to the worker in `complete`, so an idle
                // connection holds none.)
                io.pending = pieces;
                io.close_after = reply.close;
                submit_piece(port, conn);
                return;
            }
        }
    }
}

/// Closes the connection: on TLS after a session whose handshake finished,
/// our `close_notify` goes out first (once), so that the client can tell the
/// end from a cut; then the connection closes.
fn close(port: &Port, mut conn: Box<Conn>) {
    let io = &mut conn.io;
    ktls::close_notify(io);
    let Some(tls) = io.tls.as_mut() else {
        return;
    };
    if !tls.close_notify() {
        return;
    }
    let out = tls.output();
    io.pending.clear();
    io.close_after = true;
    io.eof = true;
    let op = Op::Send(Send::new(&io.handle, out));
    submit(port, conn, op, Wait::Sending);
}

/// Receives more input (or closes, at end of input or when draining).
fn drive_recv(port: &Port, mut conn: Box<Conn>) {
    let lingering = matches!(conn.proto, Proto::Lingering);
    let io = &mut conn.io;
    if io.eof || io.shared.live.gate.draining() {
        close(port, conn);
        return;
    }
    let wait = if io.over_limit {
        Wait::Refused
    } else if lingering || !io.inbuf.is_empty() || !io.served || io.cipher_only {
        Wait::Header
    } else {
        Wait::Idle
    };
    let op = recv_op(io);
    submit(port, conn, op, wait);
}

/// The next receive: into the input (plaintext) on a plain connection, into a
/// fresh buffer (ciphertext, fed to the session when it completes) on TLS.
fn recv_op(io: &mut Io) -> Op {
    // Between requests the connection keeps no memory: a pooled receive
    // waits holding none (the engine keeps the drained input buffer with the
    // worker and hands it to the next receive that gets bytes).
    let buf = if io.tls.is_some() {
        Vec::new()
    } else {
        std::mem::take(&mut io.inbuf)
    };
    Op::Recv(Recv::pooled(&io.handle, buf))
}

/// Plain HTTP on a TLS port: nginx's `400` in plain text, then close.
fn plain_http_on_tls(port: &Port, mut conn: Box<Conn>, received: &[u8]) {
    let io = &mut conn.io;
    io.tls = None;
    io.http = true;
    let line_end = received
        .iter()
        .take(8192)
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(received.len().min(8192));
    io.begin(&received[..line_end], 400);
    let reply = tls::plain_http_reply();
    if let Some(req) = io.req.as_mut() {
        req.head = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p as u64 + 4);
    }
    io.pending = VecDeque::from([Piece::Bytes(reply)]);
    io.close_after = true;
    conn.proto = Proto::Http;
    submit_piece(port, conn);
}

/// Sends the next piece of the reply in flight.
fn submit_piece(port: &Port, mut conn: Box<Conn>) {
    let io = &mut conn.io;
    if let Some(pace) = io.pace.as_mut() {
        // Cuts the next piece to the allowance, or waits for it on a timer.
        // On TLS a send carries at most one chunk of file bytes: the piece is
        // cut to it, so that the allowance counts what is sent, once.
        let max = if io.tls.is_some() {
            tls::CHUNK as u64
        } else {
            u64::MAX
        };
        if let Some(wait) = pace.shape(&mut io.pending, max) {
            let op = Op::Timeout(Timeout::new(wait, io.handle.key()));
            submit(port, conn, op, Wait::Paced);
            return;
        }
    }
    if let Some(tls) = io.tls.as_mut() {
        if io.pending.is_empty() {
            return;
        }
        let last = io.close_after;
        match tls.encrypt_next(port, &mut io.pending, io.file.as_deref(), last) {
            Ok(out) => {
                let op = Op::Send(Send::new(&io.handle, out));
                submit(port, conn, op, Wait::Sending);
            }
            Err(e) => debug!(conn = io.handle.key(), "TLS: {e}: closing"),
        }
        return;
    }
    let op = match io.pending.pop_front() {
        None => return,
        Some(Piece::Bytes(b)) => Op::Send(Send::new(&io.handle, b)),
        Some(Piece::File {
            head,
            offset,
            len,
            tail,
        }) => {
            // A piece with no file bytes sends only its head and tail, and leaves
            // the file for the pieces after it.
            let file = if len > 0 { io.file.take() } else { None };
            if file.is_none() && len > 0 {
                debug!(
                    conn = io.handle.key(),
                    "a file piece without a file: closing"
                );
                return;
            }
            let mut t = TransmitFile::buffers(&io.handle, head, tail);
            (t.file, t.offset, t.len) = (file, offset, len);
            t.into()
        }
    };
    submit(port, conn, op, Wait::Sending);
}

fn submit(port: &Port, conn: Box<Conn>, mut op: Op, wait: Wait) {
    let (shared, watch) = (conn.io.shared.clone(), conn.io.watch.clone());
    shared.live.registry.set(&watch, wait);
    set_ctx(&mut op, conn);
    match port.submit(op) {
        Ok(id) => shared.live.registry.op(&watch, id),
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

#[cfg(test)]
mod tests {
    use super::Peer;
    use std::net::SocketAddr;

    /// The compact address gives back what the log and the status page show
    /// of the accepted one: v4, v6 with its scope id (RFC 4007's zone, which
    /// `Display` prints as `%N`), the port; the flow label is not shown and
    /// not kept.
    #[test]
    fn peer_keeps_what_the_address_shows() {
        for text in [
            "127.0.0.2:8182",
            "[::1]:443",
            "[fe80::1%3]:65535",
            "0.0.0.0:0",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let back = Peer::new(Some(addr)).get().unwrap();
            assert_eq!(back, addr);
            assert_eq!(back.to_string(), text);
        }
        let v6 = std::net::SocketAddrV6::new("2001:db8::7".parse().unwrap(), 80, 0x12345, 0);
        let back = Peer::new(Some(SocketAddr::V6(v6))).get().unwrap();
        assert_eq!(back.to_string(), "[2001:db8::7]:80");
        assert!(Peer::new(None).get().is_none());
    }
}
