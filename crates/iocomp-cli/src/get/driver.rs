//! The transport of `iocomp get`, on the engine: one thread drives every
//! connection of every download through one [`Port`]. Each connection has
//! exactly one operation in flight — `Connect`, `Send`, `Recv`, or a
//! `Timeout` that paces `--limit-rate` — and its completion key is its slot.
//! The connect timeout and the stall timeout are deadlines: the thread waits
//! on the port no longer than the nearest one, and cancels the operation of a
//! connection whose deadline passed (its packet then says `ECANCELED`, and the
//! connection fails with "timed out"). Body bytes are written with `pwrite`
//! from this thread: into the page cache, that is faster than a hand-off.
//!
//! `https://`: a rustls [`ClientConnection`] sits between the socket
//! operations and the HTTP code. Every receive of a TLS connection first
//! sends what rustls wants sent (its handshake messages, then the request it
//! holds until the handshake is done), then receives ciphertext, which
//! [`tls::feed`] turns into the plaintext the HTTP code reads as before.
//! Through `https_proxy` the connection first sends `CONNECT host:port` and
//! reads the proxy's answer (phase `Tunnel`); TLS starts only after a 2xx,
//! so the proxy sees nothing but the tunnel's target.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection};

use iocomp::{Connect, GetError, Handle, Op, OpId, Packet, Port, Recv, Send, Timeout};

use super::body::{short, Decode, Framing};
use super::job::{Job, Next, Role, Spec};
use super::{tls, Limiter, Opts, CHUNK, MAX_REDIRECTS};
use crate::client::{self, net, Fail};
use crate::target::Target;

/// Where a connection is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Send,
    Head,
    Body,
    /// Waiting for `--limit-rate`.
    Pause,
    /// `CONNECT` sent to the proxy; its answer is awaited.
    Tunnel,
}

/// One connection.
struct Conn {
    job: usize,
    role: Role,
    target: Target,
    extra: Vec<(&'static str, String)>,
    redirects: usize,
    addrs: Vec<SocketAddr>,
    next_addr: usize,
    /// Why the last address failed.
    last_error: String,
    request: Vec<u8>,
    handle: Option<Handle>,
    op: Option<OpId>,
    deadline: Option<Instant>,
    /// The deadline passed and the operation was cancelled.
    expired: bool,
    phase: Phase,
    buf: Vec<u8>,
    chunk: usize,
    framing: Framing,
    decode: Decode,
    /// Where the next body byte goes.
    at: u64,
    /// Where the body must end (a range: exactly its bytes, whatever the framing).
    end: Option<u64>,
    /// Interim (1xx) answers skipped so far.
    interim: u8,
    limiter: Limiter,
    /// `https://`: the TLS session, once the TCP connection (and tunnel) is up.
    tls: Option<Box<ClientConnection>>,
    /// `https://` through a proxy: `CONNECT` first.
    tunnel: bool,
    /// The TLS handshake's one deadline (receives do not reset it).
    handshake_until: Option<Instant>,
    /// The deadline in force is the handshake's.
    handshake_deadline: bool,
    /// rustls failed on this connection (its alert may be queued).
    tls_broken: bool,
    /// A TLS connection's receive buffer (ciphertext).
    cipher: Vec<u8>,
    /// Whether the TLS peer closed (after the last plaintext).
    peer_closed: tls::Closed,
}

/// Interim (1xx) answers skipped before one connection's final answer.
const MAX_INTERIM: u8 = 16;

/// The deadline `d` from now; a zero timeout is none (as wget's `--timeout=0`).
fn deadline(d: Duration) -> Option<Instant> {
    (!d.is_zero()).then(|| Instant::now() + d)
}

/// A TLS connection ends: `close_notify` (RFC 8446 §6.1), or after a
/// rustls error the alert it queued (§6.2), written at once if the socket
/// takes it (best effort: nothing waits for it).
fn goodbye(c: &mut Conn) {
    let (Some(t), Some(h)) = (c.tls.as_mut(), c.handle.as_ref()) else {
        return;
    };
    if !c.tls_broken {
        t.send_close_notify();
    }
    let Ok(Some(out)) = tls::pending(t) else {
        return;
    };
    // A duplicate of the descriptor, non-blocking: one write, no wait.
    if let Ok(fd) = h.as_fd().try_clone_to_owned() {
        let mut s = TcpStream::from(fd);
        if s.set_nonblocking(true).is_ok() {
            let _ = std::io::Write::write(&mut s, &out);
        }
    }
}

/// A body with more bytes than its range.
fn too_long() -> Fail {
    Fail::Network("receiving the body: more bytes than the range asked for".into())
}

/// Every download of one `iocomp get`.
pub(super) struct Driver<'a> {
    port: Port,
    opts: &'a Opts,
    conns: Vec<Option<Conn>>,
    pub(super) jobs: Vec<Job>,
    /// The TLS client configuration, made at the first `https://`.
    tls: Option<Arc<ClientConfig>>,
}

