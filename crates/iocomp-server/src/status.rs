//! The metrics listener (`--metrics ADDR`): a second listener on the same
//! engine, whose connections run the same connection driver (so the same
//! header and idle timeouts cut a stalled client, and no client can hold up
//! another) with a tiny router instead of the file server:
//!
//! - `GET /metrics`: Prometheus text format ([`crate::metrics`]);
//! - `GET /status.json`: the transfers in progress;
//! - `GET /`: a page that polls `/status.json` and shows them live.
//!
//! Transfers are registered in a sharded table when a file reply starts and
//! removed when it ends (one lock of one shard each); the bytes sent so far are
//! an atomic the connection adds to after each operation, plus the progress of
//! the operation in flight, read from the engine at scrape time.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use iocomp::{OpId, Port};

use crate::conn::{Conn, Piece, Step};
use crate::http::request::{self, Method, Parsed, Request, Version};
use crate::http::response::{error_response, Head};
use crate::metrics::Gauges;
use crate::watch::{Wait, Watch};

/// The status page: plain HTML and a little JavaScript, no build step.
const PAGE: &str = include_str!("status.html");

const SHARDS: usize = 16;

/// One file reply in progress.
pub(crate) struct Transfer {
    peer: Option<SocketAddr>,
    name: String,
    /// Body bytes.
    size: u64,
    start: Instant,
    /// Bytes sent by the reply's finished operations (its head included).
    done: AtomicU64,
    /// The length of the reply's head, not counted as progress.
    head: AtomicU64,
    /// The connection's watch: which operation is in flight.
    watch: Arc<Watch>,
}

impl Transfer {
    /// Operation `bytes` moved.
    pub(crate) fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The reply's head is `n` bytes.
    pub(crate) fn set_head(&self, n: u64) {
        self.head.store(n, Ordering::Relaxed);
    }

    fn sent(&self, port: &Port) -> u64 {
        let mut sent = self.done.load(Ordering::Relaxed);
        if self.watch.state() == Wait::Sending {
            let op = self.watch.op_id();
            if op != 0 {
                sent += port.progress(OpId::from_u64(op)).unwrap_or(0);
            }
        }
        sent.saturating_sub(self.head.load(Ordering::Relaxed))
            .min(self.size)
    }
}

/// The transfers in progress, in shards by connection.
pub(crate) struct Transfers {
    shards: Vec<Mutex<HashMap<u64, Arc<Transfer>>>>,
}

