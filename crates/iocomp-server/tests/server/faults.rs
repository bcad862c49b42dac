//! Files changing under a transfer: one truncated mid-transfer ends the
//! connection cleanly (and nothing spins on it), one replaced goes on with
//! the old bytes while new requests get the new file, one growing is sent at
//! its length at open, over both protocols. Each test runs alone in a child
//! process for the descriptor count (and the CPU time).

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::client::{
    connect_with_rcvbuf, expect_bytes, read_exact_timeout, read_to_end_timeout, read_until_closed,
    send,
};
use crate::harness::{
    assert_bytes_eq, assert_fds_back_to, cpu_time, fd_count, isolated, pseudo_random, Client,
    Pattern, Running, Tree, Verifier, IO_TIMEOUT, KIB, MIB,
};

const LIMIT: Duration = Duration::from_secs(240);
const OK_CONTENT: &[u8] = b"ok.txt: the small file of the fault tests\n";

/// Connects with a small receive buffer, asks for `name` and reads (checking
/// against `v`) until `until` bytes have arrived, slowly enough that the
/// transfer is still in flight.
fn start_slow_transfer(srv: &Running, name: &str, v: &mut Verifier<'_>, until: u64) -> TcpStream {
    let mut s = connect_with_rcvbuf(srv.addr, 64 * KIB);
    send(&mut s, format!("{name}\n").as_bytes());
    let mut buf = vec![0u8; 64 * KIB];
    let deadline = Instant::now() + IO_TIMEOUT;
    while v.pos < until {
        match s.read(&mut buf) {
            Ok(0) => panic!("{name}: EOF after {} bytes, before the file changed", v.pos),
            Ok(r) => v.feed(&buf[..r]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{name}: read failed after {} bytes: {e}", v.pos),
        }
        thread::sleep(Duration::from_millis(5));
        assert!(
            Instant::now() < deadline,
            "{name}: slow start took too long"
        );
    }
    s
}

#[test]
fn file_truncated_during_transfer_ends_the_connection_cleanly() {
    isolated(
        concat!(
            module_path!(),
            "::file_truncated_during_transfer_ends_the_connection_cleanly"
        ),
        LIMIT,
        || {
            const LEN: u64 = 64 * MIB as u64;
            let tree = Tree::new("truncated");
            tree.file("ok.txt", OK_CONTENT);
            let pat = Pattern::new(9, LEN);
            pat.write(&tree.path("big.bin"));
            let srv = tree.serve(|_| {});
            let baseline = fd_count();
            let mut v = pat.verifier("file truncated mid-transfer");
            let mut s = start_slow_transfer(&srv, "big.bin", &mut v, 2 * MIB as u64);
            let f = OpenOptions::new().write(true).open(tree.path("big.bin"));
            f.unwrap().set_len(MIB as u64).unwrap();
            // Whatever arrives is the original content; then the connection ends.
            let (_, end) = read_until_closed(&mut s, MIB, Duration::from_secs(30), |c| v.feed(c));
            assert!(
                v.pos < LEN,
                "the client received all {LEN} bytes of a file truncated to 1 MiB ({end:?})"
            );
            // The server is not spinning on the dead transfer (this process is
            // the server and an idle client only).
            let cpu0 = cpu_time();
            thread::sleep(Duration::from_secs(1));
            let used = cpu_time().saturating_sub(cpu0);
            assert!(
                used < Duration::from_millis(300),
                "server used {used:?} of CPU in the idle second after the truncated transfer"
            );
            let got = srv.lines(&[b"ok.txt", b"big.bin"]);
            let want = [OK_CONTENT, &pat.block(0)].concat();
            assert_bytes_eq(&got, &want, "ok.txt and the truncated big.bin afterwards");
            drop(s);
            assert_fds_back_to(baseline);
        },
    );
}

#[test]
fn file_replaced_during_transfer() {
    isolated(
        concat!(module_path!(), "::file_replaced_during_transfer"),
        LIMIT,
        || {
            const LEN: u64 = 64 * MIB as u64;
            let tree = Tree::new("replaced");
            let old = Pattern::new(91, LEN);
            old.write(&tree.path("big.bin"));
            let new_content = pseudo_random(92, 3 * MIB + 5);
            let srv = tree.serve(|_| {});
            let baseline = fd_count();
            let mut v = old.verifier("in-flight transfer of the replaced file");
            let mut s = start_slow_transfer(&srv, "big.bin", &mut v, 2 * MIB as u64);
            let tmp = tree.outside("big.bin.new", &new_content);
            std::fs::rename(&tmp, tree.path("big.bin")).expect("rename over big.bin");
            // A new request gets the new file.
            let got = srv.lines(&[b"big.bin"]);
            assert_bytes_eq(&got, &new_content, "big.bin requested after the rename");
            // The transfer in flight goes on with the old bytes, to its end or to
            // a clean early EOF; never with new bytes.
            let mut buf = vec![0u8; MIB];
            let deadline = Instant::now() + Duration::from_secs(60);
            let early_eof = loop {
                if v.pos == LEN {
                    break false;
                }
                let m = ((LEN - v.pos) as usize).min(buf.len());
                match s.read(&mut buf[..m]) {
                    Ok(0) => break true,
                    Ok(r) => v.feed(&buf[..r]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("in-flight transfer failed after {} bytes: {e}", v.pos),
                }
                assert!(
                    Instant::now() < deadline,
                    "in-flight transfer took over 60 s"
                );
            };
            if !early_eof {
                // Completed with the old content: the connection still works.
                send(&mut s, b"big.bin\n");
                let got = read_exact_timeout(&mut s, new_content.len(), IO_TIMEOUT);
                assert_bytes_eq(&got, &new_content, "big.bin again on the same connection");
            }
            drop(s);
            assert_fds_back_to(baseline);
        },
    );
}

/// Reads from `s` until `n` bytes arrived, into `out`, pausing `pause`
/// between reads.
fn read_slowly(s: &mut TcpStream, out: &mut Vec<u8>, n: usize, pause: Duration, what: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = vec![0u8; 64 * KIB];
    while out.len() < n {
        let want = (n - out.len()).min(buf.len());
        match s.read(&mut buf[..want]) {
            Ok(0) => panic!("{what}: EOF after {} of {n} bytes", out.len()),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: read failed after {} of {n} bytes: {e}", out.len()),
        }
        assert!(Instant::now() < deadline, "{what}: reading took too long");
        thread::sleep(pause);
    }
}

/// Asks for `name` (growing by `extra` once its transfer is in flight) over
/// HTTP; checks the head and the body sent at the length at open, then the
/// next requests on the same connection.
fn grow_over_http(srv: &Running, tree: &Tree, name: &str, original: &[u8], extra: &[u8]) {
    let what = format!("http: {name}");
    let mut c = Client::new(connect_with_rcvbuf(srv.addr, 16 * KIB));
    c.send(format!("GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let head = c.try_head().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status, 200, "{what}: status");
    assert_eq!(
        head.header("content-length"),
        Some(original.len().to_string().as_str()),
        "{what}: Content-Length is the length at open"
    );
    let mut got = std::mem::take(&mut c.buf);
    read_slowly(
        &mut c.stream,
        &mut got,
        256 * KIB,
        Duration::from_millis(2),
        &what,
    );
    append(tree, name, extra);
    read_slowly(
        &mut c.stream,
        &mut got,
        original.len(),
        Duration::ZERO,
        &what,
    );
    assert_bytes_eq(&got, original, &format!("{what}: body"));
    // The next request is answered at once (nothing of the growth was sent
    // in between), and a new request for the grown file gets all of it.
    c.send(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200, "{what}: ok.txt after the grown file");
    assert_bytes_eq(&r.body, OK_CONTENT, &format!("{what}: ok.txt after"));
    c.send(format!("GET /{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    let r = c.response(false);
    assert_eq!(r.status, 200, "{what}: the grown file again");
    assert_bytes_eq(
        &r.body,
        &[original, extra].concat(),
        &format!("{what}: grown file, new request"),
    );
    c.try_expect_eof().unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// The same over the line protocol.
fn grow_over_lines(srv: &Running, tree: &Tree, name: &str, original: &[u8], extra: &[u8]) {
    let what = format!("line: {name}");
    let mut s = connect_with_rcvbuf(srv.addr, 16 * KIB);
    send(&mut s, format!("{name}\n").as_bytes());
    let mut got = Vec::new();
    read_slowly(&mut s, &mut got, 256 * KIB, Duration::from_millis(2), &what);
    append(tree, name, extra);
    read_slowly(&mut s, &mut got, original.len(), Duration::ZERO, &what);
    assert_bytes_eq(&got, original, &format!("{what}: body"));
    send(&mut s, b"ok.txt\n");
    expect_bytes(&mut s, OK_CONTENT, &format!("{what}: ok.txt after"));
    send(&mut s, format!("{name}\n").as_bytes());
    s.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_end_timeout(&mut s, IO_TIMEOUT);
    assert_bytes_eq(
        &rest,
        &[original, extra].concat(),
        &format!("{what}: grown file, new request"),
    );
}

/// Appends `extra` to `name` (the file grows in place, same inode).
fn append(tree: &Tree, name: &str, extra: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(tree.path(name))
        .unwrap();
    f.write_all(extra).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn file_growing_during_transfer_is_sent_at_its_length_at_open() {
    isolated(
        concat!(
            module_path!(),
            "::file_growing_during_transfer_is_sent_at_its_length_at_open"
        ),
        LIMIT,
        || {
            let tree = Tree::new("growing");
            let original = pseudo_random(71, 12 * MIB);
            let extra = pseudo_random(72, MIB + 5);
            tree.file("ok.txt", OK_CONTENT)
                .file("grow-http.bin", &original)
                .file("grow-line.bin", &original);
            let srv = tree.serve(|_| {});
            let baseline = fd_count();
            grow_over_http(&srv, &tree, "grow-http.bin", &original, &extra);
            grow_over_lines(&srv, &tree, "grow-line.bin", &original, &extra);
            assert_fds_back_to(baseline);
        },
    );
}
