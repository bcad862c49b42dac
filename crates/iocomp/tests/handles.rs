//! Per-handle cancellation (`CancelIoEx(h, NULL)`): every operation pending on
//! a descriptor gets its packet, aborted, with the handle's key and 0 bytes;
//! operations on other handles, and timers, are untouched. On both backends.

use std::io::Write;
use std::time::Duration;

use iocomp::{Backend, GetError, Op, Port, Recv, Timeout};

mod support;
use support::{backends, pair};

const T: Option<Duration> = Some(Duration::from_secs(30));

fn port(b: Backend) -> Port {
    let p = Port::builder().backend(b).concurrency(2).build().unwrap();
    assert_eq!(p.backend(), b);
    p.attach().unwrap();
    p
}

/// One blocking read, again after EINTR (a socket with a receive timeout
/// says EINTR when io_uring's task work interrupts the wait).
fn read_eintr(s: &mut std::net::TcpStream, buf: &mut [u8]) -> usize {
    use std::io::Read;
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => return r.unwrap(),
        }
    }
}

#[test]
fn cancel_handle_aborts_every_pending_op_on_it_and_nothing_else() {
    for b in backends() {
        let port = port(b);
        let (ours, _peer) = pair();
        let (other, mut other_peer) = pair();
        let h = port.associate(ours, 7);
        let o = port.associate(other, 8);
        // Several receives pending on one socket, plain and pooled, each with
        // a buffer that must come back.
        let mut ids = Vec::new();
        for i in 0..4u8 {
            let mut buf = Vec::with_capacity(64);
            buf.push(i);
            let op = if i % 2 == 0 {
                Recv::new(&h, buf)
            } else {
                Recv::pooled(&h, buf)
            };
            ids.push(port.submit(op).map_err(|(e, _)| e).unwrap());
        }
        let keep = port
            .submit(Recv::new(&o, Vec::with_capacity(64)))
            .map_err(|(e, _)| e)
            .unwrap();
        let timer = port
            .submit(Timeout::new(Duration::from_secs(3600), 9))
            .map_err(|(e, _)| e)
            .unwrap();
        // Nothing has completed yet.
        assert_eq!(
            port.get(Some(Duration::from_millis(50))).unwrap_err(),
            GetError::TimedOut
        );

        assert_eq!(port.cancel_handle(&h).unwrap(), 4, "{b:?}");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let p = port.get(T).unwrap();
            assert!(
                ids.contains(&p.id),
                "{b:?}: packet of another op: {:?}",
                p.op
            );
            assert!(!seen.contains(&p.id), "two packets for one op");
            seen.push(p.id);
            assert!(p.is_aborted(), "{b:?}: {:?}", p.status);
            assert_eq!((p.key, p.bytes), (7, 0));
            let i = ids.iter().position(|&x| x == p.id).unwrap() as u8;
            let Op::Recv(r) = p.op else { panic!() };
            assert_eq!(r.buf, [i], "{b:?}: the buffer comes back as it went");
        }
        // Nothing else was touched: no more packets, and the other socket's
        // receive and the timer are still pending.
        assert_eq!(
            port.get(Some(Duration::from_millis(50))).unwrap_err(),
            GetError::TimedOut,
            "{b:?}"
        );
        assert_eq!(port.cancel_handle(&h).unwrap(), 0, "nothing left on it");
        other_peer.write_all(b"still here").unwrap();
        let p = port.get(T).unwrap();
        assert_eq!((p.id, p.key, p.bytes), (keep, 8, 10), "{b:?}");
        assert!(p.status.is_ok());
        // The cancelled socket still works: a new receive gets data.
        let id = port
            .submit(Recv::new(&h, Vec::with_capacity(8)))
            .map_err(|(e, _)| e)
            .unwrap();
        let mut peer = _peer;
        peer.write_all(b"ok").unwrap();
        let p = port.get(T).unwrap();
        assert_eq!((p.id, p.bytes), (id, 2), "{b:?}");
        // The timer is one cancel away, with its own packet.
        port.cancel(timer).unwrap();
        let p = port.get(T).unwrap();
        assert_eq!(p.id, timer);
        assert!(p.is_aborted());
        // A handle of another port is refused.
        let other_port = Port::builder().backend(b).build().unwrap();
        let (x, _y) = pair();
        let foreign = other_port.associate(x, 1);
        assert_eq!(
            port.cancel_handle(&foreign).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }
}

