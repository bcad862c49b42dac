//! Malformed and hostile HTTP over raw sockets: every case gets a 4xx (or
//! 505, or the line protocol's error line when it is not HTTP at all),
//! never a 5xx, never a byte from outside the root; a request that must end
//! the connection ends it with nothing after the response; absurd ranges get
//! 200, 206 or 416 with the right body; and the server goes on serving.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use crate::harness::http::{find, parse_content_range};
use crate::harness::{server_panics, show, Client, Response, Running, Tree};

const MARKER: &[u8] = b"OUTSIDE-THE-ROOT-7f3a9c1e-MARKER";

/// What came back for a raw request.
enum Reply {
    /// An HTTP response; whether the server closed right after it (when
    /// asked), and what came after it.
    Http(Response, Option<bool>, Vec<u8>),
    /// Something else: the line protocol's answer, read to EOF.
    Other(Vec<u8>),
}

/// Sends `bytes` on a fresh connection and reads the reply. With
/// `check_close`, waits (at most 5 s) to see whether the server closes.
fn raw_exchange(addr: SocketAddr, bytes: &[u8], check_close: bool) -> Reply {
    let mut c = Client::connect(addr);
    // The server may answer and close before reading everything (a long
    // request line): a write error is not a failure here.
    let _ = c.stream.write_all(bytes);
    while c.buf.len() < 5 {
        if c.read_more() == 0 {
            return Reply::Other(std::mem::take(&mut c.buf));
        }
    }
    if !c.buf.starts_with(b"HTTP/") {
        let _ = c.stream.shutdown(Shutdown::Write);
        return Reply::Other(c.read_to_eof(Duration::from_secs(10)));
    }
    let resp = c.response(false);
    let mut raw = Vec::new();
    let closed = check_close.then(|| {
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match c.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        false
    });
    raw.splice(0..0, c.buf.drain(..));
    Reply::Http(resp, closed, raw)
}

/// What a bad request must get.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Exactly this status (over HTTP).
    Status(u16),
    /// An HTTP 4xx.
    Http4xx,
    /// A 4xx or 505 over HTTP, or the line protocol's error line.
    Refused,
    /// Anything but a 5xx (505 aside), the marker or the root's secret.
    NotOutside,
    /// An answer to an absurd range: 200 (whole file), 206 or 416.
    AbsurdRange,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    want: Want,
    /// The connection must be closed after the response.
    close: bool,
    /// `Allow: GET, HEAD, OPTIONS` must be present.
    allow: bool,
}

fn case(name: impl Into<String>, bytes: impl Into<Vec<u8>>, want: Want) -> Case {
    Case {
        name: name.into(),
        bytes: bytes.into(),
        want,
        close: false,
        allow: false,
    }
}

impl Case {
    fn closes(mut self) -> Case {
        self.close = true;
        self
    }
    fn with_allow(mut self) -> Case {
        self.allow = true;
        self
    }
}

const H: &str = "Host: x\r\n";

