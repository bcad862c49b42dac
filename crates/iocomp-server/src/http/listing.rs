//! Directory listings as HTML (for browsers, no JavaScript) and JSON.
//!
//! Names are raw bytes. In HTML, each link's target is the name
//! percent-encoded byte by byte (so a name that is not UTF-8, or holds `#`,
//! `?`, `%` or a newline, links to exactly itself), and the visible text is
//! the name decoded lossily (invalid bytes become U+FFFD) and HTML-escaped.
//! Column headers are plain links `?sort=name|size|mtime&order=asc|desc`;
//! directories are listed before files, and a `../` row comes first except at
//! the root. In JSON, each entry is
//! `{"name":…,"href":…,"type":"file"|"dir","size":…,"mtime":…}` with `mtime`
//! in Unix seconds; the name is JSON-escaped, and a byte that is not part of
//! valid UTF-8 is written as `\u00XX` — its Latin-1 reading, so such names
//! cannot be told apart from real U+0080–U+00FF characters; `href` (the
//! percent-encoded name, as in the HTML links) is exact. `<`, `>` and `&` are
//! escaped in JSON too, so that no content sniffing can turn it into markup.
//! Listings are built off the hot path and may allocate.
//!
//! A listing is bounded: [`render_html_bounded`] and [`render_json_bounded`]
//! stop before the body passes a byte limit, and the caller keeps only the
//! first entries in the order asked for ([`compare`], applied to the whole
//! directory before any cut). A cut HTML page says so below its table
//! ("Showing the first N of M entries"); a cut JSON array is still whole
//! JSON, and the caller says so in a header.

use crate::http::encoding::element_q;
use crate::http::percent::encode_path_segment;
use crate::http::request::trim_ows;

/// One directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The name, raw bytes, without any `/`.
    pub name: &'a [u8],
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Its length in bytes (shown for files only in HTML).
    pub len: u64,
    /// Its modification time, Unix seconds.
    pub mtime: i64,
}

/// The column to sort by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// By name, bytewise.
    Name,
    /// By length.
    Size,
    /// By modification time.
    Mtime,
}

/// The sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// How a listing is sorted; directories always come first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    /// The column.
    pub key: SortKey,
    /// The direction.
    pub order: Order,
}

impl Default for Sort {
    fn default() -> Sort {
        Sort {
            key: SortKey::Name,
            order: Order::Asc,
        }
    }
}

/// The `key=value` pairs of a raw query string.
fn query_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (
                pair.get(..eq).unwrap_or(b""),
                pair.get(eq + 1..).unwrap_or(b""),
            ),
            None => (pair, &b""[..]),
        })
}

impl Sort {
    /// Reads `sort=name|size|mtime` and `order=asc|desc` from a raw query;
    /// anything else keeps the default (name, ascending).
    pub fn from_query(query: Option<&[u8]>) -> Sort {
        let mut sort = Sort::default();
        for (key, value) in query_pairs(query.unwrap_or(b"")) {
            match (key, value) {
                (b"sort", b"name") => sort.key = SortKey::Name,
                (b"sort", b"size") => sort.key = SortKey::Size,
                (b"sort", b"mtime") => sort.key = SortKey::Mtime,
                (b"order", b"asc") => sort.order = Order::Asc,
                (b"order", b"desc") => sort.order = Order::Desc,
                _ => {}
            }
        }
        sort
    }
}

/// Sorts entries: directories first, then by the key (ties by name).
pub fn sort_entries(entries: &mut [Entry<'_>], sort: Sort) {
    entries.sort_unstable_by(|a, b| compare(a, b, sort));
}

/// The listing order of two entries: directories first, then by the key
/// (ties by name). A total order: names in one directory are unique.
pub fn compare(a: &Entry<'_>, b: &Entry<'_>, sort: Sort) -> std::cmp::Ordering {
    let by_key = match sort.key {
        SortKey::Name => a.name.cmp(b.name),
        SortKey::Size => a.len.cmp(&b.len).then(a.name.cmp(b.name)),
        SortKey::Mtime => a.mtime.cmp(&b.mtime).then(a.name.cmp(b.name)),
    };
    let by_key = match sort.order {
        Order::Asc => by_key,
        Order::Desc => by_key.reverse(),
    };
    b.is_dir.cmp(&a.is_dir).then(by_key)
}

/// Whether the client asked for JSON: `format=json` in the query, or
/// `application/json` in `Accept` preferred (by q-value) over `text/html`.
pub fn wants_json(accept: Option<&[u8]>, query: Option<&[u8]>) -> bool {
    if query_pairs(query.unwrap_or(b"")).any(|kv| kv == (&b"format"[..], &b"json"[..])) {
        return true;
    }
    let Some(accept) = accept else {
        return false;
    };
    let (mut json, mut html) = (0u16, 0u16);
    for element in accept.split(|&b| b == b',') {
        let (media, params) = match element.iter().position(|&b| b == b';') {
            Some(semi) => element.split_at(semi),
            None => (element, &b""[..]),
        };
        let media = trim_ows(media);
        if media.eq_ignore_ascii_case(b"application/json") {
            json = json.max(element_q(params));
        } else if media.eq_ignore_ascii_case(b"text/html") {
            html = html.max(element_q(params));
        }
    }
    json > 0 && json > html
}

/// Appends `text` HTML-escaped.
fn push_html(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\'' => out.extend_from_slice(b"&#39;"),
            // A control character (a newline in a name, say) would render as a
            // space and make two names look alike: show its control picture
            // (U+2400 + byte, U+2421 for DEL) instead.
            0..=0x1f => {
                let pic = char::from_u32(0x2400 + u32::from(b)).unwrap_or('\u{fffd}');
                let mut tmp = [0u8; 4];
                out.extend_from_slice(pic.encode_utf8(&mut tmp).as_bytes());
            }
            0x7f => out.extend_from_slice("\u{2421}".as_bytes()),
            _ => out.push(b),
        }
    }
}

