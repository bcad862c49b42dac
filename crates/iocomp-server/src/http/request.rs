//! Request heads: parsing and validation per RFC 9110 and RFC 9112.
//!
//! [`parse`] runs `httparse` over at most [`MAX_HEAD`] bytes with a header
//! array on the stack, then keeps, as slices borrowed from the buffer, the
//! few fields the server uses. It never allocates. Everything that could
//! desynchronise a keep-alive connection or smuggle a request is refused with
//! a typed [`HttpError`] that names the status to answer with: malformed
//! request lines and header lines (bare CR, obs-fold, NUL and other control
//! bytes), a missing or duplicate `Host`, a duplicate of any header whose
//! meaning would be ambiguous, and any sign of a request body — the server
//! never reads bodies, so a `Content-Length` above zero or any
//! `Transfer-Encoding` is refused and the connection closed. Methods other
//! than GET, HEAD and OPTIONS come back as [`Method::Other`] (when they carry
//! no body) for the caller to answer 405.

use std::mem::MaybeUninit;

use httparse::Status;

pub use crate::http::error::HttpError;
use crate::http::target::{is_host_byte, split_query, split_target};

/// The largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 8192;

/// The most header fields accepted in one request.
pub const MAX_HEADERS: usize = 100;
/// The request line (method, target, version) may be at most this long: a
/// longer one is 414, as nginx's default buffer gives, and the same bound as
/// a line-protocol name.
pub const MAX_REQUEST_LINE: usize = 4096;

/// A request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method<'a> {
    /// `GET`: served.
    Get,
    /// `HEAD`: served, without a body.
    Head,
    /// `OPTIONS`: answered by the caller with `Allow: GET, HEAD, OPTIONS`.
    Options,
    /// Any other method token (case-sensitive, so `get` lands here): the
    /// caller answers 405 with `Allow`. Its target has not been validated.
    Other(&'a str),
}

impl Method<'_> {
    /// The method token as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Other(m) => m,
        }
    }

    /// Whether this is GET or HEAD, the methods that serve files.
    pub fn is_get_or_head(&self) -> bool {
        matches!(self, Method::Get | Method::Head)
    }
}

/// The protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
}

