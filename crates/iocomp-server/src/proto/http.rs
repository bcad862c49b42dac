//! HTTP/1.1 on a connection: GET and HEAD of files and directories, with
//! validators, conditional requests, ranges (multipart too), precompressed
//! siblings, listings and redirects. The pure decisions live in [`crate::http`];
//! this module strings them together and turns them into reply pieces, so a
//! file body always goes out zero-copy behind its head.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;

use tracing::debug;

use crate::fs::{dir, Normalized, OpenError, Opened};
use crate::http::cond::{self, Precondition, Validators};
use crate::http::encoding::{self, Encoding};
use crate::http::listing;
use crate::http::multipart::{self, Multipart};
use crate::http::percent::{decode_path, directory_location};
use crate::http::range::{parse_ranges, RangeResult};
use crate::http::request::{self, Method, Parsed, Request, Version};
use crate::http::response::{
    content_type_for, error_response, error_response_with, ContentType, Head,
};
use crate::proto::{date, out_buf, pieces_of, Connection, Piece, Reply, Step};

/// The Content-Security-Policy of listings: no script, no fetch, no frame;
/// only the page's own inline style (names in it are escaped, and no script
/// may run even if that ever failed).
const LISTING_CSP: &[u8] =
    b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Entries a listing shows at most (a huge directory is cut, not a DoS),
/// after sorting.
const MAX_LISTING: usize = 10_000;

/// Bytes a listing body holds at most.
const MAX_LISTING_BYTES: usize = 4 << 20;

/// A listing body shorter than this is sent with its head, in one `send`.
const SMALL_LISTING: usize = 16 * 1024;

/// The next step for an HTTP connection.
pub(crate) fn step(conn: &mut dyn Connection) -> Step {
    // Nothing buffered (the usual case after a reply on keep-alive): what
    // `parse` would say, without its passes over an empty head.
    if conn.input().is_empty() {
        return if conn.eof() { Step::Close } else { Step::Recv };
    }
    let buf = std::mem::take(conn.input());
    let (step, consumed) = match request::parse(&buf) {
        Ok(Parsed::Partial) => (if conn.eof() { Step::Close } else { Step::Recv }, 0),
        Err(e) => {
            // Never guess where the next request starts: answer and close.
            conn.begin(request::request_line(&buf), e.status());
            let mut out = out_buf(256);
            error_response(
                &mut out,
                &date(),
                e.status(),
                Version::Http11,
                false,
                false,
                None,
            );
            (Reply::bytes(out, true), buf.len())
        }
        Ok(Parsed::Complete(req, head_len)) => {
            conn.begin(request::request_line_of(&buf, &req), 200);
            conn.set_client(req.referer, req.user_agent);
            if conn.over_limit() {
                (busy(conn, &req), head_len)
            } else {
                (respond(conn, &req), head_len)
            }
        }
    };
    let input = conn.input();
    *input = buf;
    input.drain(..consumed.min(input.len()));
    step
}

/// Over `--max-conns-per-ip`: `503` with `Retry-After`, and close.
fn busy(conn: &mut dyn Connection, req: &Request<'_>) -> Step {
    status(conn, 503);
    const BODY: &[u8] = b"503 Service Unavailable: too many connections from your address\n";
    let mut out = out_buf(256);
    Head::new(&mut out, 503, &date())
        .content_type(ContentType::TEXT)
        .content_length(BODY.len() as u64)
        .header("Retry-After", b"1")
        .connection(req.version, false)
        .finish();
    if !matches!(req.method, Method::Head) {
        out.extend_from_slice(BODY);
    }
    Reply::bytes(out, true)
}

fn reply(pieces: Vec<Piece>, close: bool) -> Step {
    Step::Reply(Reply {
        pieces: VecDeque::from(pieces),
        close,
        file: None,
        name: None,
    })
}

/// Records the status for the access log.
fn status(conn: &mut dyn Connection, status: u16) {
    conn.set_status(status);
}

/// The per-request facts every response needs.
struct Ctx {
    version: Version,
    keep_alive: bool,
    head_only: bool,
    date: [u8; crate::http::date::DATE_LEN],
}

