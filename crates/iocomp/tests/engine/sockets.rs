//! Stream sockets (`WSARecv`, `WSASend`, `AcceptEx`, `ConnectEx`) on real
//! loopback sockets: one packet per operation with the handle's key, the
//! bytes and the buffer handed back; EOF, resets and failures as Windows
//! reports them (C4, C8, C11, C26); pooled receives; sends on one socket in
//! submission order; connects in both families; and the process's SIGPIPE
//! action left alone. On the backend `IOCOMP_BACKEND` picks (CI runs both) or
//! on both.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Duration;

use iocomp::{Accept, Connect, GetError, Op, Port, Recv, Send};

use crate::harness::{
    backends, in_child, local_addr, no_packet, pair, port, port_on, test_name, T,
};

#[test]
fn c4_c11_recv_returns_its_buffer_with_the_bytes_and_the_handles_key() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 42);
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"ab");
    let id = port.submit(Recv::new(&h, buf)).map_err(|(e, _)| e).unwrap();
    peer.write_all(b"hello").unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.key, 42);
    assert_eq!(p.id, id);
    assert_eq!(p.bytes, 5);
    assert!(p.status.is_ok());
    let Op::Recv(r) = p.op else {
        panic!("not a recv: {:?}", p.op)
    };
    assert_eq!(r.buf, b"abhello");
    // Exactly one packet: nothing else is queued.
    assert_eq!(
        port.get(Some(Duration::ZERO)).unwrap_err(),
        GetError::TimedOut
    );
}

#[test]
fn c26_recv_of_zero_bytes_with_success_is_eof() {
    let port = port();
    let (ours, peer) = pair();
    let h = port.associate(ours, 1);
    port.submit(Recv::new(&h, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok());
    assert_eq!(p.bytes, 0);
}

#[test]
fn c8_send_of_a_large_buffer_completes_once_with_every_byte() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 9);
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let expect = data.clone();
    port.submit(Send::new(&h, data))
        .map_err(|(e, _)| e)
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; expect.len()];
        peer.read_exact(&mut got).unwrap();
        got == expect
    });
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!(p.bytes, 8 * 1024 * 1024);
    let Op::Send(s) = p.op else { panic!() };
    assert_eq!(s.buf.len(), 8 * 1024 * 1024, "the buffer comes back whole");
    assert!(reader.join().unwrap(), "peer received the exact bytes");
}

#[test]
fn c4_accept_hands_back_the_socket_and_the_peer_address_with_the_listeners_key() {
    let port = port();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let lh = port.associate(l, 5);
    port.submit(Accept::new(&lh)).map_err(|(e, _)| e).unwrap();
    let c = TcpStream::connect(addr).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.key, 5);
    assert!(p.status.is_ok());
    let Op::Accept(a) = p.op else { panic!() };
    assert!(a.socket.is_some());
    assert_eq!(a.peer, Some(c.local_addr().unwrap()));
}

#[test]
fn c8_failed_operation_yields_one_packet_with_the_error() {
    let port = port();
    // Accept on a socket that is not listening fails in the kernel.
    let (ours, _peer) = pair();
    let h = port.associate(ours, 3);
    port.submit(Accept::new(&h)).map_err(|(e, _)| e).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.key, 3);
    assert!(p.status.is_err());
    assert_eq!(
        port.get(Some(Duration::ZERO)).unwrap_err(),
        GetError::TimedOut
    );
}

#[test]
fn c8_synchronous_failure_returns_the_op_and_posts_nothing() {
    let port = port();
    let other = Port::new().unwrap();
    let (ours, _peer) = pair();
    let foreign = other.associate(ours, 1);
    let buf = vec![1, 2, 3];
    let (err, op) = port.submit(Send::new(&foreign, buf)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let Op::Send(s) = op else { panic!() };
    assert_eq!(s.buf, vec![1, 2, 3], "the buffer is handed back");
    assert_eq!(
        port.get(Some(Duration::ZERO)).unwrap_err(),
        GetError::TimedOut
    );
}

#[test]
fn pooled_recv_holds_no_buffer_and_appends_what_arrives() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 21);
    port.submit(Recv::pooled(&h, b"x".to_vec()))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"yz").unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok());
    assert_eq!(p.bytes, 2);
    let Op::Recv(r) = p.op else { panic!() };
    assert_eq!(r.buf, b"xyz");
}

