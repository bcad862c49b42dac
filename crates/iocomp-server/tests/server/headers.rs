//! Headers every response or every kind of response carries:
//! `X-Content-Type-Options: nosniff` on all of them; `Vary: Accept-Encoding`
//! on every response about a file that has a precompressed sibling (whether
//! or not the client accepted an encoding, 304/412/416 too); `Vary: Accept`
//! on listings (HTML or JSON by `Accept`); a Content-Security-Policy on the
//! generated pages (listing, status page) that allows no inline script.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::harness::client::req;
use crate::harness::http::{assert_strong_etag, http_date, mtime_of, now_secs};
use crate::harness::{assert_bytes_eq, pseudo_random, Response, Tree, MIB};

/// Extra request header fields.
type Fields<'a> = Vec<(&'a str, &'a str)>;

fn nosniff(r: &Response, what: &str) {
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}: {r:?}"
    );
}

#[test]
fn every_response_says_nosniff() {
    let t = Tree::new("nosniff");
    t.file("a.txt", b"0123456789").file("d/x", b"x");
    let srv = t.serve(|c| c.metrics = Some("127.0.0.1:0".parse().unwrap()));
    let etag = srv.get("/a.txt", &[]).header("etag").unwrap().to_string();
    let cases: Vec<(&str, &str, Fields<'_>, u16)> = vec![
        ("GET", "/a.txt", vec![], 200),
        ("HEAD", "/a.txt", vec![], 200),
        ("GET", "/a.txt", vec![("Range", "bytes=0-1")], 206),
        ("GET", "/a.txt", vec![("Range", "bytes=0-1,4-5")], 206),
        ("GET", "/a.txt", vec![("Range", "bytes=99-")], 416),
        ("GET", "/a.txt", vec![("If-None-Match", &etag)], 304),
        ("GET", "/a.txt", vec![("If-Match", "\"nope\"")], 412),
        ("GET", "/missing", vec![], 404),
        ("GET", "/d", vec![], 301),
        ("GET", "/d/", vec![], 200),
        ("OPTIONS", "*", vec![], 200),
        ("DELETE", "/a.txt", vec![], 405),
    ];
    for (method, target, headers, status) in &cases {
        let r = srv.request(method, target, headers);
        let what = format!("{method} {target} {headers:?}");
        assert_eq!(r.status, *status, "{what}");
        nosniff(&r, &what);
    }
    // A request that does not parse.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /a.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(
        raw.contains("\r\nX-Content-Type-Options: nosniff\r\n"),
        "{raw}"
    );
}

#[test]
fn a_file_with_a_precompressed_sibling_always_varies_on_accept_encoding() {
    let t = Tree::new("vary");
    t.file("a.txt", b"0123456789")
        .file("a.txt.gz", b"GZ")
        .file("plain.txt", b"p");
    let srv = t.serve(|_| {});
    let gz = [("Accept-Encoding", "gzip")];
    let plain_etag = srv.get("/a.txt", &[]).header("etag").unwrap().to_string();
    let gz_etag = srv.get("/a.txt", &gz).header("etag").unwrap().to_string();
    assert_ne!(plain_etag, gz_etag);
    let cases: Vec<(&str, Fields<'_>, u16)> = vec![
        ("GET", vec![], 200),
        ("HEAD", vec![], 200),
        ("GET", vec![("Accept-Encoding", "gzip")], 200),
        ("GET", vec![("Accept-Encoding", "br")], 200),
        ("GET", vec![("Accept-Encoding", "identity")], 200),
        ("GET", vec![("If-None-Match", &plain_etag)], 304),
        (
            "GET",
            vec![("Accept-Encoding", "gzip"), ("If-None-Match", &gz_etag)],
            304,
        ),
        ("GET", vec![("If-Match", "\"nope\"")], 412),
        (
            "GET",
            vec![("Accept-Encoding", "gzip"), ("If-Match", "\"nope\"")],
            412,
        ),
        ("GET", vec![("Range", "bytes=0-1")], 206),
        ("GET", vec![("Range", "bytes=99-")], 416),
        (
            "GET",
            vec![("Accept-Encoding", "gzip"), ("Range", "bytes=5-")],
            416,
        ),
    ];
    for (method, headers, status) in &cases {
        let r = srv.request(method, "/a.txt", headers);
        let what = format!("{method} /a.txt {headers:?}");
        assert_eq!(r.status, *status, "{what}");
        assert_eq!(r.vary(), "Accept-Encoding", "{what}: {r:?}");
    }
    let r = srv.get("/a.txt", &gz);
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (Some("gzip"), &b"GZ"[..])
    );
    // No sibling, nothing to vary on.
    assert_eq!(srv.get("/plain.txt", &gz).vary(), "");
}

