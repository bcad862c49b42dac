//! Datagrams (`WSARecvFrom`/`WSASendTo`) through [`RecvFrom`] and [`SendTo`],
//! on both backends: UDP round trips on loopback in both families, many
//! datagrams with every one accounted for, a datagram longer than the
//! buffer cut as Windows does (`WSAEMSGSIZE` with the bytes that fit),
//! cancellation of a pending receive, and wrong sockets or addresses as an
//! error packet or a refused submission, never a panic.
//! A vectored send on a datagram socket is one datagram or none, and
//! `RecvFrom`'s address is only ever the one the kernel gave for this
//! receive.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;

use iocomp::{Backend, Connect, Op, Packet, Port, RecvFrom, SendTo, SendVectored};

use crate::harness::{
    backends, collect, datagram_pairs, h_fd, next_message, port_on, send_marker, submit, udp, T,
};

fn round_trip(b: Backend, local: &str) {
    let port = port_on(b);
    let (a, c) = (udp(local), udp(local));
    let (a_addr, c_addr) = (a.local_addr().unwrap(), c.local_addr().unwrap());
    let ha = port.associate(OwnedFd::from(a), 1);
    let hc = port.associate(OwnedFd::from(c), 2);
    // The receive waits first: the datagram arrives while it is pending.
    let rid = submit(&port, RecvFrom::new(&hc, Vec::with_capacity(64)));
    let sid = submit(&port, SendTo::new(&ha, b"ping over udp".to_vec(), c_addr));
    let [r, s]: [Packet; 2] = collect(&port, &[rid, sid]).try_into().unwrap();
    assert!(s.status.is_ok(), "{b} {local}: {:?}", s.status);
    assert_eq!((s.key, s.bytes), (1, 13), "{b} {local}");
    assert!(matches!(s.op, Op::SendTo(ref t) if t.addr == c_addr));
    assert!(r.status.is_ok(), "{b} {local}: {:?}", r.status);
    assert_eq!((r.key, r.bytes), (2, 13), "{b} {local}");
    let Op::RecvFrom(rf) = r.op else {
        panic!("not a RecvFrom")
    };
    assert_eq!(rf.buf, b"ping over udp", "{b} {local}");
    assert_eq!(rf.addr, Some(a_addr), "{b} {local}: the sender's address");
    // The reply goes to the address the receive reported; this time the
    // datagram is there before the receive is submitted, and the buffer
    // already holds bytes (the datagram is appended).
    let sid = submit(&port, SendTo::new(&hc, b"pong".to_vec(), rf.addr.unwrap()));
    assert!(port.get(T).unwrap().status.is_ok());
    let mut buf = Vec::with_capacity(32);
    buf.extend_from_slice(b">");
    let rid = submit(&port, RecvFrom::new(&ha, buf));
    let r = port.get(T).unwrap();
    assert_ne!(r.id, sid);
    assert_eq!((r.id, r.bytes), (rid, 4), "{b} {local}");
    let Op::RecvFrom(rf) = r.op else { panic!() };
    assert_eq!(rf.buf, b">pong");
    assert_eq!(rf.addr, Some(c_addr));
}

#[test]
fn udp_round_trip_on_ipv4_loopback() {
    for b in backends() {
        round_trip(b, "127.0.0.1:0");
    }
}

#[test]
fn udp_round_trip_on_ipv6_loopback() {
    for b in backends() {
        round_trip(b, "[::1]:0");
    }
}

