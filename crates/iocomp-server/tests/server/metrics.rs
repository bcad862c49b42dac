//! The metrics listener: `/metrics` counts exactly what clients did (by
//! protocol and status, bytes sent, durations, connections), `/status.json`
//! lists transfers in flight by file name with their progress, a stalled
//! client does not block a scrape, and a listener bound beforehand (as the
//! CLI binds it before dropping root) is served like one bound by address.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::client::{
    body_of, connect, line, raw_get, raw_http, read_exact_timeout, read_to_end_timeout, send,
    status_of,
};
use crate::harness::{error_line, pseudo_random, timed, Running, Tree, MIB};

/// The value of the sample line `name` (with its labels) in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn with_metrics(c: &mut iocomp_server::Config) {
    c.metrics = Some("127.0.0.1:0".parse().unwrap());
}

#[test]
fn a_metrics_listener_bound_beforehand_is_served() {
    let t = Tree::new("admin");
    t.file("a.txt", b"abc");
    let l = iocomp_server::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let srv = t.serve(|c| c.metrics_listener = Some(Arc::new(l)));
    assert_eq!(srv.metrics_addr(), addr);
    assert_eq!(srv.get("/a.txt", &[]).body, b"abc");
    let admin = Running::at(addr);
    let m = admin.get("/metrics", &[]);
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(text.contains("iocomp_requests_total"), "{text}");
    assert_eq!(admin.get("/status.json", &[]).status, 200);
}

