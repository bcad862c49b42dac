//! The seed's line protocol on a connection: a name per line, the file's bytes
//! (or one error line) in reply, as `nc` uses it. The framing (splitting the
//! input into lines) is the pure [`framer`]; this module answers each line.

use std::collections::VecDeque;

use tracing::debug;

pub(crate) mod framer;

use framer::{Frame, LineFramer};

use crate::proto::{Connection, Piece, Reply, Step};

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

/// A line-protocol connection's state: where its framer stands.
pub(crate) struct Line {
    framer: LineFramer,
}

impl Line {
    /// A connection at the start of its first line.
    pub(crate) fn new() -> Line {
        Line {
            framer: LineFramer::new(),
        }
    }

    /// The next step for a line-protocol connection.
    pub(crate) fn step(&mut self, conn: &mut dyn Connection) -> Step {
        let (frame, consumed) = self.framer.next(conn.input());
        if let Some(f) = frame {
            return respond(conn, f, consumed);
        }
        conn.input().drain(..consumed);
        if conn.eof() {
            // The client half-closed: a last name without newline still counts.
            let n = conn.input().len();
            return match self.framer.finish(conn.input()) {
                Some(f) => respond(conn, f, n),
                None => Step::Close,
            };
        }
        Step::Recv
    }
}

/// Answers one frame, then drops its bytes (`consumed`) from the input.
fn respond(conn: &mut dyn Connection, frame: Frame, consumed: usize) -> Step {
    let key = conn.key();
    let over_limit = conn.over_limit();
    let name = match &frame {
        Frame::Line(r) => conn.input().get(r.clone()).unwrap_or_default().to_vec(),
        Frame::TooLong => Vec::new(),
    };
    let reply = match &frame {
        _ if over_limit => Err("busy"),
        Frame::TooLong => Err("line too long"),
        Frame::Line(r) if r.is_empty() => Err("bad name"),
        Frame::Line(_) => conn.site().root.open_file(&name).map_err(|e| e.reason()),
    };
    let status = reply.as_ref().err().map_or(200, |r| status_of(r));
    conn.begin(&name, status);
    let step = match reply {
        Ok(opened) => {
            debug!(conn = key, name = %String::from_utf8_lossy(&name).escape_debug(), bytes = opened.len, "transmit file");
            if opened.len == 0 {
                Step::Again
            } else if let Some(body) = opened.body {
                // A small file the cache holds: from memory, one send, in a
                // buffer the worker reuses.
                let mut out = crate::proto::out_buf(body.len());
                out.extend_from_slice(&body);
                Reply::bytes(out, false)
            } else {
                let piece = Piece::File {
                    head: Vec::new(),
                    offset: 0,
                    len: opened.len,
                    tail: Vec::new(),
                };
                Step::Reply(Reply {
                    pieces: VecDeque::from([piece]),
                    close: false,
                    file: Some(opened.file),
                    name: Some(name),
                })
            }
        }
        Err(reason) => {
            debug!(conn = key, name = %String::from_utf8_lossy(&name).escape_debug(), "refused: {reason}");
            let line = format!("{ERROR_PREFIX}{reason}\r\n").into_bytes();
            Reply::bytes(line, over_limit)
        }
    };
    let input = conn.input();
    input.drain(..consumed.min(input.len()));
    step
}