impl<'a> Driver<'a> {
    /// A driver on a fresh port, attached to the calling thread.
    pub(super) fn new(opts: &'a Opts, jobs: Vec<Job>) -> Result<Driver<'a>, Fail> {
        let port = Port::builder()
            .concurrency(1)
            .build()
            .and_then(|p| p.attach().map(|()| p))
            .map_err(|e| Fail::Local(format!("cannot create the completion port: {e}")))?;
        Ok(Driver {
            port,
            opts,
            conns: Vec::new(),
            jobs,
            tls: None,
        })
    }

    /// Runs every job to its end; their results, in order.
    pub(super) fn run(mut self) -> Vec<Result<(), Fail>> {
        for j in 0..self.jobs.len() {
            self.spawn(j);
            self.settle_if_idle(j);
        }
        while self.jobs.iter().any(|j| j.result.is_none()) {
            let now = Instant::now();
            let wait = self
                .conns
                .iter()
                .flatten()
                .filter_map(|c| c.deadline)
                .min()
                .map(|d| d.saturating_duration_since(now));
            match self.port.get(wait.or(Some(Duration::from_secs(1)))) {
                Ok(p) => self.on_packet(p),
                Err(GetError::TimedOut) => {}
                Err(e) => {
                    for j in 0..self.jobs.len() {
                        self.jobs[j].fail(Fail::Local(format!("the engine stopped: {e}")));
                        self.conns.iter_mut().for_each(|c| *c = None);
                        self.jobs[j].live = 0;
                        self.settle_if_idle(j);
                    }
                }
            }
            self.expire(Instant::now());
        }
        self.port.close();
        self.jobs
            .iter_mut()
            .map(|j| j.result.take().unwrap_or(Ok(())))
            .collect()
    }

    /// Starts the connections job `j` asked for.
    fn spawn(&mut self, j: usize) {
        for spec in std::mem::take(&mut self.jobs[j].spawn) {
            if let Err(e) = self.start(spec) {
                self.jobs[j].fail(e);
            }
        }
    }

    /// Starts a connection; its slot.
    fn start(&mut self, spec: Spec) -> Result<usize, Fail> {
        let (request, via) = if spec.target.raw {
            let mut line = spec.target.path.clone().into_bytes();
            line.push(b'\n');
            (line, spec.target.clone())
        } else {
            let extra: Vec<(&str, String)> =
                spec.extra.iter().map(|(k, v)| (*k, v.clone())).collect();
            client::request(&spec.target, "GET", &extra)?
        };
        // An https:// target reached through a proxy that is not: a tunnel.
        let tunnel = spec.target.https && !via.https;
        if spec.target.https && self.tls.is_none() {
            self.tls = Some(tls::config(&self.opts.trust)?);
        }
        let addrs = via
            .resolve()
            .map_err(|e| Fail::Network(format!("{}: cannot resolve: {e}", via.host)))?;
        let limit = self.opts.limit.map(|l| match spec.role {
            Role::Range { .. } => (l / self.opts.parallel as u64).max(1),
            _ => l,
        });
        let chunk = limit.map_or(CHUNK, |l| (l as usize / 10).clamp(1024, CHUNK));
        let conn = Conn {
            job: spec.job,
            role: spec.role,
            target: spec.target,
            extra: spec.extra,
            redirects: 0,
            addrs,
            next_addr: 0,
            last_error: String::new(),
            request,
            handle: None,
            op: None,
            deadline: None,
            expired: false,
            phase: Phase::Connect,
            buf: Vec::new(),
            chunk,
            framing: Framing::Eof,
            decode: Decode::new(None),
            at: 0,
            end: None,
            interim: 0,
            limiter: Limiter::new(limit),
            tls: None,
            tunnel,
            cipher: Vec::new(),
            peer_closed: tls::Closed::No,
            handshake_until: None,
            handshake_deadline: false,
            tls_broken: false,
        };
        let k = match self.conns.iter().position(Option::is_none) {
            Some(k) => k,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        self.jobs[conn.job].live += 1;
        self.connect_next(k, conn);
        Ok(k)
    }

    /// Connects to the next address, or fails with the last address's error.
    fn connect_next(&mut self, k: usize, mut c: Conn) {
        let Some(&addr) = c.addrs.get(c.next_addr) else {
            let e = Fail::Network(c.last_error.clone());
            return self.fail(c, e);
        };
        c.next_addr += 1;
        let fd = match Connect::stream_socket(&addr) {
            Ok(fd) => fd,
            Err(e) => return self.fail(c, Fail::Network(format!("socket: {e}"))),
        };
        let stream = TcpStream::from(fd);
        let _ = stream.set_nodelay(true);
        let h = self.port.associate(OwnedFd::from(stream), k as u64);
        c.handle = Some(h.clone());
        c.phase = Phase::Connect;
        c.deadline = deadline(self.opts.to.connect);
        self.submit(k, c, Connect::new(&h, addr).into());
    }

    /// Submits `c`'s one operation and parks `c` in slot `k`.
    fn submit(&mut self, k: usize, mut c: Conn, op: Op) {
        match self.port.submit(op) {
            Ok(id) => {
                c.op = Some(id);
                c.expired = false;
                self.conns[k] = Some(c);
            }
            Err((e, _)) => self.fail(
                c,
                Fail::Network(format!("the engine refused an operation: {e}")),
            ),
        }
    }

    fn recv(&mut self, k: usize, mut c: Conn) {
        let Some(h) = c.handle.clone() else {
            return self.fail(c, Fail::Network("no socket".into()));
        };
        if c.phase == Phase::Body || c.phase == Phase::Pause {
            c.buf.clear();
            c.phase = Phase::Body;
        }
        c.deadline = deadline(self.opts.to.stall);
        c.handshake_deadline = false;
        if let (Some(t), Some(h)) = (c.tls.as_ref(), c.handshake_until) {
            if t.is_handshaking() && c.deadline.map_or(true, |d| h <= d) {
                c.deadline = Some(h);
                c.handshake_deadline = true;
            }
        }
        if let Some(t) = c.tls.as_mut() {
            // What rustls wants sent goes first (the receive follows its completion).
            match tls::pending(t) {
                Err(e) => return self.fail(c, e),
                Ok(Some(out)) => return self.submit(k, c, Send::new(&h, out).into()),
                Ok(None) => {}
            }
            if c.peer_closed != tls::Closed::No {
                return self.eof(c);
            }
            let mut cipher = std::mem::take(&mut c.cipher);
            cipher.clear();
            // A TLS record is at most 16 KiB of plaintext plus its overhead.
            let want = c.chunk.max(17 * 1024);
            cipher.reserve_exact(want.saturating_sub(cipher.capacity()));
            return self.submit(k, c, Recv::new(&h, cipher).into());
        }
        let want = c.buf.len() + c.chunk;
        c.buf.reserve_exact(want.saturating_sub(c.buf.capacity()));
        let buf = std::mem::take(&mut c.buf);
        self.submit(k, c, Recv::new(&h, buf).into());
    }

    /// The TCP connection (and the tunnel, if any) is up: TLS starts, with
    /// the request queued until the handshake is done.
    fn start_tls(&mut self, k: usize, mut c: Conn) {
        let Some(cfg) = self.tls.clone() else {
            return self.fail(c, Fail::Tls("TLS is not configured".into()));
        };
        let mut t = match tls::connect(&cfg, &c.target.host) {
            Ok(t) => Box::new(t),
            Err(e) => return self.fail(c, e),
        };
        if let Err(e) = tls::write(&mut t, &c.request) {
            return self.fail(c, e);
        }
        c.tls = Some(t);
        // One deadline for the whole handshake, as curl's --connect-timeout
        // (0 there: the TCP connect has no limit, the handshake the default).
        let limit = match self.opts.to.connect {
            d if d.is_zero() => crate::get::DEFAULT_CONNECT_TIMEOUT,
            d => d,
        };
        c.handshake_until = Some(Instant::now() + limit);
        c.buf.clear();
        c.phase = Phase::Head;
        self.recv(k, c)
    }

    /// Ciphertext arrived on a TLS connection (`n` bytes at the end of
    /// `cipher`; none: the peer closed): its plaintext goes where a plain
    /// connection's bytes would.
    fn tls_recv(&mut self, k: usize, mut c: Conn, cipher: Vec<u8>, n: usize) {
        let Some(t) = c.tls.as_mut() else {
            return self.fail(c, Fail::Tls("TLS is not set up".into()));
        };
        let before = c.buf.len();
        let r = tls::feed(t, &cipher[cipher.len() - n..], &mut c.buf);
        c.cipher = cipher;
        match r {
            Err(e) => {
                c.tls_broken = true;
                self.fail(c, e)
            }
            Ok(closed) => {
                c.peer_closed = closed;
                if closed != tls::Closed::No && n == 0 && c.buf.len() == before {
                    return self.eof(c);
                }
                let got = c.buf.len() - before;
                if got == 0 {
                    return self.recv(k, c);
                }
                match c.phase {
                    Phase::Head => self.head(k, c),
                    _ => {
                        let buf = std::mem::take(&mut c.buf);
                        self.feed(k, c, buf, got as u64);
                    }
                }
            }
        }
    }

    /// The proxy's answer to `CONNECT` (in `c.buf`): a 2xx opens the tunnel.
    fn tunnel(&mut self, k: usize, c: Conn) {
        match tls::connect_answer(&c.buf) {
            Ok(false) => self.recv(k, c),
            Ok(true) => self.start_tls(k, c),
            Err(e) => self.fail(c, e),
        }
    }

    /// A connection failed: its job fails, and the job's other connections stop.
    fn fail(&mut self, mut c: Conn, e: Fail) {
        goodbye(&mut c);
        let j = c.job;
        drop(c);
        self.jobs[j].live -= 1;
        self.jobs[j].fail(e);
        for other in self.conns.iter_mut().flatten().filter(|o| o.job == j) {
            if let Some(id) = other.op {
                let _ = self.port.cancel(id);
            }
        }
        self.settle_if_idle(j);
    }

    /// A connection is done without error.
    fn close(&mut self, mut c: Conn) {
        goodbye(&mut c);
        let j = c.job;
        drop(c);
        self.jobs[j].live -= 1;
        self.settle_if_idle(j);
    }

    fn settle_if_idle(&mut self, j: usize) {
        let job = &mut self.jobs[j];
        if job.live == 0 && job.result.is_none() && job.restart_afresh() {
            self.spawn(j);
            if self.jobs[j].live > 0 {
                return;
            }
        }
        let job = &mut self.jobs[j];
        if job.live == 0 && job.result.is_none() {
            let r = job.settle(self.opts);
            job.progress.finish(r.is_ok());
            job.result = Some(r);
        }
    }

    /// Cancels the operation of every connection whose deadline passed.
    fn expire(&mut self, now: Instant) {
        for c in self.conns.iter_mut().flatten() {
            if let (Some(d), Some(id), false) = (c.deadline, c.op, c.expired) {
                if d <= now {
                    c.expired = true;
                    let _ = self.port.cancel(id);
                }
            }
        }
    }

    fn on_packet(&mut self, mut p: Packet) {
        let k = p.key as usize;
        let Some(mut c) = self.conns.get_mut(k).and_then(Option::take) else {
            return;
        };
        c.op = None;
        if self.jobs[c.job].failed.is_some() {
            // Another connection of this job failed: this one just stops.
            return self.close(c);
        }
        let timed_out = c.expired && p.is_aborted();
        let handshake = c.handshake_deadline;
        let stalled = |what: &str| {
            if handshake {
                Fail::Tls("TLS handshake timed out (--connect-timeout)".into())
            } else {
                Fail::Network(format!("{what}: timed out (no data within --timeout)"))
            }
        };
        match (
            std::mem::replace(&mut p.op, Op::Posted { token: 0 }),
            p.status,
        ) {
            (Op::Connect(op), Ok(())) => {
                c.deadline = deadline(self.opts.to.stall);
                if c.tunnel {
                    c.phase = Phase::Tunnel;
                    let req = client::connect_request(&c.target);
                    return self.submit(k, c, Send::new(&op.socket, req).into());
                }
                if c.target.https {
                    return self.start_tls(k, c);
                }
                c.phase = Phase::Send;
                let req = std::mem::take(&mut c.request);
                self.submit(k, c, Send::new(&op.socket, req).into());
            }
            (Op::Connect(op), Err(e)) => {
                c.last_error = if timed_out {
                    format!("{}: connect timed out", op.addr)
                } else {
                    format!("{}: {e}", op.addr)
                };
                c.handle = None;
                self.connect_next(k, c);
            }
            (Op::Send(_), Ok(())) if c.tls.is_some() || c.phase == Phase::Tunnel => {
                // A TLS flight, or the CONNECT: now the answer.
                self.recv(k, c)
            }
            (Op::Send(op), Ok(())) => {
                c.request = op.buf;
                if c.target.raw {
                    // Half-close: the server answers this one name, then closes.
                    if let Err(e) = op.handle.shutdown(std::net::Shutdown::Write) {
                        return self.fail(c, net("half-closing", e));
                    }
                    let opts = self.opts;
                    if let Err(e) = self.jobs[c.job].raw_start(opts) {
                        return self.fail(c, e);
                    }
                    let buf = std::mem::take(&mut c.buf);
                    return self.body(k, c, None, 0, buf);
                }
                c.phase = Phase::Head;
                self.recv(k, c);
            }
            (Op::Send(_), Err(e)) if timed_out => {
                let _ = e;
                self.fail(c, stalled("sending the request"))
            }
            (Op::Send(_), Err(e)) => self.fail(c, net("sending the request", e)),
            (Op::Timeout(_), _) => self.recv(k, c),
            (Op::Recv(op), Ok(())) if c.tls.is_some() => {
                self.tls_recv(k, c, op.buf, p.bytes as usize)
            }
            (Op::Recv(op), Ok(())) => {
                c.buf = op.buf;
                if p.bytes == 0 {
                    return self.eof(c);
                }
                match c.phase {
                    Phase::Head => self.head(k, c),
                    Phase::Tunnel => self.tunnel(k, c),
                    _ => {
                        let buf = std::mem::take(&mut c.buf);
                        self.feed(k, c, buf, p.bytes);
                    }
                }
            }
            (Op::Recv(_), Err(e)) => {
                let what = if c.phase == Phase::Tunnel {
                    "reading the proxy's answer to CONNECT"
                } else if c.phase == Phase::Head {
                    "reading the response"
                } else {
                    "receiving the body"
                };
                let f = if timed_out {
                    stalled(what)
                } else {
                    net(what, e)
                };
                self.fail(c, f)
            }
            (_, _) => self.fail(c, Fail::Network("an unexpected completion".into())),
        }
    }

    /// The server closed the connection.
    fn eof(&mut self, c: Conn) {
        match c.phase {
            Phase::Head => self.fail(
                c,
                Fail::Network("the server closed the connection before a response".into()),
            ),
            Phase::Tunnel => self.fail(
                c,
                Fail::Network("the proxy closed the connection before answering CONNECT".into()),
            ),
            // Without close_notify, TLS cannot tell a body cut short from a
            // whole one: a close-delimited body is not trusted then (a TLS
            // failure), unless it is a range whose end, from the
            // authenticated Content-Range, was reached.
            _ if c.peer_closed == tls::Closed::Abruptly
                && matches!(c.framing, Framing::Eof)
                && c.end != Some(c.at) =>
            {
                self.fail(
                    c,
                    Fail::Tls(
                        "the server closed the TLS connection without close_notify: \
                         the body may be cut short"
                            .into(),
                    ),
                )
            }
            _ if c.framing.eof_ok() || matches!(c.role, Role::Raw) => self.complete(c),
            _ => self.fail(c, short()),
        }
    }

    /// Bytes of the response head arrived (in `c.buf`).
    fn head(&mut self, k: usize, mut c: Conn) {
        let (head, used) = match client::parse_head(&c.buf) {
            Ok(Some(h)) => h,
            Ok(None) => return self.recv(k, c),
            Err(e) => return self.fail(c, e),
        };
        // Interim answers (100 Continue, 103 Early Hints: RFC 9110 §15.2) precede the final one.
        if (100..200).contains(&head.status) && head.status != 101 {
            c.interim += 1;
            if c.interim > MAX_INTERIM {
                return self.fail(
                    c,
                    Fail::Network(format!("more than {MAX_INTERIM} interim (1xx) answers")),
                );
            }
            c.buf.drain(..used);
            return self.head(k, c);
        }
        if head.status < 200 {
            let e = Fail::Network(format!("an unexpected {} {}", head.status, head.reason));
            return self.fail(c, e);
        }
        // A success's framing is checked before anything is written.
        let framing = if (200..300).contains(&head.status) {
            match Framing::check(&head) {
                Ok(f) => Some(f),
                Err(e) => return self.fail(c, e),
            }
        } else {
            None
        };
        if matches!(head.status, 301 | 302 | 303 | 307 | 308) {
            if let Some(loc) = head.get("location") {
                if c.redirects >= MAX_REDIRECTS {
                    return self.fail(
                        c,
                        Fail::Network(format!("more than {MAX_REDIRECTS} redirects")),
                    );
                }
                let t = match c.target.join(loc.trim()) {
                    Ok(t) => t,
                    Err(e) => return self.fail(c, Fail::Network(format!("redirect: {e}"))),
                };
                if t.https && self.opts.trust.insecure {
                    super::warn_insecure();
                }
                // https -> http: the rest would come unauthenticated (and with
                // -c or -j, appended to authenticated bytes). apt refuses it;
                // curl follows it, which --allow-downgrade asks for.
                if c.target.https && !t.https {
                    if !self.opts.allow_downgrade {
                        let e = Fail::Tls(format!(
                            "refused the redirect from {} to {}: a downgrade from https to \
                             plain http (--allow-downgrade follows it)",
                            c.target, t
                        ));
                        return self.fail(c, e);
                    }
                    eprintln!(
                        "iocomp: WARNING: --allow-downgrade: following the redirect from {} to {}; \
                         the download goes on unencrypted and unauthenticated",
                        c.target, t
                    );
                }
                return self.redirect(c, t);
            }
        }
        let j = c.job;
        let r = self.jobs[j].on_head(j, &mut c.role, &c.target, &head, self.opts);
        self.spawn(j);
        match r {
            Err(e) => self.fail(c, e),
            Ok(Next::Close) => self.close(c),
            Ok(Next::Body { at, coding, exact }) => {
                c.framing = framing.unwrap_or_else(|| Framing::of(&head));
                if let Some(n) = exact {
                    // A range is exactly its bytes, in the answer's own framing
                    // (chunked, Content-Length, or to EOF: then a byte past the
                    // range is an error, and so is an EOF before its end).
                    if let Framing::Length(m) = c.framing {
                        if m != n {
                            let e = Fail::Network(format!(
                                "Content-Length {m} disagrees with the range's {n} bytes"
                            ));
                            return self.fail(c, e);
                        }
                    }
                    c.end = Some(at + n);
                }
                c.decode = Decode::new(coding);
                let mut buf = std::mem::take(&mut c.buf);
                buf.drain(..used);
                let n = buf.len() as u64;
                self.body(k, c, Some(at), n, buf)
            }
        }
    }

    /// Follows a redirect on a new connection in the same slot's place.
    fn redirect(&mut self, c: Conn, t: Target) {
        let spec = Spec {
            job: c.job,
            role: c.role,
            target: t,
            extra: c.extra.clone(),
        };
        let redirects = c.redirects + 1;
        let j = c.job;
        let mut c = c;
        goodbye(&mut c);
        drop(c);
        self.jobs[j].live -= 1;
        match self.start(spec) {
            Ok(k) => {
                if let Some(n) = self.conns[k].as_mut() {
                    n.redirects = redirects;
                }
            }
            Err(e) => {
                self.jobs[j].fail(e);
                self.settle_if_idle(j);
            }
        }
    }

    /// The body starts at `at` (`None`: where it is); `first` holds its first bytes.
    fn body(&mut self, k: usize, mut c: Conn, at: Option<u64>, n: u64, first: Vec<u8>) {
        if let Some(at) = at {
            c.at = at;
        }
        c.phase = Phase::Body;
        if let (Role::Raw, Some(size)) = (c.role, self.opts.size) {
            c.framing = Framing::Length(size);
        }
        self.feed(k, c, first, n)
    }

    /// Writes received body bytes, then receives more, pauses, or completes.
    fn feed(&mut self, k: usize, mut c: Conn, mut data: Vec<u8>, n: u64) {
        let job = &mut self.jobs[c.job];
        let at = &mut c.at;
        let end = c.end;
        let decode = &mut c.decode;
        let r = c.framing.feed(&data, &mut |d| {
            decode.feed(d, &mut |x| {
                if end.is_some_and(|e| *at + x.len() as u64 > e) {
                    return Err(too_long());
                }
                job.on_data(*at, x)?;
                *at += x.len() as u64;
                Ok(())
            })
        });
        if let Err(e) = r {
            return self.fail(c, e);
        }
        // The buffer (its capacity) serves the next receive.
        data.clear();
        c.buf = data;
        if c.framing.is_done() {
            return self.complete(c);
        }
        let delay = c.limiter.delay(n);
        if delay > Duration::from_millis(1) {
            c.phase = Phase::Pause;
            c.deadline = None;
            let t = Timeout::new(delay, k as u64);
            return self.submit(k, c, t.into());
        }
        self.recv(k, c)
    }

    /// The body is complete.
    fn complete(&mut self, mut c: Conn) {
        let job = &mut self.jobs[c.job];
        let at = &mut c.at;
        let r = c.decode.finish(&mut |x| {
            job.on_data(*at, x)?;
            *at += x.len() as u64;
            Ok(())
        });
        if let Err(e) = r {
            return self.fail(c, e);
        }
        if c.end.is_some_and(|e| c.at != e) {
            return self.fail(c, short());
        }
        job.on_end(c.role, c.at);
        self.close(c)
    }
}