/// Makes the traffic the metrics test counts; returns the bytes sent over
/// HTTP and over the line protocol, as the clients got them.
fn traffic(srv: &Running) -> (usize, usize) {
    let mut http_bytes = 0;
    for (path, status) in [
        ("/small.txt", 200),
        ("/small.txt", 200),
        ("/data.bin", 200),
        ("/nope", 404),
        ("/nope2", 404),
        ("/.hidden", 403),
    ] {
        let r = raw_get(srv.addr, path);
        assert_eq!(status_of(&r), status, "{path}");
        http_bytes += r.len();
    }
    let r = raw_http(
        srv.addr,
        "GET /data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-99\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 206);
    http_bytes += r.len();
    let mut line_bytes = 0;
    for (name, n) in [(&b"small.txt"[..], 2), (b"nothing-here", 1)] {
        for _ in 0..n {
            line_bytes += srv.lines(&[name]).len();
        }
    }
    assert_eq!(line_bytes, 2 * 15 + error_line("not found").len());
    (http_bytes, line_bytes)
}

/// Scrapes until the 10 requests are counted and no connection is left.
fn settled_exposition(srv: &Running) -> String {
    // A request is counted when its reply's last operation completes, which
    // may be just after the client has read it: poll for the total.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = raw_get(srv.metrics_addr(), "/metrics");
        assert_eq!(status_of(&r), 200);
        let text = String::from_utf8(body_of(&r).to_vec()).expect("UTF-8 exposition");
        let count = sample(&text, "iocomp_request_duration_seconds_count").unwrap_or(0.0);
        let conns = sample(&text, "iocomp_connections_active").unwrap_or(-1.0);
        if (count >= 10.0 && conns == 0.0) || Instant::now() > deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_exactly_what_clients_did() {
    let tree = Tree::new("metrics");
    tree.file("small.txt", b"hello, metrics\n")
        .file("data.bin", &pseudo_random(3, 100_000));
    let srv = tree.serve(with_metrics);
    let (http_bytes, line_bytes) = traffic(&srv);
    let text = settled_exposition(&srv);
    let expect = [
        (
            "iocomp_requests_total{protocol=\"http\",status=\"200\"}",
            3.0,
        ),
        (
            "iocomp_requests_total{protocol=\"http\",status=\"404\"}",
            2.0,
        ),
        (
            "iocomp_requests_total{protocol=\"http\",status=\"403\"}",
            1.0,
        ),
        (
            "iocomp_requests_total{protocol=\"http\",status=\"206\"}",
            1.0,
        ),
        (
            "iocomp_requests_total{protocol=\"line\",status=\"200\"}",
            2.0,
        ),
        (
            "iocomp_requests_total{protocol=\"line\",status=\"404\"}",
            1.0,
        ),
        (
            "iocomp_sent_bytes_total{protocol=\"http\"}",
            http_bytes as f64,
        ),
        (
            "iocomp_sent_bytes_total{protocol=\"line\"}",
            line_bytes as f64,
        ),
        ("iocomp_request_duration_seconds_count", 10.0),
        ("iocomp_request_duration_seconds_bucket{le=\"+Inf\"}", 10.0),
        ("iocomp_connections_active", 0.0),
        ("iocomp_metrics_connections_active", 1.0),
        ("iocomp_transfers_active", 0.0),
        ("iocomp_errors_total{kind=\"per_ip_limit\"}", 0.0),
        ("iocomp_errors_total{kind=\"timeout\"}", 0.0),
    ];
    for (name, value) in expect {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    }
    let statuses = text
        .lines()
        .filter(|l| l.starts_with("iocomp_requests_total{"))
        .count();
    assert_eq!(statuses, 6, "only the statuses the test caused:\n{text}");
    let info = text
        .lines()
        .find(|l| l.starts_with("iocomp_backend_info{backend=\""))
        .expect("a backend info line");
    assert!(info.ends_with("} 1"), "{info}");
    if let Ok(b @ ("epoll" | "uring")) = std::env::var("IOCOMP_BACKEND").as_deref() {
        assert!(
            info.contains(&format!("\"{b}\"")),
            "{info} under IOCOMP_BACKEND={b}"
        );
    }
    let started = sample(&text, "process_start_time_seconds").expect("start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // In-process, the process started with this test binary.
    let age = crate::harness::process_age().as_secs_f64();
    assert!(
        started <= now && started > now - age - 120.0,
        "start {started}, now {now}, process age {age}"
    );
    // Every TYPE line names a metric family that has samples.
    assert!(text.contains("# TYPE iocomp_request_duration_seconds histogram\n"));
    // The status JSON and page, and a 404 on the metrics listener.
    let maddr = srv.metrics_addr();
    let r = raw_get(maddr, "/status.json");
    assert_eq!(status_of(&r), 200);
    let json = String::from_utf8_lossy(body_of(&r)).into_owned();
    assert!(json.contains("\"transfers\":[]"), "{json}");
    let r = raw_get(maddr, "/");
    assert_eq!(status_of(&r), 200);
    assert!(String::from_utf8_lossy(&r).contains("status.json"));
    assert_eq!(
        status_of(&raw_get(maddr, "/small.txt")),
        404,
        "no files there"
    );
}

#[test]
fn a_stalled_client_does_not_block_a_scrape() {
    let _timed = timed();
    let tree = Tree::new("stalledscrape");
    tree.file("small.txt", b"x\n");
    let srv = tree.serve(with_metrics);
    let maddr = srv.metrics_addr();
    // Clients that connect and stall: silent, half a request line, half a head.
    let mut stalled: Vec<TcpStream> = (0..3).map(|_| connect(maddr)).collect();
    stalled[1].write_all(b"GET /metr").unwrap();
    stalled[2]
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let r = raw_get(maddr, "/metrics");
    assert_eq!(status_of(&r), 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a scrape behind stalled clients took {:?}",
        start.elapsed()
    );
    let text = String::from_utf8_lossy(body_of(&r)).into_owned();
    assert_eq!(
        sample(&text, "iocomp_metrics_connections_active"),
        Some(4.0),
        "three stalled and the scrape's own:\n{text}"
    );
    // The file port is not disturbed either.
    assert_eq!(srv.lines(&[b"small.txt"]), b"x\n");
}

/// `dir/slow file.bin` (4 MiB) served at 1 MiB/s with a metrics listener.
fn slow_site(tree: &Tree, seed: u64) -> (Running, Vec<u8>) {
    let content = pseudo_random(seed, 4 * MIB);
    tree.file("dir/slow file.bin", &content);
    let srv = tree.serve(|c| {
        c.rate_limit = MIB as u64;
        with_metrics(c);
    });
    (srv, content)
}

#[test]
fn status_json_shows_a_paced_transfer() {
    let _timed = timed();
    let tree = Tree::new("statusline");
    let (srv, content) = slow_site(&tree, 11);
    let mut s = srv.connect();
    send(&mut s, &line(b"dir/slow file.bin"));
    let reader =
        thread::spawn(move || read_exact_timeout(&mut s, 4 * MIB, Duration::from_secs(20)));
    let mut seen = Vec::new();
    for _ in 0..2 {
        thread::sleep(Duration::from_millis(700));
        let json = String::from_utf8_lossy(body_of(&raw_get(srv.metrics_addr(), "/status.json")))
            .into_owned();
        assert!(json.contains("\"file\":\"dir/slow file.bin\""), "{json}");
        assert!(json.contains(&format!("\"size\":{}", 4 * MIB)), "{json}");
        assert!(json.contains("\"client\":\"127.0.0.1:"), "{json}");
        let sent: u64 = json
            .split("\"sent\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no sent in {json}"));
        seen.push(sent);
    }
    assert!(seen[0] > 0 && seen[1] > seen[0], "progress moves: {seen:?}");
    assert!(
        seen[1] < 4 * MIB as u64,
        "still in progress at 1.4 s: {seen:?}"
    );
    let got = reader.join().expect("reader");
    assert_eq!(got.len(), content.len());
}

/// An HTTP download in progress is listed by its file's name on the status
/// page, as a line-protocol one is.
#[test]
fn status_json_shows_a_paced_http_transfer_by_name() {
    let _timed = timed();
    let tree = Tree::new("statushttp");
    let (srv, content) = slow_site(&tree, 12);
    let mut s = srv.connect();
    send(
        &mut s,
        b"GET /dir/slow%20file.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let reader = thread::spawn(move || read_to_end_timeout(&mut s, Duration::from_secs(60)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json = String::from_utf8_lossy(body_of(&raw_get(srv.metrics_addr(), "/status.json")))
            .into_owned();
        if json.contains("\"file\":\"/dir/slow file.bin\"") {
            assert!(json.contains(&format!("\"size\":{}", 4 * MIB)), "{json}");
            break;
        }
        assert!(Instant::now() < deadline, "never listed: {json}");
        thread::sleep(Duration::from_millis(50));
    }
    let got = reader.join().expect("reader");
    assert_eq!(status_of(&got), 200);
    assert!(body_of(&got) == content, "the body differs");
}
