//! HTTP/1.1 against the real `iocomp serve` binary: response headers and
//! byte-exact bodies, HEAD framing, keep-alive and pipelining, Python's
//! `http.client`, conditional requests, single and multipart ranges, curl
//! (`-C -` resume, `--range`, `-z`, `--compressed`), directories (redirects,
//! index.html, HTML and JSON listings of awkward names), malformed and hostile
//! input over raw sockets, the header and idle timeouts, the access log and the
//! descriptor count.
//!
//! Every wait is bounded: sockets carry timeouts, child processes run under a
//! deadline and are killed past it, and polling loops have deadlines. Only
//! loopback is used. curl and python3 are required (the test fails, with a
//! message saying so, when either is missing).

mod common;

use common::{assert_bytes_eq, connect, pseudo_random, show, Server, TempTree, IO_TIMEOUT};
use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MIB: usize = 1 << 20;

/// Bound for one external client process (curl, python3).
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound for an access-log line to show up (the log is flushed on a timer).
const LOG_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client over a raw socket
// ---------------------------------------------------------------------------

/// One parsed response.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    /// The first value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many times header `name` appears.
    fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The value of header `name`, or a panic showing the whole head.
    fn must(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in:\n{}", self.head_text()))
    }

    /// The head as text, for failure messages.
    fn head_text(&self) -> String {
        let mut s = self.status_line.clone();
        for (n, v) in &self.headers {
            s.push_str(&format!("\n{n}: {v}"));
        }
        s
    }

    /// Asserts the status, showing the head (and the start of the body) if not.
    fn assert_status(&self, want: u16, what: &str) {
        assert_eq!(
            self.status,
            want,
            "{what}: want status {want}, got:\n{}\nbody: {}",
            self.head_text(),
            show(&self.body)
        );
    }

    /// The headers that must be identical between a HEAD and a GET (all but Date).
    fn comparable_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("date"))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        h.sort();
        h
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// Parses a response head (status line and fields, with the final CRLF CRLF).
fn parse_head(head: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    assert!(
        version == "HTTP/1.1" || version == "HTTP/1.0",
        "not an HTTP status line: {status_line:?} (head {})",
        show(head)
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {status_line:?}"));
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (n, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("malformed header line {line:?} in {}", show(head)));
        assert!(
            !n.is_empty() && !n.contains(' '),
            "malformed header name in {line:?}"
        );
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Resp {
        status,
        status_line,
        headers,
        body: Vec::new(),
    }
}

/// A client connection with a receive buffer, so that pipelined responses
/// can be split by their `Content-Length`.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {}: {e}", show(bytes)));
    }

    /// One read into the buffer; the number of bytes (0 at EOF). A reset
    /// counts as EOF; a timeout panics.
    fn read_more(&mut self) -> usize {
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!(
                        "read timed out after {IO_TIMEOUT:?}; buffered: {}",
                        show(&self.buf)
                    )
                }
                Err(_) => return 0,
            }
        }
    }

    /// Reads one response; its body is framed by `Content-Length` (none for
    /// HEAD, 304, 204 and 1xx).
    fn response(&mut self, head_only: bool) -> Resp {
        let deadline = Instant::now() + IO_TIMEOUT * 3;
        let end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            assert!(
                self.buf.len() < 64 * 1024,
                "no end of response head in 64 KiB: {}",
                show(&self.buf)
            );
            if self.read_more() == 0 {
                panic!(
                    "connection closed before a complete response head; got {}",
                    show(&self.buf)
                );
            }
            assert!(Instant::now() < deadline, "response head took too long");
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        let mut resp = parse_head(&head);
        let no_body = head_only || matches!(resp.status, 100..=199 | 204 | 304);
        let body_len = if no_body {
            0
        } else {
            let cl = resp.header("content-length").unwrap_or_else(|| {
                panic!("response without Content-Length:\n{}", resp.head_text())
            });
            cl.parse::<usize>()
                .unwrap_or_else(|e| panic!("bad Content-Length {cl:?}: {e}"))
        };
        while self.buf.len() < body_len {
            if self.read_more() == 0 {
                panic!(
                    "connection closed after {} of {body_len} body bytes; head:\n{}",
                    self.buf.len(),
                    resp.head_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "response body took too long ({} of {body_len})",
                self.buf.len()
            );
        }
        resp.body = self.buf.drain(..body_len).collect();
        resp
    }

    /// Asserts nothing more was sent and the server closes the connection.
    fn expect_closed(&mut self, what: &str) {
        assert!(
            self.buf.is_empty(),
            "{what}: extra bytes after the response: {}",
            show(&self.buf)
        );
        common::assert_read_sees_close(&mut self.stream, what);
    }

    /// Reads until EOF (bounded), returning everything including the buffer.
    fn read_to_eof(&mut self, total: Duration) -> Vec<u8> {
        self.stream
            .set_read_timeout(Some(total.min(IO_TIMEOUT)))
            .unwrap();
        let deadline = Instant::now() + total;
        while Instant::now() < deadline {
            if self.read_more() == 0 {
                break;
            }
        }
        std::mem::take(&mut self.buf)
    }
}

/// A request head: `METHOD PATH HTTP/1.1`, `Host`, then `headers`.
fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: iocomp.test\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// One request on a fresh connection.
fn exchange(server: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut c = Client::connect(server.addr());
    c.send(&req(method, path, headers));
    c.response(method == "HEAD")
}

fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> Resp {
    exchange(server, "GET", path, headers)
}

/// GET `path` and check it is a 200 with exactly `want` as its body.
fn assert_get(server: &Server, path: &str, want: &[u8]) {
    let r = get(server, path, &[]);
    r.assert_status(200, &format!("GET {path}"));
    assert_bytes_eq(&r.body, want, &format!("GET {path}"));
}

// ---------------------------------------------------------------------------
// Dates, percent-encoding
// ---------------------------------------------------------------------------

fn now_secs() -> i64 {
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

/// The IMF-fixdate of Unix seconds: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(secs: i64) -> String {
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

fn mtime_of(path: &Path) -> i64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mtime()
}

