//! Many clients at once: 200 connections each fetching several files on one
//! connection, and 300 clients that reset mid-transfer, are served (or cut)
//! without disturbing anyone or leaking a descriptor. Heavy, and alone in a
//! child process for the descriptor count.

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::client::{connect_with_rcvbuf, read_exact_timeout, send, set_linger_zero};
use crate::harness::{
    assert_bytes_eq, assert_fds_back_to, check_chunk, fd_count, heavy, isolated, join_all,
    pseudo_random, show, spawn_client, Tree, IO_TIMEOUT, KIB, MIB,
};

const LIMIT: Duration = Duration::from_secs(300);

/// Reads `want.len()` bytes from `s`, checking them as they arrive.
fn read_checked(s: &mut TcpStream, want: &[u8], buf: &mut [u8], name: &str) {
    let mut pos = 0;
    while pos < want.len() {
        let m = (want.len() - pos).min(buf.len());
        match s.read(&mut buf[..m]) {
            Ok(0) => panic!("{name}: EOF after {pos} of {} bytes", want.len()),
            Ok(r) => {
                check_chunk(want, pos, &buf[..r], name);
                pos += r;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{name}: read failed after {pos} bytes: {e}"),
        }
    }
}

#[test]
fn two_hundred_clients_each_fetch_several_files_on_one_connection() {
    let _heavy = heavy();
    isolated(
        concat!(
            module_path!(),
            "::two_hundred_clients_each_fetch_several_files_on_one_connection"
        ),
        LIMIT,
        || {
            const CLIENTS: usize = 200;
            const SIZES: [usize; 8] = [0, 1, 1000, 4096, 65_537, 200_003, 333_333, 512 * KIB];
            let tree = Tree::new("two-hundred");
            let files: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
                SIZES
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| {
                        let name = format!("f{i}.bin");
                        let content = pseudo_random(300 + i as u64, n);
                        tree.file(&name, &content);
                        (name, content)
                    })
                    .collect(),
            );
            let srv = tree.serve(|_| {});
            let baseline = fd_count();
            // Connect everyone first, so all 200 connections are open at once.
            let streams: Vec<TcpStream> = (0..CLIENTS).map(|_| srv.connect()).collect();
            let handles: Vec<_> = streams
                .into_iter()
                .enumerate()
                .map(|(k, mut s)| {
                    let files = files.clone();
                    spawn_client(move || {
                        let mut buf = vec![0u8; 16 * KIB];
                        for j in 0..4 {
                            let (name, want) = &files[(k * 7 + j * 3) % files.len()];
                            send(&mut s, format!("{name}\n").as_bytes());
                            read_checked(&mut s, want, &mut buf, name);
                        }
                        s.shutdown(Shutdown::Write).expect("half-close");
                        match s.read(&mut buf) {
                            Ok(0) => {}
                            Ok(r) => panic!("extra bytes after the 4 files: {}", show(&buf[..r])),
                            Err(e) => panic!("expected EOF after the 4 files: {e}"),
                        }
                    })
                })
                .collect();
            let (_, failures) = join_all(handles);
            assert!(
                failures.is_empty(),
                "200 clients x 4 files: {} clients failed; first ones:\n{}",
                failures.len(),
                failures[..failures.len().min(5)].join("\n")
            );
            assert_fds_back_to(baseline);
        },
    );
}

#[test]
fn three_hundred_clients_resetting_mid_transfer() {
    let _heavy = heavy();
    isolated(
        concat!(
            module_path!(),
            "::three_hundred_clients_resetting_mid_transfer"
        ),
        LIMIT,
        || {
            let tree = Tree::new("resets");
            let content = pseudo_random(8, 8 * MIB);
            tree.file("big.bin", &content);
            let srv = tree.serve(|_| {});
            let baseline = fd_count();
            // Three rounds of 100 clients held open at once, then all reset: a third
            // reset right after asking, a third after 1000 bytes, a third after 256 KiB.
            for round in 0..3 {
                let mut held = Vec::new();
                for i in 0..100 {
                    let mut s = connect_with_rcvbuf(srv.addr, 64 * KIB);
                    send(&mut s, b"big.bin\n");
                    let read = [0, 1000, 256 * KIB][i % 3];
                    if read > 0 {
                        let got = read_exact_timeout(&mut s, read, IO_TIMEOUT);
                        check_chunk(
                            &content,
                            0,
                            &got,
                            &format!("round {round} client {i} prefix"),
                        );
                    }
                    set_linger_zero(&s);
                    held.push(s);
                }
                drop(held); // 100 RSTs at once
            }
            let got = srv.lines(&[b"big.bin"]);
            assert_bytes_eq(&got, &content, "8 MiB file after 300 resets");
            assert_fds_back_to(baseline);
        },
    );
}
