//! The seed's line protocol on a connection: a name per line, the file's bytes
//! (or one error line) in reply, as `nc` uses it.

use std::collections::VecDeque;

use tracing::debug;

use crate::conn::{Conn, Piece, Proto, Step};
use crate::line::Frame;

/// The prefix of every error line (the seed's "File transmit error!").
pub const ERROR_PREFIX: &str = "File transmit error: ";

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

/// The next step for a line-protocol connection.
pub(crate) fn step(conn: &mut Conn) -> Step {
    let Proto::Line(framer) = &mut conn.proto else {
        return Step::Close;
    };
    let (frame, consumed) = framer.next(&conn.inbuf);
    if let Some(f) = frame {
        return respond(conn, f, consumed);
    }
    conn.inbuf.drain(..consumed);
    if conn.eof {
        // The client half-closed: a last name without newline still counts.
        let n = conn.inbuf.len();
        let Proto::Line(framer) = &mut conn.proto else {
            return Step::Close;
        };
        return match framer.finish(&conn.inbuf) {
            Some(f) => respond(conn, f, n),
            None => Step::Close,
        };
    }
    Step::Recv
}

/// Answers one frame, then drops its bytes (`consumed`) from the input.
fn respond(conn: &mut Conn, frame: Frame, consumed: usize) -> Step {
    let key = conn.handle.key();
    let name = match &frame {
        Frame::Line(r) => conn.inbuf.get(r.clone()).unwrap_or_default(),
        Frame::TooLong => &b""[..],
    };
    let reply = match &frame {
        _ if conn.over_limit => Err("busy"),
        Frame::TooLong => Err("line too long"),
        Frame::Line(r) if r.is_empty() => Err("bad name"),
        Frame::Line(_) => conn.shared.root.open_file(name).map_err(|e| e.reason()),
    };
    let status = reply.as_ref().err().map_or(200, |r| status_of(r));
    let name = name.to_vec();
    conn.begin(&name, status);
    let step = match reply {
        Ok(opened) => {
            debug!(conn = key, name = %String::from_utf8_lossy(&name).escape_debug(), bytes = opened.len, "transmit file");
            if opened.len == 0 {
                Step::Again
            } else if let Some(body) = opened.body {
                // A small file the cache holds: from memory, one send.
                Step::Reply {
                    pieces: VecDeque::from([Piece::Bytes(body.to_vec())]),
                    close: false,
                }
            } else {
                conn.file = Some(opened.file);
                conn.transfer_begin(&name, opened.len);
                let piece = Piece::File {
                    head: Vec::new(),
                    offset: 0,
                    len: opened.len,
                    tail: Vec::new(),
                };
                Step::Reply {
                    pieces: VecDeque::from([piece]),
                    close: false,
                }
            }
        }
        Err(reason) => {
            debug!(conn = key, name = %String::from_utf8_lossy(&name).escape_debug(), "refused: {reason}");
            let line = format!("{ERROR_PREFIX}{reason}\r\n").into_bytes();
            Step::Reply {
                pieces: VecDeque::from([Piece::Bytes(line)]),
                close: conn.over_limit,
            }
        }
    };
    conn.inbuf.drain(..consumed.min(conn.inbuf.len()));
    step
}
