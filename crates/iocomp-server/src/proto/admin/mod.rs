//! The metrics listener (`--metrics ADDR`): a second listener on the same
//! engine, whose connections run the same connection driver (so the same
//! header and idle timeouts cut a stalled client, and no client can hold up
//! another) with a tiny router instead of the file server:
//!
//! - `GET /metrics`: Prometheus text format ([`crate::obs::metrics`]);
//! - `GET /status.json`: the transfers in progress;
//! - `GET /`: a page that polls `/status.json` and shows them live.
//!
//! The transfers it shows are kept by [`crate::obs::transfers`].

use std::fmt::Write as _;

use crate::http::date::DATE_LEN;
use crate::http::request::{self, Method, Parsed, Request, Version};
use crate::http::response::{error_response, Head};
use crate::obs::metrics::Gauges;
use crate::obs::transfers::Transfers;
use crate::proto::{date, Connection, Reply, Step};

/// The status page: plain HTML, its style sheet and a little JavaScript, no
/// build step. Script and style are files of their own, so that the page's
/// Content-Security-Policy can allow them by origin and forbid anything inline.
const PAGE: &str = include_str!("status.html");
/// The status page's style sheet (`/status.css`).
const CSS: &str = include_str!("status.css");
/// The status page's script (`/status.js`).
const JS: &str = include_str!("status.js");

/// The status page's Content-Security-Policy: its own script, style and
/// `fetch("status.json")`, nothing else.
const PAGE_CSP: &[u8] = b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/status.json`.
fn status_json(conn: &dyn Connection) -> String {
    let site = conn.site();
    let mut o = String::with_capacity(256);
    let _ = write!(
        o,
        "{{\"backend\":\"{}\",\"connections\":{},\"rate_limit\":{},\"transfers\":[",
        site.port.backend(),
        conn.connections().clients,
        site.settings.rate.map_or(0, |r| r.rate)
    );
    let list = site
        .obs
        .transfers
        .as_ref()
        .map(|t| t.snapshot())
        .unwrap_or_default();
    for (i, (key, t)) in list.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let sent = t.sent(site.port);
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
pub(crate) fn step(conn: &mut dyn Connection) -> Step {
    let buf = std::mem::take(conn.input());
    let date = date();
    let (step, consumed) = match request::parse(&buf) {
        Ok(Parsed::Partial) => (if conn.eof() { Step::Close } else { Step::Recv }, 0),
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
        Ok(Parsed::Complete(req, head_len)) => {
            // Only a complete request makes the next wait an idle one.
            conn.mark_served();
            (route(conn, &req, &date), head_len)
        }
    };
    let input = conn.input();
    *input = buf;
    input.drain(..consumed.min(input.len()));
    step
}

fn reply(out: Vec<u8>, close: bool) -> Step {
    Reply::bytes(out, close)
}

fn route(conn: &dyn Connection, req: &Request<'_>, date: &[u8; DATE_LEN]) -> Step {
    let keep_alive = req.keep_alive && !conn.draining();
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
            render_metrics(conn).into(),
        ),
        b"/status.json" => (b"application/json", status_json(conn).into()),
        b"/" | b"/index.html" => (b"text/html; charset=utf-8", PAGE.into()),
        b"/status.css" => (b"text/css; charset=utf-8", CSS.into()),
        b"/status.js" => (b"text/javascript; charset=utf-8", JS.into()),
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
    let mut head = Head::new(&mut out, 200, date);
    head.header("Content-Type", ct)
        .content_length(body.len() as u64)
        .header("Cache-Control", b"no-store");
    if ct.starts_with(b"text/html") {
        head.header("Content-Security-Policy", PAGE_CSP);
    }
    head.connection(req.version, keep_alive).finish();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    reply(out, !keep_alive)
}

/// The `/metrics` exposition.
fn render_metrics(conn: &dyn Connection) -> String {
    let site = conn.site();
    let Some(m) = &site.obs.metrics else {
        return String::new();
    };
    let backend = site.port.backend().to_string();
    let counts = conn.connections();
    m.render(&Gauges {
        backend: &backend,
        connections: counts.clients,
        metrics_connections: counts.admin,
        transfers: site.obs.transfers.as_ref().map_or(0, Transfers::count),
        rate_limit: site.settings.rate.map_or(0, |r| r.rate),
        ktls: site.settings.ktls.any(),
    })
}

#[cfg(test)]
mod tests {
    use super::json_escape;

    #[test]
    fn json_escape_is_safe_in_a_script_and_a_string() {
        assert_eq!(json_escape("a\"b\\c\n</x>"), "a\\\"b\\\\c\\u000a\\u003c/x>");
    }
}
