//! Cancellation and close: `CancelIoEx(h, NULL)` aborts every operation
//! pending on a handle (and nothing else), from any thread; `CancelIoEx` of
//! one operation (C23) aborts it and hands its buffer back; cancelled
//! operations waiting behind others complete at once and take no bytes;
//! `Handle::close` aborts what is pending and the peer then sees the end.
//! On both backends, or the one `IOCOMP_BACKEND` picks.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use iocomp::{Connect, GetError, Op, Pool, Port, Recv, Send, Timeout};

use crate::harness::{
    backends, pair, port, port_on, read_eintr, recv_buf, two_cancelled_hour_timers, T,
};

#[test]
fn cancel_handle_aborts_every_pending_op_on_it_and_nothing_else() {
    for b in backends() {
        let port = port_on(b);
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
        let port = port_on(b);
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
        let port = port_on(b);
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
        let port = port_on(b);
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

#[test]
fn c23_cancel_aborts_a_pending_recv_and_returns_its_buffer() {
    let port = port();
    let (ours, _peer) = pair();
    let h = port.associate(ours, 8);
    let id = port
        .submit(Recv::new(&h, Vec::with_capacity(32)))
        .map_err(|(e, _)| e)
        .unwrap();
    port.cancel(id).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.id, id);
    assert!(p.is_aborted(), "{:?}", p.status);
    let Op::Recv(r) = p.op else { panic!() };
    assert_eq!(r.buf.capacity(), 32);
    // Completed: a second cancel finds nothing, and posts nothing.
    assert_eq!(
        port.cancel(id).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(
        port.get(Some(Duration::ZERO)).unwrap_err(),
        GetError::TimedOut
    );
}

#[test]
fn c23_cancel_from_another_thread_aborts_a_long_timer_promptly() {
    let port = port();
    let id = port
        .submit(Timeout::new(Duration::from_secs(60), 77))
        .map_err(|(e, _)| e)
        .unwrap();
    let p2 = port.clone();
    std::thread::spawn(move || p2.cancel(id).unwrap())
        .join()
        .unwrap();
    let start = Instant::now();
    let p = port.get(T).unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(p.key, 77);
    assert!(p.is_aborted());
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

/// Item 2: cancels handed to a pool worker are never lost. Each of two timers
/// of an hour, cancelled at once, must come back aborted (a lost wake-up
/// leaves one in flight for the hour).
#[test]
fn cancelled_waitable_operations_always_complete() {
    let port = Port::builder().concurrency(1).build().unwrap();
    let _pool = Pool::new(&port, 1, |_, _| {}).unwrap();
    for i in 0..3000 {
        let [a, b] = two_cancelled_hour_timers(&port);
        for ov in [&a, &b] {
            let p = ov
                .wait(Some(Duration::from_secs(5)))
                .unwrap_or_else(|| panic!("iteration {i}: a cancelled op never completed"));
            assert!(p.is_aborted(), "{:?}", p.status);
        }
    }
}

/// Item 1, continued: a send waiting behind a blocked send on its socket is
/// cancelled at once (CancelIoEx), without waiting for the one ahead of it,
/// and sent nothing.
#[test]
fn a_cancelled_send_waiting_behind_a_blocked_one_completes_at_once() {
    let port = port();
    let (ours, _peer) = pair();
    let h = port.associate(ours, 3);
    let first = port
        .submit(Send::new(&h, vec![1u8; 64 * 1024 * 1024]))
        .map_err(|(e, _)| e)
        .unwrap();
    let second = port
        .submit(Send::new(&h, b"second".to_vec()))
        .map_err(|(e, _)| e)
        .unwrap();
    port.cancel(second).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!((p.id, p.bytes), (second, 0));
    assert!(p.is_aborted(), "{:?}", p.status);
    port.cancel(first).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.id, first);
    assert!(p.is_aborted(), "{:?}", p.status);
}

/// AFD fills a stream socket's pending receives in the order they were
/// posted, and `CancelIoEx` of one of them completes it (aborted) without
/// taking bytes: the others still take the peer's bytes in order.
#[test]
fn a_cancelled_pending_receive_takes_no_bytes_and_the_others_keep_their_order() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 1);
    let submit = |op: iocomp::Op| port.submit(op).map_err(|(e, _)| e).unwrap();
    let a = submit(Recv::new(&h, Vec::with_capacity(1)).into());
    let b = submit(Recv::new(&h, Vec::with_capacity(1)).into());
    let c = submit(Recv::new(&h, Vec::with_capacity(1)).into());
    port.cancel(b).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!((p.id, p.bytes), (b, 0));
    assert!(p.is_aborted(), "{:?}", p.status);
    peer.write_all(b"12").unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = port.get(T).unwrap();
        assert!(p.status.is_ok(), "{:?}", p.status);
        got.push((p.id, recv_buf(p)));
    }
    got.sort_by_key(|(id, _)| if *id == a { 0 } else { 1 });
    assert_eq!(got, vec![(a, b"1".to_vec()), (c, b"2".to_vec())]);
}

/// "On `Err` the operation is returned": a pooled receive refused because
/// `Handle::close` raced its submit comes back with the buffer it was given,
/// wherever in the submit the close is seen. One thread closes each handle
/// while another submits pooled receives on it until one is refused.
#[test]
fn a_pooled_receive_refused_by_a_racing_close_returns_its_buffer() {
    use std::sync::{Arc, Barrier};
    for b in backends() {
        let port = Port::builder().concurrency(2).backend(b).build().unwrap();
        port.attach().unwrap();
        for round in 0..200 {
            let (ours, _peer) = pair();
            let h = port.associate(ours, 1);
            let go = Arc::new(Barrier::new(2));
            let closer = {
                let (h, go) = (h.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    h.close();
                })
            };
            go.wait();
            loop {
                let buf: Vec<u8> = Vec::with_capacity(100);
                let at = buf.as_ptr();
                match port.submit(Recv::pooled(&h, buf)) {
                    Ok(_) => {}
                    Err((_, Op::Recv(r))) => {
                        assert_eq!(
                            (r.buf.as_ptr(), r.buf.capacity()),
                            (at, 100),
                            "{b:?}, round {round}: the refused receive lost its buffer"
                        );
                        break;
                    }
                    Err((e, op)) => panic!("{b:?}: refused with {e} and {op:?}"),
                }
            }
            closer.join().unwrap();
            // The packets of the receives that got in (cancelled by the close).
            while port.get(Some(Duration::ZERO)).is_ok() {}
        }
        port.detach();
    }
}
