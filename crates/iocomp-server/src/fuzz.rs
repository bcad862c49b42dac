//! Fuzz targets: one function per parser or decision, shared by the
//! cargo-fuzz harness in `fuzz/` (nightly) and the corpus replay in
//! `tests/server/fuzz_corpus.rs` (stable, part of `cargo test`).
//!
//! Every target feeds arbitrary bytes to the code under test and checks
//! invariants with `assert!` — not only "it does not panic". Where a target
//! needs more than the bytes (a file length, a method, a chunk size), it takes
//! it from a short, human-writable first line of the input, so the seed
//! corpora stay readable; see each function.
//!
//! Not a stable API: hidden from the documentation, used by the fuzzers only.

use std::borrow::Cow;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::fs::{OpenError, PathOptions, Root};
use crate::http::cond::{self, Precondition, Validators};
use crate::http::date;
use crate::http::detect::{self, Proto};
use crate::http::encoding;
use crate::http::percent::{decode_path, encode_path_segment};
use crate::http::range::{parse_ranges, RangeResult, MAX_RANGES};
use crate::http::request::{self, Method, Parsed, Request, Version, MAX_HEAD};
use crate::proto::line::framer::{Frame, LineFramer, MAX_LINE};

pub use crate::conn::tls::fuzz::tls_front;

/// Splits `data` at its first LF: `(first line, rest)`; `(b"", data)` without one.
fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(lf) => (
            data.get(..lf).unwrap_or(b""),
            data.get(lf + 1..).unwrap_or(b""),
        ),
        None => (b"", data),
    }
}

/// A decimal number, saturating; `None` if `s` is empty or not all digits.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// A cheap, deterministic hash of `data` (FNV-1a), for derived parameters.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `inner` lies within `outer` in memory.
fn within(inner: &[u8], outer: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

/// The HTTP request-head parser, `request::parse`.
///
/// The whole input is the receive buffer. Checks: parsing is deterministic; a
/// `Complete` head is non-empty, no longer than the input and [`MAX_HEAD`],
/// and every slice of the request borrows from it; the same head parses to the
/// same request when other bytes follow it (pipelining) and when it stands
/// alone; a strict prefix of a complete head is `Partial`, never an error (a
/// head trickling in byte by byte must not be refused); `Partial` only below
/// `MAX_HEAD` bytes. For a complete request it also runs
/// [`encoding::choose`] and [`parse_ranges`] on its headers.
pub fn http_request(data: &[u8]) {
    let parsed = request::parse(data);
    assert_eq!(parsed, request::parse(data), "parse is not deterministic");
    let line = request::request_line(data);
    assert!(line.len() <= MAX_HEAD && within(line, data) && !line.contains(&b'\n'));
    match parsed {
        Ok(Parsed::Complete(req, len)) => {
            assert_eq!(
                request::request_line_of(data, &req),
                line,
                "request_line_of"
            );
            assert!(
                len > 0 && len <= data.len() && len <= MAX_HEAD,
                "head length {len}"
            );
            let head = data.get(..len).unwrap_or(b"");
            let method: &[u8] = match req.method {
                Method::Other(m) => m.as_bytes(),
                _ => b"",
            };
            for part in [req.target, req.path, method] {
                // An absolute-form target without a path ("http://host") has
                // the path "/" (RFC 9112 §3.2.2), which is not in the head.
                let empty_path = std::ptr::eq(part, req.path) && part == b"/";
                assert!(
                    within(part, head) || empty_path,
                    "{:?} outside the head",
                    String::from_utf8_lossy(part)
                );
            }
            for value in [req.query, req.host, req.range, req.if_range, req.if_match]
                .into_iter()
                .chain([
                    req.if_none_match,
                    req.if_modified_since,
                    req.if_unmodified_since,
                ])
                .chain([req.accept_encoding, req.accept, req.user_agent, req.referer])
                .flatten()
            {
                assert!(within(value, head), "header value outside the head");
                assert!(!value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f));
            }
            assert!(!req.path.contains(&b'?'), "query left in the path");
            // Alone, and followed by other bytes: the same request.
            assert_eq!(request::parse(head), Ok(Parsed::Complete(req.clone(), len)));
            let mut more = head.to_vec();
            more.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage");
            more.extend_from_slice(data);
            assert_eq!(
                request::parse(&more),
                Ok(Parsed::Complete(req.clone(), len))
            );
            // Prefixes: never an error.
            let h = fnv(data) as usize;
            for cut in [len - 1, len / 2, h % len, (h >> 20) % len, 1] {
                if let Some(prefix) = data.get(..cut) {
                    assert_eq!(
                        request::parse(prefix),
                        Ok(Parsed::Partial),
                        "prefix of {cut} bytes of a complete head"
                    );
                }
            }
            check_encoding(req.accept_encoding);
            if let Some(range) = req.range {
                check_ranges(range, fnv(head) % 100_000);
            }
        }
        Ok(Parsed::Partial) => assert!(data.len() < MAX_HEAD, "Partial at {} bytes", data.len()),
        Err(err) => {
            // An error is final: more bytes do not turn it into a request.
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\n");
            assert!(
                !matches!(request::parse(&more), Ok(Parsed::Complete(..))),
                "{err:?} then Complete"
            );
        }
    }
}

