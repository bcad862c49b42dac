//! Traffic controls and observability, end to end through the real binary:
//! `--rate-limit`/`--rate-limit-after` on both protocols (zero-copy bodies
//! included), `--max-conns-per-ip`, and the `--metrics` listener's
//! `/metrics` and `/status.json`.

mod common;

use common::{connect, connect_from, line, read_exact_timeout, read_to_end_timeout, send};
use common::{pseudo_random, Server, TempTree};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// The rate-limited downloads: 10 MiB at 3 MiB/s after a 1 MiB burst, at
/// least 3 s each.
const SIZE: usize = 10 * MIB;
const RATE: usize = 3 * MIB;
const BURST: usize = MIB;

/// The metrics listener's address, from the server's `metrics on ADDR` line.
fn metrics_addr(server: &Server) -> SocketAddr {
    let l = server
        .wait_stdout_line(Duration::from_secs(10), |l| l.starts_with("metrics on "))
        .expect("a `metrics on ADDR` line");
    l["metrics on ".len()..].trim().parse().expect("an address")
}

/// One HTTP/1.1 request with `Connection: close`; the raw response.
fn http(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut s = connect(addr);
    send(&mut s, request.as_bytes());
    read_to_end_timeout(&mut s, Duration::from_secs(20))
}

fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
}

/// The status code of a raw response.
fn status_of(resp: &[u8]) -> u16 {
    std::str::from_utf8(&resp[9..12.min(resp.len())])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {:?}", common::show(resp)))
}

/// The body of a raw response.
fn body_of(resp: &[u8]) -> &[u8] {
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    &resp[at + 4..]
}

/// The value of the sample line `name` (with its labels) in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn rate_limited_server(tree: &TempTree, content: &[u8]) -> Server {
    tree.file("big.bin", content);
    Server::start(
        tree.root(),
        &[
            "--rate-limit",
            "3M",
            "--rate-limit-after",
            "1m",
            // Paced waits must never count as a stalled transfer.
            "--send-timeout",
            "1s",
        ],
    )
}

/// Asserts a download of SIZE bytes took between (SIZE − BURST) / RATE and
/// 1.5 times that.
fn assert_paced(took: Duration, what: &str) {
    let floor = Duration::from_secs_f64((SIZE - BURST) as f64 / RATE as f64);
    assert!(
        took >= floor,
        "{what}: {took:?} is faster than the limit allows ({floor:?})"
    );
    assert!(
        took <= floor.mul_f64(1.5),
        "{what}: {took:?} is over 1.5 × the paced time ({floor:?})"
    );
    eprintln!("{what}: {took:?} (floor {floor:?})");
}

#[test]
fn http_download_is_paced_to_the_rate_limit() {
    let tree = TempTree::new();
    let content = pseudo_random(9, SIZE);
    let server = rate_limited_server(&tree, &content);
    let start = Instant::now();
    let resp = get(server.addr(), "/big.bin");
    let took = start.elapsed();
    assert_eq!(status_of(&resp), 200);
    common::assert_bytes_eq(body_of(&resp), &content, "rate-limited HTTP body");
    assert_paced(took, "HTTP");
}

#[test]
fn line_download_is_paced_to_the_rate_limit() {
    let tree = TempTree::new();
    let content = pseudo_random(10, SIZE);
    let server = rate_limited_server(&tree, &content);
    let mut s = connect(server.addr());
    let start = Instant::now();
    send(&mut s, &line(b"big.bin"));
    let got = read_exact_timeout(&mut s, SIZE, Duration::from_secs(20));
    let took = start.elapsed();
    common::assert_bytes_eq(&got, &content, "rate-limited line-protocol file");
    assert_paced(took, "line protocol");
    // The burst is per reply: a second file on the same connection starts
    // with a fresh one, and the connection still works.
    send(&mut s, &line(b"big.bin"));
    let start = Instant::now();
    let first = read_exact_timeout(&mut s, BURST / 2, Duration::from_secs(20));
    assert!(start.elapsed() < Duration::from_millis(900));
    assert_eq!(first, content[..BURST / 2]);
}

