//! The blocking HTTP/1.1 client pieces `iocomp get` is built on (and that
//! `iocomp bench` uses once, to learn a file's size for the line protocol):
//! connect with a timeout, send a request, read and parse the response head
//! with `httparse`, and read the body by `Content-Length`, chunked transfer
//! coding, or to EOF. One request per connection (`Connection: close`).
//! Through `http_proxy` when the environment names one (see [`crate::proxy`]).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
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
}

impl Fail {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            Fail::Usage(_) => 2,
            Fail::Network(_) => 3,
            Fail::Http(_) => 4,
            Fail::Local(_) => 5,
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Usage(s) | Fail::Network(s) | Fail::Http(s) | Fail::Local(s) => f.write_str(s),
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

/// Connects to the target's first address that answers.
pub fn connect(t: &Target, to: Timeouts) -> Result<TcpStream, Fail> {
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

    /// `Content-Length`, if present and valid.
    pub fn content_length(&self) -> Option<u64> {
        self.get("content-length")?.trim().parse().ok()
    }

    /// `Content-Range: bytes A-B/T` as `(A, B, Some(T))` (`None` for a `*`
    /// total); a 416's `bytes */T` is [`Head::unsatisfied_total`].
    pub fn content_range(&self) -> Option<(u64, u64, Option<u64>)> {
        let v = self.get("content-range")?.trim().strip_prefix("bytes ")?;
        let (range, total) = v.split_once('/')?;
        let (a, b) = range.split_once('-')?;
        let total = if total.trim() == "*" {
            None
        } else {
            Some(total.trim().parse().ok()?)
        };
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total))
    }

    /// The total of `Content-Range: bytes */T` (a 416's answer).
    pub fn unsatisfied_total(&self) -> Option<u64> {
        let v = self.get("content-range")?.trim().strip_prefix("bytes */")?;
        v.trim().parse().ok()
    }

    /// The validator for `If-Range`: a strong ETag, else `Last-Modified`.
    pub fn validator(&self) -> Option<String> {
        match self.get("etag") {
            Some(e) if !e.starts_with("W/") => Some(e.to_string()),
            _ => self.get("last-modified").map(str::to_string),
        }
    }
}

/// An open response: its head, and its body as a reader.
pub struct Response {
    /// The head.
    pub head: Head,
    /// The body.
    pub body: Body,
}

/// Sends `method target` with `extra` header lines and reads the response head.
pub fn request(
    t: &Target,
    method: &str,
    extra: &[(&str, String)],
    to: Timeouts,
) -> Result<Response, Fail> {
    // Through `http_proxy` (unless `no_proxy` exempts the host): connect to
    // the proxy and name the whole URL (absolute-form).
    let proxy = crate::proxy::for_target(t)?;
    let (mut s, target) = match &proxy {
        Some(p) => (connect(p, to)?, t.to_string()),
        None => (connect(t, to)?, t.path.clone()),
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
    s.write_all(req.as_bytes())
        .map_err(|e| net("sending the request", e))?;
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let (head, used) = loop {
        let n = s
            .read(&mut chunk)
            .map_err(|e| net("reading the response", e))?;
        if n == 0 {
            return Err(Fail::Network(
                "the server closed the connection before a response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        match r.parse(&buf) {
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
                break (head, used);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(Fail::Network("response head too large".to_string()))
            }
            Err(e) => return Err(Fail::Network(format!("malformed response: {e}"))),
        }
    };
    let leftover = buf.split_off(used);
    let chunked = head
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let kind = if method == "HEAD" || head.status == 204 || head.status == 304 {
        Kind::Length(0)
    } else if chunked {
        Kind::Chunked(Chunk::Size(Vec::new()))
    } else if let Some(n) = head.content_length() {
        Kind::Length(n)
    } else {
        Kind::Eof
    };
    let _ = s.shutdown(Shutdown::Write);
    Ok(Response {
        head,
        body: Body {
            stream: s,
            pending: leftover,
            pos: 0,
            kind,
        },
    })
}

/// A response body: `read` returns decoded bytes and 0 at its end; a body
/// that ends early is an `UnexpectedEof` error.
pub struct Body {
    stream: TcpStream,
    pending: Vec<u8>,
    pos: usize,
    kind: Kind,
}

enum Kind {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    Eof,
}

enum Chunk {
    /// Reading a chunk-size line (bytes so far).
    Size(Vec<u8>),
    /// Inside a chunk: bytes left, then its CRLF.
    Data(u64),
    /// The CRLF after a chunk's data (bytes of it seen).
    Crlf(u8),
    /// After the last chunk (trailers are skipped).
    Trailer(Vec<u8>),
    Done,
}

impl Body {
    /// The declared length, if known up front.
    pub fn len_hint(&self) -> Option<u64> {
        match self.kind {
            Kind::Length(n) => Some(n),
            _ => None,
        }
    }

    fn raw_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.pending.len() {
            let n = buf.len().min(self.pending.len() - self.pos);
            buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.stream.read(buf)
    }

    fn raw_byte(&mut self) -> io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        Ok((self.raw_read(&mut b)? == 1).then_some(b[0]))
    }
}

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the body ended early")
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.kind {
                Kind::Eof => return self.raw_read(buf),
                Kind::Length(0) => return Ok(0),
                Kind::Length(left) => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = self.raw_read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(short());
                    }
                    if let Kind::Length(left) = &mut self.kind {
                        *left -= n as u64;
                    }
                    return Ok(n);
                }
                Kind::Chunked(Chunk::Data(left)) => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = self.raw_read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(short());
                    }
                    if let Kind::Chunked(Chunk::Data(left)) = &mut self.kind {
                        *left -= n as u64;
                        if *left == 0 {
                            self.kind = Kind::Chunked(Chunk::Crlf(0));
                        }
                    }
                    return Ok(n);
                }
                Kind::Chunked(Chunk::Done) => return Ok(0),
                Kind::Chunked(_) => self.chunk_framing()?,
            }
        }
    }
}

impl Body {
    /// Advances through a chunk-size line, a chunk's CRLF or the trailers.
    fn chunk_framing(&mut self) -> io::Result<()> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("chunked: {m}"));
        let b = self.raw_byte()?.ok_or_else(short)?;
        let Kind::Chunked(state) = &mut self.kind else {
            return Ok(());
        };
        match state {
            Chunk::Size(line) => {
                if b != b'\n' {
                    if line.len() > 1024 {
                        return Err(bad("size line too long"));
                    }
                    line.push(b);
                    return Ok(());
                }
                let text = String::from_utf8_lossy(line);
                let hex = text.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))?;
                *state = if size == 0 {
                    Chunk::Trailer(Vec::new())
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Crlf(seen) => match (b, *seen) {
                (b'\r', 0) => *seen = 1,
                (b'\n', _) => *state = Chunk::Size(Vec::new()),
                _ => return Err(bad("missing CRLF after a chunk")),
            },
            Chunk::Trailer(line) => {
                if b == b'\n' {
                    let empty = line.iter().all(|&c| c == b'\r');
                    line.clear();
                    if empty {
                        *state = Chunk::Done;
                    }
                } else {
                    line.push(b);
                }
            }
            Chunk::Data(_) | Chunk::Done => {}
        }
        Ok(())
    }
}