/// Checks [`encoding::choose`]: best first, no duplicates, `None`s last.
fn check_encoding(header: Option<&[u8]>) {
    let c = encoding::choose(header);
    assert_eq!(c, encoding::choose(header));
    if header.is_none() {
        assert_eq!(c, [None, None]);
    }
    let [a, b] = c;
    assert!(!(a.is_none() && b.is_some()), "None before Some: {c:?}");
    assert!(a.is_none() || a != b, "duplicate: {c:?}");
}

/// Checks [`parse_ranges`] on `header` against a file of `len` bytes.
fn check_ranges(header: &[u8], len: u64) {
    let result = parse_ranges(header, len);
    assert_eq!(result, parse_ranges(header, len));
    let unit_ok = header.iter().position(|&b| b == b'=').is_some_and(|eq| {
        header
            .get(..eq)
            .is_some_and(|u| u.eq_ignore_ascii_case(b"bytes"))
    });
    match result {
        RangeResult::Satisfiable(ranges) => {
            assert!(unit_ok, "satisfiable without a bytes unit");
            assert!(len > 0, "satisfiable on an empty file");
            let rs = ranges.as_slice();
            assert!(
                !rs.is_empty() && rs.len() <= MAX_RANGES,
                "{} ranges",
                rs.len()
            );
            for r in rs {
                assert!(r.start < r.end && r.end <= len, "{r:?} in a file of {len}");
                assert_eq!(r.last(), r.end - 1);
            }
            for pair in rs.windows(2) {
                if let [a, b] = pair {
                    assert!(
                        a.end < b.start,
                        "not sorted, disjoint, non-adjacent: {a:?} {b:?}"
                    );
                }
            }
            assert!(ranges.total() <= len, "total {} > {len}", ranges.total());
        }
        RangeResult::Unsatisfiable => assert!(unit_ok, "416 without a bytes unit"),
        RangeResult::Full => {}
    }
}

/// The `Range` parser, [`parse_ranges`].
///
/// Input: `LENGTH\nHEADER` — the first line is the file length in decimal (a
/// hash of the input when it is not a number); the rest is the header value.
/// Checks: deterministic; satisfiable ranges are non-empty, within the file,
/// sorted, disjoint and non-adjacent, at most `MAX_RANGES`, totalling at most
/// the file; never satisfiable on an empty file nor without the `bytes` unit;
/// and a header with no `=` or another unit is always `Full`.
pub fn range_header(data: &[u8]) {
    let (first, header) = first_line(data);
    let len = decimal(first).unwrap_or_else(|| fnv(data) % 5000);
    check_ranges(header, len);
    if !header.contains(&b'=') {
        assert_eq!(parse_ranges(header, len), RangeResult::Full);
    }
    // The same set on an empty file is never satisfiable.
    assert!(!matches!(
        parse_ranges(header, 0),
        RangeResult::Satisfiable(_)
    ));
}

