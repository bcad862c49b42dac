//! Request paths: percent-decoding exactly once, and percent-encoding for links.
//!
//! [`decode_path`] turns the raw path of a request into the bytes handed to the
//! shared path policy (`crate::fs::Root`), which splits them on `/` and
//! refuses `..` components, dotfiles and NUL. Decoding happens exactly once,
//! so `%252e` becomes the three bytes `%2e` of a literal name and never a dot;
//! a decoded `%2f` becomes a real separator *before* the policy looks at the
//! components, so `..%2f` is still a `..` component and refused. Two more rules
//! are enforced here: NUL (raw or `%00`) is a 400, and a backslash (raw or
//! `%5c`) anywhere is a 403, since some clients and file systems treat it as a
//! separator. `+` is a literal plus (form encoding does not apply to paths).
//! Bytes are compared, never UTF-8 characters, so overlong UTF-8 such as
//! `%c0%ae` is just two odd bytes the file system will not find.
//!
//! The encoders produce ASCII: every byte except the RFC 3986 unreserved set
//! `A-Z a-z 0-9 - . _ ~` is written as `%XX` (and `/` kept when encoding a
//! whole path), which is safe in an `href`, in a `Location` header and as the
//! first segment of a relative reference (`:` is encoded).

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hexadecimal digits. 400.
    BadEscape,
    /// A NUL byte, raw or `%00`. 400.
    Nul,
    /// A backslash, raw or `%5c`. 403.
    Backslash,
}

impl PathError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            PathError::BadEscape | PathError::Nul => 400,
            PathError::Backslash => 403,
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "invalid percent-escape",
            PathError::Nul => "NUL in path",
            PathError::Backslash => "backslash in path",
        })
    }
}

impl std::error::Error for PathError {}

/// The value of an ASCII hexadecimal digit.
#[inline]
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks one decoded byte against the rules of this module.
#[inline]
fn check(b: u8) -> Result<u8, PathError> {
    match b {
        0 => Err(PathError::Nul),
        b'\\' => Err(PathError::Backslash),
        _ => Ok(b),
    }
}

/// Percent-decodes a raw request path exactly once.
///
/// Borrows `raw` when it holds no `%` (the common case: no allocation);
/// otherwise returns the decoded bytes, which may be any byte but NUL and `\`.
pub fn decode_path(raw: &[u8]) -> Result<Cow<'_, [u8]>, PathError> {
    if !raw.contains(&b'%') {
        for &b in raw {
            check(b)?;
        }
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let [hi, lo, tail @ ..] = tail else {
                return Err(PathError::BadEscape);
            };
            let value = match (hex_value(*hi), hex_value(*lo)) {
                (Some(hi), Some(lo)) => hi << 4 | lo,
                _ => return Err(PathError::BadEscape),
            };
            out.push(check(value)?);
            rest = tail;
        } else {
            out.push(check(b)?);
            rest = tail;
        }
    }
    Ok(Cow::Owned(out))
}

/// Whether `b` is an RFC 3986 unreserved character.
#[inline]
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Appends `%XX` (uppercase hex) for `b`.
#[inline]
fn push_escape(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

/// Percent-encodes one path segment (a file name): every byte except the
/// unreserved set, `/` included.
pub fn encode_path_segment(name: &[u8], out: &mut String) {
    out.reserve(name.len());
    for &b in name {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            push_escape(b, out);
        }
    }
}

/// Percent-encodes a decoded path, keeping its `/` separators, for a
/// `Location` header or a link.
///
/// The result is path-absolute with a single leading `/`: runs of `/` are
/// collapsed (so `//evil.example` can never become a network-path reference)
/// and `.` segments are dropped. A trailing `/` is kept.
pub fn encode_path(path: &[u8], out: &mut String) {
    out.reserve(path.len() + 1);
    out.push('/');
    let mut need_sep = false;
    for segment in path.split(|&b| b == b'/') {
        if segment.is_empty() || segment == b"." {
            continue;
        }
        if need_sep {
            out.push('/');
        }
        encode_path_segment(segment, out);
        need_sep = true;
    }
    if need_sep && path.last() == Some(&b'/') {
        out.push('/');
    }
}

