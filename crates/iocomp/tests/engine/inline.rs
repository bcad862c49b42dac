//! `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`, asked per call:
//! `Port::submit_inline` hands back the packet of an operation that completed
//! at once (and queues none), or says `Pending` and then exactly one packet
//! comes through the port. On both backends.

use std::io::{Read, Write};
use std::time::Duration;

use iocomp::{Inline, Op, Port, ReadAt, Recv, Send};

use crate::harness::{backends, no_packet, pair, port_on, TempFile, T};

#[test]
fn what_completes_at_once_comes_back_inline_and_is_not_queued() {
    for b in backends() {
        let port = port_on(b);
        let (ours, mut peer) = pair();
        let h = port.associate(ours, 4);
        // A small send: the socket buffer takes it at once.
        match port.submit_inline(Send::new(&h, b"hello".to_vec())) {
            Ok(Inline::Done(p)) => {
                assert!(p.status.is_ok(), "{b:?}: {:?}", p.status);
                assert_eq!((p.key, p.bytes), (4, 5));
                let Op::Send(s) = p.op else { panic!() };
                assert_eq!(s.buf, b"hello");
            }
            other => panic!("{b:?}: a small send did not complete inline: {other:?}"),
        }
        no_packet(
            &port,
            Duration::from_millis(20),
            "a packet was queued for an operation that completed inline",
        );
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");

        // A receive with data already waiting.
        peer.write_all(b"data").unwrap();
        match port.submit_inline(Recv::new(&h, Vec::with_capacity(16))) {
            Ok(Inline::Done(p)) => {
                assert_eq!((p.key, p.bytes), (4, 4), "{b:?}");
                let Op::Recv(r) = p.op else { panic!() };
                assert_eq!(r.buf, b"data");
            }
            other => panic!("{b:?}: a receive with data waiting was not inline: {other:?}"),
        }
        no_packet(
            &port,
            Duration::from_millis(20),
            "a packet was queued for an operation that completed inline",
        );

        // A file read from the page cache.
        let tmp = TempFile::new("inline");
        std::fs::write(&tmp.0, b"cached bytes").unwrap();
        let f = port.associate(std::fs::File::open(&tmp.0).unwrap(), 6);
        drop(tmp);
        match port.submit_inline(ReadAt::new(&f, Vec::with_capacity(64), 7)) {
            Ok(Inline::Done(p)) => {
                assert_eq!((p.key, p.bytes), (6, 5), "{b:?}");
                let Op::ReadAt(r) = p.op else { panic!() };
                assert_eq!(r.buf, b"bytes");
            }
            other => panic!("{b:?}: a cached read was not inline: {other:?}"),
        }
        no_packet(
            &port,
            Duration::from_millis(20),
            "a packet was queued for an operation that completed inline",
        );
    }
}

#[test]
fn what_must_wait_is_pending_with_exactly_one_packet() {
    for b in backends() {
        let port = port_on(b);
        let (ours, mut peer) = pair();
        let h = port.associate(ours, 8);
        let id = match port.submit_inline(Recv::new(&h, Vec::with_capacity(16))) {
            Ok(Inline::Pending(id)) => id,
            other => panic!("{b:?}: a receive with no data completed: {other:?}"),
        };
        no_packet(
            &port,
            Duration::from_millis(20),
            "a packet was queued for an operation that completed inline",
        );
        peer.write_all(b"later").unwrap();
        let p = port.get(T).unwrap();
        assert_eq!((p.id, p.key, p.bytes), (id, 8, 5), "{b:?}");
        no_packet(
            &port,
            Duration::from_millis(20),
            "a packet was queued for an operation that completed inline",
        );
        // A refused one comes back with its error and no packet.
        let other = Port::builder().backend(b).build().unwrap();
        let (x, _y) = pair();
        let foreign = other.associate(x, 1);
        let (e, op) = port
            .submit_inline(Recv::new(&foreign, Vec::with_capacity(3)))
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(matches!(op, Op::Recv(_)));
        no_packet(
            &port,
            Duration::from_millis(20),
            "a packet was queued for an operation that completed inline",
        );
    }
}

/// From a thread that does not wait on the port the operation is handed to
/// one that does: never inline, one packet.
#[test]
fn from_a_foreign_thread_it_is_pending() {
    for b in backends() {
        let port = port_on(b);
        let (ours, _peer) = pair();
        let h = port.associate(ours, 2);
        let r = {
            let port = port.clone();
            std::thread::spawn(move || port.submit_inline(Send::new(&h, b"x".to_vec())))
                .join()
                .unwrap()
        };
        let id = match r {
            Ok(Inline::Pending(id)) => id,
            other => panic!("{b:?}: {other:?}"),
        };
        let p = port.get(T).unwrap();
        assert_eq!((p.id, p.bytes), (id, 1), "{b:?}");
    }
}