/// The conditional-request decisions, [`cond::evaluate`] and
/// [`cond::if_range_allows`].
///
/// Input: a first line `METHOD MTIME` (e.g. `GET 784111777`; a missing or
/// invalid part is taken from a hash), then header lines `Name: value` for
/// `If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` and
/// `If-Range` (case-insensitive; others ignored). `{etag}` in a value becomes
/// the file's entity-tag and `{date}` its `Last-Modified` date, so seeds can
/// hit the matching paths.
///
/// Checks: deterministic; `NotModified` only for GET/HEAD; no header →
/// `Proceed` and `If-Range` allowed; metamorphic rules from RFC 9110 §13: an
/// `If-Match` of `*` or of our strong tag is as if absent (and hides
/// `If-Unmodified-Since`); an `If-None-Match` of `*`, our tag or our weak tag
/// is 304 for GET/HEAD and 412 otherwise unless `If-Match` already failed;
/// `If-Modified-Since` equal to `Last-Modified` gives 304 for GET without
/// `If-None-Match`; `If-Range` of our tag or date allows, of a weak tag or
/// another date does not.
pub fn conditional(data: &[u8]) {
    let h = fnv(data);
    let (first, rest) = first_line(data);
    let mut words = first.split(|&b| b == b' ');
    let method = match words.next() {
        Some(b"GET") => Method::Get,
        Some(b"HEAD") => Method::Head,
        Some(b"OPTIONS") => Method::Options,
        Some(b"POST") => Method::Other("POST"),
        _ => [Method::Get, Method::Head, Method::Other("DELETE")][(h % 3) as usize],
    };
    let mtime = words
        .next()
        .and_then(decimal)
        .map_or((h >> 8) as i64 % 2_000_000_000, |m| {
            i64::try_from(m).unwrap_or(i64::MAX)
        });
    let v = Validators::new(h % 65_536, mtime, (h >> 40) as u32 % 1_000_000_000);
    let ours = v.etag.as_bytes().to_vec();
    let lm_date = date::format(v.last_modified);
    let mut values: Vec<(usize, Vec<u8>)> = Vec::new();
    const NAMES: [&[u8]; 5] = [
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"if-range",
    ];
    for line in rest.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let Some(slot) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) else {
            continue;
        };
        let value = value.get(1..).unwrap_or(b"");
        let value = replace(&replace(value, b"{etag}", &ours), b"{date}", &lm_date);
        values.push((slot, value));
    }
    let mut req = blank_request(method);
    for (slot, value) in &values {
        let value: &[u8] = value;
        let field = match slot {
            0 => &mut req.if_match,
            1 => &mut req.if_none_match,
            2 => &mut req.if_modified_since,
            3 => &mut req.if_unmodified_since,
            _ => &mut req.if_range,
        };
        field.get_or_insert(request::trim_ows(value));
    }

    let decision = cond::evaluate(&req, &v);
    assert_eq!(decision, cond::evaluate(&req, &v));
    let get_or_head = method.is_get_or_head();
    if decision == Precondition::NotModified {
        assert!(get_or_head, "304 for {method:?}");
    }
    let bare = blank_request(method);
    assert_eq!(cond::evaluate(&bare, &v), Precondition::Proceed);
    assert!(cond::if_range_allows(&bare, &v));

    // If-Match: * or our strong tag is as if both If-Match and
    // If-Unmodified-Since were absent.
    let without_match = Request {
        if_match: None,
        if_unmodified_since: None,
        ..req.clone()
    };
    let expected = cond::evaluate(&without_match, &v);
    let weak: Vec<u8> = [&b"W/"[..], &ours].concat();
    let listed: Vec<u8> = [&b"\"x\", "[..], &ours, b" ,"].concat();
    for m in [&b"*"[..], &ours, &listed] {
        let r = Request {
            if_match: Some(m),
            ..req.clone()
        };
        assert_eq!(cond::evaluate(&r, &v), expected, "If-Match {m:?}");
    }
    // Our weak tag never satisfies If-Match (strong comparison).
    let r = Request {
        if_match: Some(&weak),
        ..req.clone()
    };
    assert_eq!(cond::evaluate(&r, &v), Precondition::Failed);

    // If-None-Match matching: 304 (GET/HEAD) or 412, unless If-Match failed.
    let match_failed = cond::evaluate(
        &Request {
            if_none_match: None,
            if_modified_since: None,
            ..req.clone()
        },
        &v,
    ) == Precondition::Failed;
    for m in [&b"*"[..], &ours, &weak, &listed] {
        let r = Request {
            if_none_match: Some(m),
            ..req.clone()
        };
        let want = if match_failed {
            Precondition::Failed
        } else if get_or_head {
            Precondition::NotModified
        } else {
            Precondition::Failed
        };
        assert_eq!(cond::evaluate(&r, &v), want, "If-None-Match {m:?}");
    }
    // If-Modified-Since = Last-Modified: 304 for GET, without If-None-Match.
    let r = Request {
        if_none_match: None,
        if_modified_since: Some(&lm_date),
        ..req.clone()
    };
    let d = cond::evaluate(&r, &v);
    if get_or_head {
        assert_ne!(
            d,
            Precondition::Proceed,
            "If-Modified-Since = Last-Modified"
        );
    } else {
        assert_ne!(d, Precondition::NotModified);
    }

    // If-Range.
    let allows = cond::if_range_allows(&req, &v);
    assert_eq!(allows, cond::if_range_allows(&req, &v));
    let other_date = date::format(v.last_modified.wrapping_add(1).min(253_402_300_799));
    for (value, want) in [
        (&ours[..], true),
        (&weak[..], false),
        (&lm_date[..], true),
        (&other_date[..], v.last_modified == 253_402_300_799),
        (&b"\"nope\""[..], false),
    ] {
        let r = Request {
            if_range: Some(value),
            ..req.clone()
        };
        assert_eq!(cond::if_range_allows(&r, &v), want, "If-Range {value:?}");
    }
}

