//! One `iocomp bench` connection: a state machine whose state travels as the
//! context of its operations. Connect → Send request → Recv response (HTTP:
//! the head parsed with httparse, then exactly `Content-Length` body bytes;
//! line protocol: exactly the file's size) → the next request, until the run
//! stops. A failure is counted by kind and the connection reconnects.
//!
//! Over TLS a rustls session sits between the operations and the parsing:
//! the request is written into it, what it wants sent goes out as a `Send`,
//! received ciphertext becomes the plaintext parsed as above.

use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use iocomp::{Connect, Op, Packet, Port, Recv, Send, Timeout};
use rustls::ClientConnection;

use crate::get::tls;

use super::{Shared, BACKOFF, RECV};

/// Where a connection's current response is.
pub(super) enum Phase {
    /// Waiting for (the rest of) an HTTP response head.
    Head,
    /// Reading a body: bytes still due.
    Body { left: u64 },
}

/// One connection; travels as the context of its operations.
pub(super) struct Conn {
    pub(super) shared: Arc<Shared>,
    pub(super) handle: Option<iocomp::Handle>,
    pub(super) buf: Vec<u8>,
    pub(super) item: usize,
    pub(super) phase: Phase,
    pub(super) started: Instant,
    /// Bytes of the current response received so far (headers included).
    pub(super) got: u64,
    /// Body bytes of the current response so far (counted once it is done).
    pub(super) body: u64,
    /// The request buffer, back from each completed send and refilled for the
    /// next: no allocation per request.
    pub(super) req: Vec<u8>,
    /// `https://`: the session, from the connect on.
    pub(super) tls: Option<Box<ClientConnection>>,
    /// A TLS connection's receive buffer (ciphertext).
    pub(super) cipher: Vec<u8>,
}

/// Opens a socket and starts its connect (on the calling worker).
pub(super) fn connect(port: &Port, mut conn: Box<Conn>) {
    let addr = conn.shared.addr;
    let fd = match Connect::stream_socket(&addr) {
        Ok(fd) => fd,
        Err(e) => return close(conn, Some(format!("socket: {}", e.kind()))),
    };
    // wrk does the same: requests are small writes that must not wait for ACKs.
    let stream = TcpStream::from(fd);
    let _ = stream.set_nodelay(true);
    let h = port.associate(OwnedFd::from(stream), 0);
    conn.handle = Some(h.clone());
    conn.tls = None;
    conn.buf.clear();
    conn.phase = Phase::Head;
    let mut op = Connect::new(&h, addr);
    op.ctx = Some(conn);
    submit(port, op);
}

/// Submits `op`; on a synchronous failure the connection is closed.
fn submit(port: &Port, op: impl Into<Op>) {
    if let Err((e, mut op)) = port.submit(op) {
        if let Some(conn) = op.take_ctx().and_then(|c| c.downcast::<Conn>().ok()) {
            close(conn, Some(format!("submit: {}", e.kind())));
        }
    }
}

/// Ends a connection for good (after an error once the run is over, or at the end).
#[allow(clippy::boxed_local)] // it is the connection's last owner: dropping it closes the socket
fn close(conn: Box<Conn>, error: Option<String>) {
    if let Some(e) = error {
        conn.shared.error(e);
    }
    conn.shared.active.fetch_sub(1, Ordering::Relaxed);
}

/// A connection failed: count it, and reconnect unless the run is over.
fn failed(port: &Port, mut conn: Box<Conn>, kind: String, backoff: bool) {
    conn.shared.error(kind);
    conn.handle = None;
    conn.tls = None;
    if conn.shared.stop.load(Ordering::Relaxed) {
        return close(conn, None);
    }
    if backoff {
        let mut t = Timeout::new(BACKOFF, 0);
        t.ctx = Some(conn);
        submit(port, t);
    } else {
        connect(port, conn);
    }
}

