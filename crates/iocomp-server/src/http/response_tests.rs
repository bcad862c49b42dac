//! Unit tests of the response-head writer and the multipart framing.

use super::*;
use crate::http::cond::etag_for;

const DATE: &[u8; DATE_LEN] = b"Sun, 06 Nov 1994 08:49:37 GMT";

fn text(buf: &[u8]) -> &str {
    std::str::from_utf8(buf).unwrap()
}

#[test]
fn full_200_head() {
    let mut out = Vec::new();
    let tag = etag_for(5, 0, 0);
    Head::new(&mut out, 200, DATE)
        .content_length(5)
        .content_type(content_type_for(b"dir/index.html"))
        .last_modified(784_111_777)
        .etag(&tag)
        .accept_ranges()
        .cache_control(Some("max-age=60"))
        .cache_control(None)
        .vary_accept_encoding()
        .connection(Version::Http11, true)
        .finish();
    assert_eq!(
        text(&out),
        "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: iocomp\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Length: 5\r\nContent-Type: text/html; charset=utf-8\r\n\
         Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nETag: \"0-5\"\r\n\
         Accept-Ranges: bytes\r\nCache-Control: max-age=60\r\nVary: Accept-Encoding\r\n\r\n"
    );
}

/// Heads for files with different modification times, one after another on
/// one thread (as a worker writes them), each carry their own
/// `Last-Modified` (RFC 9110 §8.8.2), whatever was written before.
#[test]
fn last_modified_follows_each_file() {
    let head = |secs| {
        let mut out = Vec::new();
        Head::new(&mut out, 200, DATE).last_modified(secs).finish();
        String::from_utf8(out).unwrap()
    };
    let nov94 = "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
    let epoch = "Last-Modified: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
    let y2k = "Last-Modified: Sat, 01 Jan 2000 00:00:00 GMT\r\n";
    for (secs, want) in [
        (784_111_777, nov94),
        (784_111_777, nov94),
        (0, epoch),
        (946_684_800, y2k),
        (784_111_777, nov94),
        (0, epoch),
    ] {
        let got = head(secs);
        assert!(got.contains(want), "{secs}: {got:?}");
        assert_eq!(got.matches("Last-Modified").count(), 1, "{got:?}");
    }
}