fn error(conn: &mut dyn Connection, cx: &Ctx, code: u16, len416: Option<u64>) -> Step {
    error_varying(conn, cx, code, len416, false)
}

/// An error about a file; `varies`: the file has precompressed siblings, so
/// the answer depends on `Accept-Encoding` (a 412 or 416 is about the variant
/// chosen) and says so.
fn error_varying(
    conn: &mut dyn Connection,
    cx: &Ctx,
    code: u16,
    len416: Option<u64>,
    varies: bool,
) -> Step {
    status(conn, code);
    let mut out = out_buf(256);
    error_response_with(
        &mut out,
        &cx.date,
        code,
        cx.version,
        cx.keep_alive,
        cx.head_only,
        len416,
        |h| {
            if varies {
                h.vary_accept_encoding();
            }
        },
    );
    Reply::bytes(out, !cx.keep_alive)
}

fn respond(conn: &mut dyn Connection, req: &Request<'_>) -> Step {
    let keep_alive = req.keep_alive && !conn.draining();
    let cx = Ctx {
        version: req.version,
        keep_alive,
        head_only: matches!(req.method, Method::Head),
        date: date(),
    };
    if let (Some(port), false) = (conn.site().settings.https_redirect, conn.secure()) {
        return to_https(conn, req, &cx, port);
    }
    match req.method {
        Method::Get | Method::Head => {}
        Method::Options => {
            status(conn, 200);
            let mut out = out_buf(192);
            Head::new(&mut out, 200, &cx.date)
                .allow()
                .content_length(0)
                .connection(cx.version, keep_alive)
                .finish();
            return Reply::bytes(out, !keep_alive);
        }
        Method::Other(_) => return error(conn, &cx, 405, None),
    }
    let name = match decode_path(req.path) {
        Ok(n) => n,
        Err(e) => return error(conn, &cx, e.status(), None),
    };
    // Normalized once: the open and the sibling probe both use it.
    let opened = conn
        .site()
        .root
        .normalize_name(&name)
        .and_then(|n| Ok((conn.site().root.open_entry_normalized(&n)?, n)));
    let (opened, normal) = match opened {
        Ok(o) => o,
        Err(e) => return error(conn, &cx, open_status(&e), None),
    };
    if opened.meta.is_dir() {
        return directory(conn, req, &cx, &name, opened);
    }
    file(conn, req, &cx, &name, Some(&normal), opened)
}

/// Plain HTTP with an HTTPS redirect configured: `301` to the same host,
/// path and query over HTTPS on `port`; a host that is not a plain name or
/// address (or none, on HTTP/1.0) gets `400`.
fn to_https(conn: &mut dyn Connection, req: &Request<'_>, cx: &Ctx, port: u16) -> Step {
    let host = req.host.unwrap_or_default();
    // The host without its port: `[v6]` keeps its brackets.
    let name = match host.first() {
        Some(b'[') => match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => &[][..],
        },
        _ => host.split(|&b| b == b':').next().unwrap_or_default(),
    };
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"-._[]:".contains(b);
    if name.is_empty() || !name.iter().all(plain) {
        return error(conn, cx, 400, None);
    }
    let mut location = String::from("https://");
    location.push_str(&String::from_utf8_lossy(name));
    if port != 443 {
        location.push_str(&format!(":{port}"));
    }
    if req.path.first() == Some(&b'/') {
        location.push_str(&String::from_utf8_lossy(req.path));
    } else {
        location.push('/');
    }
    moved_permanently(conn, req, cx, location)
}

/// A `301` to `location` with the request's query appended, if it has one.
fn moved_permanently(
    conn: &mut dyn Connection,
    req: &Request<'_>,
    cx: &Ctx,
    mut location: String,
) -> Step {
    if let Some(q) = req.query {
        location.push('?');
        location.push_str(&String::from_utf8_lossy(q));
    }
    status(conn, 301);
    let mut out = out_buf(256);
    Head::new(&mut out, 301, &cx.date)
        .location(&location)
        .content_length(0)
        .connection(cx.version, cx.keep_alive)
        .finish();
    Reply::bytes(out, !cx.keep_alive)
}

