//! Receives on a stream socket whose bytes arrive while no receive is
//! pending (the case a read-ahead behind `Recv`, issue 18's multishot
//! receive lever, must get right): every byte reaches the receives in the order they
//! were posted, pooled and plain alike, a plain receive takes no more than
//! its buffer holds, end of stream comes after the data, a cancelled receive
//! takes nothing, and a handle that is dropped or closed with nothing pending
//! ends the connection for the peer, as `closesocket` does. On the backend
//! `IOCOMP_BACKEND` picks (CI runs both).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use iocomp::{GetError, Op, Port, Recv};

use crate::harness::{pair, port, T};

/// Lets the port's thread run for a moment with nothing to deliver (its ring
/// collects what arrived meanwhile).
fn idle(port: &Port) {
    assert_eq!(
        port.get(Some(Duration::from_millis(100))).unwrap_err(),
        GetError::TimedOut,
        "no packet was expected"
    );
}

/// Writes `chunks` as separate segments (no coalescing on our side).
fn send_chunks(peer: &mut TcpStream, chunks: &[Vec<u8>]) {
    peer.set_nodelay(true).unwrap();
    for c in chunks {
        peer.write_all(c).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The peer sees the end of the connection (EOF, or a reset when unread
/// bytes were discarded) within a generous bound.
fn peer_sees_the_end(peer: &mut TcpStream) {
    peer.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut b = [0u8; 16];
    match peer.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the peer did not see the connection end: {other:?}"),
    }
}

#[test]
fn bytes_that_arrive_between_pooled_receives_come_in_order() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 3);
    port.submit(Recv::pooled(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"first").unwrap();
    let p = port.get(T).unwrap();
    let Op::Recv(r) = p.op else { panic!() };
    assert_eq!(r.buf, b"first");
    // Ten segments while no receive is pending (more than any read-ahead
    // keeps), then receives one by one.
    let chunks: Vec<Vec<u8>> = (0..10).map(|i| format!("<{i}>").into_bytes()).collect();
    send_chunks(&mut peer, &chunks);
    idle(&port);
    let want: Vec<u8> = chunks.concat();
    let mut got = Vec::new();
    while got.len() < want.len() {
        port.submit(Recv::pooled(&h, Vec::new()))
            .map_err(|(e, _)| e)
            .unwrap();
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{:?}", p.status);
        assert!(p.bytes > 0);
        let Op::Recv(r) = p.op else { panic!() };
        assert_eq!(r.buf.len() as u64, p.bytes);
        got.extend_from_slice(&r.buf);
    }
    assert_eq!(got, want);
    idle(&port);
}

#[test]
fn a_plain_receive_after_read_ahead_takes_what_fits_and_leaves_the_rest() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 4);
    port.submit(Recv::pooled(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"go").unwrap();
    port.get(T).unwrap();
    send_chunks(&mut peer, &[b"abcdefghij".to_vec(), b"klmnop".to_vec()]);
    idle(&port);
    // Plain receives of 4 bytes each: never more than the buffer holds.
    let mut got = Vec::new();
    while got.len() < 16 {
        port.submit(Recv::new(&h, Vec::with_capacity(4)))
            .map_err(|(e, _)| e)
            .unwrap();
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{:?}", p.status);
        let Op::Recv(r) = p.op else { panic!() };
        assert!(!r.buf.is_empty() && r.buf.len() <= 4, "{:?}", r.buf);
        assert_eq!(r.buf.len() as u64, p.bytes);
        got.extend_from_slice(&r.buf);
    }
    assert_eq!(got, b"abcdefghijklmnop");
}

#[test]
fn end_of_stream_after_read_ahead_comes_after_the_data_and_again() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 5);
    port.submit(Recv::pooled(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"x").unwrap();
    port.get(T).unwrap();
    peer.write_all(b"yz").unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    idle(&port);
    let mut got = Vec::new();
    loop {
        port.submit(Recv::pooled(&h, Vec::new()))
            .map_err(|(e, _)| e)
            .unwrap();
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{:?}", p.status);
        let Op::Recv(r) = p.op else { panic!() };
        if p.bytes == 0 {
            assert!(r.buf.is_empty());
            break;
        }
        got.extend_from_slice(&r.buf);
    }
    assert_eq!(got, b"yz");
    // A receive after end of stream says so again.
    port.submit(Recv::pooled(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = port.get(T).unwrap();
    assert!(
        p.status.is_ok() && p.bytes == 0,
        "{:?} {}",
        p.status,
        p.bytes
    );
}

#[test]
fn a_cancelled_pooled_receive_takes_nothing_and_the_next_gets_the_bytes() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 6);
    let first = port
        .submit(Recv::pooled(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    let second = port
        .submit(Recv::pooled(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    idle(&port);
    port.cancel(first).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.id, first);
    assert!(p.is_aborted(), "{:?}", p.status);
    assert_eq!(p.bytes, 0);
    peer.write_all(b"hi").unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.id, second);
    let Op::Recv(r) = p.op else { panic!() };
    assert_eq!(r.buf, b"hi");
    idle(&port);
}

#[test]
fn a_handle_dropped_after_its_receive_completed_ends_the_connection() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 7);
    port.submit(Recv::pooled(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"bye").unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.bytes, 3);
    // Every clone of the handle goes (the packet's op holds one).
    drop(p);
    drop(h);
    // The port's thread comes back to the port, as a worker does.
    idle(&port);
    peer_sees_the_end(&mut peer);
}

#[test]
fn closing_a_handle_with_bytes_read_ahead_ends_the_connection() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 8);
    port.submit(Recv::pooled(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"one").unwrap();
    port.get(T).unwrap();
    // Bytes arrive that no receive asked for yet.
    peer.write_all(b"two").unwrap();
    idle(&port);
    h.close();
    idle(&port);
    peer_sees_the_end(&mut peer);
}
