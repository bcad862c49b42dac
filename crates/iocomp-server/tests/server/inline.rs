//! Pipelined requests and replies of every size (written for the
//! skip-on-success experiment, which the server does not use: every reply's
//! send completes through the port). A pipelining client gets every reply in
//! order and complete (thousands of them, while other clients are served),
//! `Connection: close` and HTTP/1.0 end the connection where they stand in
//! the pipeline, every request is logged and counted exactly once whether its
//! reply fits the socket buffer or not, and a client that does not read (its
//! send buffer full) still gets every byte.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use iocomp_server::{AccessLogFormat, LogFile};

use crate::harness::client::{
    body_of, connect_with_rcvbuf, line, raw_get, read_to_end_timeout, req, status_of, Client,
};
use crate::harness::{assert_bytes_eq, log_lines, poll_until, pseudo_random, Tree, IO_TIMEOUT};

/// Small files of distinct sizes and contents: `f0` … `f7`.
fn small_files(tree: &Tree) -> Vec<Vec<u8>> {
    (0..8u64)
        .map(|i| {
            let body = pseudo_random(100 + i, 1 + 300 * i as usize);
            tree.file(&format!("f{i}"), &body);
            body
        })
        .collect()
}

/// Which file the `i`-th request of a pipeline asks for: varied, so that a
/// reply out of order or repeated shows.
fn pick(i: usize) -> usize {
    (i * 5 + i / 8) % 8
}

/// Writes `bytes` on a clone of `stream` from a thread of its own, so that the
/// caller can read the replies meanwhile (the server stops reading when its
/// send buffer is full).
fn write_behind(stream: &TcpStream, bytes: Vec<u8>) -> thread::JoinHandle<()> {
    let mut w = stream.try_clone().expect("clone the socket");
    thread::spawn(move || {
        w.write_all(&bytes).expect("write the pipeline");
    })
}

#[test]
fn ten_thousand_pipelined_gets_are_answered_in_order_while_others_are_served() {
    const N: usize = 10_000;
    /// Where the pipelining client stops reading until the others are served.
    const PAUSE_AT: usize = 100;
    let tree = Tree::new("inline-pipe");
    let files = small_files(&tree);
    // One worker: the other clients share it with the pipelining one.
    let srv = tree.serve(|c| c.threads = 1);
    // A small receive buffer: the replies (about 12 MB) back up into the
    // server while this client does not read.
    let stream = connect_with_rcvbuf(srv.addr, 16 << 10);
    let batch: Vec<u8> = (0..N)
        .flat_map(|i| req("GET", &format!("/f{}", pick(i)), &[]))
        .collect();
    thread::scope(|s| {
        let others = s.spawn(|| {
            for k in 0..20 {
                let r = srv.get(&format!("/f{}", k % 8), &[]);
                r.assert_status(200, "a GET of another client");
                assert_bytes_eq(&r.body, &files[k % 8], "another client's GET");
            }
        });
        let writer = write_behind(&stream, batch);
        let mut c = Client::new(stream.try_clone().unwrap());
        let mut body_bytes = 0;
        for i in 0..N {
            if i == PAUSE_AT {
                // The pipeline's replies cannot all be in the socket
                // buffers: while this client stops reading, the
                // server's one worker must serve the others, not wait on this
                // connection.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !others.is_finished() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                assert!(
                    others.is_finished(),
                    "the other clients' 20 GETs were not served within 60 s \
                     while the pipelining client had read {i} of {N} replies"
                );
            }
            let r = c
                .try_response(false)
                .unwrap_or_else(|e| panic!("pipelined reply {i} of {N}: {e}"));
            r.assert_status(200, &format!("pipelined GET {i}"));
            assert_bytes_eq(&r.body, &files[pick(i)], &format!("pipelined GET {i}"));
            body_bytes += r.body.len();
        }
        writer.join().expect("the writer");
        assert_eq!(
            body_bytes,
            (0..N).map(|i| files[pick(i)].len()).sum::<usize>()
        );
        assert!(
            c.buf.is_empty(),
            "bytes after the last reply: {}",
            c.buf.len()
        );
        others.join().expect("the other clients were served");
        // The connection still works after the pipeline.
        c.send(&req("GET", "/f7", &[]));
        assert_bytes_eq(&c.response(false).body, &files[7], "GET after the pipeline");
    });
}

