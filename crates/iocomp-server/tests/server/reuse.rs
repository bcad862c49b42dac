//! What a connection leaves behind for the next (issue 18 cut a connection's state from
//! 360 to 184 bytes): the access-log record is boxed and recycled per worker,
//! so a record reused for the next request (on the same connection or
//! another) must carry nothing of the previous one into the log; the
//! per-address count of `--max-conns-per-ip` is now released under the
//! peer's address as kept in the connection, so an IPv4-mapped peer
//! (`::ffff:127.0.0.1`, as a dual-stack listener passed in sees IPv4
//! clients) must be counted in and out as the same address.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iocomp_server::{AccessLogFormat, LogFile};

use crate::harness::client::{connect, line, read_exact_timeout, read_to_end_timeout, req, send};
use crate::harness::{error_line, log_lines, poll_until, pseudo_random, Tree};

/// One worker, so that every request's record comes from the same spares:
/// A (referer and agent, 3,000 bytes), B (404, neither header), C (agent
/// only), D (referer only) on one keep-alive connection; E (nothing) on a
/// new connection; F a line-protocol request. Each line shows its own
/// fields only.
#[test]
fn a_recycled_log_record_carries_nothing_of_the_previous_request() {
    let tree = Tree::new("reuselog");
    let f = pseudo_random(18, 3000);
    tree.file("f.bin", &f)
        .file("c.txt", b"c\n")
        .file("d.txt", b"d\n")
        .file("e.txt", b"e\n")
        .file("l.txt", b"l\n");
    let log = tree.base().join("access.log");
    let file = LogFile::open(&log).expect("open the access log");
    let srv = tree.serve(|c| {
        c.access_log = AccessLogFormat::Combined;
        c.access_log_file = Some(file);
        c.threads = 1;
    });
    let mut c = srv.client();
    let mut batch = req(
        "GET",
        "/f.bin",
        &[
            ("Referer", "http://ref.example/a"),
            ("User-Agent", "probe-agent/1"),
        ],
    );
    batch.extend_from_slice(&req("GET", "/missing.txt", &[]));
    batch.extend_from_slice(&req("GET", "/c.txt", &[("User-Agent", "probe-agent/2")]));
    batch.extend_from_slice(&req(
        "GET",
        "/d.txt",
        &[("Referer", "http://ref.example/d")],
    ));
    c.send(&batch);
    c.response(false).assert_status(200, "A");
    c.response(false).assert_status(404, "B");
    c.response(false).assert_status(200, "C");
    c.response(false).assert_status(200, "D");
    drop(c);
    // F right after D's record went back to the spares (D had a referer).
    assert_eq!(srv.lines(&[b"l.txt"]), b"l\n");
    let r = srv.request("GET", "/e.txt", &[]);
    r.assert_status(200, "E");
    // G with both headers, then a request refused at parsing (H: no
    // headers are read from it) on the same connection.
    let mut c = srv.client();
    let mut batch = req(
        "GET",
        "/c.txt",
        &[
            ("Referer", "http://ref.example/g"),
            ("User-Agent", "probe-agent/g"),
        ],
    );
    batch.extend_from_slice(b"GET /h.txt HTTP/9.9\r\nHost: t\r\nUser-Agent: x\r\n\r\n");
    c.send(&batch);
    c.response(false).assert_status(200, "G");
    let h = c.try_response(false);
    assert!(h.as_ref().map_or(true, |r| r.status >= 400), "H is refused");
    drop(c);
    let expect = [
        "\"GET /f.bin HTTP/1.1\" 200 3000 \"http://ref.example/a\" \"probe-agent/1\"",
        "\"GET /c.txt HTTP/1.1\" 200 2 \"-\" \"probe-agent/2\"",
        "\"GET /d.txt HTTP/1.1\" 200 2 \"http://ref.example/d\" \"-\"",
        "\"GET /e.txt HTTP/1.1\" 200 2 \"-\" \"-\"",
        "\"l.txt\" 200 2 \"-\" \"-\"",
    ];
    let missing = "\"GET /missing.txt HTTP/1.1\" 404 ";
    let refused = "HTTP/9.9";
    poll_until(Duration::from_secs(10), || {
        let lines = log_lines(&log);
        lines.iter().any(|l| l.contains(missing))
            && lines.iter().any(|l| l.contains(refused))
            && expect.iter().all(|p| lines.iter().any(|l| l.ends_with(p)))
    });
    let lines = log_lines(&log);
    let mut problems = Vec::new();
    for p in expect {
        if lines.iter().filter(|l| l.ends_with(p)).count() != 1 {
            problems.push(format!("no single line ending in {p}"));
        }
    }
    match lines.iter().find(|l| l.contains(missing)) {
        Some(l) => {
            if !l.ends_with(" \"-\" \"-\"") || l.contains(" 3000 ") {
                problems.push(format!("B carries A's fields: {l}"));
            }
        }
        None => problems.push("no line for B".into()),
    }
    match lines.iter().find(|l| l.contains(refused)) {
        Some(l) if l.ends_with(" \"-\" \"-\"") => {}
        Some(l) => problems.push(format!("H carries G's fields: {l}")),
        None => problems.push("no line for H".into()),
    }
    assert!(
        problems.is_empty(),
        "{}\nlog:\n{}",
        problems.join("\n"),
        lines.join("\n")
    );
}

/// `--max-conns-per-ip 1` on a dual-stack listener passed in (`[::]`,
/// `IPV6_V6ONLY` off, as systemd may pass one): IPv4 clients arrive as
/// `::ffff:127.0.0.1`. The second such connection is refused (`busy`), one
/// from `::1` is not, and each time the one connection closes the address
/// may connect again (it was counted out under the address it was counted
/// in), five times over.
#[test]
fn per_ip_limit_counts_ipv4_mapped_peers_in_and_out() {
    let l = TcpListener::bind("[::]:0").expect("a dual-stack listener on [::]");
    let port = l.local_addr().unwrap().port();
    let tree = Tree::new("reuseperip");
    tree.file("small.txt", b"per ip\n");
    let _srv = tree.serve(|c| {
        c.binds = vec![];
        c.listeners = vec![Arc::new(l)];
        c.max_conns_per_ip = 1;
    });
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let served = |s: &mut TcpStream| {
        send(s, &line(b"small.txt"));
        read_exact_timeout(s, 7, Duration::from_secs(10))
    };
    let mut a = connect(v4);
    assert_eq!(
        served(&mut a),
        b"per ip\n",
        "the first IPv4 client through [::]"
    );
    let mut b = connect(v4);
    send(&mut b, &line(b"small.txt"));
    assert_eq!(
        read_to_end_timeout(&mut b, Duration::from_secs(10)),
        error_line("busy"),
        "a second ::ffff:127.0.0.1 connection is over the limit"
    );
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let mut c6 = connect(v6);
    assert_eq!(served(&mut c6), b"per ip\n", "::1 is another address");
    drop(c6);
    let mut held = a;
    for round in 0..5 {
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        held = loop {
            let mut s = connect(v4);
            let got = served(&mut s);
            if got == b"per ip\n" {
                break s;
            }
            assert_eq!(got, &error_line("busy")[..7], "round {round}");
            assert!(
                Instant::now() < deadline,
                "round {round}: the closed ::ffff:127.0.0.1 connection was never counted out"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // And the limit still holds while that one is open.
        let mut extra = connect(v4);
        send(&mut extra, &line(b"small.txt"));
        assert_eq!(
            read_to_end_timeout(&mut extra, Duration::from_secs(10)),
            error_line("busy"),
            "round {round}: the limit no longer holds"
        );
    }
}