#[test]
fn pooled_recvs_given_drained_buffers_append_exactly_what_arrives() {
    // A connection hands its drained input buffer (empty, with room, its old
    // bytes still in the memory) back to each pooled receive: every receive
    // gets exactly its own bytes, whatever buffer it ends up in, round after
    // round; a receive that sees EOF hands back an empty buffer.
    let port = port();
    let n = 20u64;
    let mut conns = Vec::new();
    let mut bufs = Vec::new();
    for i in 0..n {
        let (ours, peer) = pair();
        conns.push((port.associate(ours, i), peer));
        let mut b = format!("stale bytes of {i}").into_bytes();
        b.clear();
        bufs.push(b);
    }
    for round in 0..3 {
        for (i, (h, _)) in conns.iter().enumerate() {
            let buf = std::mem::take(&mut bufs[i]);
            port.submit(Recv::pooled(h, buf))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        for (i, (_, peer)) in conns.iter_mut().enumerate() {
            peer.write_all(format!("round {round} conn {i}").as_bytes())
                .unwrap();
        }
        for _ in 0..n {
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{:?}", p.status);
            let Op::Recv(mut r) = p.op else { panic!() };
            assert_eq!(
                r.buf,
                format!("round {round} conn {}", p.key).as_bytes(),
                "a receive's buffer holds exactly the bytes it received"
            );
            r.buf.clear();
            bufs[p.key as usize] = r.buf;
        }
    }
    let (h, peer) = conns.pop().unwrap();
    let buf = bufs.pop().unwrap();
    port.submit(Recv::pooled(&h, buf))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok());
    assert_eq!(p.bytes, 0, "EOF");
    let Op::Recv(r) = p.op else { panic!() };
    assert!(r.buf.is_empty());
}

#[test]
fn pooled_recvs_beyond_the_pool_fall_back_to_their_own_buffers() {
    // More pooled receives complete at once than the pool has buffers (256):
    // the kernel answers ENOBUFS for the rest, which retry with their own.
    // It holds some 600 descriptors: alone in a child, so that it neither
    // runs out of them under `ulimit -n 1024` nor starves the tests beside it.
    if in_child(
        &test_name!(pooled_recvs_beyond_the_pool_fall_back_to_their_own_buffers),
        &[],
        Duration::from_secs(120),
    ) {
        return;
    }
    let port = port();
    let n = 300;
    let mut peers = Vec::new();
    for i in 0..n {
        let (ours, peer) = pair();
        let h = port.associate(ours, i);
        port.submit(Recv::pooled(&h, Vec::new()))
            .map_err(|(e, _)| e)
            .unwrap();
        peers.push(peer);
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.write_all(format!("message {i}").as_bytes()).unwrap();
    }
    let mut seen = vec![false; n as usize];
    for _ in 0..n {
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{:?}", p.status);
        let Op::Recv(r) = p.op else { panic!() };
        assert_eq!(r.buf, format!("message {}", p.key).as_bytes());
        assert!(!seen[p.key as usize]);
        seen[p.key as usize] = true;
    }
    assert!(seen.iter().all(|&s| s));
}