/// Operations issued on another thread (another ring) are cancelled too.
#[test]
fn cancel_handle_reaches_ops_of_other_threads() {
    for b in backends() {
        let port = port(b);
        let (ours, _peer) = pair();
        let h = port.associate(ours, 3);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = {
            let port = port.clone();
            let h = h.clone();
            std::thread::spawn(move || {
                port.attach().unwrap();
                let id = port
                    .submit(Recv::new(&h, Vec::with_capacity(16)))
                    .map_err(|(e, _)| e)
                    .unwrap();
                tx.send(id).unwrap();
                // This thread drives its ring: it takes the packet.
                let p = port.get(T).unwrap();
                (id, p.id, p.key, p.is_aborted())
            })
        };
        let theirs = rx.recv().unwrap();
        let mine = port
            .submit(Recv::new(&h, Vec::with_capacity(16)))
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(port.cancel_handle(&h).unwrap(), 2, "{b:?}");
        let p = port.get(T).unwrap();
        // Either thread may take either packet: both must be aborted.
        assert!([mine, theirs].contains(&p.id));
        assert!(p.is_aborted(), "{b:?}");
        let (id, got, key, aborted) = t.join().unwrap();
        assert_eq!(id, theirs);
        assert!([mine, theirs].contains(&got) && got != p.id);
        assert_eq!(key, 3);
        assert!(aborted, "{b:?}");
    }
}

/// closesocket with receives pending: they complete as aborted, new
/// operations on the handle are refused, and once the last packet exists
/// the peer sees the connection end — even while a clone of the handle is
/// still held.
#[test]
fn close_aborts_pending_ops_then_the_peer_sees_the_end() {
    use std::io::Read;
    for b in backends() {
        let port = port(b);
        let (ours, mut peer) = pair();
        let h = port.associate(ours, 5);
        let keep = h.clone();
        let ids: Vec<_> = (0..3)
            .map(|_| {
                port.submit(Recv::new(&h, Vec::with_capacity(32)))
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        h.close();
        // Not closed under the pending receives: nothing has completed yet
        // (this thread drives the ring and has not looked at it).
        peer.set_nonblocking(true).unwrap();
        let mut one = [0u8; 1];
        assert_eq!(
            peer.read(&mut one).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "{b:?}: the connection ended before its operations completed"
        );
        peer.set_nonblocking(false).unwrap();
        // New operations on the closed handle are refused.
        let (e, op) = port
            .submit(Recv::new(&keep, Vec::with_capacity(8)))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{b:?}: {e}");
        assert!(matches!(op, Op::Recv(_)));
        for _ in 0..3 {
            let p = port.get(T).unwrap();
            assert!(ids.contains(&p.id));
            assert!(p.is_aborted(), "{b:?}: {:?}", p.status);
            assert_eq!((p.key, p.bytes), (5, 0));
        }
        // Every packet exists: the peer sees the end although `keep` lives.
        peer.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        assert_eq!(
            read_eintr(&mut peer, &mut one),
            0,
            "{b:?}: no EOF at the peer"
        );
        assert_eq!(
            port.get(Some(Duration::from_millis(20))).unwrap_err(),
            GetError::TimedOut
        );
        drop(keep);
    }
}

/// CloseHandle with nothing pending closes at once; on a pipe the reader
/// sees EOF even while a clone of the handle lives.
#[test]
fn close_with_nothing_pending_ends_a_pipe_and_a_connection_at_once() {
    use std::os::fd::OwnedFd;
    use std::process::{Command, Stdio};
    for b in backends() {
        let port = port(b);
        let (ours, mut peer) = pair();
        let h = port.associate(ours, 1);
        h.close();
        peer.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut one = [0u8; 1];
        assert_eq!(read_eintr(&mut peer, &mut one), 0, "{b:?}");

        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = port.associate(OwnedFd::from(child.stdin.take().unwrap()), 2);
        let keep = stdin.clone();
        stdin.close();
        // cat reads EOF and exits although we still hold a clone.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{b:?}: cat never saw EOF on the closed pipe"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success());
        drop(keep);
    }
}