#[test]
fn ten_thousand_pipelined_lines_are_answered_in_order() {
    const N: usize = 10_000;
    let tree = Tree::new("inline-lines");
    let files = small_files(&tree);
    let srv = tree.serve(|c| c.threads = 1);
    let mut stream = srv.connect();
    let batch: Vec<u8> = (0..N)
        .flat_map(|i| line(format!("f{}", pick(i)).as_bytes()))
        .collect();
    let writer = write_behind(&stream, batch);
    writer.join().expect("the writer");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let got = read_to_end_timeout(&mut stream, IO_TIMEOUT * 2);
    let want: Vec<u8> = (0..N).flat_map(|i| files[pick(i)].clone()).collect();
    assert_bytes_eq(&got, &want, "10,000 pipelined line-protocol replies");
}

#[test]
fn connection_close_and_http_1_0_end_the_pipeline_where_they_stand() {
    let tree = Tree::new("inline-close");
    let files = small_files(&tree);
    let srv = tree.serve(|_| {});
    // 1.1: 40 keep-alive GETs, one with `Connection: close`, 40 more that
    // must go unanswered.
    let mut c = srv.client();
    let mut batch = Vec::new();
    for i in 0..81 {
        let close = [("Connection", "close")];
        let headers: &[(&str, &str)] = if i == 40 { &close } else { &[] };
        batch.extend_from_slice(&req("GET", &format!("/f{}", pick(i)), headers));
    }
    c.send(&batch);
    for i in 0..=40 {
        let r = c.response(false);
        r.assert_status(200, &format!("GET {i} before the close"));
        assert_bytes_eq(
            &r.body,
            &files[pick(i)],
            &format!("GET {i} before the close"),
        );
        let says_close = r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        assert_eq!(
            says_close,
            i == 40,
            "Connection: close on reply {i}:\n{r:?}"
        );
    }
    // The server closed it (EOF read here); then this side closes too, so
    // that the server does not wait for its idle timeout.
    c.expect_closed("after the reply to `Connection: close`");
    drop(c);

    // 1.0: keep-alive GETs, then one without keep-alive, then more.
    let mut c = srv.client();
    let mut batch = Vec::new();
    for i in 0..30 {
        let ka = if i == 20 {
            ""
        } else {
            "Connection: keep-alive\r\n"
        };
        batch.extend_from_slice(format!("GET /f{} HTTP/1.0\r\n{ka}\r\n", pick(i)).as_bytes());
    }
    c.send(&batch);
    for i in 0..=20 {
        let r = c.response(false);
        assert_bytes_eq(&r.body, &files[pick(i)], &format!("HTTP/1.0 GET {i}"));
    }
    c.expect_closed("after the HTTP/1.0 reply without keep-alive");
    drop(c);
    srv.assert_all_closed("after both pipelines");
}