/// `s` with every `from` replaced by `to`.
fn replace(s: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s.get(i..).is_some_and(|t| t.starts_with(from)) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.extend(s.get(i));
            i += 1;
        }
    }
    out
}

/// A `GET /` request with no optional headers, for [`conditional`].
fn blank_request(method: Method<'_>) -> Request<'_> {
    Request {
        method,
        version: Version::Http11,
        target: b"/",
        path: b"/",
        query: None,
        host: Some(b"x"),
        keep_alive: true,
        range: None,
        if_range: None,
        if_match: None,
        if_none_match: None,
        if_modified_since: None,
        if_unmodified_since: None,
        accept_encoding: None,
        accept: None,
        user_agent: None,
        referer: None,
    }
}

/// An independent percent-decoder for [`percent_decode`]: `None` on a bad
/// escape, NUL or backslash.
fn reference_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let b = if b == b'%' {
            let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            i += 3;
            u8::from_str_radix(hex, 16).ok()?
        } else {
            i += 1;
            b
        };
        if b == 0 || b == b'\\' {
            return None;
        }
        out.push(b);
    }
    Some(out)
}

/// A served tree for the path-resolution oracle: `root/` holds files, a
/// dotfile, a subdirectory and symlinks in and out; `outside/` (a sibling of
/// the root) holds the secret that must never be opened.
struct Fixture {
    /// The policy over `root/`, hidden files allowed (the loosest setting).
    root: Root,
    /// `(dev, ino)` of everything outside the root that a name could reach.
    forbidden: Vec<(u64, u64)>,
}

/// The fixture, made once per process under the temporary directory.
fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let base: PathBuf =
                std::env::temp_dir().join(format!("iocomp-fuzz-{}", std::process::id()));
            let root = base.join("root");
            let outside = base.join("outside");
            fs::create_dir_all(root.join("sub")).ok()?;
            fs::create_dir_all(&outside).ok()?;
            fs::write(outside.join("secret"), b"secret").ok()?;
            fs::write(root.join("a.txt"), b"a").ok()?;
            fs::write(root.join("sub/b.txt"), b"b").ok()?;
            fs::write(root.join(".hidden"), b"h").ok()?;
            fs::write(root.join("%41"), b"literal percent").ok()?;
            let _ = symlink("../outside/secret", root.join("out"));
            let _ = symlink("../outside", root.join("outdir"));
            let _ = symlink("/etc/passwd", root.join("abs"));
            let _ = symlink("a.txt", root.join("in"));
            let _ = symlink("../a.txt", root.join("sub/up"));
            let mut forbidden = Vec::new();
            for p in [
                base.clone(),
                outside.clone(),
                outside.join("secret"),
                PathBuf::from("/etc/passwd"),
                PathBuf::from("/"),
            ] {
                if let Ok(m) = fs::metadata(&p) {
                    forbidden.push((m.dev(), m.ino()));
                }
            }
            let opts = PathOptions {
                hidden: true,
                no_symlinks: false,
                ..PathOptions::default()
            };
            Some(Fixture {
                root: Root::open(&root, opts).ok()?,
                forbidden,
            })
        })
        .as_ref()
}

