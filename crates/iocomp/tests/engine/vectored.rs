//! Gather output (`WSASend` with several `WSABUF`s) through
//! [`SendVectored`], on both backends: the buffers go out in order as one
//! stream, short sends are continued across buffer boundaries and the packet
//! counts every byte, sends on one socket keep the order they were submitted
//! in (with `Send` mixed in), more buffers than one system call takes, pipes,
//! and errors with the bytes sent so far.

use std::os::fd::OwnedFd;

use iocomp::{Op, Send, SendVectored};

use crate::harness::{backends, drain, pair, pattern, port_on, submit, T};

#[test]
fn head_and_body_go_out_as_one_send() {
    for b in backends() {
        let port = port_on(b);
        let (ours, peer) = pair();
        let h = port.associate(OwnedFd::from(ours), 9);
        let bufs = vec![
            b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
            Vec::new(),
            b"body".to_vec(),
        ];
        let id = submit(&port, SendVectored::new(&h, bufs));
        let p = port.get(T).unwrap();
        assert_eq!((p.id, p.key, p.bytes), (id, 9, 23), "{b}");
        assert!(p.status.is_ok(), "{b}: {:?}", p.status);
        let Op::SendVectored(s) = p.op else { panic!() };
        assert_eq!(s.bufs.len(), 3, "{b}: the buffers come back");
        drop(s);
        let got = drain(peer);
        drop(h);
        assert_eq!(got.join().unwrap(), b"HTTP/1.1 200 OK\r\n\r\nbody", "{b}");
    }
}

/// Far more than the socket holds, in uneven buffers: the kernel takes part
/// of a buffer at a time, and the engine goes on from that byte; the peer
/// gets every byte in order. Sends and vectored sends submitted back to back
/// on one socket keep their order.
#[test]
fn short_sends_continue_across_buffers_in_order() {
    for b in backends() {
        let port = port_on(b);
        let (ours, peer) = pair();
        let h = port.associate(OwnedFd::from(ours), 1);
        let data = pattern(7, 0, 9 << 20);
        let cuts = [0, 1, 3 << 20, (3 << 20) + 17, 5 << 20, 8 << 20, 9 << 20];
        let first: Vec<Vec<u8>> = cuts[..4]
            .windows(2)
            .map(|w| data[w[0]..w[1]].to_vec())
            .collect();
        let middle = data[cuts[3]..cuts[4]].to_vec();
        let last: Vec<Vec<u8>> = cuts[4..]
            .windows(2)
            .map(|w| data[w[0]..w[1]].to_vec())
            .collect();
        let reader = drain(peer);
        let ids = [
            submit(&port, SendVectored::new(&h, first)),
            submit(&port, Send::new(&h, middle)),
            submit(&port, SendVectored::new(&h, last)),
        ];
        let want = [cuts[3], cuts[4] - cuts[3], cuts[6] - cuts[4]];
        for _ in 0..3 {
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b}: {:?}", p.status);
            let i = ids.iter().position(|&id| id == p.id).unwrap();
            assert_eq!(p.bytes, want[i] as u64, "{b}: op {i}");
        }
        drop(h);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), data.len(), "{b}");
        assert!(got == data, "{b}: the bytes arrived out of order");
    }
}

/// More buffers than one `sendmsg`/`writev` takes (1024), on a pipe (writev).
#[test]
fn thousands_of_buffers_on_a_pipe() {
    for b in backends() {
        let port = port_on(b);
        // `cat` copies the pipe we write into its stdout, which we read.
        let mut cat = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let r = cat.stdout.take().unwrap();
        let h = port.associate(OwnedFd::from(cat.stdin.take().unwrap()), 3);
        let bufs: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| format!("<{i}>").into_bytes())
            .collect();
        let want: Vec<u8> = bufs.concat();
        let reader = drain(r);
        let id = submit(&port, SendVectored::new(&h, bufs));
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{b}: {:?}", p.status);
        assert_eq!((p.id, p.bytes), (id, want.len() as u64), "{b}");
        drop(p);
        drop(h);
        assert!(reader.join().unwrap() == want, "{b}");
        cat.wait().unwrap();
    }
}

#[test]
fn nothing_to_send_completes_with_zero_bytes() {
    for b in backends() {
        let port = port_on(b);
        let (ours, _peer) = pair();
        let h = port.associate(OwnedFd::from(ours), 1);
        for bufs in [Vec::new(), vec![Vec::new(), Vec::new()]] {
            submit(&port, SendVectored::new(&h, bufs));
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b}: {:?}", p.status);
            assert_eq!(p.bytes, 0, "{b}");
        }
    }
}

/// The peer goes away: the packet has the error (`MSG_NOSIGNAL`: no
/// SIGPIPE; this test binary ignores SIGPIPE anyway, as every Rust program
/// does by default, so `sigpipe.rs` checks that part with the default
/// action).
#[test]
fn a_closed_peer_is_an_error_packet() {
    for b in backends() {
        let port = port_on(b);
        let (ours, peer) = pair();
        drop(peer);
        let h = port.associate(OwnedFd::from(ours), 1);
        let bufs = vec![vec![1u8; 1 << 20], vec![2u8; 1 << 20]];
        let mut failed = false;
        // The first send may still be taken by the kernel (the reset comes
        // back with it); a later one fails.
        for _ in 0..10 {
            submit(&port, SendVectored::new(&h, bufs.clone()));
            let p = port.get(T).unwrap();
            if let Err(e) = &p.status {
                assert!(
                    matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)),
                    "{b}: {e}"
                );
                assert!(p.bytes <= 2 << 20);
                failed = true;
                break;
            }
        }
        assert!(failed, "{b}: sends to a closed peer kept succeeding");
    }
}