impl Transfers {
    pub(crate) fn new() -> Transfers {
        Transfers {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Transfer>>> {
        self.shards[key as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers connection `key`'s new file reply.
    pub(crate) fn begin(
        &self,
        key: u64,
        peer: Option<SocketAddr>,
        name: &[u8],
        size: u64,
        watch: &Arc<Watch>,
    ) -> Arc<Transfer> {
        let t = Arc::new(Transfer {
            peer,
            name: String::from_utf8_lossy(name).into_owned(),
            size,
            start: Instant::now(),
            done: AtomicU64::new(0),
            head: AtomicU64::new(0),
            watch: watch.clone(),
        });
        self.shard(key).insert(key, t.clone());
        t
    }

    /// Connection `key`'s reply is over.
    pub(crate) fn end(&self, key: u64) {
        self.shard(key).remove(&key);
    }

    /// How many are in progress.
    pub(crate) fn count(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len() as u64)
            .sum()
    }

    fn snapshot(&self) -> Vec<(u64, Arc<Transfer>)> {
        let mut all = Vec::new();
        for s in &self.shards {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(s.iter().map(|(k, t)| (*k, t.clone())));
        }
        all.sort_by_key(|(k, _)| *k);
        all
    }
}

/// `/status.json`.
fn status_json(conn: &Conn) -> String {
    let shared = &conn.shared;
    let mut o = String::with_capacity(256);
    let _ = write!(
        o,
        "{{\"backend\":\"{}\",\"connections\":{},\"rate_limit\":{},\"transfers\":[",
        conn.port.backend(),
        shared.client_connections(),
        shared.rate.map_or(0, |r| r.rate)
    );
    let list = shared
        .transfers
        .as_ref()
        .map(|t| t.snapshot())
        .unwrap_or_default();
    for (i, (key, t)) in list.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let sent = t.sent(&conn.port);
        let elapsed = t.start.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            sent as f64 / elapsed
        } else {
            0.0
        };
        let client = t.peer.map_or_else(String::new, |p| p.to_string());
        let _ = write!(
            o,
            "{{\"id\":{key},\"client\":\"{}\",\"file\":\"{}\",\"sent\":{sent},\"size\":{},\"elapsed\":{elapsed:.3},\"rate\":{rate:.0}}}",
            json_escape(&client),
            json_escape(&t.name),
            t.size
        );
    }
    o.push_str("]}\n");
    o
}

/// Escapes a string for a JSON string literal.
pub(crate) fn json_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '<' => o.push_str("\\u003c"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

/// The next step for a connection to the metrics listener.
pub(crate) fn step(conn: &mut Conn) -> Step {
    let buf = std::mem::take(&mut conn.inbuf);
    let date = crate::web::date();
    let (step, consumed) = match request::parse(&buf) {
        Ok(Parsed::Partial) => (if conn.eof { Step::Close } else { Step::Recv }, 0),
        Err(e) => {
            let mut out = Vec::with_capacity(256);
            error_response(
                &mut out,
                &date,
                e.status(),
                Version::Http11,
                false,
                false,
                None,
            );
            (reply(out, true), buf.len())
        }
        Ok(Parsed::Complete(req, head_len)) => (route(conn, &req, &date), head_len),
    };
    conn.served = true;
    conn.inbuf = buf;
    conn.inbuf.drain(..consumed.min(conn.inbuf.len()));
    step
}

fn reply(out: Vec<u8>, close: bool) -> Step {
    Step::Reply {
        pieces: VecDeque::from([Piece::Bytes(out)]),
        close,
    }
}

fn route(conn: &Conn, req: &Request<'_>, date: &[u8; crate::http::date::DATE_LEN]) -> Step {
    let keep_alive = req.keep_alive
        && !conn
            .shared
            .draining
            .load(std::sync::atomic::Ordering::Relaxed);
    let head_only = matches!(req.method, Method::Head);
    let mut out = Vec::with_capacity(512);
    if !matches!(req.method, Method::Get | Method::Head) {
        error_response(
            &mut out,
            date,
            405,
            req.version,
            keep_alive,
            head_only,
            None,
        );
        return reply(out, !keep_alive);
    }
    let (ct, body): (&[u8], std::borrow::Cow<'_, str>) = match req.path {
        b"/metrics" => (
            b"text/plain; version=0.0.4; charset=utf-8",
            conn.shared.render_metrics(&conn.port).into(),
        ),
        b"/status.json" => (b"application/json", status_json(conn).into()),
        b"/" | b"/index.html" => (b"text/html; charset=utf-8", PAGE.into()),
        _ => {
            error_response(
                &mut out,
                date,
                404,
                req.version,
                keep_alive,
                head_only,
                None,
            );
            return reply(out, !keep_alive);
        }
    };
    Head::new(&mut out, 200, date)
        .header("Content-Type", ct)
        .content_length(body.len() as u64)
        .header("Cache-Control", b"no-store")
        .connection(req.version, keep_alive)
        .finish();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    reply(out, !keep_alive)
}

/// Gauges for `/metrics`.
pub(crate) fn gauges<'a>(
    backend: &'a str,
    connections: u64,
    metrics_connections: u64,
    transfers: Option<&Transfers>,
    rate_limit: u64,
) -> Gauges<'a> {
    Gauges {
        backend,
        connections,
        metrics_connections,
        transfers: transfers.map_or(0, Transfers::count),
        rate_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::json_escape;

    #[test]
    fn json_escape_is_safe_in_a_script_and_a_string() {
        assert_eq!(json_escape("a\"b\\c\n</x>"), "a\\\"b\\\\c\\u000a\\u003c/x>");
    }
}