/// Many datagrams sent at once and as many receives pending: each arrives
/// once, whole, with its sender; none is lost or doubled (loopback does not
/// drop while the receiver's buffer has room: 64 small datagrams).
#[test]
fn many_datagrams_are_each_received_once() {
    const N: u32 = 64;
    for b in backends() {
        let port = port_on(b);
        let (a, c) = (udp("127.0.0.1:0"), udp("127.0.0.1:0"));
        let (a_addr, c_addr) = (a.local_addr().unwrap(), c.local_addr().unwrap());
        let ha = port.associate(OwnedFd::from(a), 1);
        let hc = port.associate(OwnedFd::from(c), 2);
        let mut ids = Vec::new();
        for _ in 0..N {
            ids.push(submit(&port, RecvFrom::new(&hc, Vec::with_capacity(64))));
        }
        for i in 0..N {
            let msg = format!("datagram {i:04} of {N}").into_bytes();
            ids.push(submit(&port, SendTo::new(&ha, msg, c_addr)));
        }
        let mut seen = BTreeSet::new();
        for p in collect(&port, &ids) {
            assert!(p.status.is_ok(), "{b}: {:?}", p.status);
            match p.op {
                Op::SendTo(s) => assert_eq!(p.bytes, s.buf.len() as u64),
                Op::RecvFrom(r) => {
                    assert_eq!(r.addr, Some(a_addr));
                    assert_eq!(p.bytes, r.buf.len() as u64);
                    let text = String::from_utf8(r.buf).unwrap();
                    assert!(seen.insert(text.clone()), "{b}: {text} twice");
                }
                other => panic!("{other:?}"),
            }
        }
        let want: BTreeSet<String> = (0..N).map(|i| format!("datagram {i:04} of {N}")).collect();
        assert_eq!(seen, want, "{b}");
    }
}

/// A datagram longer than the buffer: the bytes that fit, the sender, and
/// `EMSGSIZE` (`WSAEMSGSIZE`); the rest of it is gone, and the next
/// datagram comes whole.
#[test]
fn a_datagram_longer_than_the_buffer_is_cut_with_emsgsize() {
    for b in backends() {
        let port = port_on(b);
        let (a, c) = (udp("127.0.0.1:0"), udp("127.0.0.1:0"));
        let a_addr = a.local_addr().unwrap();
        c.connect(a_addr).unwrap();
        let ha = port.associate(OwnedFd::from(a), 1);
        let long: Vec<u8> = (0..100u8).collect();
        c.send(&long).unwrap();
        c.send(b"short").unwrap();
        submit(&port, RecvFrom::new(&ha, Vec::with_capacity(10)));
        let p = port.get(T).unwrap();
        let e = p.status.as_ref().expect_err("a cut datagram must fail");
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE), "{b}: {e}");
        assert_eq!(p.bytes, 10, "{b}");
        let Op::RecvFrom(r) = p.op else { panic!() };
        assert_eq!(r.buf, &long[..10], "{b}");
        assert_eq!(r.addr, Some(c.local_addr().unwrap()), "{b}");
        submit(&port, RecvFrom::new(&ha, Vec::with_capacity(10)));
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{b}: {:?}", p.status);
        let Op::RecvFrom(r) = p.op else { panic!() };
        assert_eq!(r.buf, b"short", "{b}");
        // A zero-length datagram is a datagram: success, 0 bytes.
        c.send(b"").unwrap();
        submit(&port, RecvFrom::new(&ha, Vec::with_capacity(10)));
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{b}: {:?}", p.status);
        assert_eq!(p.bytes, 0);
        let Op::RecvFrom(r) = p.op else { panic!() };
        assert_eq!(r.addr, Some(c.local_addr().unwrap()), "{b}");
    }
}