/// Sends the next request.
fn send_request(port: &Port, mut conn: Box<Conn>) {
    let Some(h) = conn.handle.clone() else {
        return close(conn, Some("no socket".into()));
    };
    conn.phase = Phase::Head;
    conn.got = 0;
    conn.body = 0;
    conn.buf.clear();
    conn.started = Instant::now();
    if let Some(t) = conn.tls.as_mut() {
        let item = conn.item;
        if let Err(e) = tls::write(t, &conn.shared.items[item].request) {
            return failed(port, conn, e.to_string(), false);
        }
        return receive(port, conn);
    }
    // A request is small and the socket's buffer almost always has room: one
    // non-blocking send(2) here, as wrk does, saves an operation and its
    // completion per request. What does not fit goes as a Send operation.
    let request = &conn.shared.items[conn.item].request;
    let sent = match send_now(&h, request) {
        Ok(n) => n,
        Err(e) => return failed(port, conn, format!("send: {}", e.kind()), false),
    };
    if sent == request.len() {
        return receive(port, conn);
    }
    let mut req = std::mem::take(&mut conn.req);
    req.clear();
    req.extend_from_slice(&conn.shared.items[conn.item].request[sent..]);
    let mut op = Send::new(&h, req);
    op.ctx = Some(conn);
    submit(port, op);
}

/// A non-blocking `send(2)` of `buf`: the bytes sent (0 when the socket's
/// buffer is full).
fn send_now(h: &iocomp::Handle, buf: &[u8]) -> std::io::Result<usize> {
    use std::os::fd::AsFd;
    crate::sys::send_nonblocking(h.as_fd(), buf)
}

fn receive(port: &Port, mut conn: Box<Conn>) {
    let Some(h) = conn.handle.clone() else {
        return close(conn, Some("no socket".into()));
    };
    if let Some(t) = conn.tls.as_mut() {
        // What the session wants sent first (handshake, request); then ciphertext in.
        match tls::pending(t) {
            Err(e) => return failed(port, conn, e.to_string(), false),
            Ok(Some(out)) => {
                let mut op = Send::new(&h, out);
                op.ctx = Some(conn);
                return submit(port, op);
            }
            Ok(None) => {}
        }
        let mut cipher = std::mem::take(&mut conn.cipher);
        cipher.clear();
        cipher.reserve_exact(RECV.saturating_sub(cipher.capacity()));
        let mut op = Recv::new(&h, cipher);
        op.ctx = Some(conn);
        return submit(port, op);
    }
    let mut op = Recv::new(&h, std::mem::take(&mut conn.buf));
    op.ctx = Some(conn);
    submit(port, op);
}

/// The pool's handler: one step of one connection.
pub(super) fn on_packet(port: &Port, mut p: Packet) {
    let Some(mut conn) = p.op.take_ctx().and_then(|c| c.downcast::<Conn>().ok()) else {
        return;
    };
    match (p.op, p.status) {
        (Op::Timeout(_), _) => connect(port, conn),
        (Op::Connect(_), Ok(())) => {
            conn.shared.with_stats(|s| s.connects += 1);
            if let Some((cfg, host)) = &conn.shared.tls {
                match tls::connect(cfg, host) {
                    Ok(t) => conn.tls = Some(Box::new(t)),
                    Err(e) => return close(conn, Some(e.to_string())),
                }
            }
            send_request(port, conn)
        }
        (Op::Send(_), Ok(())) if conn.tls.is_some() => receive(port, conn),
        (Op::Connect(_), Err(e)) => failed(port, conn, format!("connect: {}", e.kind()), true),
        (Op::Send(s), Ok(())) => {
            conn.req = s.buf;
            receive(port, conn)
        }
        (Op::Send(_), Err(e)) => failed(port, conn, format!("send: {}", e.kind()), false),
        (Op::Recv(_), Err(e)) => failed(port, conn, format!("recv: {}", e.kind()), false),
        (Op::Recv(r), Ok(())) if conn.tls.is_some() => {
            let n = p.bytes as usize;
            let before = conn.buf.len();
            let fed = match conn.tls.as_mut() {
                Some(t) => tls::feed(t, &r.buf[r.buf.len() - n..], &mut conn.buf),
                None => Ok(tls::Closed::Abruptly),
            };
            conn.cipher = r.buf;
            let closed = match fed {
                Ok(c) => c != tls::Closed::No,
                Err(e) => return failed(port, conn, e.to_string(), false),
            };
            let got = (conn.buf.len() - before) as u64;
            if got == 0 {
                if closed {
                    return failed(port, conn, "closed by server".into(), false);
                }
                return receive(port, conn);
            }
            conn.got += got;
            match advance(&mut conn, got) {
                Ok(false) if closed => failed(port, conn, "closed by server".into(), false),
                Ok(false) => receive(port, conn),
                Ok(true) => done(port, conn),
                Err(kind) => failed(port, conn, kind.into(), false),
            }
        }
        (Op::Recv(r), Ok(())) => {
            conn.buf = r.buf;
            if p.bytes == 0 {
                return failed(port, conn, "closed by server".into(), false);
            }
            conn.got += p.bytes;
            match advance(&mut conn, p.bytes) {
                Ok(false) => receive(port, conn),
                Ok(true) => done(port, conn),
                Err(kind) => failed(port, conn, kind.into(), false),
            }
        }
        (_, _) => close(conn, Some("unexpected packet".into())),
    }
}