fn open_status(e: &OpenError) -> u16 {
    match e {
        OpenError::NotFound => 404,
        OpenError::Forbidden | OpenError::NotRegular => 403,
        OpenError::BadName => 400,
        _ => 500,
    }
}

/// A directory: redirect to the slash form, else its `index.html`, else a listing.
fn directory(
    conn: &mut dyn Connection,
    req: &Request<'_>,
    cx: &Ctx,
    name: &[u8],
    dir: Opened,
) -> Step {
    if !req.path.ends_with(b"/") {
        let mut location = String::with_capacity(name.len() + 2);
        directory_location(name, &mut location);
        return moved_permanently(conn, req, cx, location);
    }
    let mut index = name.to_vec();
    index.extend_from_slice(b"/index.html");
    let index_file = conn.site().root.open_file(&index);
    if let Ok(opened) = index_file {
        return file(conn, req, cx, &index, None, opened);
    }
    if !conn.site().settings.listing {
        return error(conn, cx, 404, None);
    }
    let sort = listing::Sort::from_query(req.query);
    let json = listing::wants_json(req.accept, req.query);
    let listed = {
        let site = conn.site();
        let hidden = site.root.options().hidden;
        // Reading a directory may block on the disk: not while holding a slot.
        site.listings.try_acquire().map(|_slot| {
            site.port
                .blocking(|| render_listing(&dir.file, hidden, sort, json, name))
        })
    };
    let Some(listed) = listed else {
        // As many listings as workers are being built: come back shortly.
        status(conn, 503);
        let mut out = out_buf(256);
        error_response_with(
            &mut out,
            &cx.date,
            503,
            cx.version,
            cx.keep_alive,
            cx.head_only,
            None,
            |h| {
                h.header("Retry-After", b"1");
            },
        );
        return Reply::bytes(out, !cx.keep_alive);
    };
    let Ok(Listed { body, shown, total }) = listed else {
        return error(conn, cx, 500, None);
    };
    status(conn, 200);
    let mut out = out_buf(512);
    let mut head = Head::new(&mut out, 200, &cx.date);
    head.content_type(if json {
        ContentType::JSON
    } else {
        ContentType::HTML
    })
    .content_length(body.len() as u64)
    .header("Cache-Control", b"no-cache")
    .vary_accept()
    .header("Content-Security-Policy", LISTING_CSP);
    if shown < total {
        head.header("X-Listing-Cut", format!("{shown} of {total}").as_bytes());
    }
    head.connection(cx.version, cx.keep_alive).finish();
    // A small body goes behind the head, in one send; a large one apart (not
    // copied).
    let pieces = if cx.head_only || body.is_empty() {
        vec![Piece::Bytes(out)]
    } else if body.len() < SMALL_LISTING {
        out.extend_from_slice(&body);
        vec![Piece::Bytes(out)]
    } else {
        vec![Piece::Bytes(out), Piece::Bytes(body)]
    };
    reply(pieces, !cx.keep_alive)
}

/// A rendered listing.
struct Listed {
    body: Vec<u8>,
    /// Entries shown.
    shown: usize,
    /// Entries in the directory.
    total: usize,
}

