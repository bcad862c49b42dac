//! A graceful stop ([`iocomp_server::Server::shutdown`], what SIGINT and
//! SIGTERM do) lets the transfers in flight finish, closes idle connections
//! at once and serves no new one. (The signals themselves and the exit
//! status are the CLI's: `iocomp-cli/tests/cli/signals.rs`.)

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::client::{connect_with_rcvbuf, expect_bytes, send, wait_closed};
use crate::harness::{
    check_chunk, heavy, join_all, poll_until, pseudo_random, show, spawn_client, Tree, KIB, MIB,
};

const OK_CONTENT: &[u8] = b"ok.txt: a small file for the shutdown tests\n";

/// A download of `content` at a steady pace (about 10 MiB/s), counted in
/// `started` once its first bytes arrive; then the server must close.
fn paced_download(mut s: TcpStream, content: Arc<Vec<u8>>, started: Arc<AtomicUsize>) {
    send(&mut s, b"big.bin\n");
    let mut buf = vec![0u8; 256 * KIB];
    let mut pos = 0;
    while pos < content.len() {
        let m = (content.len() - pos).min(buf.len());
        match s.read(&mut buf[..m]) {
            Ok(0) => panic!("EOF after {pos} of {} bytes", content.len()),
            Ok(r) => {
                check_chunk(&content, pos, &buf[..r], "download during drain");
                if pos == 0 {
                    started.fetch_add(1, Ordering::SeqCst);
                }
                pos += r;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {pos} bytes: {e}"),
        }
        thread::sleep(Duration::from_millis(25));
    }
    // After its current file, a draining server closes.
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(r) => panic!("extra bytes after the file: {}", show(&buf[..r])),
        Err(e) => panic!("expected EOF after the file: {e}"),
    }
}

#[test]
fn a_graceful_stop_during_fifty_downloads_lets_them_finish() {
    const CLIENTS: usize = 50;
    let _heavy = heavy();
    let tree = Tree::new("drain50");
    let content = Arc::new(pseudo_random(12, 16 * MIB));
    tree.file("ok.txt", OK_CONTENT).file("big.bin", &content);
    let mut srv = tree.serve(|_| {});
    // An idle connection, proven accepted by a served request.
    let mut idle = srv.connect();
    send(&mut idle, b"ok.txt\n");
    expect_bytes(&mut idle, OK_CONTENT, "idle connection's request");
    let started = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let s = connect_with_rcvbuf(srv.addr, 256 * KIB);
            let (content, started) = (content.clone(), started.clone());
            spawn_client(move || paced_download(s, content, started))
        })
        .collect();
    assert!(
        poll_until(Duration::from_secs(20), || started.load(Ordering::SeqCst)
            == CLIENTS),
        "only {} of {CLIENTS} downloads started",
        started.load(Ordering::SeqCst)
    );
    let addr = srv.addr;
    let t0 = Instant::now();
    let stop = srv.shutdown(Duration::from_secs(20));
    let took = wait_closed(
        &mut idle,
        Duration::from_secs(3),
        "idle connection at the stop",
    );
    assert!(
        took < Duration::from_secs(2),
        "idle connection closed only {took:?} after the stop"
    );
    // The server is draining now: a new connection gets no service.
    if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        let _ = s.write_all(b"ok.txt\n");
        wait_closed(
            &mut s,
            Duration::from_secs(25),
            "new connection after the stop",
        );
    }
    let (_, failures) = join_all(handles);
    assert!(
        failures.is_empty(),
        "downloads in flight at the stop: {} failed; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
    // The stop must end, not hang: at most 25 s after it began (a 20 s
    // drain, and the downloads take about 2 s).
    let left = Duration::from_secs(25).saturating_sub(t0.elapsed());
    assert!(
        poll_until(left, || stop.is_finished()),
        "the server had not stopped 25 s after the stop began"
    );
    let cut = stop.join().expect("the stop");
    eprintln!(
        "50 downloads drained; stopped {:?} after it began",
        t0.elapsed()
    );
    assert_eq!(cut, 0, "connections cut by the drain deadline");
}