#[test]
fn partial_and_unsatisfiable_heads() {
    let mut out = Vec::new();
    Head::new(&mut out, 206, DATE)
        .content_range(Range { start: 0, end: 1 }, 10)
        .content_encoding("gzip")
        .finish();
    let t = text(&out);
    assert!(t.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{t}");
    assert!(t.contains("\r\nContent-Range: bytes 0-0/10\r\n"));
    assert!(t.contains("\r\nContent-Encoding: gzip\r\n"));
    let mut out = Vec::new();
    Head::new(&mut out, 416, DATE)
        .content_range_unsatisfied(0)
        .finish();
    assert!(text(&out).contains("\r\nContent-Range: bytes */0\r\n"));
}

#[test]
fn connection_header_only_when_needed() {
    let cases = [
        (Version::Http11, true, None),
        (Version::Http11, false, Some("Connection: close")),
        (Version::Http10, true, Some("Connection: keep-alive")),
        (Version::Http10, false, None),
    ];
    for (version, keep_alive, want) in cases {
        let mut out = Vec::new();
        Head::new(&mut out, 200, DATE)
            .connection(version, keep_alive)
            .finish();
        let t = text(&out);
        assert_eq!(t.contains("Connection"), want.is_some(), "{t}");
        if let Some(want) = want {
            assert!(t.contains(want));
        }
    }
}

#[test]
fn redirect_and_allow() {
    let mut out = Vec::new();
    Head::new(&mut out, 301, DATE)
        .location("/docs/")
        .allow()
        .content_length(0)
        .finish();
    let t = text(&out);
    assert!(t.starts_with("HTTP/1.1 301 Moved Permanently\r\n"));
    assert!(t.contains("\r\nLocation: /docs/\r\n"));
    assert!(t.contains("\r\nAllow: GET, HEAD, OPTIONS\r\n"));
}

#[test]
fn header_values_cannot_split_the_response() {
    let mut out = Vec::new();
    Head::new(&mut out, 200, DATE)
        .header("X", b"a\r\nSet-Cookie: x\0")
        .finish();
    assert!(text(&out).contains("\r\nX: a  Set-Cookie: x \r\n"));
}

#[test]
fn error_responses() {
    let mut out = Vec::new();
    error_response(&mut out, DATE, 404, Version::Http11, true, false, None);
    assert_eq!(
        text(&out),
        "HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: iocomp\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n\r\n404 Not Found\n"
    );
    let mut out = Vec::new();
    error_response(&mut out, DATE, 405, Version::Http11, false, true, None);
    let t = text(&out);
    assert!(t.contains("\r\nAllow: GET, HEAD, OPTIONS\r\n"));
    assert!(t.contains("\r\nConnection: close\r\n"));
    assert!(t.contains("\r\nContent-Length: 23\r\n"));
    assert!(t.ends_with("\r\n\r\n"), "HEAD: no body");
    let mut out = Vec::new();
    error_response(
        &mut out,
        DATE,
        416,
        Version::Http10,
        false,
        false,
        Some(1234),
    );
    let t = text(&out);
    assert!(t.contains("\r\nContent-Range: bytes */1234\r\n"));
    assert!(t.ends_with("\r\n\r\n416 Range Not Satisfiable\n"));
}

#[test]
fn error_body_length_matches_for_every_status() {
    for status in [
        400, 403, 404, 405, 412, 413, 414, 416, 431, 500, 503, 505, 299,
    ] {
        let mut out = Vec::new();
        error_response(&mut out, DATE, status, Version::Http11, true, false, None);
        let t = text(&out);
        let (head, body) = t.split_once("\r\n\r\n").unwrap();
        let cl = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap();
        assert_eq!(cl.parse::<usize>().unwrap(), body.len(), "{status}");
    }
}

#[test]
fn reasons() {
    assert_eq!(reason(200), "OK");
    assert_eq!(reason(431), "Request Header Fields Too Large");
    assert_eq!(reason(505), "HTTP Version Not Supported");
    assert_eq!(reason(299), "");
}

#[test]
fn content_types() {
    let cases: [(&[u8], &str); 16] = [
        (b"a.html", "text/html; charset=utf-8"),
        (b"a.TXT", "text/plain; charset=utf-8"),
        (b"app.js", "text/javascript; charset=utf-8"),
        (b"m.mjs", "application/javascript; charset=utf-8"),
        (b"d.json", "application/json; charset=utf-8"),
        (b"i.png", "image/png"),
        (b"a.tar.gz", "application/gzip"),
        (b"noext", "application/octet-stream"),
        (b".bashrc", "application/octet-stream"),
        (b"d.x/.profile", "application/octet-stream"),
        (b"d/x.bin", "application/octet-stream"),
        (b"dir.d/noext", "application/octet-stream"),
        (b"trailing.", "application/octet-stream"),
        (b"x.unknownext", "application/octet-stream"),
        (b"caf\xe9.\xe9", "application/octet-stream"),
        (b"s.svg", "image/svg+xml"),
    ];
    for (name, want) in cases {
        let ct = content_type_for(name);
        let mut v = Vec::new();
        ct.write_to(&mut v);
        assert_eq!(text(&v), want, "{name:?}");
        assert_eq!(ct.len(), want.len());
        assert!(!ct.is_empty());
    }
}

#[test]
fn common_table_agrees_with_mime_guess() {
    for (ext, mime) in COMMON {
        let name = std::str::from_utf8(ext).unwrap();
        assert_eq!(mime_guess::from_ext(name).first_raw(), Some(mime), "{name}");
        assert_eq!(common_mime(ext), Some(mime));
    }
    assert_eq!(common_mime(b"HTML"), None);
    assert_eq!(content_type_for(b"A.HTML").mime, "text/html");
}

#[test]
fn decimal_writer() {
    for n in [0, 1, 9, 10, 99, 100, 12345, u64::MAX - 1, u64::MAX] {
        let mut v = Vec::new();
        push_u64(&mut v, n);
        assert_eq!(text(&v), n.to_string());
        assert_eq!(digit_count(n), n.to_string().len() as u64);
    }
}

/// The fields written without the CR/LF scan are byte for byte what the
/// general `header` writes for the same values.
#[test]
fn unscanned_fields_match_the_general_writer() {
    let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
    let etag = crate::http::cond::etag_for(1024, 784_111_777, 5).variant("gz");
    let mut fast = Vec::new();
    Head::new(&mut fast, 200, &date)
        .accept_ranges()
        .last_modified(784_111_777)
        .etag(&etag)
        .vary_accept_encoding()
        .vary_accept()
        .connection(Version::Http11, false)
        .connection(Version::Http10, true)
        .finish();
    let mut general = Vec::new();
    Head::new(&mut general, 200, &date)
        .header("Accept-Ranges", b"bytes")
        .header("Last-Modified", b"Sun, 06 Nov 1994 08:49:37 GMT")
        .header("ETag", etag.as_bytes())
        .header("Vary", b"Accept-Encoding")
        .header("Vary", b"Accept")
        .header("Connection", b"close")
        .header("Connection", b"keep-alive")
        .finish();
    assert_eq!(
        String::from_utf8_lossy(&fast),
        String::from_utf8_lossy(&general)
    );
    assert!(fast.ends_with(b"Connection: keep-alive\r\n\r\n"));
}

/// A variant tag keeps only letters and digits.
#[test]
fn etag_variant_tag_cannot_carry_line_breaks() {
    let etag = crate::http::cond::etag_for(1, 2, 3).variant("\r\n");
    assert!(!etag
        .as_bytes()
        .iter()
        .any(|&b| matches!(b, b'\r' | b'\n' | 0)));
    assert!(etag.as_bytes().ends_with(b"-\""));
}
