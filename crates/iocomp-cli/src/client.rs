//! The pure HTTP/1.1 client pieces `iocomp get` drives on the engine: the
//! request text (through `http_proxy` when the environment names one, see
//! [`crate::proxy`]), the response head parsed with `httparse`, and the
//! failures with their exit codes. One request per connection
//! (`Connection: close`). Also one blocking `HEAD` that `iocomp bench` sends
//! once, before its run, to learn a file's size for the line protocol.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::target::{Target, TargetError};

/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub enum Fail {
    /// Bad arguments (exit 2).
    Usage(String),
    /// Could not connect, timed out, connection broken, malformed response (exit 3).
    Network(String),
    /// The server answered with an error status (exit 4).
    Http(String),
    /// The local file system (exit 5).
    Local(String),
    /// TLS: a certificate that cannot be verified, a failed handshake, a
    /// bad `--cacert` (exit 6).
    Tls(String),
}

impl Fail {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            Fail::Usage(_) => 2,
            Fail::Network(_) => 3,
            Fail::Http(_) => 4,
            Fail::Local(_) => 5,
            Fail::Tls(_) => 6,
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Usage(s) | Fail::Network(s) | Fail::Http(s) | Fail::Local(s) | Fail::Tls(s) => {
                f.write_str(s)
            }
        }
    }
}

impl From<TargetError> for Fail {
    fn from(e: TargetError) -> Fail {
        Fail::Usage(e.to_string())
    }
}

/// Timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the TCP handshake.
    pub connect: Duration,
    /// The longest wait for the next bytes (a stalled server).
    pub stall: Duration,
}

/// Connects (blocking) to the target's first address that answers.
fn connect(t: &Target, to: Timeouts) -> Result<TcpStream, Fail> {
    let addrs = t
        .resolve()
        .map_err(|e| Fail::Network(format!("{}: cannot resolve: {e}", t.host)))?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, to.connect) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                s.set_read_timeout(Some(to.stall))
                    .and_then(|()| s.set_write_timeout(Some(to.stall)))
                    .map_err(|e| Fail::Network(format!("{a}: {e}")))?;
                return Ok(s);
            }
            Err(e) => last = Some((a, e)),
        }
    }
    let Some((a, e)) = last else {
        return Err(Fail::Network(format!(
            "{}: the name has no addresses",
            t.host
        )));
    };
    let why = if e.kind() == io::ErrorKind::TimedOut {
        "connect timed out".to_string()
    } else {
        e.to_string()
    };
    Err(Fail::Network(format!("{a}: {why}")))
}

/// A network error while reading or writing, with a stall named as such.
pub fn net(what: &str, e: io::Error) -> Fail {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Fail::Network(format!("{what}: timed out (no data within --timeout)"))
        }
        _ => Fail::Network(format!("{what}: {e}")),
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `Content-Length`, if present and valid: every value (of every
    /// `Content-Length` field, of a comma-separated list) one and the same
    /// decimal number (RFC 9110 §8.6).
    pub fn content_length(&self) -> Option<u64> {
        let mut len = None;
        for (_, v) in self.headers.iter().filter(|(n, _)| n == "content-length") {
            for p in v.split(',').map(str::trim) {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let n: u64 = p.parse().ok()?;
                if len.is_some_and(|l| l != n) {
                    return None;
                }
                len = Some(n);
            }
        }
        len
    }

    /// `Content-Range: bytes A-B/T` as `(A, B, Some(T))` (`None` for a `*`
    /// total); a 416's `bytes */T` is [`Head::unsatisfied_total`]. An
    /// invalid range (RFC 9110 §14.4: B < A, or T ≤ B) is `None`.
    pub fn content_range(&self) -> Option<(u64, u64, Option<u64>)> {
        let v = self.get("content-range")?.trim().strip_prefix("bytes ")?;
        let (range, total) = v.split_once('/')?;
        let (a, b) = range.split_once('-')?;
        let total = if total.trim() == "*" {
            None
        } else {
            Some(total.trim().parse().ok()?)
        };
        let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        if b < a || total.is_some_and(|t| t <= b) {
            return None;
        }
        Some((a, b, total))
    }

    /// The total of `Content-Range: bytes */T` (a 416's answer).
    pub fn unsatisfied_total(&self) -> Option<u64> {
        let v = self.get("content-range")?.trim().strip_prefix("bytes */")?;
        v.trim().parse().ok()
    }

    /// A weak `ETag` (`W/"..."`): never sent in `If-Range` (RFC 9110
    /// §13.1.5 allows only a strong one), but compared byte for byte with
    /// the one saved: another weak tag proves another version.
    pub fn weak_etag(&self) -> Option<String> {
        self.get("etag")
            .map(str::trim)
            .filter(|e| e.starts_with("W/"))
            .map(str::to_string)
    }

    /// The validator for `If-Range`: a strong ETag, else `Last-Modified`.
    pub fn validator(&self) -> Option<String> {
        match self.get("etag") {
            Some(e) if !e.starts_with("W/") => Some(e.to_string()),
            _ => self.get("last-modified").map(str::to_string),
        }
    }
}

