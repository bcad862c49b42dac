//! Headers every response or every kind of response carries:
//! `X-Content-Type-Options: nosniff` on all of them; `Vary: Accept-Encoding`
//! on every response about a file that has a precompressed sibling (whether
//! or not the client accepted an encoding, 304/412/416 too); `Vary: Accept`
//! on listings (HTML or JSON by `Accept`); a Content-Security-Policy on the
//! generated pages (listing, status page) that allows no inline script.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{Response, Tree};

/// Extra request header fields.
type Fields<'a> = Vec<(&'a str, &'a str)>;

fn nosniff(r: &Response, what: &str) {
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}: {r:?}"
    );
}

/// The values of every `Vary` field, joined.
fn vary(r: &Response) -> String {
    let all: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "vary")
        .map(|(_, v)| v.as_str())
        .collect();
    all.join(", ")
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
        assert_eq!(vary(&r), "Accept-Encoding", "{what}: {r:?}");
    }
    let r = srv.get("/a.txt", &gz);
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (Some("gzip"), &b"GZ"[..])
    );
    // No sibling, nothing to vary on.
    assert_eq!(vary(&srv.get("/plain.txt", &gz)), "");
}

#[test]
fn siblings_created_or_removed_later_are_seen_with_the_open_file_cache() {
    let t = Tree::new("varycache");
    t.file("d/a.txt", b"identity");
    let srv = t.serve(|c| c.open_file_cache = 64);
    let gz = [("Accept-Encoding", "gzip")];
    // Let the directory age past the window in which its times are not
    // trusted, so that what is known about the siblings is kept.
    std::thread::sleep(Duration::from_millis(2100));
    for _ in 0..2 {
        let r = srv.get("/d/a.txt", &gz);
        assert_eq!((vary(&r), &r.body[..]), (String::new(), &b"identity"[..]));
    }
    std::fs::write(t.path("d/a.txt.gz"), b"GZ").unwrap();
    let r = srv.get("/d/a.txt", &gz);
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (Some("gzip"), &b"GZ"[..])
    );
    assert_eq!(vary(&srv.get("/d/a.txt", &[])), "Accept-Encoding");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(vary(&srv.get("/d/a.txt", &[])), "Accept-Encoding");
    std::fs::remove_file(t.path("d/a.txt.gz")).unwrap();
    let r = srv.get("/d/a.txt", &gz);
    assert_eq!((vary(&r), &r.body[..]), (String::new(), &b"identity"[..]));
}

/// With a validity interval (nginx's `open_file_cache_valid`), what the
/// open-file cache knows about a hot file's precompressed siblings is trusted
/// for the interval, as the file itself is: a sibling created meanwhile is
/// not looked for (no `fstatat` of the directory per request) until the
/// interval has passed.
#[test]
fn with_a_validity_interval_known_siblings_are_trusted_for_the_interval() {
    let t = Tree::new("varyvalid");
    t.file("d/a.txt", b"identity");
    let srv = t.serve(|c| {
        c.open_file_cache = 64;
        c.open_file_cache_valid = Duration::from_secs(3600);
    });
    let gz = [("Accept-Encoding", "gzip")];
    // Past the window in which the directory's times are not trusted.
    std::thread::sleep(Duration::from_millis(2100));
    for _ in 0..2 {
        let r = srv.get("/d/a.txt", &gz);
        assert_eq!((vary(&r), &r.body[..]), (String::new(), &b"identity"[..]));
    }
    std::fs::write(t.path("d/a.txt.gz"), b"GZ").unwrap();
    let r = srv.get("/d/a.txt", &gz);
    assert_eq!(
        (vary(&r), r.header("content-encoding"), &r.body[..]),
        (String::new(), None, &b"identity"[..]),
        "the sibling was looked for within the interval"
    );
    // A file the cache does not know yet is looked at afresh: its sibling
    // is found at once.
    t.file("d/b.txt", b"identity");
    std::fs::write(t.path("d/b.txt.gz"), b"GZ").unwrap();
    let r = srv.get("/d/b.txt", &gz);
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (Some("gzip"), &b"GZ"[..])
    );
}

#[test]
fn listings_vary_on_accept_and_forbid_scripts() {
    let t = Tree::new("listing");
    t.file("d/x", b"x");
    let srv = t.serve(|_| {});
    for accept in ["text/html", "application/json"] {
        let r = srv.get("/d/", &[("Accept", accept)]);
        assert_eq!(r.status, 200, "{accept}");
        assert_eq!(vary(&r), "Accept", "{accept}: {r:?}");
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