/// `CancelIoEx` on a receive that waits for a datagram: its packet says
/// aborted with 0 bytes and no address, and the socket goes on working.
#[test]
fn a_pending_recvfrom_can_be_cancelled() {
    for b in backends() {
        let port = port_on(b);
        let (a, c) = (udp("127.0.0.1:0"), udp("127.0.0.1:0"));
        let a_addr = a.local_addr().unwrap();
        let ha = port.associate(OwnedFd::from(a), 1);
        let id = submit(&port, RecvFrom::new(&ha, Vec::with_capacity(64)));
        port.cancel(id).unwrap();
        let p = port.get(T).unwrap();
        assert_eq!(p.id, id);
        assert!(p.is_aborted(), "{b}: {:?}", p.status);
        assert_eq!(p.bytes, 0);
        let Op::RecvFrom(r) = p.op else { panic!() };
        assert!(r.buf.is_empty() && r.addr.is_none(), "{b}");
        // Per handle too (CancelIoEx(h, NULL)).
        let id = submit(&port, RecvFrom::new(&ha, Vec::with_capacity(64)));
        assert_eq!(port.cancel_handle(&ha).unwrap(), 1, "{b}");
        let p = port.get(T).unwrap();
        assert!(p.id == id && p.is_aborted(), "{b}: {:?}", p.status);
        c.send_to(b"still here", a_addr).unwrap();
        submit(&port, RecvFrom::new(&ha, Vec::with_capacity(64)));
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{b}: {:?}", p.status);
        let Op::RecvFrom(r) = p.op else { panic!() };
        assert_eq!(r.buf, b"still here", "{b}");
    }
}

/// The error of an op that either was refused at submit or completed with an
/// error packet; panics if it succeeded.
fn error_of(port: &Port, op: impl Into<Op>) -> std::io::Error {
    match port.submit(op) {
        Err((e, _)) => e,
        Ok(id) => {
            let p = port.get(T).unwrap();
            assert_eq!(p.id, id);
            match p.status {
                Err(e) => {
                    assert_eq!(p.bytes, 0);
                    e
                }
                Ok(()) => panic!("succeeded: {:?}", p.op),
            }
        }
    }
}

/// Wrong sockets and addresses: a TCP socket that is not connected, an
/// address of the other family, a file, a datagram larger than UDP allows.
/// Each gives an error (packet or refused submission); nothing panics.
#[test]
fn sendto_and_recvfrom_on_the_wrong_thing_fail_cleanly() {
    for b in backends() {
        let port = port_on(b);
        let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        // An unconnected TCP socket.
        let tcp = port.associate(Connect::stream_socket(&v4).unwrap(), 1);
        let e = error_of(&port, SendTo::new(&tcp, b"x".to_vec(), v4));
        assert!(
            matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ENOTCONN)),
            "{b}: {e}"
        );
        // An IPv6 address from an IPv4 socket.
        let a = port.associate(OwnedFd::from(udp("127.0.0.1:0")), 2);
        let e = error_of(&port, SendTo::new(&a, b"x".to_vec(), v6));
        assert!(
            matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EINVAL)),
            "{b}: {e}"
        );
        // Larger than a UDP datagram can be.
        let e = error_of(&port, SendTo::new(&a, vec![0; 70_000], v4));
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE), "{b}: {e}");
        // A file is no socket.
        let null = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .unwrap()
        };
        let hr = port.associate(null(), 3);
        let hw = port.associate(null(), 4);
        let e = error_of(&port, SendTo::new(&hw, b"x".to_vec(), v4));
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK), "{b}: {e}");
        let e = error_of(&port, RecvFrom::new(&hr, Vec::with_capacity(8)));
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK), "{b}: {e}");
        // The socket still works after its errors.
        let c = udp("127.0.0.1:0");
        let sid = submit(
            &port,
            SendTo::new(&a, b"ok".to_vec(), c.local_addr().unwrap()),
        );
        let p = port.get(T).unwrap();
        assert!(p.id == sid && p.status.is_ok(), "{b}: {:?}", p.status);
        let mut buf = [0u8; 8];
        assert_eq!(c.recv(&mut buf).unwrap(), 2);
    }
}

