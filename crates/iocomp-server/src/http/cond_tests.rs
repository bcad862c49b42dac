//! Unit tests of validators and conditional requests.

use super::*;
use crate::http::request::{parse, Parsed};
use crate::http::XorShift;

/// 1994-11-06 08:49:37 UTC.
const T: i64 = 784_111_777;
const T_TEXT: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const BEFORE: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
const AFTER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

fn v() -> Validators {
    Validators::new(0x1a, T, 5)
}

fn tag() -> String {
    v().etag.as_str().to_string()
}

/// Evaluates `headers` (CRLF-terminated lines) for `method`.
fn eval(method: &str, headers: &str) -> Precondition {
    let head = format!("{method} /f HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
    match parse(head.as_bytes()) {
        Ok(Parsed::Complete(req, _)) => evaluate(&req, &v()),
        other => panic!("{head:?}: {other:?}"),
    }
}

fn if_range(value: &str) -> bool {
    let head =
        format!("GET /f HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\nIf-Range: {value}\r\n\r\n");
    match parse(head.as_bytes()) {
        Ok(Parsed::Complete(req, _)) => if_range_allows(&req, &v()),
        other => panic!("{head:?}: {other:?}"),
    }
}

use Precondition::{Failed, NotModified, Proceed};

#[test]
fn etag_format() {
    let t = etag_for(0x1a, 1, 5);
    assert_eq!(t.as_str(), "\"3b9aca05-1a\"");
    assert_eq!(etag_for(0, 0, 0).as_bytes(), b"\"0-0\"");
    let max = etag_for(u64::MAX, -1, 999_999_999);
    assert_eq!(
        max.as_bytes().len(),
        ETAG_MAX - 3,
        "room for a variant's \"-gz\""
    );
    assert!(max
        .as_str()
        .bytes()
        .all(|b| b == b'"' || b == b'-' || b.is_ascii_hexdigit()));
    assert_eq!(format!("{t:?}"), "\"3b9aca05-1a\"");
}

#[test]
fn etag_changes_with_every_field() {
    let base = etag_for(2, 3, 4);
    assert_ne!(base, etag_for(9, 3, 4));
    assert_ne!(base, etag_for(2, 9, 4));
    assert_ne!(base, etag_for(2, 3, 9));
    assert_eq!(base, etag_for(2, 3, 4));
}

#[test]
fn validators_clamp_dates() {
    assert_eq!(Validators::new(1, -5, 0).last_modified, 0);
    assert_eq!(Validators::new(1, T, 0).last_modified, T);
}

#[test]
fn no_conditions_proceed() {
    assert_eq!(eval("GET", ""), Proceed);
}

#[test]
fn if_none_match() {
    let t = tag();
    assert_eq!(eval("GET", &format!("If-None-Match: {t}\r\n")), NotModified);
    assert_eq!(
        eval("HEAD", &format!("If-None-Match: {t}\r\n")),
        NotModified
    );
    assert_eq!(
        eval("GET", &format!("If-None-Match: W/{t}\r\n")),
        NotModified
    );
    assert_eq!(
        eval("GET", &format!("If-None-Match: \"x\", W/\"y\",{t}\r\n")),
        NotModified
    );
    assert_eq!(eval("GET", "If-None-Match: *\r\n"), NotModified);
    assert_eq!(eval("GET", "If-None-Match: \"other\"\r\n"), Proceed);
    assert_eq!(eval("GET", "If-None-Match: garbage\r\n"), Proceed);
    assert_eq!(
        eval("GET", &format!("If-None-Match: \"x\" junk {t}\r\n")),
        Proceed
    );
    assert_eq!(eval("GET", "If-None-Match: \"unterminated\r\n"), Proceed);
    // Not GET/HEAD: 412 instead of 304.
    assert_eq!(eval("OPTIONS", &format!("If-None-Match: {t}\r\n")), Failed);
}

#[test]
fn if_match() {
    let t = tag();
    assert_eq!(eval("GET", &format!("If-Match: {t}\r\n")), Proceed);
    assert_eq!(eval("GET", &format!("If-Match: \"a\", {t}\r\n")), Proceed);
    assert_eq!(eval("GET", "If-Match: *\r\n"), Proceed);
    assert_eq!(eval("GET", "If-Match: \"other\"\r\n"), Failed);
    // Strong comparison: a weak tag never matches.
    assert_eq!(eval("GET", &format!("If-Match: W/{t}\r\n")), Failed);
    assert_eq!(eval("GET", "If-Match: \r\n"), Failed);
}

#[test]
fn if_unmodified_since() {
    assert_eq!(
        eval("GET", &format!("If-Unmodified-Since: {T_TEXT}\r\n")),
        Proceed
    );
    assert_eq!(
        eval("GET", &format!("If-Unmodified-Since: {AFTER}\r\n")),
        Proceed
    );
    assert_eq!(
        eval("GET", &format!("If-Unmodified-Since: {BEFORE}\r\n")),
        Failed
    );
    assert_eq!(eval("GET", "If-Unmodified-Since: not a date\r\n"), Proceed);
    // Ignored when If-Match is present.
    let t = tag();
    let h = format!("If-Match: {t}\r\nIf-Unmodified-Since: {BEFORE}\r\n");
    assert_eq!(eval("GET", &h), Proceed);
}

#[test]
fn if_modified_since() {
    assert_eq!(
        eval("GET", &format!("If-Modified-Since: {T_TEXT}\r\n")),
        NotModified
    );
    assert_eq!(
        eval("GET", &format!("If-Modified-Since: {AFTER}\r\n")),
        NotModified
    );
    assert_eq!(
        eval("GET", &format!("If-Modified-Since: {BEFORE}\r\n")),
        Proceed
    );
    assert_eq!(
        eval(
            "GET",
            "If-Modified-Since: Sunday, 06-Nov-94 08:49:37 GMT\r\n"
        ),
        NotModified
    );
    assert_eq!(
        eval("GET", "If-Modified-Since: Sun Nov  6 08:49:37 1994\r\n"),
        NotModified
    );
    assert_eq!(eval("GET", "If-Modified-Since: garbage\r\n"), Proceed);
    assert_eq!(
        eval("GET", &format!("If-Modified-Since: {T_TEXT}, {T_TEXT}\r\n")),
        Proceed
    );
    // Only for GET and HEAD.
    assert_eq!(
        eval("OPTIONS", &format!("If-Modified-Since: {T_TEXT}\r\n")),
        Proceed
    );
}

#[test]
fn if_none_match_takes_precedence_over_if_modified_since() {
    let h = format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {AFTER}\r\n");
    assert_eq!(eval("GET", &h), Proceed);
    let t = tag();
    let h = format!("If-None-Match: {t}\r\nIf-Modified-Since: {BEFORE}\r\n");
    assert_eq!(eval("GET", &h), NotModified);
}

#[test]
fn if_match_failure_beats_if_none_match() {
    let t = tag();
    let h = format!("If-Match: \"other\"\r\nIf-None-Match: {t}\r\n");
    assert_eq!(eval("GET", &h), Failed);
    let h = format!("If-Unmodified-Since: {BEFORE}\r\nIf-None-Match: {t}\r\n");
    assert_eq!(eval("GET", &h), Failed);
}

#[test]
fn if_range_rules() {
    let t = tag();
    assert!(if_range(&t));
    assert!(if_range(T_TEXT));
    assert!(if_range("Sunday, 06-Nov-94 08:49:37 GMT"));
    assert!(!if_range(&format!("W/{t}")));
    assert!(!if_range("\"other\""));
    assert!(!if_range(AFTER));
    assert!(!if_range(BEFORE));
    assert!(!if_range("garbage"));
    assert!(!if_range(&format!("{t}, \"x\"")));
    // No If-Range: ranges allowed.
    let head = b"GET /f HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\n\r\n";
    let Ok(Parsed::Complete(req, _)) = parse(head) else {
        panic!()
    };
    assert!(if_range_allows(&req, &v()));
}

/// Random entity-tag lists never panic, and a list always matches itself.
#[test]
fn randomized_lists() {
    let mut rng = XorShift::new(77);
    let alphabet = b"W/\", \t*abc";
    for _ in 0..20_000 {
        let list: Vec<u8> = (0..rng.below(24))
            .map(|_| alphabet[rng.below(10) as usize])
            .collect();
        let _ = list_contains(&list, b"\"abc\"", true);
        let _ = list_contains(&list, b"\"abc\"", false);
        let tag = etag_for(
            rng.next(),
            rng.next() as i64,
            rng.below(1_000_000_000) as u32,
        );
        let mut l = b"\"x\", ".to_vec();
        l.extend_from_slice(tag.as_bytes());
        assert!(list_contains(&l, tag.as_bytes(), false));
        assert!(list_contains(&l, tag.as_bytes(), true));
    }
}

#[test]
fn a_variant_tag_differs_and_fits() {
    let t = etag_for(0x1a, 1, 5);
    let gz = t.variant("gz");
    assert_eq!(
        gz.as_str(),
        format!("{}-gz\"", &t.as_str()[..t.as_str().len() - 1])
    );
    assert_ne!(gz, t);
    assert_ne!(gz, t.variant("br"));
    let max = etag_for(u64::MAX, -1, 999_999_999).variant("br");
    assert_eq!(max.as_bytes().len(), ETAG_MAX);
    assert!(max.as_str().ends_with("-br\""), "{max:?}");
}