#[test]
fn listings_vary_on_accept_and_forbid_scripts() {
    let t = Tree::new("listing");
    t.file("d/x", b"x");
    let srv = t.serve(|_| {});
    for accept in ["text/html", "application/json"] {
        let r = srv.get("/d/", &[("Accept", accept)]);
        assert_eq!(r.status, 200, "{accept}");
        assert_eq!(r.vary(), "Accept", "{accept}: {r:?}");
        let csp = r.header("content-security-policy").expect("a CSP");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
    }
}

#[test]
fn the_status_page_has_a_csp_without_inline_script() {
    let t = Tree::new("statuspage");
    let srv = t.serve(|c| c.metrics = Some("127.0.0.1:0".parse().unwrap()));
    let admin = crate::harness::Running::at(srv.metrics_addr());
    let page = admin.get("/", &[]);
    assert_eq!(page.status, 200);
    nosniff(&page, "status page");
    let csp = page
        .header("content-security-policy")
        .expect("a CSP")
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .unwrap();
    assert!(!script_src.contains("unsafe"), "{csp}");
    let html = String::from_utf8(page.body).unwrap();
    // Every script is loaded by URL, so the policy can forbid inline ones.
    for (i, _) in html.match_indices("<script") {
        let tag_end = html[i..].find('>').unwrap() + i;
        assert!(
            html[i..tag_end].contains(" src="),
            "inline script in the status page"
        );
        assert!(
            html[tag_end..].starts_with("></script>"),
            "inline script in the status page"
        );
    }
    let js = admin.get("/status.js", &[]);
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&js.body).contains("status.json"));
    nosniff(&js, "status.js");
    for target in ["/metrics", "/status.json", "/nothing"] {
        nosniff(&admin.get(target, &[]), target);
    }
}

/// Checks the headers every 200 for a file must carry.
fn assert_file_headers(
    r: &Response,
    path: &Path,
    len: usize,
    content_type: &str,
    t: (i64, i64),
    what: &str,
) {
    r.assert_status(200, what);
    assert_eq!(
        r.must("content-length"),
        len.to_string(),
        "{what}: Content-Length"
    );
    assert_eq!(r.must("content-type"), content_type, "{what}: Content-Type");
    assert_eq!(r.must("server"), "iocomp", "{what}: Server");
    let date = r.must("date");
    assert!(
        (t.0 - 2..=t.1 + 2).any(|t| http_date(t) == date),
        "{what}: Date {date:?} is not an IMF-fixdate of now ({})",
        http_date(t.1)
    );
    assert_eq!(
        r.must("last-modified"),
        http_date(mtime_of(path)),
        "{what}: Last-Modified"
    );
    assert_strong_etag(r, what);
    assert_eq!(r.must("accept-ranges"), "bytes", "{what}: Accept-Ranges");
    for name in ["content-length", "content-type", "date", "etag", "server"] {
        assert_eq!(r.header_count(name), 1, "{what}: {name} repeated");
    }
}

#[test]
fn get_sends_exact_headers_and_body_and_head_the_same_headers_without_body() {
    let tree = Tree::new("gethead");
    let text = b"hello, text\n".repeat(7);
    let html = b"<!DOCTYPE html><p>page</p>\n".to_vec();
    let unknown = pseudo_random(11, 4321);
    let big = pseudo_random(12, 3 * MIB);
    let files: [(&str, &[u8], &str); 4] = [
        ("hello.txt", &text, "text/plain; charset=utf-8"),
        ("page.html", &html, "text/html; charset=utf-8"),
        ("blob.zzqqx", &unknown, "application/octet-stream"),
        ("big.bin", &big, "application/octet-stream"),
    ];
    for (name, content, _) in files {
        tree.file(name, content);
    }
    let srv = tree.serve(|_| {});
    let mut etags = BTreeSet::new();
    for (name, content, ct) in files {
        let path = tree.path(name);
        let what = format!("GET /{name}");
        let t0 = now_secs();
        let r = srv.get(&format!("/{name}"), &[]);
        assert_file_headers(&r, &path, content.len(), ct, (t0, now_secs()), &what);
        assert_bytes_eq(&r.body, content, &what);
        etags.insert(r.must("etag").to_string());

        // HEAD then GET on one connection: the HEAD response has no body, or
        // the GET's status line would not come next.
        let mut c = srv.client();
        let mut both = req("HEAD", &format!("/{name}"), &[]);
        both.extend_from_slice(&req("GET", &format!("/{name}"), &[]));
        c.send(&both);
        let h = c.response(true);
        let g = c.response(false);
        assert_file_headers(&h, &path, content.len(), ct, (t0, now_secs()), "HEAD");
        assert_eq!(
            h.comparable_headers(),
            g.comparable_headers(),
            "HEAD /{name} and GET /{name} headers differ"
        );
        assert_bytes_eq(&g.body, content, &format!("GET /{name} after HEAD"));
        // Nothing else on the wire: a third request is answered next.
        c.send(&req("GET", "/hello.txt", &[]));
        let third = c.response(false);
        assert_bytes_eq(&third.body, &text, "GET /hello.txt after HEAD+GET");
    }
    assert_eq!(etags.len(), 4, "the four files share ETags: {etags:?}");
}