/// The request text for `t`, and where to connect: the target itself, or the
/// `http_proxy` that carries it (then the whole URL is named, absolute-form),
/// or for `https://` the `https_proxy` to open a `CONNECT` tunnel through
/// (the request, origin-form, then goes inside TLS; the proxy, unlike the
/// target, is not `https`: that is how a caller tells a tunnel).
pub fn request(
    t: &Target,
    method: &str,
    extra: &[(&str, String)],
) -> Result<(Vec<u8>, Target), Fail> {
    let proxy = crate::proxy::for_target(t)?;
    let (via, target) = match proxy {
        Some(p) if !t.https => (p, t.to_string()),
        Some(p) => (p, t.path.clone()),
        None => (t.clone(), t.path.clone()),
    };
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: iocomp/{}\r\nAccept: */*\r\nConnection: close\r\n",
        t.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("accept-encoding"))
    {
        req.push_str("Accept-Encoding: identity\r\n");
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    Ok((req.into_bytes(), via))
}

/// Parses a response head at the start of `buf`: `None` while incomplete,
/// else the head and the bytes it used.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Fail> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hs);
    match r.parse(buf) {
        Ok(httparse::Status::Complete(used)) => {
            let head = Head {
                status: r.code.unwrap_or(0),
                reason: r.reason.unwrap_or("").to_string(),
                headers: r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
            };
            Ok(Some((head, used)))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Ok(None),
        Ok(httparse::Status::Partial) => Err(Fail::Network("response head too large".into())),
        Err(e) => Err(Fail::Network(format!("malformed response: {e}"))),
    }
}

/// The request that opens a tunnel to `t` through a proxy (RFC 9110 §9.3.6).
pub fn connect_request(t: &Target) -> Vec<u8> {
    let authority = if t.host.contains(':') {
        format!("[{}]:{}", t.host, t.port)
    } else {
        format!("{}:{}", t.host, t.port)
    };
    format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: iocomp/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// One blocking `HEAD` of `t` (for `bench --raw`): the response head.
pub fn head(t: &Target, to: Timeouts) -> Result<Head, Fail> {
    if t.https {
        return Err(Fail::Usage(format!("{t}: a blocking HEAD has no TLS")));
    }
    let (req, via) = request(t, "HEAD", &[])?;
    let mut s = connect(&via, to)?;
    s.write_all(&req)
        .map_err(|e| net("sending the request", e))?;
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let n = s
            .read(&mut chunk)
            .map_err(|e| net("reading the response", e))?;
        if n == 0 {
            return Err(Fail::Network(
                "the server closed the connection before a response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, _)) = parse_head(&buf)? {
            return Ok(head);
        }
    }
}