impl Version {
    /// `"HTTP/1.0"` or `"HTTP/1.1"`, for the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// A parsed request head; every slice borrows from the caller's buffer.
///
/// Header values have surrounding spaces and tabs removed and may contain
/// obs-text (bytes ≥ 0x80) but never control bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method<'a>,
    /// The protocol version.
    pub version: Version,
    /// The request-target exactly as sent (for the access log).
    pub target: &'a [u8],
    /// The path, still percent-encoded: starts with `/`, or is `*` (OPTIONS
    /// only). For absolute-form targets it is the path part of the URI (`/`
    /// when the URI has none). For [`Method::Other`] it is the raw target.
    pub path: &'a [u8],
    /// The query after `?`, without the `?`; `None` when there is no `?`.
    pub query: Option<&'a [u8]>,
    /// The host: the authority of an absolute-form target, else the `Host`
    /// header (absent only on HTTP/1.0).
    pub host: Option<&'a [u8]>,
    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Range`.
    pub range: Option<&'a [u8]>,
    /// `If-Range`.
    pub if_range: Option<&'a [u8]>,
    /// `If-Match`.
    pub if_match: Option<&'a [u8]>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a [u8]>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a [u8]>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a [u8]>,
    /// `Accept-Encoding`; `None` as well when the header was repeated (so
    /// only the identity encoding is served: always safe).
    pub accept_encoding: Option<&'a [u8]>,
    /// `Accept` (the first one, if repeated).
    pub accept: Option<&'a [u8]>,
    /// `User-Agent` (the first one), for the combined log.
    pub user_agent: Option<&'a [u8]>,
    /// `Referer` (the first one), for the combined log.
    pub referer: Option<&'a [u8]>,
}

/// The outcome of [`parse`] on the bytes received so far.
// Not boxed: a heap allocation per request is what this module avoids.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The head is not complete yet: read more (the size caps are already
    /// enforced, so the caller needs no check of its own).
    Partial,
    /// A complete, valid head, and its length in bytes (including any empty
    /// lines before it); the next pipelined request starts there.
    Complete(Request<'a>, usize),
}

/// Parses the request head at the start of `buf`.
///
/// `buf` holds what has been received (possibly several pipelined requests);
/// only its first [`MAX_HEAD`] bytes are looked at. `Partial` means "read
/// more"; when `MAX_HEAD` bytes are present without a complete head the
/// answer is [`HttpError::UriTooLong`] if the request line is not finished
/// either, else [`HttpError::HeadTooLarge`].
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, HttpError> {
    let window = buf.get(..MAX_HEAD).unwrap_or(buf);
    let line = skip_empty_lines(window);
    // Only a longer buffer can hold a request line over the limit: no scan
    // for the line's end otherwise (the usual request is far shorter). The
    // limit is on the line without its ending, CRLF or a bare LF alike.
    if line.len() > MAX_REQUEST_LINE + 1 {
        match line.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let cr = line.get(..end).is_some_and(|l| l.ends_with(b"\r"));
                if end - usize::from(cr) > MAX_REQUEST_LINE {
                    return Err(HttpError::UriTooLong);
                }
            }
            None => return Err(HttpError::UriTooLong),
        }
    }
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(window, &mut headers) {
        Ok(Status::Complete(len)) => build(&req, len),
        Ok(Status::Partial) if window.len() >= MAX_HEAD => Err(too_big(window)),
        Ok(Status::Partial) => Ok(Parsed::Partial),
        Err(err) => classify(err, window),
    }
}

/// The first request line in `buf` (after any empty lines), without its line
/// ending, for logging a refused request; at most [`MAX_HEAD`] bytes.
pub fn request_line(buf: &[u8]) -> &[u8] {
    let rest = skip_empty_lines(buf.get(..MAX_HEAD).unwrap_or(buf));
    let line = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => rest.get(..end).unwrap_or(rest),
        None => rest,
    };
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// [`request_line`] of a `buf` that [`parse`] found `req` complete in,
/// without a scan for the line's end: its length follows from the method,
/// the target and the version (`METHOD SP target SP HTTP/1.x`), checked by
/// the line ending found right there; anything else (never seen with
/// `httparse`'s strict request line) falls back to the scan.
pub fn request_line_of<'a>(buf: &'a [u8], req: &Request<'_>) -> &'a [u8] {
    let rest = skip_empty_lines(buf.get(..MAX_HEAD).unwrap_or(buf));
    let len = req.method.as_str().len() + req.target.len() + b"  HTTP/1.1".len();
    match (rest.get(len), rest.get(..len)) {
        (Some(b'\r' | b'\n'), Some(line)) if !line.contains(&b'\n') => line,
        _ => request_line(buf),
    }
}

/// `buf` without the empty lines (CRLF or LF) RFC 9112 §2.2 lets a server skip.
fn skip_empty_lines(mut buf: &[u8]) -> &[u8] {
    loop {
        if let Some(rest) = buf.strip_prefix(b"\r\n") {
            buf = rest;
        } else if let Some(rest) = buf.strip_prefix(b"\n") {
            buf = rest;
        } else {
            return buf;
        }
    }
}

/// The error for a head that did not complete within [`MAX_HEAD`] bytes.
fn too_big(window: &[u8]) -> HttpError {
    if skip_empty_lines(window).contains(&b'\n') {
        HttpError::HeadTooLarge
    } else {
        HttpError::UriTooLong
    }
}

/// Maps an `httparse` error to ours, telling request-line from header faults.
fn classify(err: httparse::Error, window: &[u8]) -> Result<Parsed<'_>, HttpError> {
    match err {
        httparse::Error::TooManyHeaders => Err(HttpError::TooManyHeaders),
        httparse::Error::Version => version_error(window),
        httparse::Error::HeaderName | httparse::Error::HeaderValue => Err(HttpError::BadHeader),
        _ => {
            // Parse the request line alone: with no room for headers it either
            // succeeds or reports TooManyHeaders if the line itself is fine.
            let mut line_only = httparse::Request::new(&mut []);
            match line_only.parse(window) {
                Ok(Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
                    Err(HttpError::BadHeader)
                }
                Err(httparse::Error::Version) => version_error(window),
                _ => Err(HttpError::BadRequestLine),
            }
        }
    }
}

/// Decides between 400, 505 and "wait" for a version `httparse` refused.
fn version_error(window: &[u8]) -> Result<Parsed<'_>, HttpError> {
    let rest = skip_empty_lines(window);
    let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (rest.get(..end).unwrap_or(rest), true),
        None => (rest, false),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let token = match line.iter().rposition(|&b| b == b' ') {
        Some(sp) => line.get(sp + 1..).unwrap_or(b""),
        None => line,
    };
    const PATTERN: &[u8] = b"HTTP/9.9";
    let fits = |t: &[u8]| {
        t.len() <= PATTERN.len()
            && t.iter().zip(PATTERN).all(|(&b, &p)| {
                if p == b'9' {
                    b.is_ascii_digit()
                } else {
                    b == p
                }
            })
    };
    if !complete && fits(token) {
        return if window.len() >= MAX_HEAD {
            Err(HttpError::UriTooLong)
        } else {
            Ok(Parsed::Partial)
        };
    }
    if complete && token.len() == PATTERN.len() && fits(token) {
        Err(HttpError::VersionNotSupported)
    } else {
        Err(HttpError::BadVersion)
    }
}

/// Header fields seen while scanning, before validation.
#[derive(Default)]
struct Seen<'a> {
    host: Option<&'a [u8]>,
    hosts: usize,
    content_length: Option<&'a [u8]>,
    transfer_encoding: bool,
    duplicate: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    if_match: Option<&'a [u8]>,
    if_none_match: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
    if_unmodified_since: Option<&'a [u8]>,
    accept_encoding: Option<&'a [u8]>,
    accept_encodings: usize,
    accept: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
    referer: Option<&'a [u8]>,
}

/// Stores `value` in a field that must not repeat, flagging a duplicate.
fn unique<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8], duplicate: &mut bool) {
    if slot.is_some() {
        *duplicate = true;
    } else {
        *slot = Some(value);
    }
}

/// Stores `value` in a field where only the first occurrence counts.
fn first<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

/// Removes leading and trailing spaces and tabs.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

impl<'a> Seen<'a> {
    /// Records one header field.
    ///
    /// `httparse` has already removed the whitespace around the value.
    fn add(&mut self, name: &str, value: &'a [u8]) {
        // Case-insensitive, with the usual spelling (`Host`, `User-Agent`)
        // tried first as one plain comparison: no per-byte case folding for
        // what clients send.
        let is = |want: &str| name == want || name.eq_ignore_ascii_case(want);
        // Dispatch on length first: one comparison for most names.
        match name.len() {
            4 if is("Host") => {
                self.hosts += 1;
                self.host = Some(value);
            }
            5 if is("Range") => unique(&mut self.range, value, &mut self.duplicate),
            6 if is("Accept") => first(&mut self.accept, value),
            7 if is("Referer") => first(&mut self.referer, value),
            8 if is("If-Range") => unique(&mut self.if_range, value, &mut self.duplicate),
            8 if is("If-Match") => unique(&mut self.if_match, value, &mut self.duplicate),
            10 if is("Connection") => {
                for token in value.split(|&b| b == b',').map(trim_ows) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.conn_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.conn_keep_alive = true;
                    }
                }
            }
            10 if is("User-Agent") => first(&mut self.user_agent, value),
            13 if is("If-None-Match") => {
                unique(&mut self.if_none_match, value, &mut self.duplicate)
            }
            14 if is("Content-Length") => {
                unique(&mut self.content_length, value, &mut self.duplicate)
            }
            15 if is("Accept-Encoding") => {
                self.accept_encodings += 1;
                self.accept_encoding = Some(value);
            }
            17 if is("If-Modified-Since") => {
                unique(&mut self.if_modified_since, value, &mut self.duplicate)
            }
            17 if is("Transfer-Encoding") => {
                if self.transfer_encoding {
                    self.duplicate = true;
                }
                self.transfer_encoding = true;
            }
            19 if is("If-Unmodified-Since") => {
                unique(&mut self.if_unmodified_since, value, &mut self.duplicate)
            }
            _ => {}
        }
    }
}

/// Parses a `Content-Length` value: 1*DIGIT fitting in a `u64`.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Validates the parsed head and assembles the [`Request`].
fn build<'a>(req: &httparse::Request<'_, 'a>, head_len: usize) -> Result<Parsed<'a>, HttpError> {
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("OPTIONS") => Method::Options,
        Some(other) => Method::Other(other),
        None => return Err(HttpError::BadRequestLine),
    };
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HttpError::BadVersion),
    };
    let target = req.path.ok_or(HttpError::BadRequestLine)?.as_bytes();
    let mut seen = Seen::default();
    for header in req.headers.iter() {
        seen.add(header.name, header.value);
    }

    // Framing first: these are the request-smuggling defences.
    if seen.duplicate {
        return Err(HttpError::DuplicateHeader);
    }
    let mut body = seen.transfer_encoding;
    if let Some(cl) = seen.content_length {
        if seen.transfer_encoding {
            return Err(HttpError::LengthAndEncoding);
        }
        body = content_length(cl).ok_or(HttpError::BadContentLength)? > 0;
    }
    if body {
        return Err(match method {
            Method::Other(_) => HttpError::MethodWithBody,
            _ => HttpError::BodyNotAllowed,
        });
    }

    match seen.hosts {
        0 if version == Version::Http11 => return Err(HttpError::MissingHost),
        0 | 1 => {}
        _ => return Err(HttpError::DuplicateHost),
    }
    if let Some(host) = seen.host {
        if !host.iter().all(|&b| is_host_byte(b)) {
            return Err(HttpError::BadHost);
        }
    }

    let (path, query, uri_host) = match method {
        // Not served (405), but the query is still not part of the path.
        Method::Other(_) => {
            let (path, query) = split_query(target);
            (path, query, None)
        }
        _ => split_target(target, matches!(method, Method::Options))?,
    };
    let keep_alive = match version {
        Version::Http11 => !seen.conn_close,
        Version::Http10 => seen.conn_keep_alive && !seen.conn_close,
    };
    let request = Request {
        method,
        version,
        target,
        path,
        query,
        host: uri_host.or(seen.host),
        keep_alive,
        range: seen.range,
        if_range: seen.if_range,
        if_match: seen.if_match,
        if_none_match: seen.if_none_match,
        if_modified_since: seen.if_modified_since,
        if_unmodified_since: seen.if_unmodified_since,
        accept_encoding: seen.accept_encoding.filter(|_| seen.accept_encodings == 1),
        accept: seen.accept,
        user_agent: seen.user_agent,
        referer: seen.referer,
    };
    Ok(Parsed::Complete(request, head_len))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