/// Percent-decoding, [`decode_path`], and path resolution under the root.
///
/// The whole input is a raw request path. Checks: the result equals an
/// independent decoder's (errors included); it never holds NUL or `\`; it is
/// borrowed exactly when the input has no `%`; each segment survives
/// encode-then-decode. Then the oracle: the decoded name is opened with
/// `Root::open_entry` and `Root::open_file` over a temporary tree with a
/// secret outside the root and symlinks pointing out, and whatever opens is
/// never outside the root; a name with a `..` component is always refused.
pub fn percent_decode(data: &[u8]) {
    let decoded = decode_path(data);
    let reference = reference_decode(data);
    match &decoded {
        Ok(out) => {
            assert_eq!(
                Some(&out[..]),
                reference.as_deref(),
                "differs from the reference"
            );
            assert!(!out.contains(&0) && !out.contains(&b'\\'));
            assert_eq!(matches!(out, Cow::Borrowed(_)), !data.contains(&b'%'));
            let escapes = data.iter().filter(|&&b| b == b'%').count();
            assert_eq!(out.len(), data.len() - 2 * escapes);
            for segment in out.split(|&b| b == b'/') {
                let mut enc = String::new();
                encode_path_segment(segment, &mut enc);
                assert!(!enc.contains('/'));
                assert_eq!(decode_path(enc.as_bytes()).as_deref(), Ok(segment));
            }
        }
        Err(e) => assert!(
            reference.is_none(),
            "refused ({e:?}) but the reference decodes"
        ),
    }
    let name: &[u8] = match &decoded {
        Ok(out) => out,
        Err(_) => data, // the line protocol takes raw names: try them too
    };
    check_open(name);
}

/// The path-resolution oracle on one name (see [`percent_decode`]).
fn check_open(name: &[u8]) {
    let Some(fx) = fixture() else {
        return;
    };
    let dotdot = name.split(|&b| b == b'/').any(|c| c == b"..");
    for result in [fx.root.open_entry(name), fx.root.open_file(name)] {
        match result {
            Ok(opened) => {
                let id = (opened.meta.dev(), opened.meta.ino());
                assert!(
                    !fx.forbidden.contains(&id),
                    "{name:?} opened a file outside the root"
                );
                assert!(!dotdot, "{name:?} with `..` was opened");
            }
            Err(OpenError::Forbidden | OpenError::BadName) => {}
            Err(e) => assert!(!dotdot, "{name:?} with `..` gave {e:?}"),
        }
    }
    if dotdot && name.len() <= 4096 && !name.contains(&0) {
        assert!(matches!(fx.root.open_file(name), Err(OpenError::Forbidden)));
    }
}

/// What [`LineFramer`] produced: names (owned) and `None` for `TooLong`.
type Frames = Vec<Option<Vec<u8>>>;

/// Feeds `data` to a fresh framer in chunks of `chunk` bytes, as a
/// connection would, and returns the frames; checks the buffer bound.
fn frame_in_chunks(data: &[u8], chunk: usize) -> Frames {
    let mut framer = LineFramer::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let (frame, consumed) = framer.next(&buf);
            assert!(
                consumed <= buf.len(),
                "consumed {consumed} of {}",
                buf.len()
            );
            match frame {
                Some(Frame::Line(r)) => {
                    assert!(
                        r.end <= consumed && r.start <= r.end,
                        "{r:?} beyond {consumed}"
                    );
                    let name = buf.get(r).unwrap_or_default();
                    assert!(name.len() <= MAX_LINE && !name.contains(&b'\n'));
                    frames.push(Some(name.to_vec()));
                }
                Some(Frame::TooLong) => frames.push(None),
                None => {
                    buf.drain(..consumed);
                    break;
                }
            }
            buf.drain(..consumed);
        }
        assert!(
            buf.len() <= MAX_LINE + 1,
            "holding {} bytes of an unterminated line",
            buf.len()
        );
        assert!(!buf.contains(&b'\n'), "a complete line left undelivered");
    }
    match framer.finish(&buf) {
        Some(Frame::Line(r)) => frames.push(Some(buf.get(r).unwrap_or_default().to_vec())),
        Some(Frame::TooLong) => frames.push(None),
        None => {}
    }
    frames
}

/// The line-protocol framer, [`LineFramer`].
///
/// The whole input is the byte stream of a connection. Checks: fed whole, in
/// chunks whose size comes from the first byte, and one byte at a time, it
/// yields the same frames, equal to a simple model (split on LF; a line over
/// `MAX_LINE` bytes, CR included, is one `TooLong`; one trailing CR is
/// stripped; a final unterminated line counts); lines lie within the consumed
/// bytes; and after draining, the caller never holds more than `MAX_LINE + 1`
/// bytes.
pub fn line_framer(data: &[u8]) {
    let mut model: Frames = Vec::new();
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let last = lines.pop().unwrap_or_default();
    for line in lines.into_iter().chain((!last.is_empty()).then_some(last)) {
        model.push(
            (line.len() <= MAX_LINE).then(|| line.strip_suffix(b"\r").unwrap_or(line).to_vec()),
        );
    }
    let whole = frame_in_chunks(data, data.len());
    assert_eq!(whole, model, "whole feeding differs from the model");
    let chunk = usize::from(data.first().copied().unwrap_or(1)) * 37 + 1;
    assert_eq!(frame_in_chunks(data, chunk), model, "chunks of {chunk}");
    if data.len() <= 20_000 {
        assert_eq!(frame_in_chunks(data, 1), model, "byte at a time");
    }
}

