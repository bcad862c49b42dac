//! No descriptor leaks: after mixed traffic on both protocols (pipelines,
//! ranges, listings, errors, clients that vanish mid-transfer or mid-head,
//! Python and curl), the descriptors return to their baseline. Each test
//! runs alone in a child process ([`isolated`]), so that the process's
//! descriptors are the server's and its own clients' only.

use std::io::Read;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::harness::client::{
    connect, line, read_exact_timeout, read_to_end_timeout, req, send, set_linger_zero,
};
use crate::harness::run::{curl, python, PY_CLIENT};
use crate::harness::{
    assert_bytes_eq, assert_fds_back_to, fd_count, isolated, join_all, pseudo_random, Tree,
    IO_TIMEOUT, MIB,
};
use crate::line_protocol::{bad_inputs_tree, parse_error_lines};

const LIMIT: Duration = Duration::from_secs(240);
const OK_CONTENT: &[u8] = b"ok.txt: the reference file\n";

#[test]
fn descriptors_return_to_baseline_after_mixed_http_traffic() {
    isolated(
        concat!(
            module_path!(),
            "::descriptors_return_to_baseline_after_mixed_http_traffic"
        ),
        LIMIT,
        || {
            let tree = Tree::new("fds-http");
            let big = pseudo_random(111, 3 * MIB);
            tree.file("big.bin", &big)
                .file("small.txt", b"small")
                .file("small.txt.gz", b"not really gzip")
                .file("dir/index.html", b"<p>i</p>")
                .file("list/one", b"1");
            let srv = tree.serve(|_| {});
            let baseline = fd_count();
            // Pipelined, ranges, multipart, HEAD, 304, listings, redirects.
            let mut c = srv.client();
            let batch: Vec<u8> = [
                req("GET", "/small.txt", &[]),
                req("HEAD", "/big.bin", &[]),
                req("GET", "/big.bin", &[("Range", "bytes=0-9,100-199")]),
                req("GET", "/small.txt", &[("If-None-Match", "*")]),
                req("GET", "/small.txt", &[("Accept-Encoding", "gzip")]),
                req("GET", "/list/", &[]),
                req("GET", "/dir", &[]),
                req("GET", "/dir/", &[]),
                req("GET", "/big.bin", &[]),
            ]
            .concat();
            c.send(&batch);
            for (i, want) in [200, 200, 206, 304, 200, 200, 301, 200, 200]
                .into_iter()
                .enumerate()
            {
                c.response(i == 1)
                    .assert_status(want, &format!("mixed request {i}"));
            }
            drop(c);
            // Clients that go away mid-transfer, mid-head, or after a bad request.
            for _ in 0..5 {
                let mut c = srv.client();
                c.send(&req("GET", "/big.bin", &[]));
                let _ = c.stream.read(&mut [0u8; 1024]);
                set_linger_zero(&c.stream);
                drop(c);
                let mut c = srv.client();
                c.send(b"GET /big.bin HTTP/1.1\r\nHo");
                drop(c);
                let mut c = srv.client();
                // HTTP/1.1 without Host (RFC 9112 §3.2): 400.
                c.send(b"GET / HTTP/1.1\r\n\r\n");
                c.response(false)
                    .assert_status(400, "HTTP/1.1 request without Host");
            }
            // Python and curl.
            let port = srv.addr.port().to_string();
            python(PY_CLIENT, &[&port, "/small.txt", "/dir/"], None);
            let o = curl(&[
                "--range",
                "0-9",
                "-o",
                "-",
                &format!("http://{}/big.bin", srv.addr),
            ]);
            assert_bytes_eq(&o.stdout, &big[..10], "curl --range 0-9");
            assert_fds_back_to(baseline);
        },
    );
}

/// Requests `name`, checks the first `keep` bytes against `content`, then
/// drops the connection in one of several abrupt ways.
fn vanish(addr: SocketAddr, name: &[u8], content: &[u8], keep: usize, style: usize) {
    let mut stream = connect(addr);
    send(&mut stream, &line(name));
    let got = read_exact_timeout(&mut stream, keep, IO_TIMEOUT);
    assert_bytes_eq(&got, &content[..keep], "prefix before vanishing");
    match style % 3 {
        0 => set_linger_zero(&stream), // RST on drop
        1 => {
            // FIN first; the drop with unread data then resets.
            let _ = stream.shutdown(Shutdown::Write);
        }
        _ => {} // plain close with unread data
    }
}