#[test]
fn c26_a_reset_is_an_error_packet_not_eof() {
    let port = port();
    let (ours, peer) = pair();
    let h = port.associate(ours, 31);
    {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt with a pointer to a live linger struct and its size.
        let rc = unsafe {
            libc::setsockopt(
                peer.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }
    drop(peer); // RST
    port.submit(Recv::new(&h, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(
        p.status.as_ref().unwrap_err().raw_os_error(),
        Some(libc::ECONNRESET)
    );
}

#[test]
fn c26_zero_length_recv_is_allowed() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 32);
    peer.write_all(b"data").unwrap();
    port.submit(Recv::new(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok());
    assert_eq!(p.bytes, 0);
}

/// Item 1: WSASend keeps the order of sends on one socket. Two large sends
/// queued back to back by one thread, with a reader slower than the sender so
/// that the first one is short at least once: the peer must receive all of the
/// first, then all of the second.
#[test]
fn sends_on_one_socket_complete_in_order() {
    let port = port();
    const N: usize = 8 * 1024 * 1024;
    for round in 0..3u8 {
        let (ours, mut peer) = pair();
        let h = port.associate(ours, 1);
        let a: Vec<u8> = (0..N).map(|i| (i % 251) as u8 ^ round).collect();
        let b: Vec<u8> = (0..N).map(|i| (i % 241) as u8 ^ 0x55).collect();
        let mut want = a.clone();
        want.extend_from_slice(&b);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::with_capacity(2 * N);
            let mut buf = vec![0u8; 128 * 1024];
            while got.len() < 2 * N {
                let n = peer.read(&mut buf).unwrap();
                assert!(n > 0, "eof after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                std::thread::sleep(Duration::from_micros(200));
            }
            got
        });
        let ia = port.submit(Send::new(&h, a)).map_err(|(e, _)| e).unwrap();
        let ib = port.submit(Send::new(&h, b)).map_err(|(e, _)| e).unwrap();
        let mut done = Vec::new();
        for _ in 0..2 {
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{:?}", p.status);
            assert_eq!(p.bytes, N as u64);
            done.push(p.id);
        }
        assert_eq!(done, vec![ia, ib], "sends complete in the order issued");
        let got = reader.join().unwrap();
        let first_bad = got.iter().zip(&want).position(|(x, y)| x != y);
        assert!(
            first_bad.is_none(),
            "round {round}: byte stream differs at {first_bad:?}"
        );
    }
}

#[test]
fn connect_completes_once_and_the_socket_carries_data_both_ways() {
    let port = port();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = port.associate(Connect::stream_socket(&addr).unwrap(), 77);
    let id = port
        .submit(Connect::new(&h, addr))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = port.get(T).unwrap();
    assert_eq!((p.key, p.id, p.bytes), (77, id, 0));
    assert!(p.status.is_ok(), "{:?}", p.status);
    let Op::Connect(c) = p.op else {
        panic!("not a connect: {:?}", p.op)
    };
    assert_eq!(c.addr, addr);
    no_packet(&port, Duration::from_millis(50), "no more packets");

    let (mut peer, from) = l.accept().unwrap();
    // The listener accepted this very socket.
    let local = local_addr(&h);
    assert_eq!(from, local);
    port.submit(Send::new(&h, b"ping".to_vec()))
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(port.get(T).unwrap().status.is_ok());
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    peer.write_all(b"pong").unwrap();
    port.submit(Recv::new(&h, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = port.get(T).unwrap();
    let Op::Recv(r) = p.op else { panic!() };
    assert_eq!(r.buf, b"pong");
}

#[test]
fn connect_to_a_closed_port_is_one_packet_with_econnrefused() {
    let port = port();
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let h = port.associate(Connect::stream_socket(&addr).unwrap(), 5);
    port.submit(Connect::new(&h, addr))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.key, 5);
    let e = p.status.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
    no_packet(&port, Duration::from_millis(50), "no more packets");
}

#[test]
fn connect_over_ipv6_loopback() {
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let port = port();
    let addr = l.local_addr().unwrap();
    let h = port.associate(Connect::stream_socket(&addr).unwrap(), 6);
    port.submit(Connect::new(&h, addr))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert!(l.accept().is_ok());
}

fn sigpipe_is_default() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into a zeroed local of the right type.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0);
    old.sa_sigaction == libc::SIG_DFL
}

#[test]
fn building_a_port_keeps_a_default_sigpipe_action() {
    // In a child of its own: this sets the action of the whole process.
    if in_child(
        &test_name!(building_a_port_keeps_a_default_sigpipe_action),
        &[],
        Duration::from_secs(60),
    ) {
        return;
    }
    // What a command-line tool does at the top of main.
    // SAFETY: installs the default action; no code of ours runs on the signal.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert!(sigpipe_is_default());
    let _port = iocomp::Port::builder().build().unwrap();
    assert!(
        sigpipe_is_default(),
        "building a port changed the SIGPIPE action from SIG_DFL"
    );
    // With the default action (which kills the process), sends to a peer
    // that is gone fail in their packets.
    for b in backends() {
        let port = port_on(b);
        assert!(sigpipe_is_default(), "{b}");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        drop(l.accept().unwrap());
        let h = port.associate(OwnedFd::from(ours), 1);
        let mut failed = false;
        // The first sends may still be taken (the reset comes back with
        // them); a later one fails.
        for _ in 0..10 {
            port.submit(Send::new(&h, vec![1u8; 1 << 16]))
                .map_err(|(e, _)| e)
                .unwrap();
            if port.get(T).unwrap().status.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "{b}: sends to a closed peer kept succeeding");
    }
}
