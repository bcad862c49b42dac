//! One client connection of the line protocol: a small state machine driven by
//! completion packets, like the seed's `IO_TYPE` (Recv → Transmit/Send → Recv …).
//!
//! The connection's state travels inside the operation in flight (its context),
//! as the seed's `PRE_IO_DATA` rode on its OVERLAPPED; exactly one operation is
//! in flight per connection, so whoever holds the packet owns the connection and
//! no lock is needed. Dropping the state closes the socket and counts the
//! connection out.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use iocomp::{Handle, Op, Packet, Port, Recv, Send, TransmitFile};
use tracing::debug;

use crate::access::Entry;
use crate::line::{Frame, LineFramer};
use crate::server::Shared;
use crate::watch::{Wait, Watch};

/// The prefix of every error line (the seed's "File transmit error!").
pub const ERROR_PREFIX: &str = "File transmit error: ";

pub(crate) struct Conn {
    handle: Handle,
    peer: Option<SocketAddr>,
    inbuf: Vec<u8>,
    framer: LineFramer,
    eof: bool,
    /// Whether a line was answered yet (a new connection waits under the
    /// header timeout, a served one under the idle timeout).
    served: bool,
    watch: Arc<Watch>,
    shared: Arc<Shared>,
    port: Port,
    /// The request being answered, for the access log.
    req: Option<Req>,
}

struct Req {
    name: Vec<u8>,
    status: u16,
    start: Instant,
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
            framer: LineFramer::new(),
            eof: false,
            served: false,
            watch,
            shared,
            port: port.clone(),
            req: None,
        })
    }

    fn log(&mut self, bytes: u64) {
        if let Some(req) = self.req.take() {
            self.shared.access.log(&Entry {
                peer: self.peer,
                name: &req.name,
                status: req.status,
                bytes,
                duration: req.start.elapsed(),
            });
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        debug!(conn = self.handle.key(), peer = ?self.peer, "closed");
        self.shared.closed(&self.port, self.handle.key());
    }
}

/// What the connection does next.
enum Next {
    Submit(Op),
    Close,
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
    let draining = conn.shared.draining.load(Ordering::Relaxed);
    if let Err(e) = &packet.status {
        conn.log(packet.bytes);
        debug!(conn = packet.key, peer = ?conn.peer, "connection ends: {e}");
        return;
    }
    match packet.op {
        Op::Recv(r) => {
            conn.inbuf = r.buf;
            if packet.bytes == 0 {
                conn.eof = true;
            }
        }
        Op::TransmitFile(_) | Op::Send(_) => conn.log(packet.bytes),
        _ => return,
    }
    if draining {
        // Shutting down: the current reply is done; do not start another.
        return;
    }
    drive(port, conn);
}

/// Runs the state machine until it has an operation in flight or is done.
fn drive(port: &Port, mut conn: Box<Conn>) {
    loop {
        let op = match step(&mut conn) {
            None => continue,
            Some(Next::Close) => return,
            Some(Next::Submit(op)) => op,
        };
        let wait = match &op {
            Op::Recv(_) if conn.shared.draining.load(Ordering::Relaxed) => return,
            Op::Recv(_) if conn.inbuf.is_empty() && conn.served => Wait::Idle,
            Op::Recv(_) => Wait::Header,
            _ => Wait::Sending,
        };
        conn.shared.registry.set(&conn.watch, wait);
        let (shared, watch) = (conn.shared.clone(), conn.watch.clone());
        match port.submit(with_ctx(op, conn)) {
            Ok(id) => shared.registry.op(&watch, id),
            Err((e, mut op)) => {
                debug!("submit failed: {e}");
                // The op (and the connection inside it) is dropped: the socket closes.
                drop(op.take_ctx());
            }
        }
        return;
    }
}

fn with_ctx(mut op: Op, conn: Box<Conn>) -> Op {
    match &mut op {
        Op::Recv(o) => o.ctx = Some(conn),
        Op::Send(o) => o.ctx = Some(conn),
        Op::TransmitFile(o) => o.ctx = Some(conn),
        _ => {}
    }
    op
}

/// One decision: `None` means "look again" (a line was answered without I/O).
fn step(conn: &mut Conn) -> Option<Next> {
    let (frame, consumed) = conn.framer.next(&conn.inbuf);
    if let Some(f) = frame {
        return respond(conn, f, consumed);
    }
    conn.inbuf.drain(..consumed);
    if conn.eof {
        // The client half-closed: a last name without newline still counts.
        let n = conn.inbuf.len();
        return match conn.framer.finish(&conn.inbuf) {
            Some(f) => respond(conn, f, n),
            None => Some(Next::Close),
        };
    }
    Some(Next::Submit(recv(conn)))
}

fn recv(conn: &mut Conn) -> Op {
    let mut buf = std::mem::take(&mut conn.inbuf);
    if buf.is_empty() {
        // Between requests the connection keeps no memory: the pooled receive
        // takes a buffer from the worker's pool only when bytes arrive.
        buf = Vec::new();
    }
    Op::Recv(Recv::pooled(&conn.handle, buf))
}

/// The status an error reason is logged with (HTTP's, for log tools).
fn status_of(reason: &str) -> u16 {
    match reason {
        "not found" => 404,
        "forbidden" | "not a regular file" => 403,
        "bad name" => 400,
        "line too long" => 414,
        "busy" => 503,
        _ => 500,
    }
}

/// Answers one frame, then drops its bytes (`consumed`) from the input.
/// `None`: answered without I/O (an empty file), go on with the next line.
fn respond(conn: &mut Conn, frame: Frame, consumed: usize) -> Option<Next> {
    conn.served = true;
    let key = conn.handle.key();
    let name = match &frame {
        Frame::Line(r) => &conn.inbuf[r.clone()],
        Frame::TooLong => &b""[..],
    };
    let reply = match &frame {
        Frame::TooLong => Err("line too long"),
        Frame::Line(r) if r.is_empty() => Err("bad name"),
        Frame::Line(_) => conn.shared.root.open_file(name).map_err(|e| e.reason()),
    };
    if conn.shared.access.enabled() {
        let status = reply.as_ref().err().map_or(200, |r| status_of(r));
        conn.req = Some(Req {
            name: name.to_vec(),
            status,
            start: Instant::now(),
        });
    }
    let next = match reply {
        Ok(opened) => {
            debug!(conn = key, name = %String::from_utf8_lossy(name).escape_debug(), bytes = opened.len, "transmit file");
            if opened.len == 0 {
                None
            } else {
                let mut tf = TransmitFile::new(&conn.handle, opened.file);
                tf.len = opened.len;
                Some(Next::Submit(Op::TransmitFile(tf)))
            }
        }
        Err(reason) => {
            debug!(conn = key, name = %String::from_utf8_lossy(name).escape_debug(), "refused: {reason}");
            let line = format!("{ERROR_PREFIX}{reason}\r\n").into_bytes();
            Some(Next::Submit(Op::Send(Send::new(&conn.handle, line))))
        }
    };
    conn.inbuf.drain(..consumed.min(conn.inbuf.len()));
    if next.is_none() {
        conn.log(0);
    }
    next
}