/// Reads the directory `dir` through its descriptor and renders it (`name`:
/// its path, for the title): every entry is considered, in the order `sort`
/// asks for, before the first [`MAX_LISTING`] are kept (memory stays at
/// twice that many entries however large the directory); the body stops
/// before [`MAX_LISTING_BYTES`].
fn render_listing(
    dir: &std::fs::File,
    hidden: bool,
    sort: listing::Sort,
    json: bool,
    name: &[u8],
) -> std::io::Result<Listed> {
    fn view(e: &dir::Entry) -> listing::Entry<'_> {
        listing::Entry {
            name: &e.name,
            is_dir: e.is_dir,
            len: e.len,
            mtime: e.mtime,
        }
    }
    fn keep_first(kept: &mut Vec<dir::Entry>, sort: listing::Sort) {
        kept.sort_unstable_by(|a, b| listing::compare(&view(a), &view(b), sort));
        kept.truncate(MAX_LISTING);
    }
    // By name, the order needs only names and kinds: only the entries kept
    // are stat'ed (one that vanished meanwhile is left out).
    let by_name = sort.key == listing::SortKey::Name;
    let mut kept: Vec<dir::Entry> = Vec::new();
    let mut total = 0;
    dir::each(dir, hidden, !by_name, |e| {
        total += 1;
        kept.push(e);
        if kept.len() >= 2 * MAX_LISTING {
            keep_first(&mut kept, sort);
        }
    })?;
    keep_first(&mut kept, sort);
    if by_name {
        kept = kept
            .iter()
            .filter_map(|e| dir::stat(dir, &e.name))
            .collect();
        // A kind that changed meanwhile moves its entry.
        keep_first(&mut kept, sort);
    }
    let mut list: Vec<listing::Entry<'_>> = kept.iter().map(view).collect();
    let mut body = Vec::with_capacity(1024 + 160 * list.len());
    let shown = if json {
        listing::render_json_bounded(&mut body, &mut list, sort, MAX_LISTING_BYTES)
    } else {
        listing::render_html_bounded(&mut body, name, &mut list, sort, MAX_LISTING_BYTES, total)
    };
    Ok(Listed { body, shown, total })
}