/// Protocol detection, [`detect::detect`].
///
/// Checks: deterministic; empty → `NeedMore`; a first byte that is neither a
/// token byte nor the start of an empty line → `Line`; `NeedMore` only for at
/// most `MAX_LEADING_EMPTY + MAX_METHOD + 8` bytes, with no line feed after
/// the leading empty lines; and the decision is stable: once a prefix decides
/// `Http` or `Line`, every longer prefix decides the same.
pub fn protocol_detect(data: &[u8]) {
    let full = detect::detect(data);
    assert_eq!(full, detect::detect(data));
    assert_eq!(detect::detect(b""), Proto::NeedMore);
    if let Some(&b) = data.first() {
        if !detect::is_tchar(b) && b != b'\r' && b != b'\n' {
            assert_eq!(full, Proto::Line);
        }
    }
    if full == Proto::NeedMore {
        assert!(
            data.len() <= detect::MAX_LEADING_EMPTY + detect::MAX_METHOD + 8,
            "NeedMore at {} bytes",
            data.len()
        );
        let mut rest = data;
        while let Some(r) = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
        {
            rest = r;
        }
        assert!(!rest.contains(&b'\n'));
    }
    let mut decided: Option<Proto> = None;
    for cut in 1..=data.len().min(64) {
        let d = detect::detect(data.get(..cut).unwrap_or_default());
        if let Some(first) = decided {
            assert_eq!(d, first, "changed its mind at {cut} bytes");
        } else if d != Proto::NeedMore {
            decided = Some(d);
        }
    }
    if let Some(first) = decided {
        assert_eq!(full, first);
    }
}

/// HTTP dates, [`date::parse`] and [`date::format`].
///
/// Checks: a parsed date is within 1970..=9999 and formats to a string that
/// parses back to it.
/// Then, for seconds taken from the first 8 bytes: the IMF-fixdate, the
/// asctime form and (for 1970–2069) the RFC 850 form of that instant all parse
/// to it.
pub fn http_date(data: &[u8]) {
    if let Some(secs) = date::parse(data) {
        assert_eq!(date::clamp_secs(secs), secs, "out of range: {secs}");
        let text = date::format(secs);
        assert_eq!(
            date::parse(&text),
            Some(secs),
            "{:?}",
            String::from_utf8_lossy(&text)
        );
    }
    let mut raw = [0u8; 8];
    for (slot, b) in raw.iter_mut().zip(data) {
        *slot = *b;
    }
    let secs = i64::try_from(u64::from_le_bytes(raw) % 253_402_300_800).unwrap_or(0);
    let imf = date::format(secs);
    assert_eq!(date::parse(&imf), Some(secs));
    for other in other_forms(&imf) {
        assert_eq!(
            date::parse(&other),
            Some(secs),
            "{:?}",
            String::from_utf8_lossy(&other)
        );
    }
}

/// The asctime and (years 1970–2069) RFC 850 forms of an IMF-fixdate.
fn other_forms(imf: &[u8; date::DATE_LEN]) -> Vec<Vec<u8>> {
    let s = String::from_utf8_lossy(imf);
    let (wday, day, mon, year, time) = (
        s.get(0..3).unwrap_or(""),
        s.get(5..7).unwrap_or(""),
        s.get(8..11).unwrap_or(""),
        s.get(12..16).unwrap_or(""),
        s.get(17..25).unwrap_or(""),
    );
    let day_sp = day
        .strip_prefix('0')
        .map_or(day.to_string(), |d| format!(" {d}"));
    let mut out = vec![format!("{wday} {mon} {day_sp} {time} {year}").into_bytes()];
    let long = match wday {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    if let Some(y) = year
        .parse::<u32>()
        .ok()
        .filter(|y| (1970..2070).contains(y))
    {
        out.push(format!("{long}, {day}-{mon}-{:02} {time} GMT", y % 100).into_bytes());
    }
    out
}