/// Appends raw bytes as visible text: lossy UTF-8, HTML-escaped.
fn push_html_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    push_html(out, &String::from_utf8_lossy(bytes));
}

/// Appends a size for humans: `512 B`, `1.5 KiB`, `3.0 GiB`.
fn push_size(out: &mut Vec<u8>, n: u64) {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        crate::http::response::push_u64(out, n);
        out.extend_from_slice(b" B");
        return;
    }
    let mut unit = 0usize;
    let mut scale = 1024u128;
    while u128::from(n) >= scale * 1024 && unit + 1 < UNITS.len() {
        scale *= 1024;
        unit += 1;
    }
    let tenths = u128::from(n) * 10 / scale;
    crate::http::response::push_u64(out, u64::try_from(tenths / 10).unwrap_or(u64::MAX));
    out.push(b'.');
    out.push(b'0' + (tenths % 10) as u8);
    out.push(b' ');
    out.extend_from_slice(UNITS.get(unit).unwrap_or(&"EiB").as_bytes());
}

/// Appends `YYYY-MM-DD HH:MM:SS` (UTC) for Unix seconds (clamped to years 1970–9999).
fn push_datetime(out: &mut Vec<u8>, secs: i64) {
    let c = crate::http::date::civil(secs);
    let year = u64::from(c.year);
    out.push(b'0' + (year / 1000 % 10) as u8);
    out.push(b'0' + (year / 100 % 10) as u8);
    for (value, sep) in [
        (year % 100, b'-'),
        (u64::from(c.month), b'-'),
        (u64::from(c.day), b' '),
        (u64::from(c.hour), b':'),
        (u64::from(c.minute), b':'),
        (u64::from(c.second), b'\0'),
    ] {
        out.push(b'0' + (value / 10 % 10) as u8);
        out.push(b'0' + (value % 10) as u8);
        if sep != b'\0' {
            out.push(sep);
        }
    }
}

/// Appends one sortable column header link.
fn push_column(out: &mut Vec<u8>, sort: Sort, key: SortKey, label: &str, name: &str) {
    let order = if sort.key == key && sort.order == Order::Asc {
        "desc"
    } else {
        "asc"
    };
    let mark = match (sort.key == key, sort.order) {
        (true, Order::Asc) => " \u{2191}",
        (true, Order::Desc) => " \u{2193}",
        (false, _) => "",
    };
    let cell = format!("<th><a href=\"?sort={name}&amp;order={order}\">{label}{mark}</a></th>");
    out.extend_from_slice(cell.as_bytes());
}

/// Whether a decoded directory path is the root.
fn is_root(dir: &[u8]) -> bool {
    dir.split(|&b| b == b'/').all(|c| c.is_empty() || c == b".")
}