/// Applies `n` new bytes (at the end of `buf`); `Ok(true)` when the response is complete.
fn advance(conn: &mut Conn, n: u64) -> Result<bool, &'static str> {
    if conn.shared.raw {
        let expect = conn.shared.items[conn.item].expect.unwrap_or(0);
        if conn.got == n && conn.buf.starts_with(iocomp_server::ERROR_PREFIX.as_bytes()) {
            let line_end = conn.buf.iter().position(|&b| b == b'\n');
            if line_end.is_some_and(|e| e as u64 + 1 != expect) {
                return Err("error line");
            }
        }
        conn.buf.clear();
        return match conn.got.cmp(&expect) {
            std::cmp::Ordering::Less => Ok(false),
            std::cmp::Ordering::Equal => {
                conn.body = expect;
                Ok(true)
            }
            std::cmp::Ordering::Greater => Err("more bytes than the file's size"),
        };
    }
    match conn.phase {
        Phase::Head => {
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut hs);
            match r.parse(&conn.buf) {
                Ok(httparse::Status::Partial) if conn.buf.len() < RECV => Ok(false),
                Ok(httparse::Status::Partial) => Err("response head too large"),
                Err(_) => Err("malformed response"),
                Ok(httparse::Status::Complete(used)) => {
                    let status = r.code.unwrap_or(0);
                    let len = r
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| {
                            std::str::from_utf8(h.value)
                                .ok()?
                                .trim()
                                .parse::<u64>()
                                .ok()
                        });
                    let Some(len) = len else {
                        return Err("no Content-Length");
                    };
                    if status != 200 {
                        let kind = format!("status {status}");
                        conn.shared.error(kind);
                    }
                    let have = (conn.buf.len() - used) as u64;
                    conn.buf.clear();
                    if have > len {
                        return Err("more bytes than Content-Length");
                    }
                    conn.body += have;
                    conn.phase = Phase::Body { left: len - have };
                    Ok(len == have)
                }
            }
        }
        Phase::Body { left } => {
            conn.buf.clear();
            if n > left {
                return Err("more bytes than Content-Length");
            }
            conn.body += n;
            conn.phase = Phase::Body { left: left - n };
            Ok(n == left)
        }
    }
}

/// A response is complete: count it, then the next request (or the end).
fn done(port: &Port, mut conn: Box<Conn>) {
    let us = conn.started.elapsed().as_micros().max(1) as u64;
    let (got, body) = (conn.got, conn.body);
    // One visit to this thread's statistics per response.
    conn.shared.with_stats(|s| {
        s.requests += 1;
        s.bytes += got;
        s.body += body;
        let _ = s.latency.record(us.min(3_600_000_000));
    });
    if conn.shared.stop.load(Ordering::Relaxed) {
        return close(conn, None);
    }
    conn.item = (conn.item + 1) % conn.shared.items.len();
    if conn.shared.new_connection {
        // The response is whole: close at once (a reset, not waiting for the
        // server's close: a wait would measure the server's close path, Nagle
        // and delayed ACKs included, not its handshakes), then reconnect.
        if let Some(h) = &conn.handle {
            use std::os::fd::AsFd;
            let _ = crate::sys::set_linger_zero(h.as_fd());
        }
        return connect(port, conn);
    }
    send_request(port, conn);
}
