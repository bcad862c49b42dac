//! The connect operation (`ConnectEx`): one packet, success or the kernel's
//! error, cancellable — on real loopback sockets, on the backend chosen by
//! `IOCOMP_BACKEND` (CI runs this file under both).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::Duration;

use iocomp::{Connect, GetError, Op, Port, Recv, Send};

const T: Option<Duration> = Some(Duration::from_secs(20));

fn port() -> Port {
    let p = Port::builder().concurrency(2).build().unwrap();
    p.attach().unwrap();
    p
}

fn no_more_packets(port: &Port) {
    assert_eq!(
        port.get(Some(Duration::from_millis(50))).unwrap_err(),
        GetError::TimedOut
    );
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
    no_more_packets(&port);

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
    no_more_packets(&port);
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

#[test]
fn c23_cancel_aborts_a_connect_that_cannot_finish() {
    let port = port();
    // A listener whose accept queue is full drops new SYNs: a connect to it
    // stays in progress (the client retransmits) until cancelled.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // SAFETY: listen(2) again on our listening socket only changes its backlog.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let mut fillers = Vec::new();
    for _ in 0..2 {
        let s = Connect::stream_socket(&addr).unwrap();
        let h = port.associate(s, 1);
        port.submit(Connect::new(&h, addr))
            .map_err(|(e, _)| e)
            .unwrap();
        fillers.push(h);
    }
    // Whatever the fillers do, one more connect must end up waiting.
    let h = port.associate(Connect::stream_socket(&addr).unwrap(), 9);
    let id = port
        .submit(Connect::new(&h, addr))
        .map_err(|(e, _)| e)
        .unwrap();
    // Collect the fillers' packets (at most two, those that finished).
    let mut finished = 0;
    while let Ok(p) = port.get(Some(Duration::from_millis(300))) {
        assert_ne!(p.id, id, "the third connect cannot finish: {:?}", p.status);
        finished += 1;
    }
    assert!(finished <= 2);
    port.cancel(id).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!((p.id, p.key), (id, 9));
    assert!(p.is_aborted(), "{:?}", p.status);
    assert_eq!(
        port.cancel(id).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    drop(fillers);
    // Late packets of the fillers (cancelled by nothing) may still come; the
    // aborted connect yields no second packet.
    while let Ok(p) = port.get(Some(Duration::from_millis(50))) {
        assert_ne!(p.id, id);
    }
}

fn local_addr(h: &iocomp::Handle) -> SocketAddr {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `st` and `len` are live locals of the sizes the kernel is told.
    let rc = unsafe {
        libc::getsockname(
            h.as_raw_fd(),
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    assert_eq!(i32::from(st.ss_family), libc::AF_INET);
    // SAFETY: the family says it is a sockaddr_in.
    let sin = unsafe { &*(&st as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
    SocketAddr::from((
        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
        u16::from_be(sin.sin_port),
    ))
}
