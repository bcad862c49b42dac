//! One client connection of the line protocol: a small state machine driven by
//! completion packets, like the seed's `IO_TYPE` (Recv → Transmit/Send → Recv …).
//!
//! The connection's state travels inside the operation in flight (its context),
//! as the seed's `PRE_IO_DATA` rode on its OVERLAPPED; exactly one operation is
//! in flight per connection, so whoever holds the packet owns the connection and
//! no lock is needed. Dropping the state closes the socket.

use std::net::SocketAddr;

use iocomp::{Handle, Op, Packet, Port, Recv, Send, TransmitFile};
use tracing::debug;

use crate::line::{Frame, LineFramer};
use crate::path::Root;

/// Initial receive buffer (the seed's MAX_BUFFER_SIZE).
const RECV_BUF: usize = 1024;
/// Spare room wanted before each receive.
const RECV_MIN_SPARE: usize = 512;

/// The prefix of every error line (the seed's "File transmit error!").
pub const ERROR_PREFIX: &str = "File transmit error: ";

pub(crate) struct Conn {
    pub(crate) handle: Handle,
    pub(crate) peer: Option<SocketAddr>,
    inbuf: Vec<u8>,
    framer: LineFramer,
    eof: bool,
}

impl Conn {
    pub(crate) fn new(handle: Handle, peer: Option<SocketAddr>) -> Box<Conn> {
        Box::new(Conn {
            handle,
            peer,
            inbuf: Vec::with_capacity(RECV_BUF),
            framer: LineFramer::new(),
            eof: false,
        })
    }
}

/// What the connection does next.
enum Next {
    Submit(Op),
    Close,
}

/// Starts a fresh connection: its first receive.
pub(crate) fn start(port: &Port, root: &Root, conn: Box<Conn>) {
    drive(port, root, conn);
}

/// Handles a packet of a connection's operation.
pub(crate) fn complete(port: &Port, root: &Root, mut packet: Packet) {
    let Some(ctx) = packet.op.take_ctx() else {
        return;
    };
    let Ok(mut conn) = ctx.downcast::<Conn>() else {
        return;
    };
    if let Err(e) = &packet.status {
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
        Op::TransmitFile(_) | Op::Send(_) => {}
        _ => return,
    }
    drive(port, root, conn);
}

/// Runs the state machine until it has an operation in flight or is done.
fn drive(port: &Port, root: &Root, mut conn: Box<Conn>) {
    loop {
        let next = step(root, &mut conn);
        let op = match next {
            None => continue,
            Some(Next::Close) => {
                debug!(conn = conn.handle.key(), peer = ?conn.peer, "closed");
                return;
            }
            Some(Next::Submit(op)) => op,
        };
        let op = with_ctx(op, conn);
        match port.submit(op) {
            Ok(_) => return,
            Err((e, mut op)) => {
                debug!("submit failed: {e}");
                // The op (and the connection inside it) is dropped: the socket closes.
                drop(op.take_ctx());
                return;
            }
        }
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
fn step(root: &Root, conn: &mut Conn) -> Option<Next> {
    let (frame, consumed) = conn.framer.next(&conn.inbuf);
    let frame = match frame {
        Some(f) => Some(f),
        None if conn.eof => {
            conn.inbuf.drain(..consumed);
            let f = conn.framer.finish(&conn.inbuf);
            if f.is_none() {
                return Some(Next::Close);
            }
            // `finish` frames the whole remainder.
            let n = conn.inbuf.len();
            return f.and_then(|f| respond(root, conn, f, n));
        }
        None => None,
    };
    match frame {
        Some(f) => respond(root, conn, f, consumed),
        None => {
            conn.inbuf.drain(..consumed);
            Some(Next::Submit(recv(conn)))
        }
    }
}

fn recv(conn: &mut Conn) -> Op {
    let mut buf = std::mem::take(&mut conn.inbuf);
    if buf.capacity() - buf.len() < RECV_MIN_SPARE {
        buf.reserve(RECV_BUF);
    }
    Op::Recv(Recv::new(&conn.handle, buf))
}

/// Answers one frame, then drops its bytes (`consumed`) from the input.
/// `None`: answered without I/O (an empty file), go on with the next line.
fn respond(root: &Root, conn: &mut Conn, frame: Frame, consumed: usize) -> Option<Next> {
    let reply = match frame {
        Frame::TooLong => Err("line too long"),
        Frame::Line(r) if r.is_empty() => Err("bad name"),
        Frame::Line(r) => match root.open_file(&conn.inbuf[r.clone()]) {
            Ok(opened) => Ok((opened, r)),
            Err(e) => {
                debug!(conn = conn.handle.key(), name = %String::from_utf8_lossy(&conn.inbuf[r]).escape_debug(), "refused: {e}");
                Err(e.reason())
            }
        },
    };
    let next = match reply {
        Ok((opened, r)) => {
            debug!(
                conn = conn.handle.key(),
                peer = ?conn.peer,
                name = %String::from_utf8_lossy(&conn.inbuf[r]).escape_debug(),
                bytes = opened.len,
                "transmit file"
            );
            if opened.len == 0 {
                None
            } else {
                let mut tf = TransmitFile::new(&conn.handle, opened.file);
                tf.len = opened.len;
                Some(Next::Submit(Op::TransmitFile(tf)))
            }
        }
        Err(reason) => {
            let line = format!("{ERROR_PREFIX}{reason}\r\n").into_bytes();
            Some(Next::Submit(Op::Send(Send::new(&conn.handle, line))))
        }
    };
    conn.inbuf.drain(..consumed.min(conn.inbuf.len()));
    next
}
