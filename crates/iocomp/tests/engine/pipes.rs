//! Pipes through `Recv` and `Send` (`ReadFile`/`WriteFile` on a pipe handle),
//! on both backends: a round trip, and a receive on a non-blocking pipe
//! that waits for data.

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use iocomp::{GetError, Op};

use crate::harness::{backends, no_packet, one, pattern, port_on, submit, T};

/// ReadFile/WriteFile on a pipe: the stream operations `Recv` and `Send`
/// work on pipes too (the engine uses read/write where recv/send do not
/// apply). Through `cat`: our Send goes into its stdin, our Recvs read its
/// stdout, until EOF when we close its stdin.
#[test]
fn pipe_round_trip_through_recv_and_send() {
    use iocomp::{Recv, Send};
    use std::os::fd::OwnedFd;
    use std::process::{Command, Stdio};
    for b in backends() {
        let port = port_on(b);
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let to = port.associate(OwnedFd::from(child.stdin.take().unwrap()), 1);
        let from = port.associate(OwnedFd::from(child.stdout.take().unwrap()), 2);
        // More than a pipe holds (64 KiB): the send must wait for cat to
        // drain it, while our receives keep reading what cat writes back.
        let data = pattern(11, 0, 600 << 10);
        let sid = submit(&port, Send::new(&to, data.clone()));
        // The Send holds the last reference: when its packet is dropped,
        // cat's stdin closes, and its stdout then says EOF.
        drop(to);
        let mut rid = submit(&port, Recv::new(&from, Vec::with_capacity(16 << 10)));
        let mut pooled = false;
        let mut got = Vec::new();
        let mut sent = false;
        loop {
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
            if p.id == sid {
                assert_eq!((p.key, p.bytes), (1, data.len() as u64), "{b:?}");
                assert!(!sent, "two packets for the send");
                sent = true;
                continue;
            }
            assert_eq!((p.id, p.key), (rid, 2), "{b:?}");
            let Op::Recv(r) = p.op else { panic!() };
            if p.bytes == 0 {
                break;
            }
            assert_eq!(r.buf.len() as u64, p.bytes);
            got.extend_from_slice(&r.buf);
            // Alternate plain and pooled receives.
            pooled = !pooled;
            let next = if pooled {
                Recv::pooled(&from, Vec::new())
            } else {
                Recv::new(&from, Vec::with_capacity(16 << 10))
            };
            rid = submit(&port, next);
        }
        assert!(sent, "{b:?}: the send's packet never came");
        assert_eq!(got.len(), data.len(), "{b:?}");
        assert!(got == data, "{b:?}: bytes differ");
        assert!(child.wait().unwrap().success());
        no_packet(
            &port,
            Duration::ZERO,
            "more than one packet for an operation",
        );
    }
}

/// A Recv on an `O_NONBLOCK` pipe with nothing in it yet waits for data (an
/// overlapped ReadFile pends), it does not complete with EAGAIN.
#[test]
fn recv_on_a_nonblocking_pipe_waits_for_data() {
    use iocomp::Recv;
    use std::os::fd::{FromRawFd, OwnedFd};
    for b in backends() {
        let port = port_on(b);
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        // SAFETY: pipe2 succeeded: both are new descriptors that we own.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut w = File::from(w);
        let from = port.associate(r, 7);
        let id = submit(&port, Recv::new(&from, Vec::with_capacity(64)));
        // Nothing written yet: nothing completes.
        assert_eq!(
            port.get(Some(Duration::from_millis(100))).unwrap_err(),
            GetError::TimedOut,
            "{b:?}: a Recv on an empty pipe completed"
        );
        w.write_all(b"hello").unwrap();
        let p = one(&port, id);
        assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
        assert_eq!((p.key, p.bytes), (7, 5), "{b:?}");
        let Op::Recv(r) = p.op else { panic!() };
        assert_eq!(r.buf, b"hello", "{b:?}");
        no_packet(
            &port,
            Duration::ZERO,
            "more than one packet for an operation",
        );
    }
}

/// A pooled receive (`Recv::pooled`) handed an empty buffer with room reads
/// into that buffer when the bytes cannot come from a pool buffer (a pipe
/// is read with read(2) into the op's own buffer): the packet brings back
/// the caller's allocation, and no new one is made per receive.
#[test]
fn a_pooled_pipe_receive_fills_the_callers_empty_buffer() {
    use iocomp::Recv;
    for b in backends() {
        let port = port_on(b);
        let (rd, wr) = crate::harness::pipe();
        let h = port.associate(rd, 1);
        let mut wr = File::from(wr);
        for i in 0..10 {
            let buf: Vec<u8> = Vec::with_capacity(5000);
            let at = buf.as_ptr();
            let id = submit(&port, Recv::pooled(&h, buf));
            wr.write_all(format!("m{i}").as_bytes()).unwrap();
            let p = one(&port, id);
            assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
            let Op::Recv(r) = p.op else {
                panic!("not a Recv")
            };
            assert_eq!(r.buf, format!("m{i}").as_bytes(), "{b:?}");
            assert_eq!(
                r.buf.as_ptr(),
                at,
                "{b:?}: receive {i} came back in another allocation than the caller's"
            );
            assert_eq!(r.buf.capacity(), 5000, "{b:?}");
        }
    }
}
