//! Keep-alive and pipelining: every response on a connection is framed
//! exactly (HEAD without a body, pipelined requests answered in order), and
//! `Connection` is honoured in HTTP/1.0 and 1.1; Python's `http.client`
//! keeps one connection for all its requests.

use crate::harness::client::req;
use crate::harness::http::hex;
use crate::harness::run::{python, PY_CLIENT};
use crate::harness::{assert_bytes_eq, pseudo_random, Tree};

#[test]
fn pipelined_requests_are_answered_in_order() {
    let tree = Tree::new("pipeline");
    let one = b"one\n".to_vec();
    let two = b"<b>two</b>\n".repeat(50);
    let three = pseudo_random(21, 200_000);
    tree.file("one.txt", &one)
        .file("two.html", &two)
        .file("three.bin", &three);
    let srv = tree.serve(|_| {});
    // Three GETs in one write, three responses in order.
    let mut c = srv.client();
    let mut batch = req("GET", "/three.bin", &[]);
    batch.extend_from_slice(&req("GET", "/one.txt", &[]));
    batch.extend_from_slice(&req("GET", "/two.html", &[]));
    c.send(&batch);
    for (name, want) in [("three.bin", &three), ("one.txt", &one), ("two.html", &two)] {
        let r = c.response(false);
        r.assert_status(200, &format!("pipelined GET /{name}"));
        assert_bytes_eq(&r.body, want, &format!("pipelined GET /{name}"));
        assert!(
            r.header("connection")
                .is_none_or(|v| !v.eq_ignore_ascii_case("close")),
            "pipelined 1.1 response says Connection: close:\n{r:?}"
        );
    }
    // The connection is still usable afterwards.
    c.send(&req("GET", "/one.txt", &[]));
    assert_bytes_eq(&c.response(false).body, &one, "GET after the pipeline");
}

#[test]
fn connection_headers_are_honoured_in_http_1_0_and_1_1() {
    let tree = Tree::new("connhdr");
    let one = b"one\n".to_vec();
    let two = b"<b>two</b>\n".repeat(50);
    tree.file("one.txt", &one).file("two.html", &two);
    let srv = tree.serve(|_| {});

    // HTTP/1.0 without keep-alive: closed after the response.
    let mut c = srv.client();
    c.send(b"GET /one.txt HTTP/1.0\r\n\r\n");
    let r = c.response(false);
    r.assert_status(200, "HTTP/1.0 GET");
    assert_bytes_eq(&r.body, &one, "HTTP/1.0 GET");
    assert!(
        r.header("connection")
            .is_none_or(|v| !v.eq_ignore_ascii_case("keep-alive")),
        "HTTP/1.0 without keep-alive answered with Connection: keep-alive"
    );
    c.expect_closed("HTTP/1.0 without keep-alive");

    // HTTP/1.0 with keep-alive: the connection stays.
    let mut c = srv.client();
    c.send(b"GET /one.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response(false);
    assert_bytes_eq(&r.body, &one, "HTTP/1.0 keep-alive GET");
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("keep-alive"),
        "HTTP/1.0 keep-alive response:\n{r:?}"
    );
    c.send(b"GET /two.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response(false);
    assert_bytes_eq(&r.body, &two, "second HTTP/1.0 keep-alive GET");

    // HTTP/1.1 with Connection: close: closed after the response.
    let mut c = srv.client();
    c.send(&req("GET", "/one.txt", &[("Connection", "close")]));
    let r = c.response(false);
    assert_bytes_eq(&r.body, &one, "1.1 Connection: close");
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "1.1 Connection: close response:\n{r:?}"
    );
    c.expect_closed("HTTP/1.1 with Connection: close");
}

#[test]
fn python_http_client_reuses_one_connection_for_gets_and_head() {
    let tree = Tree::new("python");
    let a = b"alpha\n".to_vec();
    let b = pseudo_random(31, 5000);
    let c = b"<p>gamma</p>".to_vec();
    tree.file("a.txt", &a).file("b.bin", &b).file("c.html", &c);
    let srv = tree.serve(|_| {});
    let port = srv.addr.port().to_string();
    let out = python(PY_CLIENT, &[&port, "/a.txt", "/b.bin", "/c.html"], None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 5, "python output:\n{text}");
    let want: [(&str, &str, &[u8]); 5] = [
        ("GET", "/a.txt", &a),
        ("GET", "/b.bin", &b),
        ("GET", "/c.html", &c),
        ("HEAD", "/a.txt", b""),
        ("GET", "/b.bin", &b),
    ];
    for (fields, (method, path, body)) in lines.iter().zip(want) {
        assert_eq!(fields.len(), 7, "python line {fields:?}");
        assert_eq!((fields[0], fields[1]), (method, path), "order: {text}");
        assert_eq!(fields[2], "200", "{method} {path}: status; output:\n{text}");
        let want_len = if method == "HEAD" {
            a.len()
        } else {
            body.len()
        };
        assert_eq!(
            fields[3],
            want_len.to_string(),
            "{method} {path}: Content-Length"
        );
        assert_eq!(fields[4], hex(body), "{method} {path}: body");
        assert_eq!(
            fields[5], "True",
            "{method} {path}: http.client had to open a new connection (keep-alive not reused); output:\n{text}"
        );
        assert_eq!(fields[6], "False", "{method} {path}: response will close");
    }
}

/// RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF)
/// received before the request line, as nginx does; also when the empty line
/// arrives on its own, before the request. More empty lines than that are the
/// line protocol's business: each is a name, `bad name`.
#[test]
fn empty_lines_before_the_first_request_line_are_ignored() {
    let t = Tree::new("leadcrlf");
    t.file("a.txt", b"A");
    let srv = t.serve(|_| {});
    for first in [&b"\r\n"[..], b"\n", b"\r\n\r\n"] {
        let mut c = srv.client();
        c.send(&[first, &req("GET", "/a.txt", &[("Connection", "close")])[..]].concat());
        let r = c.response(false);
        assert_eq!((r.status, &r.body[..]), (200, &b"A"[..]), "{first:?} first");
        // The empty line in a packet of its own, the request a moment later.
        let mut c = srv.client();
        c.send(first);
        std::thread::sleep(std::time::Duration::from_millis(50));
        c.send(&req("GET", "/a.txt", &[("Connection", "close")]));
        let r = c.response(false);
        assert_eq!((r.status, &r.body[..]), (200, &b"A"[..]), "{first:?} apart");
    }
    // An empty line and then a name: the line protocol, every line answered.
    let got = srv.lines(&[b"", b"a.txt"]);
    let want = [&crate::harness::error_line("bad name")[..], b"A"].concat();
    assert_bytes_eq(&got, &want, "an empty line, then a name");
    // Nine empty lines are more than a server skips: the line protocol.
    let got = srv.lines(&[&b""[..]; 9]);
    assert_bytes_eq(
        &got,
        &crate::harness::error_line("bad name").repeat(9),
        "nine",
    );
}
