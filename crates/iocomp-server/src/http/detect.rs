//! Protocol detection: does a connection speak HTTP/1.x or the `nc` line protocol?
//!
//! The decision is made once per connection from its first bytes, before the
//! first line is complete (design.md §4): a request that starts with a method
//! token (1 to 20 `tchar` bytes, RFC 9110 §5.6.2), one space, and then `/`,
//! `*` or `http://` (scheme case-insensitive) is HTTP. So is `CONNECT` followed
//! by a space, whatever comes next, so that a proxy client's authority-form
//! `CONNECT host:443 HTTP/1.1` is answered with 405 rather than treated as a
//! file name. Everything else is the line protocol. While the bytes seen so far
//! are still a prefix of an HTTP request start, the answer is
//! [`Proto::NeedMore`]; that can last at most 28 bytes, and never past a line
//! feed, which is not a `tchar`. A 5000-byte request line is therefore
//! recognised as HTTP from its first few bytes and later refused with 414.
//!
//! Empty lines (CRLF or a bare LF) before the first request line are skipped,
//! as RFC 9112 §2.2 asks of a server ("SHOULD ignore at least one empty line")
//! and nginx does, up to [`MAX_LEADING_EMPTY`] bytes of them; more is the line
//! protocol. The bytes are not consumed: a connection decided `Line` gets its
//! empty lines answered `bad name` as before, only later, once a line with a
//! name (or the half-close, or the header timeout) tells.

/// The longest method token that selects HTTP.
pub const MAX_METHOD: usize = 20;

/// The most bytes of empty lines skipped before the first request line.
pub const MAX_LEADING_EMPTY: usize = 8;

/// The protocol a connection speaks, as far as its first bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x: hand the bytes to the request parser.
    Http,
    /// The `nc` line protocol.
    Line,
    /// The bytes so far are a prefix of an HTTP request start: read more.
    ///
    /// If the peer half-closes or the header timeout fires in this state, the
    /// caller treats the bytes as the line protocol (or simply closes).
    NeedMore,
}

/// Whether `b` is a `tchar` (RFC 9110 §5.6.2), a byte allowed in a token.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~'
        | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Decides the protocol from the first bytes a connection sent.
