//! Response heads, written into a reusable buffer without allocation.
//!
//! A [`Head`] appends the status line and header fields to a caller-owned
//! `Vec<u8>` (cleared or not: it only appends), so a worker can keep one
//! buffer per connection and send head and small body in one `send`. The
//! status line is always `HTTP/1.1` (RFC 9110 §6.2: a server sends its own
//! version, also to 1.0 clients); `Date` comes from a
//! [`DateCache`](crate::http::date::DateCache); `Server: iocomp` and
//! `X-Content-Type-Options: nosniff` (every response: a client never guesses
//! a type we did not send) follow.
//! [`error_response`] writes a complete error with a tiny `text/plain` body;
//! `http::multipart` plans the framing of multi-range answers.

use crate::http::cond::ETag;
use crate::http::date::{self, DATE_LEN};
use crate::http::range::Range;
use crate::http::request::Version;

/// The `Allow` value for 405 and OPTIONS responses.
pub const ALLOW: &str = "GET, HEAD, OPTIONS";

/// The reason phrase of a status code (`""` for codes the server never sends).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A `Content-Type` value: a media type and whether `; charset=utf-8` follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentType {
    /// The media type, e.g. `text/html`.
    pub mime: &'static str,
    /// Whether to append `; charset=utf-8`.
    pub utf8: bool,
}

/// The charset suffix of textual types.
const CHARSET: &str = "; charset=utf-8";

impl ContentType {
    /// `application/octet-stream`, for unknown extensions.
    pub const OCTET_STREAM: ContentType = ContentType {
        mime: "application/octet-stream",
        utf8: false,
    };
    /// `text/plain; charset=utf-8`.
    pub const TEXT: ContentType = ContentType {
        mime: "text/plain",
        utf8: true,
    };
    /// `text/html; charset=utf-8`.
    pub const HTML: ContentType = ContentType {
        mime: "text/html",
        utf8: true,
    };
    /// `application/json` (JSON is UTF-8 by definition, RFC 8259, but the
    /// charset is added for old clients).
    pub const JSON: ContentType = ContentType {
        mime: "application/json",
        utf8: true,
    };

    /// The length of the value in bytes.
    pub fn len(&self) -> usize {
        self.mime.len() + if self.utf8 { CHARSET.len() } else { 0 }
    }

    /// Whether the value is empty (never, for the constructors here).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the value to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.mime.as_bytes());
        if self.utf8 {
            out.extend_from_slice(CHARSET.as_bytes());
        }
    }
}

/// The most common static-file extensions, answered without `mime_guess`'s
/// case-insensitive binary search (a test checks they agree with it): a
/// `match` (dispatch on length, then a compare or two), not a scan of the
/// table, which cost ~200 instructions per request for `.bin`
/// (`bench/callgrind/run`).
macro_rules! common {
    ($($ext:literal => $mime:literal,)*) => {
        /// The table, for the test that checks it against `mime_guess`.
        #[cfg(test)]
        const COMMON: [(&[u8], &str); 21] = [$(($ext, $mime)),*];

        /// The media type of a common extension (exact lowercase match), if any.
        fn common_mime(ext: &[u8]) -> Option<&'static str> {
            match ext {
                $($ext => Some($mime),)*
                _ => None,
            }
        }
    };
}

common! {
    b"html" => "text/html",
    b"htm" => "text/html",
    b"css" => "text/css",
    b"js" => "text/javascript",
    b"mjs" => "application/javascript",
    b"json" => "application/json",
    b"txt" => "text/plain",
    b"png" => "image/png",
    b"jpg" => "image/jpeg",
    b"jpeg" => "image/jpeg",
    b"gif" => "image/gif",
    b"svg" => "image/svg+xml",
    b"webp" => "image/webp",
    b"ico" => "image/x-icon",
    b"wasm" => "application/wasm",
    b"woff2" => "font/woff2",
    b"bin" => "application/octet-stream",
    b"zip" => "application/zip",
    b"pdf" => "application/pdf",
    b"mp4" => "video/mp4",
    b"gz" => "application/gzip",
}

