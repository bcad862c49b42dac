//! The request path's shortcuts (issue 18: one parse and one open-file-cache
//! look-up per request, header names in their usual spelling first, the access
//! log's request line without a scan) change nothing a client sees: written
//! from RFC 9112 and what nginx does as review probes, run against the code
//! before and after the cuts.

use std::io::Write as _;
use std::net::Shutdown;
use std::time::Duration;

use iocomp_server::{AccessLogFormat, LogFile};

use crate::harness::{log_lines, poll_until, Tree};

/// RFC 9112 §9.3.2: pipelined requests are answered in order, however the
/// bytes arrive (here: one byte per `send`, with empty lines between them,
/// which §2.2 lets a server skip).
#[test]
fn pipelined_requests_split_at_every_byte_are_all_answered() {
    let t = Tree::new("hppipe");
    t.file("a.txt", b"A").file("b.bin", b"BB");
    let srv = t.serve(|_| {});
    let mut c = srv.client();
    c.stream.set_nodelay(true).unwrap();
    let all = b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n\r\nHEAD /b.bin HTTP/1.1\r\nHost: t\r\n\r\n\nGET /b.bin HTTP/1.1\nHost: t\nConnection: close\n\n";
    for b in all {
        c.send(std::slice::from_ref(b));
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = c.response(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"A"[..]));
    let r = c.response(true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("2")));
    let r = c.response(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"BB"[..]));
    c.expect_closed("after Connection: close");
}

/// A client that half-closes after whole requests still gets every answer
/// (nginx does the same), and then the connection closes.
#[test]
fn half_close_after_whole_requests_answers_them_then_closes() {
    let t = Tree::new("hphalf");
    t.file("a.txt", b"A");
    let srv = t.serve(|_| {});
    for n in [1, 2] {
        let mut c = srv.client();
        for _ in 0..n {
            c.send(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        }
        c.stream.shutdown(Shutdown::Write).unwrap();
        for _ in 0..n {
            let r = c.response(false);
            assert_eq!((r.status, &r.body[..]), (200, &b"A"[..]));
        }
        c.expect_closed("half-closed after whole requests");
    }
    // After a response on keep-alive, with nothing buffered: a half-close
    // ends the connection (the step that skips the parser on empty input).
    let mut c = srv.client();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(50));
    c.stream.shutdown(Shutdown::Write).unwrap();
    c.expect_closed("half-closed while idle");
    srv.assert_all_closed("half-closed connections");
}

/// A half-close in the middle of a head: no answer (nginx: "client
/// prematurely closed connection"), the connection closes.
#[test]
fn half_close_mid_head_closes_without_an_answer() {
    let t = Tree::new("hpmid");
    t.file("a.txt", b"A");
    let srv = t.serve(|_| {});
    // (Fewer bytes than tell HTTP from the line protocol are a line-protocol
    // name at the half-close, by design: not probed here.)
    for partial in [
        &b"GET /a.txt HTTP/1.1\r\nHo"[..],
        b"GET /",
        b"GET /a.txt HTTP/1.1\r\nHost: t\r\n",
    ] {
        let mut c = srv.client();
        c.send(partial);
        c.stream.shutdown(Shutdown::Write).unwrap();
        c.expect_closed(&format!(
            "half-closed after {:?}",
            partial.escape_ascii().to_string()
        ));
    }
}

/// `Content-Length: 0` is no body: the pipelined request after it is served.
#[test]
fn zero_length_body_then_pipelined_request() {
    let t = Tree::new("hpcl0");
    t.file("a.txt", b"A");
    let srv = t.serve(|_| {});
    let mut c = srv.client();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\nGET /a.txt HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    for _ in 0..2 {
        let r = c.response(false);
        assert_eq!((r.status, &r.body[..]), (200, &b"A"[..]));
    }
    c.expect_closed("after connection: close");
}

/// RFC 9112 §3.2: a request with two Host fields is 400, in any spelling;
/// a field whose name merely starts or ends like Host is not Host (so an
/// HTTP/1.1 request with only that is 400 too); one Host in any case is 200.
#[test]
fn host_in_any_spelling_and_twice_is_400() {
    let t = Tree::new("hphost");
    t.file("a.txt", b"A");
    let srv = t.serve(|_| {});
    let status = |head: &str| {
        let mut c = srv.client();
        c.send(head.as_bytes());
        c.response(false).status
    };
    for h in ["Host", "host", "HOST", "hOsT"] {
        let head = format!("GET /a.txt HTTP/1.1\r\n{h}: t\r\nConnection: close\r\n\r\n");
        assert_eq!(status(&head), 200, "{h}");
    }
    for (a, b) in [
        ("Host", "Host"),
        ("Host", "host"),
        ("HOST", "Host"),
        ("host", "hOST"),
    ] {
        let head = format!("GET /a.txt HTTP/1.1\r\n{a}: t\r\n{b}: t\r\n\r\n");
        assert_eq!(status(&head), 400, "{a} + {b}");
    }
    for h in ["Hos", "Hostx", "X-Host", "Host-"] {
        let head = format!("GET /a.txt HTTP/1.1\r\n{h}: t\r\n\r\n");
        assert_eq!(status(&head), 400, "{h} alone");
    }
    // Obsolete line folding (RFC 9112 §5.2): 400.
    assert_eq!(
        status("GET /a.txt HTTP/1.1\r\nHost: t\r\n  folded\r\n\r\n"),
        400
    );
}

