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