/// The content type for a file name (raw bytes), from its extension via
/// `mime_guess`: `; charset=utf-8` for `text/*`, JavaScript and JSON;
/// `application/octet-stream` when the extension is unknown or absent.
pub fn content_type_for(name: &[u8]) -> ContentType {
    // One backward scan: the last `.` of the last component, if any.
    let Some(dot) = name.iter().rposition(|&b| b == b'.' || b == b'/') else {
        return ContentType::OCTET_STREAM;
    };
    // No dot in the last component, or a dot that begins it (`.profile`).
    if name.get(dot) != Some(&b'.') || dot == 0 || name.get(dot - 1) == Some(&b'/') {
        return ContentType::OCTET_STREAM;
    }
    let ext = name.get(dot + 1..).unwrap_or_default();
    let mime = match common_mime(ext) {
        Some(mime) => mime,
        None if ext.is_empty() => return ContentType::OCTET_STREAM,
        None => match std::str::from_utf8(ext)
            .ok()
            .and_then(|ext| mime_guess::from_ext(ext).first_raw())
        {
            Some(mime) => mime,
            None => return ContentType::OCTET_STREAM,
        },
    };
    let utf8 =
        mime.starts_with("text/") || matches!(mime, "application/javascript" | "application/json");
    ContentType { mime, utf8 }
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(slot) = buf.get_mut(at) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(at..).unwrap_or(&[]));
}

/// The number of decimal digits of `n`.
fn digit_count(n: u64) -> u64 {
    n.checked_ilog10().map_or(1, |d| u64::from(d) + 1)
}

/// A response head being written into a buffer.
pub struct Head<'a> {
    /// The buffer the head is appended to.
    out: &'a mut Vec<u8>,
}