#[test]
fn metrics_count_exactly_what_clients_did() {
    let tree = TempTree::new();
    tree.file("small.txt", b"hello, metrics\n");
    tree.file("data.bin", &pseudo_random(3, 100_000));
    let server = Server::start(tree.root(), &["--metrics", "127.0.0.1:0"]);
    let maddr = metrics_addr(&server);
    let addr = server.addr();

    let mut http_bytes = 0;
    let mut want = Vec::new();
    for (path, status) in [
        ("/small.txt", 200),
        ("/small.txt", 200),
        ("/data.bin", 200),
        ("/nope", 404),
        ("/nope2", 404),
        ("/.hidden", 403),
    ] {
        let r = get(addr, path);
        assert_eq!(status_of(&r), status, "{path}");
        http_bytes += r.len();
        want.push(status);
    }
    let r = http(
        addr,
        "GET /data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-99\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 206);
    http_bytes += r.len();
    let mut line_bytes = 0;
    for (name, n) in [(&b"small.txt"[..], 2), (b"nothing-here", 1)] {
        for _ in 0..n {
            let got = common::fetch(addr, &[name]);
            line_bytes += got.len();
        }
    }
    assert_eq!(line_bytes, 2 * 15 + common::error_line("not found").len());

    // A request is counted when its reply's last operation completes, which
    // may be just after the client has read it: poll for the total.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let r = get(maddr, "/metrics");
        assert_eq!(status_of(&r), 200);
        let text = String::from_utf8(body_of(&r).to_vec()).expect("UTF-8 exposition");
        let count = sample(&text, "iocomp_request_duration_seconds_count").unwrap_or(0.0);
        let conns = sample(&text, "iocomp_connections_active").unwrap_or(-1.0);
        if (count >= 10.0 && conns == 0.0) || Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(50));
    };
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
    let other_statuses = text
        .lines()
        .filter(|l| l.starts_with("iocomp_requests_total{"))
        .count();
    assert_eq!(
        other_statuses, 6,
        "only the statuses the test caused:\n{text}"
    );
    let backend = match std::env::var("IOCOMP_BACKEND").as_deref() {
        Ok("epoll") => Some("epoll"),
        Ok("uring") => Some("uring"),
        _ => None,
    };
    let info = text
        .lines()
        .find(|l| l.starts_with("iocomp_backend_info{backend=\""))
        .expect("a backend info line");
    assert!(info.ends_with("} 1"), "{info}");
    if let Some(b) = backend {
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
    assert!(
        started <= now && started > now - 120.0,
        "start {started}, now {now}"
    );
    // Every TYPE line names a metric family that has samples.
    assert!(text.contains("# TYPE iocomp_request_duration_seconds histogram\n"));

    // The status JSON and page, and a 404 on the metrics listener.
    let r = get(maddr, "/status.json");
    assert_eq!(status_of(&r), 200);
    let json = String::from_utf8_lossy(body_of(&r)).into_owned();
    assert!(json.contains("\"transfers\":[]"), "{json}");
    let r = get(maddr, "/");
    assert_eq!(status_of(&r), 200);
    assert!(String::from_utf8_lossy(&r).contains("status.json"));
    assert_eq!(status_of(&get(maddr, "/small.txt")), 404, "no files there");
}