/// A regular file: validators, preconditions, ranges, precompressed siblings.
fn file(
    conn: &mut dyn Connection,
    req: &Request<'_>,
    cx: &Ctx,
    name: &[u8],
    normal: Option<&Normalized>,
    mut opened: Opened,
) -> Step {
    let ct = content_type_for(name);
    let sibling = |enc: Encoding| {
        let mut sibling = name.to_vec();
        sibling.extend_from_slice(enc.suffix().as_bytes());
        sibling
    };
    // Which siblings exist (kept in the open-file cache with the file's entry
    // while its directory is unchanged): only those are opened.
    let suffixes = Encoding::ALL.map(Encoding::suffix);
    let root = &conn.site().root;
    // The open-file cache's hit may already carry them (the same bits, found
    // in the same lookup).
    let present = match (opened.siblings, normal) {
        (Some(bits), _) => bits,
        (None, Some(n)) => root.sibling_files_of(name, n, &suffixes),
        (None, None) => root.sibling_files(name, &suffixes),
    };
    let has = |enc: Encoding| {
        let i = Encoding::ALL.iter().position(|&e| e == enc).unwrap_or(0);
        present & 1 << i != 0
    };
    let mut encoding = None;
    let candidates = encoding::choose(req.accept_encoding);
    for enc in candidates.into_iter().flatten() {
        if !has(enc) {
            continue;
        }
        if let Ok(o) = conn.site().root.open_file(&sibling(enc)) {
            opened = o;
            encoding = Some(enc);
            break;
        }
    }
    // A file with a sibling varies on Accept-Encoding, whatever this client
    // accepts: a cache must not hand this answer to a client that accepts
    // another encoding.
    let varies = encoding.is_some() || present != 0;
    let meta = &opened.meta;
    let len = opened.len;
    let mut v = Validators::new(
        len,
        meta.mtime(),
        meta.mtime_nsec().clamp(0, 999_999_999) as u32,
    );
    if let Some(e) = encoding {
        v.etag = v.etag.variant(e.etag_tag());
    }
    let cache = conn.site().settings.cache_control.clone();
    let head_fields = |h: &mut Head<'_>| {
        h.last_modified(v.last_modified)
            .etag(&v.etag)
            .cache_control(cache.as_deref());
        if let Some(e) = encoding {
            h.content_encoding(e.name());
        }
        if varies {
            h.vary_accept_encoding();
        }
    };
    match cond::evaluate(req, &v) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            status(conn, 304);
            let mut out = out_buf(256);
            let mut h = Head::new(&mut out, 304, &cx.date);
            head_fields(&mut h);
            h.connection(cx.version, cx.keep_alive).finish();
            return Reply::bytes(out, !cx.keep_alive);
        }
        Precondition::Failed => return error_varying(conn, cx, 412, None, varies),
    }
    let ranges = match req.range {
        Some(r) if req.if_range.is_none() || cond::if_range_allows(req, &v) => parse_ranges(r, len),
        _ => RangeResult::Full,
    };
    // Room for the head and, for a small file sent from memory, its bytes.
    let mut out = out_buf(320 + opened.body.as_ref().map_or(0, |b| b.len()));
    let pieces = match ranges {
        RangeResult::Unsatisfiable => return error_varying(conn, cx, 416, Some(len), varies),
        RangeResult::Full => {
            status(conn, 200);
            let mut h = Head::new(&mut out, 200, &cx.date);
            h.content_type(ct).content_length(len).accept_ranges();
            head_fields(&mut h);
            h.connection(cx.version, cx.keep_alive).finish();
            body(cx, out, opened.body.as_deref(), 0, len)
        }
        RangeResult::Satisfiable(rs) => {
            status(conn, 206);
            let rs = rs.as_slice();
            match rs {
                [one] => {
                    let mut h = Head::new(&mut out, 206, &cx.date);
                    h.content_type(ct)
                        .content_length(one.len())
                        .content_range(*one, len)
                        .accept_ranges();
                    head_fields(&mut h);
                    h.connection(cx.version, cx.keep_alive).finish();
                    body(cx, out, opened.body.as_deref(), one.start, one.len())
                }
                _ => {
                    let mut frame = Vec::with_capacity(128 * rs.len());
                    let Some(plan) = Multipart::plan(&mut frame, rs, ct, len) else {
                        return error(conn, cx, 500, None);
                    };
                    let mut h = Head::new(&mut out, 206, &cx.date);
                    h.content_type_multipart(multipart::boundary())
                        .content_length(plan.content_length())
                        .accept_ranges();
                    head_fields(&mut h);
                    h.connection(cx.version, cx.keep_alive).finish();
                    if cx.head_only {
                        pieces_of(Piece::Bytes(out))
                    } else {
                        // Each part: its framing (the response head in front of
                        // the first), its range of the file, and after the last
                        // the closing delimiter.
                        let mut pieces = Vec::with_capacity(rs.len());
                        for (i, r) in rs.iter().enumerate() {
                            let mut head = if i == 0 {
                                std::mem::take(&mut out)
                            } else {
                                Vec::new()
                            };
                            head.extend_from_slice(plan.part_head(&frame, i));
                            let tail = if i + 1 == rs.len() {
                                plan.closing(&frame).to_vec()
                            } else {
                                Vec::new()
                            };
                            pieces.push(Piece::File {
                                head,
                                offset: r.start,
                                len: r.len(),
                                tail,
                            });
                        }
                        VecDeque::from(pieces)
                    }
                }
            }
        }
    };
    debug!(conn = conn.key(), name = %String::from_utf8_lossy(name).escape_debug(), bytes = len, "http file");
    Step::Reply(Reply {
        pieces,
        close: !cx.keep_alive,
        file: Some(opened.file),
        // Only the status page shows it: no copy per response without one.
        name: conn.site().obs.transfers.is_some().then(|| name.to_vec()),
    })
}

/// The pieces of a simple body: the head, then the file range (none for HEAD);
/// a small file's range from memory, in the same piece as the head.
fn body(cx: &Ctx, mut head: Vec<u8>, mem: Option<&[u8]>, offset: u64, len: u64) -> VecDeque<Piece> {
    let cached = mem.and_then(|m| m.get(offset as usize..offset.checked_add(len)? as usize));
    if cx.head_only || len == 0 {
        pieces_of(Piece::Bytes(head))
    } else if let Some(bytes) = cached {
        head.extend_from_slice(bytes);
        pieces_of(Piece::Bytes(head))
    } else {
        pieces_of(Piece::File {
            head,
            offset,
            len,
            tail: Vec::new(),
        })
    }
}