/// More buffers than one `sendmsg` takes (IOV_MAX, 1024) on a datagram
/// socket: `WSASend` sends one datagram of them all; Linux cannot, so the
/// send fails with EMSGSIZE and sends nothing, instead of splitting the
/// message into several datagrams.
#[test]
fn a_datagram_vectored_send_of_more_than_iov_max_buffers_fails_whole() {
    for b in backends() {
        let port = port_on(b);
        for (what, ours, peer) in datagram_pairs() {
            let h = port.associate(ours, 1);
            let bufs: Vec<Vec<u8>> = (0..1500).map(|i| vec![(i % 251) as u8]).collect();
            port.submit(SendVectored::new(&h, bufs))
                .map_err(|(e, _)| e)
                .unwrap();
            let p = port.get(T).unwrap();
            assert_eq!(
                p.status.as_ref().map_err(|e| e.raw_os_error()),
                Err(Some(libc::EMSGSIZE)),
                "{b} {what}"
            );
            assert_eq!(p.bytes, 0, "{b} {what}");
            send_marker(&h_fd(&h));
            assert_eq!(next_message(&peer), b"marker", "{b} {what}: part was sent");
        }
    }
}

/// A vectored send of nothing on a datagram socket is one zero-length
/// datagram (as `WSASend` with empty buffers and `send` of 0 bytes are), on
/// both backends alike.
#[test]
fn an_empty_datagram_vectored_send_sends_one_empty_datagram() {
    for b in backends() {
        let port = port_on(b);
        for (what, ours, peer) in datagram_pairs() {
            let h = port.associate(ours, 1);
            for bufs in [Vec::new(), vec![Vec::new(), Vec::new()]] {
                port.submit(SendVectored::new(&h, bufs))
                    .map_err(|(e, _)| e)
                    .unwrap();
                let p = port.get(T).unwrap();
                assert!(p.status.is_ok(), "{b} {what}: {:?}", p.status);
                assert_eq!(p.bytes, 0, "{b} {what}");
                send_marker(&h_fd(&h));
                assert_eq!(next_message(&peer), b"", "{b} {what}: no empty datagram");
                assert_eq!(next_message(&peer), b"marker", "{b} {what}");
            }
        }
    }
}

/// `RecvFrom` on a connected stream socket receives like `Recv` and gives
/// no address (Linux's `recvmsg` leaves it empty there; Windows ignores
/// `lpFrom` on connection-oriented sockets).
#[test]
fn recv_from_on_a_stream_socket_gives_no_address() {
    for b in backends() {
        let port = port_on(b);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(b"hello").unwrap();
        let h = port.associate(OwnedFd::from(s), 1);
        port.submit(RecvFrom::new(&h, Vec::with_capacity(16)))
            .map_err(|(e, _)| e)
            .unwrap();
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{b}: {:?}", p.status);
        let Op::RecvFrom(rf) = p.op else {
            panic!("{b}: not a RecvFrom")
        };
        assert_eq!(rf.buf, b"hello", "{b}");
        assert_eq!(rf.addr, None, "{b}");
    }
}

/// A `RecvFrom` that received a datagram, submitted again and cancelled:
/// its packet carries no address (not the previous sender's).
#[test]
fn a_reused_recv_from_that_fails_has_no_stale_address() {
    for b in backends() {
        let port = port_on(b);
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"first", a.local_addr().unwrap()).unwrap();
        let h = port.associate(OwnedFd::from(a), 1);
        port.submit(RecvFrom::new(&h, Vec::with_capacity(16)))
            .map_err(|(e, _)| e)
            .unwrap();
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{b}: {:?}", p.status);
        let Op::RecvFrom(mut rf) = p.op else {
            panic!("{b}: not a RecvFrom")
        };
        assert_eq!(rf.addr, Some(c.local_addr().unwrap()), "{b}");
        rf.buf.clear();
        // Nothing else comes: the receive waits until cancelled.
        let id = port.submit(Op::RecvFrom(rf)).map_err(|(e, _)| e).unwrap();
        port.cancel(id).unwrap();
        let p = port.get(T).unwrap();
        assert!(p.is_aborted(), "{b}: {:?}", p.status);
        let Op::RecvFrom(rf) = p.op else {
            panic!("{b}: not a RecvFrom")
        };
        assert_eq!(rf.addr, None, "{b}: the address of an earlier receive");
    }
}