#[test]
fn max_conns_per_ip_refuses_the_extra_ones_only() {
    let tree = TempTree::new();
    tree.file("small.txt", b"per ip\n");
    let server = Server::start(
        tree.root(),
        &["--max-conns-per-ip", "2", "--metrics", "127.0.0.1:0"],
    );
    let addr = server.addr();
    let maddr = metrics_addr(&server);
    let local = Ipv4Addr::LOCALHOST;
    let mut a = connect_from(addr, local);
    let mut b = connect_from(addr, local);
    // Both are served, so the server has counted them before the third.
    for s in [&mut a, &mut b] {
        send(s, &line(b"small.txt"));
        assert_eq!(
            read_exact_timeout(s, 7, Duration::from_secs(10)),
            b"per ip\n"
        );
    }

    // The third from the same address: HTTP gets 503 with Retry-After.
    let mut c = connect_from(addr, local);
    send(&mut c, b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = read_to_end_timeout(&mut c, Duration::from_secs(10));
    assert_eq!(status_of(&resp), 503, "{}", common::show(&resp));
    let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    assert!(text.contains("\r\nretry-after: 1\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    // ... and the line protocol gets the busy line; both are closed.
    let mut d = connect_from(addr, local);
    send(&mut d, &line(b"small.txt"));
    let got = read_to_end_timeout(&mut d, Duration::from_secs(10));
    assert_eq!(got, common::error_line("busy"));

    // Another address is not disturbed, nor are the two connections in.
    let mut e = connect_from(addr, Ipv4Addr::new(127, 0, 0, 2));
    send(&mut e, &line(b"small.txt"));
    assert_eq!(
        read_exact_timeout(&mut e, 7, Duration::from_secs(10)),
        b"per ip\n"
    );
    send(&mut a, &line(b"small.txt"));
    assert_eq!(
        read_exact_timeout(&mut a, 7, Duration::from_secs(10)),
        b"per ip\n"
    );

    // Once one closes, the address may connect again.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut f = connect_from(addr, local);
        send(&mut f, &line(b"small.txt"));
        let got = read_exact_timeout(&mut f, 7, Duration::from_secs(10));
        if got == b"per ip\n" {
            break;
        }
        assert_eq!(got, &common::error_line("busy")[..7]);
        assert!(
            Instant::now() < deadline,
            "the closed connection was never counted out"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let r = get(maddr, "/metrics");
    let text = String::from_utf8_lossy(body_of(&r)).into_owned();
    let refused = sample(&text, "iocomp_errors_total{kind=\"per_ip_limit\"}").unwrap_or(0.0);
    assert!(refused >= 2.0, "{text}");
}

#[test]
fn a_stalled_client_does_not_block_a_scrape() {
    let tree = TempTree::new();
    tree.file("small.txt", b"x\n");
    let server = Server::start(tree.root(), &["--metrics", "127.0.0.1:0"]);
    let maddr = metrics_addr(&server);
    // Clients that connect and stall: silent, half a request line, half a head.
    let mut stalled: Vec<TcpStream> = (0..3).map(|_| connect(maddr)).collect();
    stalled[1].write_all(b"GET /metr").unwrap();
    stalled[2]
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let r = get(maddr, "/metrics");
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
    assert_eq!(common::fetch(server.addr(), &[b"small.txt"]), b"x\n");
    drop(stalled);
}

#[test]
fn status_json_shows_a_paced_transfer() {
    let tree = TempTree::new();
    let content = pseudo_random(11, 4 * MIB);
    tree.file("dir/slow file.bin", &content);
    let server = Server::start(
        tree.root(),
        &["--rate-limit", "1M", "--metrics", "127.0.0.1:0"],
    );
    let maddr = metrics_addr(&server);
    let mut s = connect(server.addr());
    send(&mut s, &line(b"dir/slow file.bin"));
    let reader =
        thread::spawn(move || read_exact_timeout(&mut s, 4 * MIB, Duration::from_secs(20)));
    let mut seen = Vec::new();
    for _ in 0..2 {
        thread::sleep(Duration::from_millis(700));
        let json = String::from_utf8_lossy(body_of(&get(maddr, "/status.json"))).into_owned();
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
    let tree = TempTree::new();
    let content = pseudo_random(12, 4 * MIB);
    tree.file("dir/slow file.bin", &content);
    let server = Server::start(
        tree.root(),
        &["--rate-limit", "1M", "--metrics", "127.0.0.1:0"],
    );
    let maddr = metrics_addr(&server);
    let mut s = connect(server.addr());
    send(
        &mut s,
        b"GET /dir/slow%20file.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let reader = thread::spawn(move || read_to_end_timeout(&mut s, Duration::from_secs(60)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json = String::from_utf8_lossy(body_of(&get(maddr, "/status.json"))).into_owned();
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