/// Renders an HTML listing of `dir` (the decoded request path, shown in the
/// title) into `out`, sorting `entries` first.
pub fn render_html(out: &mut Vec<u8>, dir: &[u8], entries: &mut [Entry<'_>], sort: Sort) {
    let total = entries.len();
    render_html_bounded(out, dir, entries, sort, usize::MAX, total);
}

/// Room kept below a byte limit for what follows the last entry.
const TAIL_ROOM: usize = 512;

/// [`render_html`] that stops adding entries before `out` would pass
/// `max_bytes`, and says below the table when it shows fewer than `total`
/// (the directory's count, which may exceed `entries.len()` when the caller
/// kept only the first). Returns how many entries it shows.
pub fn render_html_bounded(
    out: &mut Vec<u8>,
    dir: &[u8],
    entries: &mut [Entry<'_>],
    sort: Sort,
    max_bytes: usize,
    total: usize,
) -> usize {
    let limit = max_bytes.saturating_sub(TAIL_ROOM);
    sort_entries(entries, sort);
    out.extend_from_slice(
        b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
          <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Index of ",
    );
    push_html_bytes(out, dir);
    out.extend_from_slice(
        b"</title>\n<style>body{font-family:sans-serif;margin:1em 2em}\
          table{border-collapse:collapse}th,td{padding:.2em 1em;text-align:left}\
          td.s{text-align:right}tbody tr:nth-child(odd){background:#f4f4f4}</style>\n\
          </head><body>\n<h1>Index of ",
    );
    push_html_bytes(out, dir);
    out.extend_from_slice(b"</h1>\n<table>\n<thead><tr>");
    push_column(out, sort, SortKey::Name, "Name", "name");
    push_column(out, sort, SortKey::Size, "Size", "size");
    push_column(out, sort, SortKey::Mtime, "Modified", "mtime");
    out.extend_from_slice(b"</tr></thead>\n<tbody>\n");
    if !is_root(dir) {
        out.extend_from_slice(b"<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    let mut href = String::new();
    let mut shown = 0;
    for e in entries.iter() {
        let mark = out.len();
        href.clear();
        encode_path_segment(e.name, &mut href);
        out.extend_from_slice(b"<tr><td><a href=\"");
        out.extend_from_slice(href.as_bytes());
        if e.is_dir {
            out.push(b'/');
        }
        out.extend_from_slice(b"\">");
        push_html_bytes(out, e.name);
        if e.is_dir {
            out.extend_from_slice(b"/</a></td><td class=\"s\">-");
        } else {
            out.extend_from_slice(b"</a></td><td class=\"s\" title=\"");
            crate::http::response::push_u64(out, e.len);
            out.extend_from_slice(b"\">");
            push_size(out, e.len);
        }
        out.extend_from_slice(b"</td><td>");
        push_datetime(out, e.mtime);
        out.extend_from_slice(b"</td></tr>\n");
        if out.len() > limit {
            out.truncate(mark);
            break;
        }
        shown += 1;
    }
    out.extend_from_slice(b"</tbody>\n</table>\n");
    if shown < total {
        out.extend_from_slice(b"<p>Showing the first ");
        crate::http::response::push_u64(out, shown as u64);
        out.extend_from_slice(b" of ");
        crate::http::response::push_u64(out, total as u64);
        out.extend_from_slice(b" entries, in the order shown; the listing is cut.</p>\n");
    }
    out.extend_from_slice(b"</body></html>\n");
    shown
}

/// Appends `bytes` as a JSON string (quotes included); see the module docs
/// for how bytes that are not UTF-8 are written.
fn push_json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    fn escape(out: &mut Vec<u8>, b: u8) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(b"\\u00");
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0..=0x1f | 0x7f | b'<' | b'>' | b'&' => escape(out, b),
                _ => out.push(b),
            }
        }
        for &b in chunk.invalid() {
            escape(out, b);
        }
    }
    out.push(b'"');
}

/// Renders a JSON listing into `out`, sorting `entries` first.
pub fn render_json(out: &mut Vec<u8>, entries: &mut [Entry<'_>], sort: Sort) {
    render_json_bounded(out, entries, sort, usize::MAX);
}

/// [`render_json`] that stops adding entries before `out` would pass
/// `max_bytes` (the array stays whole JSON). Returns how many it shows.
pub fn render_json_bounded(
    out: &mut Vec<u8>,
    entries: &mut [Entry<'_>],
    sort: Sort,
    max_bytes: usize,
) -> usize {
    let limit = max_bytes.saturating_sub(TAIL_ROOM);
    sort_entries(entries, sort);
    out.push(b'[');
    let mut href = String::new();
    let mut shown = 0;
    for (i, e) in entries.iter().enumerate() {
        let mark = out.len();
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        push_json_string(out, e.name);
        href.clear();
        encode_path_segment(e.name, &mut href);
        if e.is_dir {
            href.push('/');
        }
        out.extend_from_slice(b",\"href\":");
        push_json_string(out, href.as_bytes());
        out.extend_from_slice(if e.is_dir {
            b",\"type\":\"dir\",\"size\":"
        } else {
            b",\"type\":\"file\",\"size\":"
        });
        crate::http::response::push_u64(out, e.len);
        out.extend_from_slice(b",\"mtime\":");
        if e.mtime < 0 {
            out.push(b'-');
        }
        crate::http::response::push_u64(out, e.mtime.unsigned_abs());
        out.push(b'}');
        if out.len() > limit {
            out.truncate(mark);
            break;
        }
        shown += 1;
    }
    out.extend_from_slice(b"]\n");
    shown
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