#[test]
fn clients_vanishing_mid_transfer_leave_nothing_behind() {
    isolated(
        concat!(
            module_path!(),
            "::clients_vanishing_mid_transfer_leave_nothing_behind"
        ),
        LIMIT,
        || {
            let tree = Tree::new("fds-vanish");
            let big = Arc::new(pseudo_random(32, 32 << 20));
            tree.file("big.bin", &big);
            let srv = tree.serve(|_| {});
            let baseline = fd_count();
            let addr = srv.addr;
            let handles: Vec<_> = (0..10)
                .map(|i| {
                    let big = Arc::clone(&big);
                    thread::spawn(move || vanish(addr, b"big.bin", &big, 2048 + i * 1500, i))
                })
                .collect();
            let (_, failed) = join_all(handles);
            assert!(failed.is_empty(), "vanishing clients failed: {failed:?}");
            let got = srv.lines(&[b"big.bin"]);
            assert_bytes_eq(&got, &big, "full 32 MiB fetch after vanishing clients");
            assert_fds_back_to(baseline);
        },
    );
}

/// One connection asking for every kind of error at once.
fn every_error(addr: SocketAddr) {
    let names: [&[u8]; 9] = [
        b"missing",
        b"../x",
        b"a\0b",
        b"sub",
        b"fifo",
        b".secret",
        b"",
        b"rel",
        b"dangling",
    ];
    let mut stream = connect(addr);
    let mut request = [&[b'y'; 5000][..], b"\n"].concat();
    for name in names {
        request.extend_from_slice(&line(name));
    }
    send(&mut stream, &request);
    stream.shutdown(Shutdown::Write).expect("half-close");
    let reply = read_to_end_timeout(&mut stream, IO_TIMEOUT);
    let reasons = parse_error_lines(&reply);
    assert_eq!(
        reasons,
        [
            "line too long",
            "not found",
            "forbidden",
            "bad name",
            "not a regular file",
            "not a regular file",
            "forbidden",
            "bad name",
            "forbidden",
            "not found"
        ]
    );
}

#[test]
fn no_descriptor_leak_after_mixed_line_protocol_traffic() {
    isolated(
        concat!(
            module_path!(),
            "::no_descriptor_leak_after_mixed_line_protocol_traffic"
        ),
        LIMIT,
        || {
            let tree = bad_inputs_tree("fds-line");
            let big = Arc::new(pseudo_random(4, 4 << 20));
            tree.file("big.bin", &big);
            let srv = tree.serve(|_| {});
            let baseline = fd_count();
            let addr = srv.addr;
            let mut handles = Vec::new();
            for i in 0..4 {
                let big = Arc::clone(&big);
                handles.push(thread::spawn(move || {
                    let mut s = connect(addr);
                    send(&mut s, b"ok.txt\nbig.bin\nlink\n");
                    s.shutdown(Shutdown::Write).expect("half-close");
                    let got = read_to_end_timeout(&mut s, IO_TIMEOUT * 3);
                    let want = [OK_CONTENT, &big[..], OK_CONTENT].concat();
                    assert_bytes_eq(&got, &want, &format!("good fetch {i}"));
                }));
            }
            handles.push(thread::spawn(move || every_error(addr)));
            for i in 0..4 {
                let big = Arc::clone(&big);
                handles.push(thread::spawn(move || {
                    vanish(addr, b"big.bin", &big, 4096 + i * 777, i)
                }));
            }
            // Clients that connect and leave without a full request.
            handles.push(thread::spawn(move || {
                drop(connect(addr)); // nothing sent
                let mut s = connect(addr);
                send(&mut s, b"ok.t"); // partial line, then a full close
                drop(s);
                let s = connect(addr);
                set_linger_zero(&s); // nothing sent, reset
            }));
            let (_, failed) = join_all(handles);
            assert!(failed.is_empty(), "traffic threads failed: {failed:?}");
            assert_fds_back_to(baseline);
            // Still fully working afterwards.
            assert_bytes_eq(
                &srv.lines(&[b"ok.txt"]),
                OK_CONTENT,
                "fetch after mixed traffic",
            );
            assert_fds_back_to(baseline);
        },
    );
}