/// Broken request lines and header sections.
fn head_cases() -> Vec<Case> {
    use Want::*;
    let get = |extra: &str| format!("GET /a.txt HTTP/1.1\r\n{H}{extra}\r\n");
    let mut cases = vec![
        // `GET  /` is not an HTTP start (design.md §4): the line protocol may answer.
        case(
            "double space",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            Refused,
        )
        .closes(),
        case(
            "trailing garbage",
            "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
            Refused,
        )
        .closes(),
        case("no version", "GET /\r\nHost: x\r\n\r\n", NotOutside).closes(),
        case(
            "no version, secret",
            "GET /../secret.txt\r\n\r\n",
            NotOutside,
        )
        .closes(),
        case(
            "HTTP/2.0",
            format!("GET / HTTP/2.0\r\n{H}\r\n"),
            Status(505),
        )
        .closes(),
        case(
            "HTTP/1.2",
            format!("GET / HTTP/1.2\r\n{H}\r\n"),
            Status(505),
        )
        .closes(),
        case(
            "HTTX/1.1",
            format!("GET / HTTX/1.1\r\n{H}\r\n"),
            Status(400),
        )
        .closes(),
        case("bare CR in a header", get("X-A: a\rb\r\n"), Status(400)).closes(),
        case("obs-fold", get("X-A: a\r\n  folded\r\n"), Status(400)).closes(),
        case("NUL in a header", get("X-A: a\0b\r\n"), Status(400)).closes(),
        case("missing Host", "GET /a.txt HTTP/1.1\r\n\r\n", Status(400)).closes(),
        case(
            "duplicate Host",
            "GET /a.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            Status(400),
        )
        .closes(),
        case(
            "CL and TE",
            get("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n",
            Status(400),
        )
        .closes(),
        case(
            "TE chunked on GET",
            get("Transfer-Encoding: chunked\r\n") + "0\r\n\r\n",
            Status(400),
        )
        .closes(),
        case(
            "GET with a body, then a pipelined GET",
            get("Content-Length: 5\r\n") + &format!("GET /a.txt HTTP/1.1\r\n{H}\r\n"),
            Status(400),
        )
        .closes(),
        case(
            "Content-Length: -1",
            get("Content-Length: -1\r\n"),
            Status(400),
        )
        .closes(),
        case(
            "huge Content-Length",
            get("Content-Length: 99999999999999999999999999\r\n"),
            Status(400),
        )
        .closes(),
        case(
            "Content-Length: u64::MAX",
            get("Content-Length: 18446744073709551615\r\n"),
            Status(400),
        )
        .closes(),
    ];
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    cases.push(case("101 headers", get(&many), Status(431)).closes());
    let long_line = format!("GET /{} HTTP/1.1\r\n{H}\r\n", "a".repeat(9000));
    cases.push(case("9000-byte request line", long_line, Status(414)).closes());
    let big: String = (0..10)
        .map(|i| format!("X-Big{i}: {}\r\n", "b".repeat(820)))
        .collect();
    let big_head = get(&big);
    assert!(big_head.len() > 8200);
    cases.push(case("8200 bytes of headers", big_head, Status(431)).closes());
    cases
}

/// Methods other than GET and HEAD.
fn method_cases() -> Vec<Case> {
    use Want::*;
    let mut cases = vec![case(
        "POST with a body",
        format!("POST /a.txt HTTP/1.1\r\n{H}Content-Length: 5\r\n\r\nhello"),
        Status(405),
    )
    .closes()
    .with_allow()];
    for method in [
        "TRACE /a.txt",
        "CONNECT example.com:443",
        "POST /a.txt",
        "DELETE /a.txt",
        "PUT /a.txt",
        "PATCH /a.txt",
    ] {
        cases.push(case(method, format!("{method} HTTP/1.1\r\n{H}\r\n"), Status(405)).with_allow());
    }
    for target in ["*", "/a.txt"] {
        cases.push(
            case(
                format!("OPTIONS {target}"),
                format!("OPTIONS {target} HTTP/1.1\r\n{H}\r\n"),
                Status(200),
            )
            .with_allow(),
        );
    }
    cases
}

/// Names that try to leave the root or reach hidden files.
fn traversal_cases() -> Vec<Case> {
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/a%5c..%5csecret.txt",
        "/..%5csecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%00",
        "/a.txt%00.html",
        "/%zz",
        "/%",
        "/./../secret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/..;/secret.txt",
        "http://x/../secret.txt",
        "http://x/%2e%2e/secret.txt",
        "/.secret-in-root",
        "/link-out",
        "/link-out/secret.txt",
    ]
    .into_iter()
    .map(|path| {
        case(
            format!("traversal {path}"),
            format!("GET {path} HTTP/1.1\r\n{H}\r\n"),
            Want::Http4xx,
        )
    })
    .collect()
}

/// Ranges no client should send.
fn range_cases(file_len: usize) -> Vec<Case> {
    let thousand = "0-0,".repeat(1000);
    let past = format!("{file_len}-");
    [
        thousand.as_str(),
        "18446744073709551615-",
        "0-18446744073709551616",
        "-0",
        "-18446744073709551616",
        "18446744073709551616-18446744073709551617",
        past.as_str(),
        "0-1,2-3,4-5,6-7,8-9,10-11,12-13,14-15,16-17,18-19,20-21,22-23,24-25,26-27,28-29,30-31,32-33,34-35",
        "1-0",
        "--1",
        "0--1",
        "-",
        ",",
        "0-0,-1,0-",
    ]
    .into_iter()
    .map(|range| {
        case(
            format!("Range: bytes={}", &range[..range.len().min(40)]),
            format!("GET /a.txt HTTP/1.1\r\n{H}Range: bytes={range}\r\n\r\n"),
            Want::AbsurdRange,
        )
    })
    .collect()
}

/// What is wrong with the answer to an absurd range, if anything: a 200 must
/// carry the whole file, a 206 the bytes its `Content-Range` names, a 416
/// `Content-Range: bytes */len`.
fn absurd_range_problem(r: &Response, file: &[u8]) -> Option<String> {
    let len = file.len() as u64;
    match (r.status, r.header("content-range")) {
        (200, _) if r.body != file => Some("200 without the whole file".to_string()),
        (206, Some(cr)) => {
            let ok = parse_content_range(cr).is_some_and(|(f, l, t)| {
                t == len && f <= l && l < len && r.body == file[f as usize..=l as usize]
            });
            (!ok).then(|| format!("206 {cr} with a wrong body {}", show(&r.body)))
        }
        (206, None)
            if !r
                .header("content-type")
                .is_some_and(|t| t.starts_with("multipart/byteranges")) =>
        {
            Some("206 without Content-Range".to_string())
        }
        (416, cr) if cr != Some(format!("bytes */{len}").as_str()) => {
            Some(format!("416 with Content-Range {cr:?}"))
        }
        _ => None,
    }
}