/// The value of the sample line `name` (with its labels) in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_request_is_logged_and_counted_once_for_small_and_large_replies() {
    const SMALL: usize = 600;
    const LINES: usize = 300;
    let tree = Tree::new("inline-count");
    let files = small_files(&tree);
    // Too large for one send to complete at once: replies that take many
    // sends, among small ones that take one.
    let big = pseudo_random(9, 3 << 20);
    tree.file("big.bin", &big);
    let log = tree.base().join("access.log");
    let file = LogFile::open(&log).expect("open the access log");
    let srv = tree.serve(|c| {
        c.access_log = AccessLogFormat::Clf;
        c.access_log_file = Some(file);
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    });
    // HTTP: small GETs pipelined with large ones among them.
    let stream = srv.connect();
    let mut want_body = 0usize;
    let mut batch = Vec::new();
    for i in 0..SMALL {
        if i % 200 == 100 {
            batch.extend_from_slice(&req("GET", "/big.bin", &[]));
            want_body += big.len();
        }
        batch.extend_from_slice(&req("GET", &format!("/f{}", pick(i)), &[]));
        want_body += files[pick(i)].len();
    }
    let http = SMALL + 3;
    let writer = write_behind(&stream, batch);
    let mut c = Client::new(stream.try_clone().unwrap());
    let mut got_body = 0;
    for i in 0..http {
        let r = c.response(false);
        r.assert_status(200, &format!("HTTP reply {i}"));
        got_body += r.body.len();
    }
    writer.join().unwrap();
    assert_eq!(got_body, want_body, "body bytes the client got");
    drop(c);
    drop(stream);
    // The line protocol: small replies pipelined.
    let names: Vec<Vec<u8>> = (0..LINES)
        .map(|i| format!("f{}", pick(i)).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let got = srv.lines(&refs);
    let line_bytes: usize = (0..LINES).map(|i| files[pick(i)].len()).sum();
    assert_eq!(got.len(), line_bytes, "line-protocol bytes");
    srv.assert_all_closed("after the clients");

    // Metrics: polled until every request is counted, then exact.
    let metric_http = "iocomp_requests_total{protocol=\"http\",status=\"200\"}";
    let metric_line = "iocomp_requests_total{protocol=\"line\",status=\"200\"}";
    let scrape = || {
        let r = raw_get(srv.metrics_addr(), "/metrics");
        assert_eq!(status_of(&r), 200);
        String::from_utf8(body_of(&r).to_vec()).expect("UTF-8 exposition")
    };
    let counted = |t: &str| {
        (
            sample(t, metric_http).unwrap_or(0.0) as usize,
            sample(t, metric_line).unwrap_or(0.0) as usize,
        )
    };
    let mut text = String::new();
    poll_until(Duration::from_secs(10), || {
        text = scrape();
        let (h, l) = counted(&text);
        h >= http && l >= LINES
    });
    assert_eq!(counted(&text), (http, LINES), "requests counted:\n{text}");
    let sent = sample(&text, "iocomp_sent_bytes_total{protocol=\"line\"}").unwrap_or(0.0);
    assert_eq!(sent as usize, line_bytes, "line-protocol bytes counted");

    // The access log: one line per request (polled: it is flushed on a
    // timer), body bytes as the clients got them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = log_lines(&log);
    while lines.len() < http + LINES && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        lines = log_lines(&log);
    }
    // A request logged twice would show now, after a flush more.
    thread::sleep(Duration::from_millis(1500));
    lines = log_lines(&log);
    assert_eq!(lines.len(), http + LINES, "access-log lines");
    let bytes_of = |l: &String| -> usize {
        l.rsplit(' ')
            .next()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0)
    };
    let (http_lines, line_lines): (Vec<&String>, Vec<&String>) =
        lines.iter().partition(|l| l.contains(" HTTP/1.1\""));
    assert_eq!(http_lines.len(), http, "HTTP lines in the access log");
    assert_eq!(
        line_lines.len(),
        LINES,
        "line-protocol lines in the access log"
    );
    assert_eq!(
        http_lines.iter().map(|l| bytes_of(l)).sum::<usize>(),
        want_body,
        "body bytes in the access log"
    );
    assert_eq!(
        line_lines.iter().map(|l| bytes_of(l)).sum::<usize>(),
        line_bytes,
        "line-protocol bytes in the access log"
    );
}

#[test]
fn a_client_that_stops_reading_still_gets_every_reply() {
    const N: usize = 3000;
    let tree = Tree::new("inline-slow");
    let files = small_files(&tree);
    let srv = tree.serve(|c| c.threads = 1);
    // A small receive buffer: the server's send buffer fills soon, and its
    // sends stop completing at once.
    let stream = connect_with_rcvbuf(srv.addr, 4096);
    let batch: Vec<u8> = (0..N)
        .flat_map(|i| req("GET", &format!("/f{}", pick(i)), &[]))
        .collect();
    let writer = write_behind(&stream, batch);
    // Not reading for a while: the replies pile up in the socket buffers.
    thread::sleep(Duration::from_millis(1500));
    // Another client is served meanwhile.
    let r = srv.get("/f5", &[]);
    assert_bytes_eq(&r.body, &files[5], "another client's GET");
    let mut c = Client::new(stream.try_clone().unwrap());
    for i in 0..N {
        let r = c
            .try_response(false)
            .unwrap_or_else(|e| panic!("reply {i} of {N} to the slow reader: {e}"));
        r.assert_status(200, &format!("slow reader's GET {i}"));
        assert_bytes_eq(&r.body, &files[pick(i)], &format!("slow reader's GET {i}"));
    }
    writer.join().unwrap();
}
