//! What HTTP tests check against: dates, percent-encoding, entity tags,
//! `Content-Range` and `multipart/byteranges` bodies.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{show, Response};

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The IMF-fixdate of Unix seconds (RFC 9110 §5.6.7), computed here rather
/// than by the server's library: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days + 4).rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// A file's modification time in Unix seconds.
pub fn mtime_of(path: &Path) -> i64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mtime()
}

/// Sets a file's modification time (Unix seconds).
pub fn set_mtime(path: &Path, secs: i64) {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Percent-decodes `s`, panicking on a malformed escape.
pub fn pct_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .unwrap_or_else(|| panic!("truncated escape in {s:?}"));
            out.push(
                u8::from_str_radix(hex, 16)
                    .unwrap_or_else(|e| panic!("bad escape %{hex} in {s:?}: {e}")),
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Whether `s` is safe as a URL path in an `href` or a `Location`: printable
/// ASCII without space, `"`, `#`, `?`, `<`, `>`, `\`, and `%` only as an escape.
pub fn is_safe_url_path(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().all(|(i, &c)| match c {
        b'%' => {
            b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        }
        b' ' | b'"' | b'#' | b'?' | b'<' | b'>' | b'\\' => false,
        _ => c.is_ascii_graphic(),
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The response's `ETag`, which must be a strong quoted entity-tag.
pub fn assert_strong_etag(r: &Response, what: &str) -> String {
    let etag = r.must("etag");
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "{what}: ETag is not a strong quoted entity-tag: {etag:?}"
    );
    assert!(
        !etag[1..etag.len() - 1].contains('"'),
        "{what}: quote inside ETag {etag:?}"
    );
    etag.to_string()
}

/// `bytes first-last/total`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?, total.parse().ok()?))
}

/// One part of a `multipart/byteranges` body: (first, last, total, bytes).
pub type Part = (u64, u64, u64, Vec<u8>);

/// The boundary of a `multipart/byteranges` Content-Type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .map(|b| b.trim_matches('"').to_string())
}

/// The parts of a `multipart/byteranges` body, checked strictly (a panic
/// otherwise): only line ends before the first delimiter and after the last,
/// every part with a `Content-Type` and a `Content-Range`, its data followed
/// by CRLF and the next delimiter.
pub fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}");
    let crlf_only = |b: &[u8]| b.iter().all(|c| matches!(c, b'\r' | b'\n'));
    let mut at = find(body, delim.as_bytes())
        .unwrap_or_else(|| panic!("no delimiter {delim:?} in {}", show(body)));
    assert!(
        crlf_only(&body[..at]),
        "unexpected preamble: {}",
        show(&body[..at])
    );
    let mut parts = Vec::new();
    loop {
        at += delim.len();
        let rest = &body[at..];
        if let Some(epilogue) = rest.strip_prefix(b"--") {
            assert!(
                crlf_only(epilogue),
                "unexpected epilogue: {}",
                show(epilogue)
            );
            return parts;
        }
        assert!(
            rest.starts_with(b"\r\n"),
            "no CRLF after a delimiter: {}",
            show(rest)
        );
        let head_end = find(rest, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("part without end of head: {}", show(rest)));
        let head = String::from_utf8_lossy(&rest[2..head_end]).into_owned();
        for line in head.split("\r\n") {
            assert!(
                line.contains(':'),
                "bad part header line {line:?} in {head:?}"
            );
        }
        let field = |name: &str| {
            head.split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        assert!(
            field("content-type").is_some(),
            "part without Content-Type: {head:?}"
        );
        let cr = field("content-range").unwrap_or_else(|| panic!("no Content-Range: {head:?}"));
        let (first, last, total) =
            parse_content_range(&cr).unwrap_or_else(|| panic!("bad part Content-Range {cr:?}"));
        let start = at + head_end + 4;
        let end = start + (last + 1).saturating_sub(first) as usize;
        assert!(end <= body.len(), "part {cr:?} runs past the body");
        assert!(
            body[end..].starts_with(format!("\r\n{delim}").as_bytes()),
            "part {cr:?} not followed by CRLF and a delimiter: {}",
            show(&body[end..])
        );
        parts.push((first, last, total, body[start..end].to_vec()));
        at = end + 2;
    }
}