/// The problems with the reply to `c` (`a` is the file `/a.txt`).
fn problems_of(c: &Case, reply: &Reply, a: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let all = match reply {
        // The whole reply: the Debug form cuts the body short, and a secret can sit anywhere in it.
        Reply::Http(r, _, extra) => [r.head_text().as_bytes(), &r.body, extra].concat(),
        Reply::Other(v) => v.clone(),
    };
    if find(&all, MARKER).is_some() {
        problems.push(format!("the secret marker was sent: {}", show(&all)));
    }
    match (reply, c.want) {
        (Reply::Http(r, closed, extra), want) => {
            let ok = match want {
                Want::Status(s) => r.status == s,
                Want::Http4xx => (400..500).contains(&r.status),
                Want::Refused => (400..500).contains(&r.status) || r.status == 505,
                Want::NotOutside => r.status < 500 || r.status == 505,
                Want::AbsurdRange => matches!(r.status, 200 | 206 | 416),
            };
            if !ok {
                problems.push(format!("want {want:?}, got:\n{r:?}"));
            }
            if c.close && *closed != Some(true) {
                problems.push(format!("not closed after {} ({closed:?})", r.status_line));
            }
            if c.close && !extra.is_empty() {
                problems.push(format!("bytes after the response: {}", show(extra)));
            }
            if c.allow && r.header("allow") != Some("GET, HEAD, OPTIONS") {
                problems.push(format!("Allow is {:?}", r.header("allow")));
            }
            if find(&r.body, &a[..10]).is_some()
                && !matches!(want, Want::AbsurdRange | Want::NotOutside)
            {
                problems.push("the file's content was sent".to_string());
            }
            if matches!(want, Want::AbsurdRange) {
                problems.extend(absurd_range_problem(r, a));
            }
        }
        (Reply::Other(bytes), Want::Refused | Want::NotOutside) => {
            // The line protocol answered: only its error lines are acceptable.
            let text = String::from_utf8_lossy(bytes);
            if !text.lines().all(|l| l.starts_with("File transmit error: ")) {
                problems.push(format!("not only line-protocol errors: {}", show(bytes)));
            }
        }
        (Reply::Other(bytes), want) => problems.push(format!(
            "want {want:?}, got a non-HTTP reply: {}",
            show(bytes)
        )),
    }
    problems
}

/// Serves a tree with a file, a dotfile holding the marker and a link to a
/// secret outside the root; sends every case on a fresh connection, checks
/// the reply, and after each, that a normal request is still served.
fn run(cases: Vec<Case>) {
    let tree = Tree::new("hostile");
    let a = b"aaaaa file a, inside the root\n".repeat(3);
    tree.file("a.txt", &a)
        .file("sub/x.txt", b"x")
        .file(".secret-in-root", MARKER);
    let outside = tree.outside(
        "secret.txt",
        &[&b"secret outside the root: "[..], MARKER].concat(),
    );
    tree.link(&outside, "link-out");
    let srv: Running = tree.serve(|_| {});
    let panics = server_panics();
    let mut problems: Vec<String> = Vec::new();
    for c in cases {
        let reply = raw_exchange(srv.addr, &c.bytes, c.close);
        problems.extend(
            problems_of(&c, &reply, &a)
                .into_iter()
                .map(|p| format!("{}: {p}", c.name)),
        );
        let r = srv.get("/a.txt", &[]);
        if r.status != 200 || r.body != a {
            problems.push(format!("after {}: GET /a.txt gave {r:?}", c.name));
        }
    }
    assert_eq!(server_panics(), panics, "the server panicked");
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn broken_request_lines_and_headers_get_4xx_and_close() {
    run(head_cases());
}

#[test]
fn methods_other_than_get_and_head_get_405_with_allow() {
    run(method_cases());
}

#[test]
fn names_that_leave_the_root_get_4xx_and_nothing_outside() {
    run(traversal_cases());
}

#[test]
fn absurd_ranges_get_200_206_or_416_with_the_right_bytes() {
    run(range_cases(b"aaaaa file a, inside the root\n".len() * 3));
}

#[test]
fn the_leak_check_sees_the_marker_anywhere_in_the_reply() {
    // The check itself, without a server: a marker deep in a body (past
    // what a Debug form shows) or after the response must be reported.
    let c = case("probe", "GET / HTTP/1.1\r\n\r\n", Want::Status(200));
    let resp = |body: Vec<u8>| Response {
        status: 200,
        status_line: "HTTP/1.1 200 OK".into(),
        headers: Vec::new(),
        body,
    };
    let deep = [vec![b'x'; 4096], MARKER.to_vec()].concat();
    let late = Reply::Http(resp(b"ok".to_vec()), None, MARKER.to_vec());
    for (what, reply) in [
        (
            "deep in the body",
            Reply::Http(resp(deep), None, Vec::new()),
        ),
        ("after the response", late),
    ] {
        let problems = problems_of(&c, &reply, b"aaaaa file a, inside the root\n");
        assert!(
            problems.iter().any(|p| p.contains("secret marker")),
            "{what}: not reported: {problems:?}"
        );
    }
}