/// Percent-decodes `s`, panicking on a malformed escape.
fn pct_decode(s: &str) -> Vec<u8> {
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
fn is_safe_url_path(s: &str) -> bool {
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

// ---------------------------------------------------------------------------
// External clients
// ---------------------------------------------------------------------------

/// Runs `cmd` with `input` on stdin, killing it past `limit`.
fn run_bounded(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let writer = child.stdin.take().map(|mut stdin| {
        let data = input.unwrap_or_default().to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{cmd:?} did not finish within {limit:?}");
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait for {cmd:?}: {e}"),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Fails the test with a clear message when `program` cannot be run.
fn require(program: &str) {
    let ok = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{program}` is required by these tests but cannot be run (install it: CI does)"
    );
}

/// Runs curl with `args` (plus `-sS` and a time limit).
fn curl(args: &[&str]) -> Output {
    require("curl");
    let out = run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .args(args),
        None,
        CHILD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "curl {args:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `python3 -c script args...` with `input` on stdin; asserts success.
fn python(script: &str, args: &[&str], input: Option<&[u8]>) -> Output {
    require("python3");
    let out = run_bounded(
        Command::new("python3").arg("-c").arg(script).args(args),
        input,
        CHILD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "python3 failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// 1. Headers of GET and HEAD
// ---------------------------------------------------------------------------

fn assert_strong_etag(r: &Resp, what: &str) -> String {
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

/// Checks the headers every 200 for a file must carry.
fn assert_file_headers(
    r: &Resp,
    path: &Path,
    len: usize,
    content_type: &str,
    t0: i64,
    t1: i64,
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
        (t0 - 2..=t1 + 2).any(|t| http_date(t) == date),
        "{what}: Date {date:?} is not an IMF-fixdate of now ({})",
        http_date(t1)
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
    let tree = TempTree::new();
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
    let server = Server::start(tree.root(), &[]);
    let mut etags = BTreeSet::new();
    for (name, content, ct) in files {
        let path = tree.root().join(name);
        let what = format!("GET /{name}");
        let t0 = now_secs();
        let r = get(&server, &format!("/{name}"), &[]);
        let t1 = now_secs();
        assert_file_headers(&r, &path, content.len(), ct, t0, t1, &what);
        assert_bytes_eq(&r.body, content, &what);
        etags.insert(r.must("etag").to_string());

        // HEAD then GET on one connection: the HEAD response has no body, or
        // the GET's status line would not come next.
        let mut c = Client::connect(server.addr());
        let mut both = req("HEAD", &format!("/{name}"), &[]);
        both.extend_from_slice(&req("GET", &format!("/{name}"), &[]));
        c.send(&both);
        let h = c.response(true);
        let g = c.response(false);
        assert_file_headers(&h, &path, content.len(), ct, t0, now_secs(), "HEAD");
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

// ---------------------------------------------------------------------------
// 2. Keep-alive and pipelining
// ---------------------------------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_order_and_connection_headers_are_honoured() {
    let tree = TempTree::new();
    let one = b"one\n".to_vec();
    let two = b"<b>two</b>\n".repeat(50);
    let three = pseudo_random(21, 200_000);
    tree.file("one.txt", &one);
    tree.file("two.html", &two);
    tree.file("three.bin", &three);
    let server = Server::start(tree.root(), &[]);

    // Three GETs in one write, three responses in order.
    let mut c = Client::connect(server.addr());
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
            "pipelined 1.1 response says Connection: close:\n{}",
            r.head_text()
        );
    }
    // The connection is still usable afterwards.
    c.send(&req("GET", "/one.txt", &[]));
    assert_bytes_eq(&c.response(false).body, &one, "GET after the pipeline");

    // HTTP/1.0 without keep-alive: closed after the response.
    let mut c = Client::connect(server.addr());
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
    let mut c = Client::connect(server.addr());
    c.send(b"GET /one.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response(false);
    assert_bytes_eq(&r.body, &one, "HTTP/1.0 keep-alive GET");
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("keep-alive"),
        "HTTP/1.0 keep-alive response:\n{}",
        r.head_text()
    );
    c.send(b"GET /two.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response(false);
    assert_bytes_eq(&r.body, &two, "second HTTP/1.0 keep-alive GET");

    // HTTP/1.1 with Connection: close: closed after the response.
    let mut c = Client::connect(server.addr());
    c.send(&req("GET", "/one.txt", &[("Connection", "close")]));
    let r = c.response(false);
    assert_bytes_eq(&r.body, &one, "1.1 Connection: close");
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "1.1 Connection: close response:\n{}",
        r.head_text()
    );
    c.expect_closed("HTTP/1.1 with Connection: close");
}

// ---------------------------------------------------------------------------
// 3. Python http.client
// ---------------------------------------------------------------------------

const PY_CLIENT: &str = r#"
import http.client, sys
port = int(sys.argv[1])
c = http.client.HTTPConnection('127.0.0.1', port, timeout=20)
first = None
for path in sys.argv[2:]:
    c.request('GET', path)
    r = c.getresponse()
    body = r.read()
    if first is None:
        first = c.sock
    print('GET', path, r.status, r.getheader('Content-Length'), body.hex(), c.sock is first, r.will_close)
c.request('HEAD', sys.argv[2])
r = c.getresponse()
body = r.read()
print('HEAD', sys.argv[2], r.status, r.getheader('Content-Length'), body.hex(), c.sock is first, r.will_close)
c.request('GET', sys.argv[3])
r = c.getresponse()
body = r.read()
print('GET', sys.argv[3], r.status, r.getheader('Content-Length'), body.hex(), c.sock is first, r.will_close)
c.close()
"#;

#[test]
fn python_http_client_reuses_one_connection_for_gets_and_head() {
    let tree = TempTree::new();
    let a = b"alpha\n".to_vec();
    let b = pseudo_random(31, 5000);
    let c = b"<p>gamma</p>".to_vec();
    tree.file("a.txt", &a);
    tree.file("b.bin", &b);
    tree.file("c.html", &c);
    let server = Server::start(tree.root(), &[]);
    let port = server.addr().port().to_string();
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

// ---------------------------------------------------------------------------
// 4. Conditional requests
// ---------------------------------------------------------------------------

/// A conditional request: what it tests, its headers, the status it must get.
type CondCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);

#[test]
fn conditional_requests_answer_304_and_412() {
    let tree = TempTree::new();
    let content = b"conditional content\n".repeat(10);
    let path = tree.file("cond.txt", &content);
    let other = b"other".to_vec();
    tree.file("other.txt", &other);
    let server = Server::start(tree.root(), &[]);
    let base = get(&server, "/cond.txt", &[]);
    base.assert_status(200, "GET /cond.txt");
    let etag = assert_strong_etag(&base, "GET /cond.txt");
    let last_modified = base.must("last-modified").to_string();
    assert_eq!(last_modified, http_date(mtime_of(&path)));
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", W/\"other\", {etag}");
    let old_date = http_date(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    let cases: Vec<CondCase<'_>> = vec![
        ("If-None-Match: etag", vec![("If-None-Match", &etag)], 304),
        ("If-None-Match: W/etag", vec![("If-None-Match", &weak)], 304),
        ("If-None-Match: list", vec![("If-None-Match", &list)], 304),
        ("If-None-Match: *", vec![("If-None-Match", "*")], 304),
        (
            "If-None-Match: other tag",
            vec![("If-None-Match", "\"not-it\"")],
            200,
        ),
        (
            "If-Modified-Since: Last-Modified",
            vec![("If-Modified-Since", &last_modified)],
            304,
        ),
        (
            "If-Modified-Since: older",
            vec![("If-Modified-Since", &old_date)],
            200,
        ),
        ("If-Match: wrong", vec![("If-Match", "\"wrong\"")], 412),
        ("If-Match: etag", vec![("If-Match", &etag)], 200),
        (
            "If-Unmodified-Since: far past",
            vec![("If-Unmodified-Since", &old_date)],
            412,
        ),
    ];
    // All on one connection: each response must be framed exactly (a 304
    // with a body would break the next one), and the connection survives.
    let mut c = Client::connect(server.addr());
    for (what, headers, want) in &cases {
        c.send(&req("GET", "/cond.txt", headers));
        let r = c.response(false);
        r.assert_status(*want, what);
        match want {
            304 => {
                assert_eq!(r.must("etag"), etag, "{what}: 304 ETag");
                assert!(
                    r.header("content-length")
                        .is_none_or(|v| v == content.len().to_string() || v == "0"),
                    "{what}: odd Content-Length on 304:\n{}",
                    r.head_text()
                );
            }
            200 => assert_bytes_eq(&r.body, &content, what),
            _ => {}
        }
        // A HEAD with the same conditions answers the same status.
        c.send(&req("HEAD", "/cond.txt", headers));
        let h = c.response(true);
        h.assert_status(*want, &format!("HEAD {what}"));
    }
    // Framing check: nothing stray came before this response.
    c.send(&req("GET", "/other.txt", &[]));
    let r = c.response(false);
    r.assert_status(200, "GET after the conditional requests");
    assert_bytes_eq(&r.body, &other, "GET after the conditional requests");
    // And a 304 is followed by nothing: the connection has no extra bytes.
    assert!(c.buf.is_empty(), "stray bytes: {}", show(&c.buf));
}

// ---------------------------------------------------------------------------
// 5. Ranges
// ---------------------------------------------------------------------------

/// Parses a `multipart/byteranges` body; returns (first, last, total, bytes) per part.
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(u64, u64, u64, Vec<u8>)> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut at = find(body, delim.as_bytes())
        .unwrap_or_else(|| panic!("no delimiter {delim:?} in {}", show(body)));
    assert!(
        body[..at].iter().all(|b| matches!(b, b'\r' | b'\n')),
        "unexpected preamble: {}",
        show(&body[..at])
    );
    loop {
        at += delim.len();
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            let epilogue = &rest[2..];
            assert!(
                epilogue.iter().all(|b| matches!(b, b'\r' | b'\n')),
                "unexpected epilogue: {}",
                show(epilogue)
            );
            break;
        }
        assert!(
            rest.starts_with(b"\r\n"),
            "no CRLF after delimiter: {}",
            show(rest)
        );
        let head_end = find(rest, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("part without header end: {}", show(rest)));
        let head = String::from_utf8_lossy(&rest[2..head_end]).into_owned();
        let mut content_range = None;
        let mut content_type = None;
        for line in head.split("\r\n") {
            let (n, v) = line.split_once(':').expect("part header line");
            if n.eq_ignore_ascii_case("content-range") {
                content_range = Some(v.trim().to_string());
            } else if n.eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_string());
            }
        }
        assert!(
            content_type.is_some(),
            "part without Content-Type: {head:?}"
        );
        let cr = content_range.unwrap_or_else(|| panic!("part without Content-Range: {head:?}"));
        let (first, last, total) = parse_content_range(&cr);
        let data_start = at + head_end + 4;
        let data_end = data_start + (last - first + 1) as usize;
        assert!(data_end <= body.len(), "part runs past the body");
        parts.push((first, last, total, body[data_start..data_end].to_vec()));
        let after = &body[data_end..];
        let crlf_delim = format!("\r\n{delim}");
        assert!(
            after.starts_with(crlf_delim.as_bytes()),
            "part data not followed by CRLF delimiter: {}",
            show(after)
        );
        at = data_end + 2;
    }
    parts
}

/// Parses `bytes first-last/total`.
fn parse_content_range(v: &str) -> (u64, u64, u64) {
    let rest = v
        .strip_prefix("bytes ")
        .unwrap_or_else(|| panic!("Content-Range without `bytes `: {v:?}"));
    let (range, total) = rest.split_once('/').expect("`/` in Content-Range");
    let (first, last) = range.split_once('-').expect("`-` in Content-Range");
    (
        first.parse().expect("first-pos"),
        last.parse().expect("last-pos"),
        total.parse().expect("complete-length"),
    )
}

#[test]
fn ranges_single_suffix_open_multipart_unsatisfiable_and_if_range() {
    let tree = TempTree::new();
    let content = pseudo_random(51, 1000);
    let len = content.len();
    tree.file("r.bin", &content);
    tree.file("r.txt", b"text ranges");
    let server = Server::start(tree.root(), &[]);
    let etag = get(&server, "/r.bin", &[]).must("etag").to_string();

    let single = |range: &str, first: usize, last: usize| {
        let r = get(&server, "/r.bin", &[("Range", range)]);
        r.assert_status(206, range);
        assert_eq!(
            r.must("content-range"),
            format!("bytes {first}-{last}/{len}"),
            "{range}: Content-Range"
        );
        assert_eq!(
            r.must("content-length"),
            (last - first + 1).to_string(),
            "{range}: Content-Length"
        );
        assert_eq!(r.must("content-type"), "application/octet-stream");
        assert_bytes_eq(&r.body, &content[first..=last], range);
    };
    single("bytes=10-19", 10, 19);
    single("bytes=-5", len - 5, len - 1);
    single("bytes=5-", 5, len - 1);
    single("bytes=0-", 0, len - 1);
    single("bytes=990-5000", 990, len - 1);

    // Two ranges: multipart/byteranges.
    let mut c = Client::connect(server.addr());
    c.send(&req("GET", "/r.bin", &[("Range", "bytes=0-9,500-549")]));
    let r = c.response(false);
    r.assert_status(206, "two ranges");
    let ct = r.must("content-type").to_string();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("two ranges: Content-Type {ct:?}"))
        .trim_matches('"')
        .to_string();
    assert!(!boundary.is_empty(), "empty boundary");
    assert_eq!(
        r.must("content-length"),
        r.body.len().to_string(),
        "Content-Length vs body"
    );
    let parts = parse_multipart(&r.body, &boundary);
    assert_eq!(parts.len(), 2, "two ranges: {} parts", parts.len());
    for ((first, last, total, bytes), (wf, wl)) in parts.iter().zip([(0u64, 9u64), (500, 549)]) {
        assert_eq!((*first, *last, *total), (wf, wl, len as u64), "part range");
        assert_bytes_eq(bytes, &content[wf as usize..=wl as usize], "part bytes");
    }
    assert!(
        r.body.ends_with(format!("--{boundary}--\r\n").as_bytes()),
        "multipart body does not end with the closing delimiter: {}",
        show(&r.body[r.body.len().saturating_sub(60)..])
    );
    // Exactly framed: the next response follows immediately.
    c.send(&req("GET", "/r.txt", &[]));
    assert_bytes_eq(
        &c.response(false).body,
        b"text ranges",
        "GET after multipart",
    );

    // Unsatisfiable.
    let r = get(&server, "/r.bin", &[("Range", &format!("bytes={len}-"))]);
    r.assert_status(416, "bytes=LEN-");
    assert_eq!(
        r.must("content-range"),
        format!("bytes */{len}"),
        "416 Content-Range"
    );

    // Malformed (reversed): the whole file.
    let r = get(&server, "/r.bin", &[("Range", "bytes=5-1")]);
    r.assert_status(200, "bytes=5-1");
    assert_bytes_eq(&r.body, &content, "bytes=5-1");

    // If-Range.
    let r = get(
        &server,
        "/r.bin",
        &[("Range", "bytes=10-19"), ("If-Range", &etag)],
    );
    r.assert_status(206, "If-Range: current ETag");
    assert_bytes_eq(&r.body, &content[10..20], "If-Range: current ETag");
    let r = get(
        &server,
        "/r.bin",
        &[("Range", "bytes=10-19"), ("If-Range", "\"old-etag\"")],
    );
    r.assert_status(200, "If-Range: old ETag");
    assert_bytes_eq(&r.body, &content, "If-Range: old ETag");

    // HEAD with a range: 206 headers, no body (proved by the next response).
    let mut c = Client::connect(server.addr());
    let mut both = req("HEAD", "/r.bin", &[("Range", "bytes=10-19")]);
    both.extend_from_slice(&req("GET", "/r.txt", &[]));
    c.send(&both);
    let h = c.response(true);
    h.assert_status(206, "HEAD with a range");
    assert_eq!(h.must("content-range"), format!("bytes 10-19/{len}"));
    assert_eq!(h.must("content-length"), "10");
    let g = c.response(false);
    assert_bytes_eq(&g.body, b"text ranges", "GET after HEAD with a range");
}

// ---------------------------------------------------------------------------
// 6. curl
// ---------------------------------------------------------------------------

/// Sets a file's modification time.
fn set_mtime(path: &Path, secs: i64) {
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    };
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

#[test]
fn curl_resumes_ranges_conditionals_and_compressed() {
    require("curl");
    let tree = TempTree::new();
    let big = pseudo_random(61, MIB + 12345);
    tree.file("big.bin", &big);
    let text = b"The quick brown fox jumps over the lazy dog.\n".repeat(400);
    tree.file("text.txt", &text);
    let gz_src = tree.root().join("text.txt");
    let gz_dst = tree.root().join("text.txt.gz");
    python(
        "import gzip,sys; open(sys.argv[2],'wb').write(gzip.compress(open(sys.argv[1],'rb').read()))",
        &[gz_src.to_str().unwrap(), gz_dst.to_str().unwrap()],
        None,
    );
    let gz = fs::read(&gz_dst).unwrap();
    let server = Server::start(tree.root(), &[]);
    let work = tree.base().join("client");
    fs::create_dir(&work).unwrap();

    // -C - resume: the first half is already on disk.
    let out = work.join("big.part");
    fs::write(&out, &big[..big.len() / 2]).unwrap();
    let o = curl(&[
        "-C",
        "-",
        "-o",
        out.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &url(&server, "/big.bin"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "206",
        "curl -C - was not answered with a 206"
    );
    assert_bytes_eq(&fs::read(&out).unwrap(), &big, "curl -C - resumed file");

    // --range.
    let o = curl(&["--range", "100-199", "-o", "-", &url(&server, "/big.bin")]);
    assert_bytes_eq(&o.stdout, &big[100..200], "curl --range 100-199");

    // -z with a newer local file: 304, no body.
    let newer = work.join("newer");
    fs::write(&newer, b"x").unwrap();
    set_mtime(&newer, now_secs() + 3600);
    let body = work.join("z-body");
    let o = curl(&[
        "-z",
        newer.to_str().unwrap(),
        "-o",
        body.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &url(&server, "/big.bin"),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "304", "curl -z newer");
    let got = fs::read(&body).unwrap_or_default();
    assert!(
        got.is_empty(),
        "curl -z newer got a body of {} bytes",
        got.len()
    );

    // -z with an older local file: the whole file.
    let older = work.join("older");
    fs::write(&older, b"x").unwrap();
    set_mtime(&older, 631_152_000); // 1990
    let o = curl(&[
        "-z",
        older.to_str().unwrap(),
        "-o",
        body.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &url(&server, "/big.bin"),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "curl -z older");
    assert_bytes_eq(&fs::read(&body).unwrap(), &big, "curl -z older body");

    // --compressed with a .gz sibling: the original bytes, gzip on the wire.
    let decoded = work.join("text.out");
    let o = curl(&[
        "--compressed",
        "-D",
        "-",
        "-o",
        decoded.to_str().unwrap(),
        &url(&server, "/text.txt"),
    ]);
    let headers = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    assert!(
        headers.contains("\ncontent-encoding: gzip\r\n"),
        "curl --compressed: no Content-Encoding: gzip in\n{headers}"
    );
    assert!(
        headers.contains("\nvary: accept-encoding\r\n"),
        "curl --compressed: no Vary: Accept-Encoding in\n{headers}"
    );
    assert!(
        headers.contains(&format!("\ncontent-length: {}\r\n", gz.len())),
        "curl --compressed: Content-Length is not the .gz length {} in\n{headers}",
        gz.len()
    );
    assert_bytes_eq(
        &fs::read(&decoded).unwrap(),
        &text,
        "curl --compressed body",
    );

    // The compressed representation has its own ETag; without
    // Accept-Encoding the plain file comes back.
    let plain = get(&server, "/text.txt", &[]);
    assert!(
        plain.header("content-encoding").is_none(),
        "plain GET encoded"
    );
    assert_bytes_eq(&plain.body, &text, "plain GET /text.txt");
    let zipped = get(&server, "/text.txt", &[("Accept-Encoding", "gzip")]);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_bytes_eq(&zipped.body, &gz, "GET /text.txt gzip");
    assert_ne!(
        plain.must("etag"),
        zipped.must("etag"),
        "identity and gzip share an ETag"
    );
}

// ---------------------------------------------------------------------------
// 7. Directories
// ---------------------------------------------------------------------------

/// The awkward names of the listing test, each a file with its own content.
const AWKWARD: [&str; 8] = [
    "a b.txt",
    "h#sh.txt",
    "q?.txt",
    "100%.txt",
    "<b>bold.txt",
    "\u{1f600}.txt",
    "new\nline.txt",
    "plain.txt",
];

/// The `href` values of a listing, minus the sort links and `../`.
fn listing_hrefs(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("href=\"") {
        rest = &rest[i + 6..];
        let end = rest.find('"').expect("closing quote of href");
        let href = &rest[..end];
        if !href.starts_with('?') && href != "../" {
            out.push(href.to_string());
        }
        rest = &rest[end..];
    }
    out
}

/// The names of a JSON listing (parsed by Python's json module), as
/// `hex(utf8 name) type` lines.
fn json_names(body: &[u8]) -> BTreeSet<String> {
    let out = python(
        "import json,sys\nfor e in json.load(sys.stdin): print(e['name'].encode('utf-8').hex(), e['type'])",
        &[],
        Some(body),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn check_redirect(server: &Server, path: &str, want_decoded: &[u8]) {
    let r = get(server, path, &[]);
    r.assert_status(301, &format!("GET {path}"));
    let loc = r.must("location");
    assert!(
        loc.starts_with('/') && !loc.starts_with("//"),
        "GET {path}: Location {loc:?} is not path-absolute with a single leading /"
    );
    assert!(
        is_safe_url_path(loc),
        "GET {path}: Location {loc:?} is not percent-encoded"
    );
    assert_eq!(
        pct_decode(loc),
        want_decoded,
        "GET {path}: Location {loc:?} decodes wrong"
    );
}

#[test]
fn directories_redirect_serve_index_and_list_awkward_names() {
    let tree = TempTree::new();
    let index = b"<p>index of sub</p>\n".to_vec();
    tree.file("sub/index.html", &index);
    tree.dir("a b");
    tree.dir("x#y");
    tree.dir("evil.example/x");
    for name in AWKWARD {
        tree.file(
            &format!("list/{name}"),
            format!("content of {name:?}").as_bytes(),
        );
    }
    tree.dir("list/d ir");
    tree.file("list/d ir/inner.txt", b"inner");
    tree.file("list/.hidden", b"secret dotfile");
    let server = Server::start(tree.root(), &[]);

    // Redirects.
    check_redirect(&server, "/sub", b"/sub/");
    check_redirect(&server, "/a%20b", b"/a b/");
    check_redirect(&server, "/x%23y", b"/x#y/");
    check_redirect(&server, "/list/d%20ir", b"/list/d ir/");
    for evil in [
        "//evil.example/x",
        "///evil.example/x",
        "/%2fevil.example/x",
        "/%2F%2Fevil.example/x",
        "/.//evil.example/x",
    ] {
        let r = get(&server, evil, &[]);
        assert!(
            r.status == 301 || (400..500).contains(&r.status),
            "GET {evil}: status {}",
            r.status
        );
        if let Some(loc) = r.header("location") {
            assert!(
                loc.starts_with('/') && !loc.starts_with("//") && !loc.starts_with("/\\"),
                "GET {evil}: Location {loc:?} could leave the site"
            );
            assert_eq!(
                pct_decode(loc),
                b"/evil.example/x/",
                "GET {evil}: Location {loc:?}"
            );
        }
    }

    // index.html.
    let r = get(&server, "/sub/", &[]);
    r.assert_status(200, "GET /sub/");
    assert_eq!(r.must("content-type"), "text/html; charset=utf-8");
    assert_bytes_eq(&r.body, &index, "GET /sub/ (index.html)");

    // HTML listing.
    let r = get(&server, "/list/", &[]);
    r.assert_status(200, "GET /list/");
    assert_eq!(r.must("content-type"), "text/html; charset=utf-8");
    let html = String::from_utf8(r.body.clone()).expect("listing is UTF-8");
    assert!(
        !html.contains("<b>bold"),
        "a name is not HTML-escaped in the listing"
    );
    assert!(
        html.contains("&lt;b&gt;bold.txt"),
        "escaped `<b>bold.txt` not in the listing:\n{html}"
    );
    assert!(html.contains("\u{1f600}.txt"), "emoji name not shown");
    assert!(!html.contains(".hidden"), "dotfile listed:\n{html}");
    let hrefs = listing_hrefs(&html);
    let mut want: BTreeSet<Vec<u8>> = AWKWARD.iter().map(|n| n.as_bytes().to_vec()).collect();
    want.insert(b"d ir/".to_vec());
    let decoded: BTreeSet<Vec<u8>> = hrefs.iter().map(|h| pct_decode(h)).collect();
    assert_eq!(
        decoded
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>(),
        want.iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>(),
        "listing links (decoded) vs the directory's entries; hrefs: {hrefs:?}"
    );
    assert_eq!(hrefs.len(), want.len(), "duplicate links: {hrefs:?}");
    for href in &hrefs {
        assert!(
            is_safe_url_path(href),
            "href {href:?} is not percent-encoded"
        );
        let r = get(&server, &format!("/list/{href}"), &[]);
        r.assert_status(200, &format!("following href {href:?}"));
        let name = String::from_utf8(pct_decode(href)).unwrap();
        if name == "d ir/" {
            assert!(
                contains(&r.body, b"inner.txt"),
                "the d ir/ link does not list inner.txt"
            );
        } else {
            assert_bytes_eq(
                &r.body,
                format!("content of {name:?}").as_bytes(),
                &format!("following href {href:?}"),
            );
        }
    }

    // JSON listings.
    let mut want_json: BTreeSet<String> = AWKWARD
        .iter()
        .map(|n| format!("{} file", hex(n.as_bytes())))
        .collect();
    want_json.insert(format!("{} dir", hex(b"d ir")));
    for (what, path, headers) in [
        ("?format=json", "/list/?format=json", vec![]),
        (
            "Accept: application/json",
            "/list/",
            vec![("Accept", "application/json")],
        ),
    ] {
        let r = get(&server, path, &headers);
        r.assert_status(200, what);
        assert!(
            r.must("content-type").starts_with("application/json"),
            "{what}: Content-Type {:?}",
            r.must("content-type")
        );
        assert_eq!(
            json_names(&r.body),
            want_json,
            "{what}: names (hex) and types"
        );
    }
    drop(server);

    // --no-listing: 404 for a directory without index.html; index still served.
    let server = Server::start(tree.root(), &["--no-listing"]);
    get(&server, "/list/", &[]).assert_status(404, "--no-listing GET /list/");
    get(&server, "/list/?format=json", &[]).assert_status(404, "--no-listing JSON");
    assert_get(&server, "/sub/", &index);
    drop(server);

    // --hidden: dotfiles are listed.
    let server = Server::start(tree.root(), &["--hidden"]);
    let r = get(&server, "/list/", &[]);
    r.assert_status(200, "--hidden GET /list/");
    let hrefs = listing_hrefs(&String::from_utf8_lossy(&r.body));
    assert!(
        hrefs.iter().any(|h| h == ".hidden"),
        "--hidden listing lacks .hidden: {hrefs:?}"
    );
    assert_get(&server, "/list/.hidden", b"secret dotfile");
}

// ---------------------------------------------------------------------------
// 8. Bad input
// ---------------------------------------------------------------------------

const MARKER: &[u8] = b"OUTSIDE-THE-ROOT-7f3a9c1e-MARKER";

/// What came back for a raw request.
enum Reply {
    /// An HTTP response; `closed` if the server closed right after it
    /// (only checked when asked).
    Http(Resp, Option<bool>, Vec<u8>),
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
    let closed = if check_close {
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 4096];
        let mut closed = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while closed.is_none() && Instant::now() < deadline {
            match c.stream.read(&mut byte) {
                Ok(0) => closed = Some(true),
                Ok(n) => raw.extend_from_slice(&byte[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    closed = Some(false)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => closed = Some(true),
            }
        }
        Some(closed.unwrap_or(false))
    } else {
        None
    };
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

fn bad_input_cases(file_len: usize) -> Vec<Case> {
    use Want::*;
    let h = "Host: x\r\n";
    let mut cases = vec![
        // `GET  /` is not an HTTP start (design.md §4): the line protocol may answer.
        case("double space", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", Refused).closes(),
        case("trailing garbage", "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", Refused).closes(),
        case("no version", "GET /\r\nHost: x\r\n\r\n", NotOutside).closes(),
        case("no version, secret", "GET /../secret.txt\r\n\r\n", NotOutside).closes(),
        case("HTTP/2.0", format!("GET / HTTP/2.0\r\n{h}\r\n"), Status(505)).closes(),
        case("HTTP/1.2", format!("GET / HTTP/1.2\r\n{h}\r\n"), Status(505)).closes(),
        case("HTTX/1.1", format!("GET / HTTX/1.1\r\n{h}\r\n"), Status(400)).closes(),
        case(
            "bare CR in a header",
            format!("GET /a.txt HTTP/1.1\r\n{h}X-A: a\rb\r\n\r\n"),
            Status(400),
        )
        .closes(),
        case(
            "obs-fold",
            format!("GET /a.txt HTTP/1.1\r\n{h}X-A: a\r\n  folded\r\n\r\n"),
            Status(400),
        )
        .closes(),
        case(
            "NUL in a header",
            format!("GET /a.txt HTTP/1.1\r\n{h}X-A: a\0b\r\n\r\n"),
            Status(400),
        )
        .closes(),
        case("missing Host", "GET /a.txt HTTP/1.1\r\n\r\n", Status(400)).closes(),
        case(
            "duplicate Host",
            "GET /a.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            Status(400),
        )
        .closes(),
        case(
            "CL and TE",
            format!(
                "GET /a.txt HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            Status(400),
        )
        .closes(),
        case(
            "TE chunked on GET",
            format!("GET /a.txt HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Status(400),
        )
        .closes(),
        case(
            "GET with a body, then a pipelined GET",
            format!(
                "GET /a.txt HTTP/1.1\r\n{h}Content-Length: 5\r\n\r\nGET /a.txt HTTP/1.1\r\n{h}\r\n"
            ),
            Status(400),
        )
        .closes(),
        case(
            "Content-Length: -1",
            format!("GET /a.txt HTTP/1.1\r\n{h}Content-Length: -1\r\n\r\n"),
            Status(400),
        )
        .closes(),
        case(
            "huge Content-Length",
            format!(
                "GET /a.txt HTTP/1.1\r\n{h}Content-Length: 99999999999999999999999999\r\n\r\n"
            ),
            Status(400),
        )
        .closes(),
        case(
            "Content-Length: u64::MAX",
            format!("GET /a.txt HTTP/1.1\r\n{h}Content-Length: 18446744073709551615\r\n\r\n"),
            Status(400),
        )
        .closes(),
        case(
            "POST with a body",
            format!("POST /a.txt HTTP/1.1\r\n{h}Content-Length: 5\r\n\r\nhello"),
            Status(405),
        )
        .closes()
        .with_allow(),
    ];
    let mut many = format!("GET /a.txt HTTP/1.1\r\n{h}");
    for i in 0..100 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    cases.push(case("101 headers", many, Status(431)).closes());
    let long_line = format!("GET /{} HTTP/1.1\r\n{h}\r\n", "a".repeat(9000));
    cases.push(case("9000-byte request line", long_line, Status(414)).closes());
    let mut big_head = format!("GET /a.txt HTTP/1.1\r\n{h}");
    for i in 0..10 {
        big_head.push_str(&format!("X-Big{i}: {}\r\n", "b".repeat(820)));
    }
    big_head.push_str("\r\n");
    assert!(big_head.len() > 8200);
    cases.push(case("8200 bytes of headers", big_head, Status(431)).closes());
    for method in [
        "TRACE /a.txt",
        "CONNECT example.com:443",
        "POST /a.txt",
        "DELETE /a.txt",
        "PUT /a.txt",
        "PATCH /a.txt",
    ] {
        cases.push(case(method, format!("{method} HTTP/1.1\r\n{h}\r\n"), Status(405)).with_allow());
    }
    cases.push(
        case(
            "OPTIONS *",
            format!("OPTIONS * HTTP/1.1\r\n{h}\r\n"),
            Status(200),
        )
        .with_allow(),
    );
    cases.push(
        case(
            "OPTIONS /a.txt",
            format!("OPTIONS /a.txt HTTP/1.1\r\n{h}\r\n"),
            Status(200),
        )
        .with_allow(),
    );
    for path in [
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
    ] {
        cases.push(case(
            format!("traversal {path}"),
            format!("GET {path} HTTP/1.1\r\n{h}\r\n"),
            Http4xx,
        ));
    }
    let thousand = "0-0,".repeat(1000);
    let past = format!("{file_len}-");
    for range in [
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
    ] {
        cases.push(case(
            format!("Range: bytes={}", &range[..range.len().min(40)]),
            format!("GET /a.txt HTTP/1.1\r\n{h}Range: bytes={range}\r\n\r\n"),
            AbsurdRange,
        ));
    }
    cases
}

/// What is wrong with the answer to an absurd range, if anything: a 200 must
/// carry the whole file, a 206 the bytes its `Content-Range` names, a 416
/// `Content-Range: bytes */len`.
fn absurd_range_problem(r: &Resp, file: &[u8]) -> Option<String> {
    let len = file.len() as u64;
    match (r.status, r.header("content-range")) {
        (200, _) if r.body != file => Some("200 without the whole file".to_string()),
        (206, Some(cr)) => {
            let (f, l, t) = parse_content_range(cr);
            let ok = t == len && f <= l && l < len && r.body == file[f as usize..=l as usize];
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

#[test]
fn bad_input_gets_4xx_never_5xx_never_outside_files_and_the_server_stays_up() {
    let tree = TempTree::new();
    let a = b"aaaaa file a, inside the root\n".repeat(3);
    tree.file("a.txt", &a);
    tree.file("sub/x.txt", b"x");
    tree.file(".secret-in-root", MARKER);
    let mut secret = b"secret outside the root: ".to_vec();
    secret.extend_from_slice(MARKER);
    let outside = tree.outside_file("secret.txt", &secret);
    tree.symlink(&outside, "link-out");
    let mut server = Server::start(tree.root(), &[]);
    let mut problems: Vec<String> = Vec::new();
    for c in bad_input_cases(a.len()) {
        let reply = raw_exchange(server.addr(), &c.bytes, c.close);
        let all = match &reply {
            Reply::Http(r, _, extra) => {
                let mut v = r.head_text().into_bytes();
                v.extend_from_slice(&r.body);
                v.extend_from_slice(extra);
                v
            }
            Reply::Other(v) => v.clone(),
        };
        if contains(&all, MARKER) {
            problems.push(format!(
                "{}: the secret marker was sent: {}",
                c.name,
                show(&all)
            ));
        }
        match (&reply, c.want) {
            (Reply::Http(r, closed, extra), want) => {
                let status = r.status;
                let ok = match want {
                    Want::Status(s) => status == s,
                    Want::Http4xx => (400..500).contains(&status),
                    Want::Refused => (400..500).contains(&status) || status == 505,
                    Want::NotOutside => status < 500 || status == 505,
                    Want::AbsurdRange => matches!(status, 200 | 206 | 416),
                };
                if !ok {
                    problems.push(format!(
                        "{}: want {want:?}, got:\n{}\nbody: {}",
                        c.name,
                        r.head_text(),
                        show(&r.body)
                    ));
                }
                if c.close && *closed != Some(true) {
                    problems.push(format!(
                        "{}: connection not closed after {} (closed: {closed:?}, then: {})",
                        c.name,
                        r.status_line,
                        show(extra)
                    ));
                }
                if c.close && !extra.is_empty() {
                    problems.push(format!(
                        "{}: bytes after the response (a second request was interpreted?): {}",
                        c.name,
                        show(extra)
                    ));
                }
                if c.allow && r.header("allow") != Some("GET, HEAD, OPTIONS") {
                    problems.push(format!(
                        "{}: Allow is {:?}, want \"GET, HEAD, OPTIONS\"",
                        c.name,
                        r.header("allow")
                    ));
                }
                if contains(&r.body, &a[..10])
                    && !matches!(want, Want::AbsurdRange | Want::NotOutside)
                {
                    problems.push(format!("{}: the file's content was sent", c.name));
                }
                if matches!(want, Want::AbsurdRange) {
                    if let Some(p) = absurd_range_problem(r, &a) {
                        problems.push(format!("{}: {p}", c.name));
                    }
                }
            }
            (Reply::Other(bytes), Want::Refused | Want::NotOutside) => {
                // The line protocol answered: only its error lines are acceptable.
                let text = String::from_utf8_lossy(bytes);
                if !text.lines().all(|l| l.starts_with("File transmit error: ")) {
                    problems.push(format!(
                        "{}: not HTTP, and not only line-protocol errors: {}",
                        c.name,
                        show(bytes)
                    ));
                }
            }
            (Reply::Other(bytes), want) => problems.push(format!(
                "{}: want {want:?} over HTTP, got a non-HTTP reply: {}",
                c.name,
                show(bytes)
            )),
        }
        server.assert_alive();
        // A normal request on a new connection still works.
        let r = get(&server, "/a.txt", &[]);
        if r.status != 200 || r.body != a {
            problems.push(format!(
                "after {}: GET /a.txt gave {} {}",
                c.name,
                r.status_line,
                show(&r.body)
            ));
        }
    }
    let stderr = server.stderr_text();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 9. Timeouts
// ---------------------------------------------------------------------------

/// Waits (at most `limit`) for the server to close `c`; returns the time it
/// took and any bytes it sent first.
fn time_to_close(c: &mut Client, limit: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    c.stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = std::mem::take(&mut c.buf);
    let mut chunk = [0u8; 4096];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the connection was not closed within {limit:?}; got {}",
                    show(&got)
                )
            }
            Err(_) => break,
        }
        assert!(start.elapsed() < limit, "not closed within {limit:?}");
    }
    (start.elapsed(), got)
}

#[test]
fn header_and_idle_timeouts_close_http_connections() {
    let tree = TempTree::new();
    tree.file("f.txt", b"timeouts");
    let server = Server::start(
        tree.root(),
        &["--header-timeout", "1s", "--idle-timeout", "1s"],
    );
    let limit = Duration::from_secs(5);

    // A partial head: the header timeout.
    let mut partial = Client::connect(server.addr());
    partial.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let (t, got) = time_to_close(&mut partial, limit);
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "partial head: unexpected reply {}",
        show(&got)
    );
    assert!(
        t >= Duration::from_millis(300),
        "partial head closed after only {t:?}: not the header timeout"
    );

    // A complete keep-alive exchange, then silence: the idle timeout.
    let mut idle = Client::connect(server.addr());
    idle.send(&req("GET", "/f.txt", &[]));
    let r = idle.response(false);
    assert_bytes_eq(&r.body, b"timeouts", "GET before idling");
    let (t, got) = time_to_close(&mut idle, limit);
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "idle: unexpected reply {}",
        show(&got)
    );
    assert!(
        t >= Duration::from_millis(300),
        "idle keep-alive closed after only {t:?}: not the idle timeout"
    );
    // The server still serves.
    assert_get(&server, "/f.txt", b"timeouts");
}

// ---------------------------------------------------------------------------
// 10. Access log
// ---------------------------------------------------------------------------

#[test]
fn access_log_has_one_clf_line_per_http_request_with_body_bytes() {
    let tree = TempTree::new();
    let f = pseudo_random(101, 12_345);
    let g = b"g file\n".to_vec();
    tree.file("f.bin", &f);
    tree.file("g.txt", &g);
    let server = Server::start(tree.root(), &[]);
    let mut c = Client::connect(server.addr());
    let mut batch = req("GET", "/f.bin", &[]);
    batch.extend_from_slice(&req("HEAD", "/g.txt", &[]));
    batch.extend_from_slice(&req("GET", "/missing.txt", &[]));
    batch.extend_from_slice(&req("GET", "/g.txt", &[("Range", "bytes=0-2")]));
    c.send(&batch);
    c.response(false).assert_status(200, "GET /f.bin");
    c.response(true).assert_status(200, "HEAD /g.txt");
    c.response(false).assert_status(404, "GET /missing.txt");
    c.response(false).assert_status(206, "GET /g.txt range");
    drop(c);

    let expect = [
        ("\"GET /f.bin HTTP/1.1\" 200 ", Some(f.len())),
        ("\"HEAD /g.txt HTTP/1.1\" 200 ", None),
        ("\"GET /missing.txt HTTP/1.1\" 404 ", None),
        ("\"GET /g.txt HTTP/1.1\" 206 ", Some(3)),
    ];
    // Wait for all four (the log is flushed on a timer), then check each.
    let deadline = Instant::now() + LOG_WAIT;
    while Instant::now() < deadline
        && !expect
            .iter()
            .all(|(p, _)| server.stdout_lines().iter().any(|l| l.contains(p)))
    {
        thread::sleep(Duration::from_millis(50));
    }
    let lines = server.stdout_lines();
    let mut problems = Vec::new();
    for (pattern, bytes) in expect {
        let matching: Vec<&String> = lines.iter().filter(|l| l.contains(pattern)).collect();
        if matching.len() != 1 {
            problems.push(format!(
                "{} lines contain {pattern:?} (want 1)",
                matching.len()
            ));
            continue;
        }
        let line = matching[0];
        if !line.starts_with("127.0.0.1 - - [") {
            problems.push(format!("not a CLF line: {line:?}"));
        }
        if let Some(n) = bytes {
            let logged = line.rsplit(' ').next().unwrap_or_default();
            if logged != n.to_string() {
                problems.push(format!(
                    "{pattern}: logged {logged} bytes, want the body length {n} (CLF %b): {line:?}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "access log:\n{}\nstdout:\n{}",
        problems.join("\n"),
        lines.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 11. Descriptors
// ---------------------------------------------------------------------------

#[test]
fn descriptor_count_returns_to_baseline_after_mixed_http_traffic() {
    let tree = TempTree::new();
    let big = pseudo_random(111, 3 * MIB);
    tree.file("big.bin", &big);
    tree.file("small.txt", b"small");
    tree.file("small.txt.gz", b"not really gzip");
    tree.file("dir/index.html", b"<p>i</p>");
    tree.file("list/one", b"1");
    let mut server = Server::start(tree.root(), &[]);
    let baseline = server.fd_count();

    // Pipelined, ranges, multipart, HEAD, 304, listings, redirects.
    let mut c = Client::connect(server.addr());
    let mut batch = req("GET", "/small.txt", &[]);
    batch.extend_from_slice(&req("HEAD", "/big.bin", &[]));
    batch.extend_from_slice(&req("GET", "/big.bin", &[("Range", "bytes=0-9,100-199")]));
    batch.extend_from_slice(&req("GET", "/small.txt", &[("If-None-Match", "*")]));
    batch.extend_from_slice(&req("GET", "/small.txt", &[("Accept-Encoding", "gzip")]));
    batch.extend_from_slice(&req("GET", "/list/", &[]));
    batch.extend_from_slice(&req("GET", "/dir", &[]));
    batch.extend_from_slice(&req("GET", "/dir/", &[]));
    batch.extend_from_slice(&req("GET", "/big.bin", &[]));
    c.send(&batch);
    for (i, want) in [200, 200, 206, 304, 200, 200, 301, 200, 200]
        .into_iter()
        .enumerate()
    {
        let r = c.response(i == 1);
        r.assert_status(want, &format!("mixed request {i}"));
    }
    drop(c);

    // Clients that go away mid-transfer, mid-head, or after a bad request.
    for _ in 0..5 {
        let mut c = Client::connect(server.addr());
        c.send(&req("GET", "/big.bin", &[]));
        let mut first = [0u8; 1024];
        let _ = c.stream.read(&mut first);
        common::set_linger_zero(&c.stream);
        drop(c);
        let mut c = Client::connect(server.addr());
        c.send(b"GET /big.bin HTTP/1.1\r\nHo");
        drop(c);
        let mut c = Client::connect(server.addr());
        c.send(b"GET / HTTP/1.1\r\n\r\n");
        let _ = c.response(false);
        drop(c);
    }
    // Python and curl.
    let port = server.addr().port().to_string();
    python(PY_CLIENT, &[&port, "/small.txt", "/dir/"], None);
    let o = curl(&["--range", "0-9", "-o", "-", &url(&server, "/big.bin")]);
    assert_bytes_eq(&o.stdout, &big[..10], "curl --range 0-9");

    server.assert_alive();
    let n = server.wait_fd_count(baseline, Duration::from_secs(15));
    assert_eq!(
        n,
        baseline,
        "descriptors did not return to the baseline of {baseline}; open now:\n{}",
        server.fd_listing()
    );
}