/// The `Location` for a directory requested without its trailing slash:
/// the encoded path (see [`encode_path`]) followed by `/`.
pub fn directory_location(path: &[u8], out: &mut String) {
    encode_path(path, out);
    if !out.ends_with('/') {
        out.push('/');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::XorShift;

    fn dec(raw: &str) -> Result<Vec<u8>, PathError> {
        decode_path(raw.as_bytes()).map(|c| c.into_owned())
    }

    /// The components the shared path policy would see.
    fn components(decoded: &[u8]) -> Vec<&[u8]> {
        decoded
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn plain_path_is_borrowed() {
        let raw = b"/a/b.txt";
        assert!(matches!(decode_path(raw), Ok(Cow::Borrowed(_))));
        assert!(matches!(decode_path(b"/a%20b"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn decodes_once() {
        assert_eq!(dec("/a%20b").unwrap(), b"/a b");
        assert_eq!(dec("/caf%C3%A9").unwrap(), "/caf\u{e9}".as_bytes());
        assert_eq!(dec("/%e9").unwrap(), b"/\xe9");
        assert_eq!(dec("/a+b").unwrap(), b"/a+b");
        assert_eq!(dec("/%0a").unwrap(), b"/\n");
        assert_eq!(dec("/%25").unwrap(), b"/%");
        assert_eq!(dec("").unwrap(), b"");
    }

    #[test]
    fn traversal_dot_dot_encoded() {
        let d = dec("/%2e%2e/etc/passwd").unwrap();
        assert_eq!(components(&d)[0], b"..");
        let d = dec("/%2E%2e%2fetc").unwrap();
        assert_eq!(components(&d), [&b".."[..], b"etc"]);
    }

    #[test]
    fn traversal_dot_dot_slash_encoded() {
        let d = dec("/..%2fetc%2fpasswd").unwrap();
        assert_eq!(components(&d), [&b".."[..], b"etc", b"passwd"]);
    }

    #[test]
    fn encoded_slash_inside_a_name_is_a_separator() {
        assert_eq!(dec("/a%2fb").unwrap(), b"/a/b");
        assert_eq!(dec("/a%2Fb").unwrap(), b"/a/b");
    }

    #[test]
    fn backslash_refused() {
        assert_eq!(dec("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(dec("/..%5C..%5Cwindows"), Err(PathError::Backslash));
        assert_eq!(dec("/a\\b"), Err(PathError::Backslash));
        assert_eq!(PathError::Backslash.status(), 403);
    }

    #[test]
    fn double_encoded_backslash_stays_literal() {
        assert_eq!(dec("/%255c").unwrap(), b"/%5c");
    }

    #[test]
    fn double_encoding_stays_literal() {
        let d = dec("/%252e%252e/x").unwrap();
        assert_eq!(d, b"/%2e%2e/x");
        assert_eq!(components(&d), [&b"%2e%2e"[..], b"x"]);
    }

    #[test]
    fn nul_refused() {
        assert_eq!(dec("/a%00b"), Err(PathError::Nul));
        assert_eq!(decode_path(b"/a\0b"), Err(PathError::Nul));
        assert_eq!(PathError::Nul.status(), 400);
    }

    #[test]
    fn invalid_escape() {
        assert_eq!(dec("/%zz"), Err(PathError::BadEscape));
        assert_eq!(dec("/%g0"), Err(PathError::BadEscape));
        assert_eq!(dec("/%0g"), Err(PathError::BadEscape));
        assert_eq!(dec("/%-1"), Err(PathError::BadEscape));
        assert_eq!(PathError::BadEscape.status(), 400);
    }

    #[test]
    fn truncated_escape() {
        assert_eq!(dec("/%2"), Err(PathError::BadEscape));
        assert_eq!(dec("/%"), Err(PathError::BadEscape));
        assert_eq!(dec("%"), Err(PathError::BadEscape));
    }

    #[test]
    fn overlong_utf8_dot_is_not_a_dot() {
        let d = dec("/%c0%ae%c0%ae/etc").unwrap();
        assert_eq!(components(&d), [&b"\xc0\xae\xc0\xae"[..], b"etc"]);
        assert!(!components(&d).contains(&&b".."[..]));
    }

    #[test]
    fn encode_segment() {
        let mut s = String::new();
        encode_path_segment(b"a b#?%<b>/:\n\xe9~-._Z9", &mut s);
        assert_eq!(s, "a%20b%23%3F%25%3Cb%3E%2F%3A%0A%E9~-._Z9");
        let mut s = String::new();
        encode_path_segment("\u{1f600}".as_bytes(), &mut s);
        assert_eq!(s, "%F0%9F%98%80");
    }

    #[test]
    fn encode_full_path() {
        let cases: [(&[u8], &str); 8] = [
            (b"/a b/c", "/a%20b/c"),
            (b"a/b/", "/a/b/"),
            (b"//evil.example/x", "/evil.example/x"),
            (b"/./a//./b", "/a/b"),
            (b"/", "/"),
            (b"", "/"),
            (b"///", "/"),
            (b"/d%2e/", "/d%252e/"),
        ];
        for (path, want) in cases {
            let mut s = String::new();
            encode_path(path, &mut s);
            assert_eq!(s, want, "{path:?}");
        }
    }

    #[test]
    fn directory_locations() {
        let cases: [(&[u8], &str); 5] = [
            (b"/docs", "/docs/"),
            (b"//evil.example", "/evil.example/"),
            (b"/a b", "/a%20b/"),
            (b"/x/", "/x/"),
            (b"", "/"),
        ];
        for (path, want) in cases {
            let mut s = String::new();
            directory_location(path, &mut s);
            assert_eq!(s, want, "{path:?}");
        }
    }

    /// Encoding then decoding gives back the bytes, for any bytes but NUL and `\`.
    #[test]
    fn randomized_round_trip() {
        let mut rng = XorShift::new(42);
        for _ in 0..5000 {
            let len = rng.below(24) as usize;
            let name: Vec<u8> = (0..len)
                .map(|_| rng.next() as u8)
                .filter(|&b| b != 0 && b != b'\\')
                .collect();
            let mut enc = String::new();
            encode_path_segment(&name, &mut enc);
            assert!(enc.bytes().all(|b| is_unreserved(b) || b == b'%'));
            assert_eq!(decode_path(enc.as_bytes()).unwrap().as_ref(), &name[..]);
            // Random raw input never panics.
            let raw: Vec<u8> = (0..len)
                .map(|_| b"%2e5cA0/\\"[rng.below(9) as usize])
                .collect();
            let _ = decode_path(&raw);
        }
    }
}