pub fn detect(first_bytes: &[u8]) -> Proto {
    let mut first_bytes = first_bytes;
    let mut skipped = 0;
    while let Some(rest) = first_bytes
        .strip_prefix(b"\r\n")
        .or_else(|| first_bytes.strip_prefix(b"\n"))
    {
        skipped += first_bytes.len() - rest.len();
        first_bytes = rest;
    }
    if skipped > MAX_LEADING_EMPTY {
        return Proto::Line;
    }
    // Nothing yet but empty lines, perhaps the CR of another.
    if first_bytes.is_empty() || (skipped < MAX_LEADING_EMPTY && first_bytes == b"\r") {
        return Proto::NeedMore;
    }
    let method_len = first_bytes
        .iter()
        .take(MAX_METHOD + 1)
        .take_while(|&&b| is_tchar(b))
        .count();
    if method_len == 0 || method_len > MAX_METHOD {
        return Proto::Line;
    }
    let Some((&sep, rest)) = first_bytes
        .get(method_len..)
        .and_then(|tail| tail.split_first())
    else {
        // Only token bytes so far: still a possible method.
        return Proto::NeedMore;
    };
    if sep != b' ' {
        return Proto::Line;
    }
    if first_bytes.get(..method_len) == Some(&b"CONNECT"[..]) {
        return Proto::Http;
    }
    match rest.first() {
        None => Proto::NeedMore,
        Some(b'/' | b'*') => Proto::Http,
        Some(_) => {
            const SCHEME: &[u8] = b"http://";
            let n = rest.len().min(SCHEME.len());
            let (have, want) = (rest.get(..n), SCHEME.get(..n));
            match (have, want) {
                (Some(have), Some(want)) if have.eq_ignore_ascii_case(want) => {
                    if n == SCHEME.len() {
                        Proto::Http
                    } else {
                        Proto::NeedMore
                    }
                }
                _ => Proto::Line,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::XorShift;

    #[test]
    fn http_starts() {
        for s in [
            "GET / HTTP/1.1\r\n",
            "GET /",
            "HEAD /x",
            "OPTIONS *",
            "OPTIONS * HTTP/1.1\r\n",
            "GET http://host/x HTTP/1.1",
            "GET HTTP://host/",
            "GET hTtP://",
            "POST /form",
            "BREW /pot",
            "M-SEARCH *",
            "CONNECT example.com:443 HTTP/1.1\r\n",
            "CONNECT x",
            "get /lowercase-method-is-a-token",
            // RFC 9112 §2.2: empty lines before the request line are skipped.
            "\r\nGET / HTTP/1.1\r\n",
            "\nGET /",
            "\r\n\r\n\r\n\r\nGET /x",
            "\n\n\r\nHEAD /",
        ] {
            assert_eq!(detect(s.as_bytes()), Proto::Http, "{s:?}");
        }
    }

    #[test]
    fn need_more_prefixes() {
        for s in [
            "G",
            "",
            "GET",
            "GET ",
            "CONNECTX",
            "GET h",
            "GET http:/",
            "GET HTTP:",
            "CONNECT",
            "ABCDEFGHIJKLMNOPQRST",
            "ABCDEFGHIJKLMNOPQRST ",
            "ABCDEFGHIJKLMNOPQRST http:/",
            // Empty lines so far, or the CR of one: an HTTP request may follow.
            "\r",
            "\n",
            "\r\n",
            "\r\n\r",
            "\r\n\r\n\r\n\r\n",
            "\r\n\r\n\r\n\r\nGET",
        ] {
            assert_eq!(detect(s.as_bytes()), Proto::NeedMore, "{s:?}");
        }
        assert!("ABCDEFGHIJKLMNOPQRST http:/".len() < 32);
    }

    #[test]
    fn line_protocol_names() {
        for s in [
            "README.md\n",
            "README.md\r\n",
            "GET\n",
            "GET\r\n",
            "GET x",
            "get x",
            "GET  /",
            "GET\t/",
            "GET https://host/",
            "GET ftp://x",
            "GET http:x",
            "/etc/passwd\n",
            "dir/file name.txt\n",
            " GET /",
            "\rGET /",
            "\r\nREADME.md\n",
            "\n\nREADME.md\n",
            // More empty lines than RFC 9112 §2.2 asks a server to skip.
            "\n\n\n\n\n\n\n\n\n",
            "\r\n\r\n\r\n\r\n\r\nGET /",
            "\r\n\r\n\r\n\n\rGET /",
            "ABCDEFGHIJKLMNOPQRSTU /",
            "G\u{e9}T /",
            "CONNECTX x",
            "CONNECT\tx",
        ] {
            assert_eq!(detect(s.as_bytes()), Proto::Line, "{s:?}");
        }
    }

    #[test]
    fn long_request_line_is_http() {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat(b'a').take(5000));
        assert_eq!(detect(&line), Proto::Http);
        assert_eq!(detect(&line[..5]), Proto::Http);
    }

    #[test]
    fn long_token_is_line() {
        assert_eq!(detect(&[b'a'; 5000]), Proto::Line);
        assert_eq!(detect(&[b'a'; 21]), Proto::Line);
        assert_eq!(detect(&[b'a'; 20]), Proto::NeedMore);
    }

    #[test]
    fn tchar_set() {
        let tchars: Vec<u8> = (0..=255u8).filter(|&b| is_tchar(b)).collect();
        let want: Vec<u8> =
            b"!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz|~"
                .to_vec();
        assert_eq!(tchars, want);
    }

    /// A decision never changes from Http/Line as more bytes arrive, and
    /// NeedMore never lasts past 28 bytes after the skipped empty lines, or
    /// past a line feed that ends anything but an empty line.
    #[test]
    fn randomized_prefix_stability() {
        let alphabet = b"GETHADOPINS /*:htpHTP\r\nx.-~%";
        let mut rng = XorShift::new(7);
        for _ in 0..20_000 {
            let len = rng.below(40) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            let full = detect(&buf);
            if full == Proto::NeedMore {
                assert!(buf.len() <= 28 + MAX_LEADING_EMPTY, "{buf:?}");
                let mut rest = &buf[..];
                while let Some(r) = rest
                    .strip_prefix(b"\r\n")
                    .or_else(|| rest.strip_prefix(b"\n"))
                {
                    rest = r;
                }
                assert!(!rest.contains(&b'\n'), "{buf:?}");
            }
            for cut in 0..=buf.len() {
                let d = detect(&buf[..cut]);
                if d != Proto::NeedMore && cut > 0 {
                    assert_eq!(d, full, "{:?} vs {:?}", &buf[..cut], buf);
                }
            }
        }
    }
}