/// The cache must never outlive the name with the default validity (0: every
/// request looks at the name again): a file replaced by a rename, renamed
/// away, renamed to a hidden name, its directory swapped for a symlink into
/// a hidden one; a sibling created or removed; an index file removed.
#[test]
fn the_open_file_cache_follows_every_change_of_the_name() {
    let t = Tree::new("hpstale");
    t.file("a.txt", b"one")
        .file("d/x.txt", b"ex")
        .file("i/index.html", b"<p>i</p>");
    t.file("s/a.txt", b"plain");
    let srv = t.serve(|c| {
        c.open_file_cache = 64;
        c.listing = false;
    });
    let get = |p: &str, h: &[(&str, &str)]| {
        let r = srv.get(p, h);
        (
            r.status,
            String::from_utf8_lossy(&r.body).into_owned(),
            r.header("content-encoding").map(str::to_owned),
        )
    };
    let gz = [("Accept-Encoding", "gzip")];
    for _ in 0..2 {
        assert_eq!(get("/a.txt", &[]).1, "one");
        assert_eq!(get("/d/x.txt", &[]).1, "ex");
        assert_eq!(get("/i/", &[]).1, "<p>i</p>");
        assert_eq!(get("/s/a.txt", &gz), (200, "plain".into(), None));
    }
    // Replaced by a rename (same length).
    std::fs::write(t.path("new.tmp"), b"two").unwrap();
    std::fs::rename(t.path("new.tmp"), t.path("a.txt")).unwrap();
    assert_eq!(get("/a.txt", &[]).1, "two");
    // Renamed to a hidden name: the old name is gone, the new one refused.
    std::fs::rename(t.path("a.txt"), t.path(".a.txt")).unwrap();
    assert_eq!(get("/a.txt", &[]).0, 404);
    assert!(matches!(get("/.a.txt", &[]).0, 403 | 404));
    // The directory moved to a hidden name, a symlink left at the old one.
    std::fs::rename(t.path("d"), t.path(".d")).unwrap();
    std::os::unix::fs::symlink(".d", t.path("d")).unwrap();
    let (st, body, _) = get("/d/x.txt", &[]);
    assert!(
        st != 200,
        "served {body:?} through a symlink into a hidden directory"
    );
    // A sibling created, then removed, with no wait at all.
    std::fs::write(t.path("s/a.txt.gz"), b"GZ").unwrap();
    assert_eq!(
        get("/s/a.txt", &gz),
        (200, "GZ".into(), Some("gzip".into()))
    );
    std::fs::remove_file(t.path("s/a.txt.gz")).unwrap();
    assert_eq!(get("/s/a.txt", &gz), (200, "plain".into(), None));
    // The index file removed (listings off): 404.
    std::fs::remove_file(t.path("i/index.html")).unwrap();
    assert_eq!(get("/i/", &[]).0, 404);
    // The file made a directory of the same name.
    std::fs::remove_file(t.path("s/a.txt")).unwrap();
    std::fs::create_dir(t.path("s/a.txt")).unwrap();
    assert_eq!(get("/s/a.txt", &[]).0, 301);
}

/// The access log's request field is the request line as sent, escaped
/// (non-ASCII and `"` as `\xHH`), for HTTP/1.0 and 1.1, absolute-form, and
/// after empty lines; a refused line keeps its control bytes escaped.
#[test]
fn access_log_request_lines_are_as_sent_and_escaped() {
    let t = Tree::new("hplog");
    t.file("a.txt", b"A");
    let log = t.base().join("access.log");
    let file = LogFile::open(&log).expect("open the access log");
    let srv = t.serve(|c| {
        c.access_log = AccessLogFormat::Clf;
        c.access_log_file = Some(file);
    });
    let cases: [(&[u8], &str); 6] = [
        (
            b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "\"GET /a.txt HTTP/1.1\" ",
        ),
        (
            b"\r\n\r\nGET /a.txt?q=\"x\" HTTP/1.0\r\n\r\n",
            "\"GET /a.txt?q=\\x22x\\x22 HTTP/1.0\" ",
        ),
        (
            b"GET /\xff\xfe.txt HTTP/1.1\nHost: t\nConnection: close\n\n",
            "\"GET /\\xff\\xfe.txt HTTP/1.1\" ",
        ),
        (
            b"GET http://t/a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "\"GET http://t/a.txt HTTP/1.1\" ",
        ),
        (
            b"GET /a\x1b[31m HTTP/1.1\r\nHost: t\r\n\r\n",
            "\"GET /a\\x1b[31m HTTP/1.1\" 400",
        ),
        (
            b"GET /a.txt HTTP/1.1\rX\r\nHost: t\r\n\r\n",
            "\"GET /a.txt HTTP/1.1\\x0dX\" 400",
        ),
    ];
    for (head, _) in &cases {
        let mut s = srv.connect();
        s.write_all(head).unwrap();
        let _ = s.shutdown(Shutdown::Write);
        let _ = crate::harness::client::read_to_end_timeout(&mut s, Duration::from_secs(10));
    }
    for (_, want) in &cases {
        let ok = poll_until(Duration::from_secs(10), || {
            log_lines(&log).iter().any(|l| l.contains(want))
        });
        assert!(
            ok,
            "no log line with {want}; log:\n{}",
            log_lines(&log).join("\n")
        );
    }
}
