//! Validators and conditional requests (RFC 9110 §8.8 and §13).
//!
//! A file's validators are a strong entity-tag built from its `fstat`
//! (modification time to the nanosecond and length, as nginx and lighttpd
//! build theirs from time and size: an in-place rewrite within the same second
//! changes it, two servers with the same files agree, and no inode leaks) and
//! its modification time in whole seconds for `Last-Modified`. [`evaluate`]
//! applies the precondition headers in the order of RFC 9110 §13.2.2:
//! `If-Match` (strong comparison), else `If-Unmodified-Since`; then
//! `If-None-Match` (weak comparison; 304 for GET/HEAD, 412 otherwise), else
//! `If-Modified-Since` (GET/HEAD only). Invalid dates are ignored, as the RFC
//! requires. [`if_range_allows`] decides whether a `Range` may be honoured:
//! only an exactly equal strong entity-tag or an HTTP-date equal to
//! `Last-Modified`; weak tags never match. Nothing here allocates.

use crate::http::date;
use crate::http::request::{trim_ows, Request};

/// The longest entity-tag [`etag_for`] produces: two quotes, two 16-digit
/// hexadecimal numbers and a dash, and a variant's `-` and two-letter coding
/// ([`ETag::variant`]).
pub const ETAG_MAX: usize = 38;

/// A strong entity-tag, quotes included, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ETag {
    /// The bytes; only the first `len` are meaningful.
    buf: [u8; ETAG_MAX],
    /// How many bytes are used.
    len: usize,
}

impl ETag {
    /// The entity-tag as sent in the `ETag` header, e.g. `"5f3a…-1a"`.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// The entity-tag as a string (it is always ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The tag of a precompressed variant (`tag` = `gz` or `br`): `"…-gz"`,
    /// as Apache's `mod_deflate` tags its variants, so that the identity file
    /// and a sibling with the same size and time never share a strong tag
    /// (else `If-Range` could splice bytes of one onto the other). `tag` is
    /// at most two bytes; more are dropped.
    pub fn variant(mut self, tag: &str) -> ETag {
        if self.len >= 2 {
            self.len -= 1; // the closing quote
            self.push(b'-');
            // Letters and digits only: the tag stays free of anything a
            // header value must not hold.
            for &b in tag.as_bytes().iter().take(2) {
                if b.is_ascii_alphanumeric() {
                    self.push(b);
                }
            }
            self.push(b'"');
        }
        self
    }

    /// Appends one byte (silently dropped if the buffer were ever full).
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    /// Appends `n` in lowercase hexadecimal without leading zeros.
    fn push_hex(&mut self, n: u64) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            let nibble = (n >> (i * 4)) & 15;
            self.push(HEX[nibble as usize]);
        }
    }
}

impl std::fmt::Debug for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The strong entity-tag of a file from its `fstat` fields:
/// `"<mtime in ns, hex>-<len hex>"`.
pub fn etag_for(len: u64, mtime_secs: i64, mtime_nsec: u32) -> ETag {
    // Wrapping: the value only has to change when the file does.
    let mtime_ns = (mtime_secs as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(u64::from(mtime_nsec));
    let mut tag = ETag {
        buf: [0; ETAG_MAX],
        len: 0,
    };
    tag.push(b'"');
    tag.push_hex(mtime_ns);
    tag.push(b'-');
    tag.push_hex(len);
    tag.push(b'"');
    tag
}

/// The validators of one representation (a file, or its `.br`/`.gz` sibling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validators {
    /// The strong entity-tag.
    pub etag: ETag,
    /// `Last-Modified`, in Unix seconds (clamped to what HTTP dates express).
    pub last_modified: i64,
}

impl Validators {
    /// The validators of a file from its `fstat` fields.
    pub fn new(len: u64, mtime_secs: i64, mtime_nsec: u32) -> Validators {
        Validators {
            etag: etag_for(len, mtime_secs, mtime_nsec),
            last_modified: date::clamp_secs(mtime_secs),
        }
    }
}

/// The outcome of the precondition headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the request normally.
    Proceed,
    /// 304 Not Modified (GET/HEAD only).
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Whether an entity-tag list (`#entity-tag`) contains `ours`.
///
/// `weak` selects the weak comparison (the `W/` prefix is ignored); otherwise
/// weak tags in the list never match. A malformed element ends the scan with
/// no match.
fn list_contains(list: &[u8], ours: &[u8], weak: bool) -> bool {
    let mut rest = list;
    loop {
        while let [b' ' | b'\t' | b',', tail @ ..] = rest {
            rest = tail;
        }
        if rest.is_empty() {
            return false;
        }
        let is_weak = rest.starts_with(b"W/");
        if is_weak {
            rest = rest.get(2..).unwrap_or(b"");
        }
        let Some((b'"', body)) = rest.split_first() else {
            return false;
        };
        let Some(close) = body.iter().position(|&b| b == b'"') else {
            return false;
        };
        let tag_len = close + 2;
        let tag = rest.get(..tag_len).unwrap_or(b"");
        if tag == ours && (weak || !is_weak) {
            return true;
        }
        rest = rest.get(tag_len..).unwrap_or(b"");
        if !matches!(rest.first(), None | Some(b' ' | b'\t' | b',')) {
            return false;
        }
    }
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and
/// `If-Modified-Since` for an existing representation (RFC 9110 §13.2.2).
///
/// Call it only when the response would otherwise be a 2xx (the file exists
/// and is served); the method comes from `req`.
pub fn evaluate(req: &Request<'_>, v: &Validators) -> Precondition {
    let get_or_head = req.method.is_get_or_head();
    let ours = v.etag.as_bytes();
    if let Some(value) = req.if_match {
        let value = trim_ows(value);
        if value != b"*" && !list_contains(value, ours, false) {
            return Precondition::Failed;
        }
    } else if let Some(value) = req.if_unmodified_since {
        if date::parse(value).is_some_and(|since| v.last_modified > since) {
            return Precondition::Failed;
        }
    }
    if let Some(value) = req.if_none_match {
        let value = trim_ows(value);
        if value == b"*" || list_contains(value, ours, true) {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if get_or_head {
        if let Some(value) = req.if_modified_since {
            if date::parse(value).is_some_and(|since| v.last_modified <= since) {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// Whether the `Range` header may be honoured given `If-Range` (RFC 9110
/// §13.1.5): true without `If-Range`; with it, only for an entity-tag equal
/// to ours by strong comparison or a date equal to `Last-Modified`. A false
/// answer means: ignore `Range` and send the whole file with 200.
pub fn if_range_allows(req: &Request<'_>, v: &Validators) -> bool {
    let Some(value) = req.if_range else {
        return true;
    };
    let value = trim_ows(value);
    if value.starts_with(b"W/") {
        return false;
    }
    if value.first() == Some(&b'"') {
        return value == v.etag.as_bytes();
    }
    date::parse(value) == Some(v.last_modified)
}

#[cfg(test)]
#[path = "cond_tests.rs"]
mod tests;
