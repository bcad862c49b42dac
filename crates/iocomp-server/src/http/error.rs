//! The ways a request head can be refused, each with the status to answer.
//!
//! [`HttpError`] is returned by `http::request::parse`. Every variant closes
//! the connection: once a head is malformed, or announces a body the server
//! will not read, where the next pipelined request would start is unknown,
//! and guessing is how request smuggling happens.

/// Why a request head was refused.
///
/// Every error closes the connection ([`HttpError::close`]): once a head is
/// malformed or announces a body, where the next request starts is unknown.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// A malformed request line (bad method token, double spaces, control
    /// bytes or non-UTF-8 in the target, trailing garbage, no version). 400.
    BadRequestLine,
    /// A malformed version such as `HTTP/1.x` or `HTTX/1.1`. 400.
    BadVersion,
    /// A well-formed version other than 1.0 and 1.1 (`HTTP/2.0`, `HTTP/1.2`). 505.
    VersionNotSupported,
    /// A malformed header line: bare CR, obs-fold, NUL or another control
    /// byte, whitespace before the colon, a bad name. 400.
    BadHeader,
    /// HTTP/1.1 without `Host`. 400.
    MissingHost,
    /// More than one `Host`. 400.
    DuplicateHost,
    /// A `Host` value that is not a valid authority. 400.
    BadHost,
    /// A repeated `Content-Length`, `Transfer-Encoding`, `Range`, `If-Range`,
    /// `If-Match`, `If-None-Match`, `If-Modified-Since` or
    /// `If-Unmodified-Since` (as nginx). 400.
    DuplicateHeader,
    /// A request-target that is neither origin-form, absolute-form with the
    /// `http` scheme, nor `*` with OPTIONS; or one with a fragment or userinfo. 400.
    BadTarget,
    /// A `Content-Length` that is not a plain decimal number that fits in 64 bits. 400.
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`. 400.
    LengthAndEncoding,
    /// GET, HEAD or OPTIONS with a body (`Content-Length` > 0 or any
    /// `Transfer-Encoding`). 400.
    BodyNotAllowed,
    /// Another method with a body. 405 (the caller adds `Allow`).
    MethodWithBody,
    /// More than [`MAX_HEADERS`](crate::http::request::MAX_HEADERS) header fields. 431.
    TooManyHeaders,
    /// The head does not end within [`MAX_HEAD`](crate::http::request::MAX_HEAD) bytes. 431.
    HeadTooLarge,
    /// The request line alone is longer than [`MAX_HEAD`](crate::http::request::MAX_HEAD) bytes. 414.
    UriTooLong,
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            HttpError::VersionNotSupported => 505,
            HttpError::MethodWithBody => 405,
            HttpError::TooManyHeaders | HttpError::HeadTooLarge => 431,
            HttpError::UriTooLong => 414,
            _ => 400,
        }
    }

    /// Whether the connection must be closed after the error response:
    /// always, since the framing of whatever follows cannot be trusted.
    pub fn close(self) -> bool {
        true
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            HttpError::BadRequestLine => "malformed request line",
            HttpError::BadVersion => "malformed HTTP version",
            HttpError::VersionNotSupported => "HTTP version not supported",
            HttpError::BadHeader => "malformed header line",
            HttpError::MissingHost => "missing Host",
            HttpError::DuplicateHost => "duplicate Host",
            HttpError::BadHost => "invalid Host",
            HttpError::DuplicateHeader => "duplicate header",
            HttpError::BadTarget => "invalid request target",
            HttpError::BadContentLength => "invalid Content-Length",
            HttpError::LengthAndEncoding => "both Content-Length and Transfer-Encoding",
            HttpError::BodyNotAllowed => "request body not allowed",
            HttpError::MethodWithBody => "method not allowed (with a body)",
            HttpError::TooManyHeaders => "too many headers",
            HttpError::HeadTooLarge => "request head too large",
            HttpError::UriTooLong => "request line too long",
        };
        f.write_str(what)
    }
}

impl std::error::Error for HttpError {}