impl<'a> Head<'a> {
    /// Starts a head: status line, `Date`, `Server` and
    /// `X-Content-Type-Options: nosniff`.
    pub fn new(out: &'a mut Vec<u8>, status: u16, date: &[u8; DATE_LEN]) -> Head<'a> {
        if status == 200 {
            // The usual status line, as one constant (no digits to format,
            // no reason to look up).
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nDate: ");
        } else {
            out.extend_from_slice(b"HTTP/1.1 ");
            push_u64(out, u64::from(status));
            out.push(b' ');
            out.extend_from_slice(reason(status).as_bytes());
            out.extend_from_slice(b"\r\nDate: ");
        }
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\nServer: iocomp\r\nX-Content-Type-Options: nosniff\r\n");
        Head { out }
    }

    /// Appends a header field. Values derived from requests should be
    /// encoded first (see `http::percent`); as a last line of defence against
    /// response splitting, CR, LF and NUL in `value` are written as spaces.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            let clean = value.iter().map(|&b| match b {
                b'\r' | b'\n' | 0 => b' ',
                other => other,
            });
            self.out.extend(clean);
        } else {
            self.out.extend_from_slice(value);
        }
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Appends a header field whose value this crate made and which holds
    /// no CR, LF or NUL by construction (a static value, a formatted date,
    /// an entity-tag of hex digits): no scan for them, as
    /// [`header`](Head::header) makes.
    fn trusted(&mut self, name: &str, value: &[u8]) -> &mut Self {
        debug_assert!(!value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)));
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `Content-Length`.
    pub fn content_length(&mut self, len: u64) -> &mut Self {
        self.out.extend_from_slice(b"Content-Length: ");
        push_u64(self.out, len);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `Content-Type`.
    pub fn content_type(&mut self, ct: ContentType) -> &mut Self {
        self.out.extend_from_slice(b"Content-Type: ");
        ct.write_to(self.out);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `Content-Type: multipart/byteranges; boundary=…` (the boundary of
    /// [`multipart::boundary`](crate::http::multipart::boundary)).
    pub fn content_type_multipart(&mut self, boundary: &str) -> &mut Self {
        self.out
            .extend_from_slice(b"Content-Type: multipart/byteranges; boundary=");
        self.out.extend_from_slice(boundary.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `Last-Modified` from Unix seconds. The last value formatted on this
    /// thread is kept: a hot file's modification time is formatted once, not
    /// per response.
    pub fn last_modified(&mut self, secs: i64) -> &mut Self {
        thread_local! {
            static LAST: std::cell::Cell<Option<(i64, [u8; DATE_LEN])>> =
                const { std::cell::Cell::new(None) };
        }
        let text = LAST.with(|last| match last.get() {
            Some((s, text)) if s == secs => text,
            _ => {
                let text = date::format(secs);
                last.set(Some((secs, text)));
                text
            }
        });
        self.trusted("Last-Modified", &text)
    }

    /// `ETag`.
    pub fn etag(&mut self, etag: &ETag) -> &mut Self {
        self.trusted("ETag", etag.as_bytes())
    }

    /// `Accept-Ranges: bytes`.
    pub fn accept_ranges(&mut self) -> &mut Self {
        self.out.extend_from_slice(b"Accept-Ranges: bytes\r\n");
        self
    }

    /// `Cache-Control`, when configured.
    pub fn cache_control(&mut self, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.header("Cache-Control", value.as_bytes());
        }
        self
    }

    /// `Content-Range: bytes first-last/len` for a 206.
    pub fn content_range(&mut self, range: Range, len: u64) -> &mut Self {
        self.out.extend_from_slice(b"Content-Range: ");
        push_content_range(self.out, range, len);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `Content-Range: bytes */len` for a 416.
    pub fn content_range_unsatisfied(&mut self, len: u64) -> &mut Self {
        self.out.extend_from_slice(b"Content-Range: bytes */");
        push_u64(self.out, len);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `Content-Encoding` (`br` or `gzip`).
    pub fn content_encoding(&mut self, name: &str) -> &mut Self {
        self.header("Content-Encoding", name.as_bytes())
    }

    /// `Vary: Accept-Encoding`.
    pub fn vary_accept_encoding(&mut self) -> &mut Self {
        self.trusted("Vary", b"Accept-Encoding")
    }

    /// `Vary: Accept` (a listing is HTML or JSON by `Accept`).
    pub fn vary_accept(&mut self) -> &mut Self {
        self.trusted("Vary", b"Accept")
    }

    /// `Connection`, only where the default of `version` differs from
    /// `keep_alive`: `close` on 1.1, `keep-alive` on 1.0.
    pub fn connection(&mut self, version: Version, keep_alive: bool) -> &mut Self {
        match (version, keep_alive) {
            (Version::Http11, false) => self.trusted("Connection", b"close"),
            (Version::Http10, true) => self.trusted("Connection", b"keep-alive"),
            _ => self,
        }
    }

    /// `Location` (already encoded, e.g. by `http::percent::directory_location`).
    pub fn location(&mut self, location: &str) -> &mut Self {
        self.header("Location", location.as_bytes())
    }

    /// `Allow: GET, HEAD, OPTIONS`.
    pub fn allow(&mut self) -> &mut Self {
        self.header("Allow", ALLOW.as_bytes())
    }

    /// Ends the head with the empty line.
    pub fn finish(&mut self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

/// Appends `bytes first-last/len`.
pub(crate) fn push_content_range(out: &mut Vec<u8>, range: Range, len: u64) {
    out.extend_from_slice(b"bytes ");
    push_u64(out, range.start);
    out.push(b'-');
    push_u64(out, range.last());
    out.push(b'/');
    push_u64(out, len);
}

/// The body of an error response: `"<code> <reason>\n"`.
fn push_error_body(out: &mut Vec<u8>, status: u16) {
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.push(b'\n');
}

/// Writes a complete error response: `Content-Type: text/plain`, the tiny
/// body `"404 Not Found\n"` (omitted for HEAD, but counted in
/// `Content-Length`), `Allow` for 405, `Content-Range: bytes */len` for 416
/// when `len` is given, and `Connection` as needed.
pub fn error_response(
    out: &mut Vec<u8>,
    date: &[u8; DATE_LEN],
    status: u16,
    version: Version,
    keep_alive: bool,
    head_only: bool,
    len: Option<u64>,
) {
    error_response_with(
        out,
        date,
        status,
        version,
        keep_alive,
        head_only,
        len,
        |_| {},
    );
}

/// [`error_response`] with more header fields, written by `fields` (such as
/// `Vary` for an error about a negotiated resource).
#[allow(clippy::too_many_arguments)]
pub fn error_response_with(
    out: &mut Vec<u8>,
    date: &[u8; DATE_LEN],
    status: u16,
    version: Version,
    keep_alive: bool,
    head_only: bool,
    len: Option<u64>,
    fields: impl FnOnce(&mut Head<'_>),
) {
    let body_len = digit_count(u64::from(status)) + 1 + reason(status).len() as u64 + 1;
    let mut head = Head::new(out, status, date);
    head.content_type(ContentType::TEXT)
        .content_length(body_len);
    fields(&mut head);
    if status == 405 {
        head.allow();
    }
    if let (416, Some(len)) = (status, len) {
        head.content_range_unsatisfied(len);
    }
    head.connection(version, keep_alive).finish();
    if !head_only {
        push_error_body(out, status);
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
