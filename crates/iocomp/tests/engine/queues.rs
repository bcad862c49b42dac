//! Operations queued behind the front of a socket's queue. Issue 18 made a
//! queue one word, its front, per direction; the ops behind it wait in a side
//! table of the ring (thread) that runs them. These tests (written as review
//! probes of that change) drive the paths
//! where ops do wait behind the front — several big sends and several
//! receives queued on one socket, from one thread and from several, with the
//! front and middle ops cancelled, the issuing thread exiting with ops
//! queued, the handle closed with ops queued, and the descriptor number
//! reused afterwards — and check the IOCP rules through the public API only:
//!
//! - exactly one packet per accepted submission;
//! - the peer's byte stream is the concatenation of the sends in submission
//!   order, each cut at the `bytes` its packet reports;
//! - receives take the peer's bytes in submission order;
//! - (one collector) the ops of one socket and direction that nobody
//!   cancelled complete in submission order.
//!
//! On both backends.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use iocomp::{Backend, GetError, Handle, Op, OpId, Packet, Port, Recv, Send};

use crate::harness::{self, backends, pattern, port_on, Rng, T};

const MIB: usize = 1 << 20;

/// What a packet said, kept without its op (so no handle clone stays).
#[derive(Debug)]
struct Res {
    ok: bool,
    aborted: bool,
    bytes: u64,
    /// A receive's bytes.
    data: Vec<u8>,
    err: String,
}

fn record(p: Packet) -> (OpId, Res) {
    let aborted = p.is_aborted();
    let err = match &p.status {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    };
    let ok = p.status.is_ok();
    let data = match p.op {
        Op::Recv(r) => r.buf,
        _ => Vec::new(),
    };
    (
        p.id,
        Res {
            ok,
            aborted,
            bytes: p.bytes,
            data,
            err,
        },
    )
}

fn unix_pair() -> (OwnedFd, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (a.into(), b)
}

/// Sets a socket's `SOL_SOCKET` int option `opt` to `n`.
fn set_buf(fd: i32, opt: libc::c_int, n: libc::c_int) {
    // SAFETY: setsockopt reads one int from a live local of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&n as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
}

/// Reads a peer to EOF once its gate opens (so that sends queue up first).
struct Gated {
    gate: Option<mpsc::Sender<()>>,
    done: thread::JoinHandle<Vec<u8>>,
}

impl Gated {
    fn reader(mut peer: impl Read + std::marker::Send + 'static) -> Gated {
        let (tx, rx) = mpsc::channel::<()>();
        let done = thread::spawn(move || {
            let _ = rx.recv();
            let mut all = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match peer.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("reader: {e} after {} bytes", all.len()),
                }
            }
            all
        });
        Gated {
            gate: Some(tx),
            done,
        }
    }

    fn open(&mut self) {
        if let Some(g) = self.gate.take() {
            let _ = g.send(());
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.open();
        self.done.join().unwrap()
    }
}

/// Writes `data` to a peer in small pieces once its gate opens; hands the
/// peer back (still open) when done.
fn gated_writer<W: Write + std::marker::Send + 'static>(
    mut peer: W,
    data: Vec<u8>,
    seed: u64,
) -> (mpsc::Sender<()>, thread::JoinHandle<W>) {
    let (tx, rx) = mpsc::channel::<()>();
    let h = thread::spawn(move || {
        let _ = rx.recv();
        let mut rng = Rng::new(seed);
        let mut at = 0;
        while at < data.len() {
            let n = (1 + rng.below(700) as usize).min(data.len() - at);
            // Our side may close once it has what it needs (EPIPE then).
            if peer.write_all(&data[at..at + n]).is_err() {
                break;
            }
            at += n;
            if rng.below(3) == 0 {
                thread::sleep(Duration::from_micros(200));
            }
        }
        peer
    });
    (tx, h)
}

/// Submits 1 MiB sends of `seed`'s pattern on `h`, the `i`-th at offset `i`
/// MiB, for each `i` in `range`.
fn submit_sends(
    port: &Port,
    h: &Handle,
    seed: u64,
    range: std::ops::Range<usize>,
) -> Vec<(OpId, u64, usize)> {
    range
        .map(|i| {
            let off = (i * MIB) as u64;
            let id = port
                .submit(Send::new(h, pattern(seed, off, MIB)))
                .map_err(|(e, _)| e)
                .unwrap();
            (id, off, MIB)
        })
        .collect()
}

/// Submits `n` receives of up to 100 bytes each on `h`.
fn submit_recvs(port: &Port, h: &Handle, n: usize) -> Vec<OpId> {
    (0..n)
        .map(|_| {
            port.submit(Recv::new(h, Vec::with_capacity(100)))
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect()
}

/// Closes both handles, lets the reader run to the end, and checks that the
/// peer saw the sends in submission order, each cut at its packet's bytes.
fn close_and_check_stream(
    b: Backend,
    (hx, hy): (Handle, Handle),
    reader: Gated,
    sends: &[(OpId, u64, usize)],
    seed: u64,
    res: &HashMap<OpId, Res>,
) {
    let want_out = expected_stream(sends, seed, res);
    hx.close();
    hy.close();
    let got_out = reader.finish();
    assert_eq!(
        first_diff(&got_out, &want_out),
        None,
        "{b:?}: the peer's stream ({} bytes) is not the sends in order ({} bytes)",
        got_out.len(),
        want_out.len()
    );
}

/// The stream the peer must have seen: each send's bytes cut at what its
/// packet reported, in submission order.
fn expected_stream(sends: &[(OpId, u64, usize)], seed: u64, res: &HashMap<OpId, Res>) -> Vec<u8> {
    let mut want = Vec::new();
    for (id, off, len) in sends {
        let r = &res[id];
        assert!(
            r.bytes <= *len as u64,
            "{id:?} reports {} of {len}",
            r.bytes
        );
        want.extend_from_slice(&pattern(seed, *off, r.bytes as usize));
    }
    want
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))
}

/// One round on one thread that is the only collector: `n_send` sends of
/// 1 MiB on `hx` (whose peer reads only once everything is queued) and
/// `n_recv` receives of 100 bytes on `hy` (whose peer writes 1,000 bytes
/// only then); the ops at `cancel_sends` / `cancel_recvs` are cancelled while
/// they wait (index 0: the front). Checks the rules, closes both handles.
#[allow(clippy::too_many_arguments)]
fn queued_round(
    port: &Port,
    b: Backend,
    hx: Handle,
    xpeer: UnixStream,
    hy: Handle,
    ypeer: UnixStream,
    seed: u64,
    cancel_sends: &[usize],
    cancel_recvs: &[usize],
) {
    let (n_send, n_recv) = (6usize, 5usize);
    let mut reader = Gated::reader(xpeer);
    let want_in = pattern(seed + 1000, 0, 1000);
    let (wgate, writer) = gated_writer(ypeer, want_in.clone(), seed + 1);
    let sends = submit_sends(port, &hx, seed, 0..n_send);
    let recvs = submit_recvs(port, &hy, n_recv);
    for &i in cancel_sends {
        port.cancel(sends[i].0)
            .unwrap_or_else(|e| panic!("{b:?}: cancel of queued send {i}: {e}"));
    }
    for &i in cancel_recvs {
        port.cancel(recvs[i])
            .unwrap_or_else(|e| panic!("{b:?}: cancel of queued receive {i}: {e}"));
    }
    reader.open();
    let _ = wgate.send(());
    let mut res = HashMap::new();
    let mut arrival = Vec::new();
    for _ in 0..n_send + n_recv {
        let p = port.get(T).unwrap_or_else(|e| {
            panic!(
                "{b:?}: a packet is missing ({e}); got {} of {}: {res:?}",
                res.len(),
                n_send + n_recv
            )
        });
        let (id, r) = record(p);
        arrival.push(id);
        assert!(
            sends.iter().any(|s| s.0 == id) || recvs.contains(&id),
            "{b:?}: a packet of no op of this round: {id:?}"
        );
        assert!(res.insert(id, r).is_none(), "{b:?}: two packets for {id:?}");
    }
    assert_eq!(
        port.get(Some(Duration::from_millis(50))).unwrap_err(),
        GetError::TimedOut,
        "{b:?}: an extra packet"
    );
    // Order of the uncancelled ones, per direction.
    let pos = |id: &OpId| arrival.iter().position(|x| x == id).unwrap();
    let kept_s: Vec<usize> = (0..n_send).filter(|i| !cancel_sends.contains(i)).collect();
    let kept_r: Vec<usize> = (0..n_recv).filter(|i| !cancel_recvs.contains(i)).collect();
    for w in kept_s.windows(2) {
        assert!(
            pos(&sends[w[0]].0) < pos(&sends[w[1]].0),
            "{b:?}: send {} completed after send {} (arrival {arrival:?})",
            w[0],
            w[1]
        );
    }
    for w in kept_r.windows(2) {
        assert!(
            pos(&recvs[w[0]]) < pos(&recvs[w[1]]),
            "{b:?}: receive {} completed after receive {}",
            w[0],
            w[1]
        );
    }
    for &i in &kept_s {
        let r = &res[&sends[i].0];
        assert!(r.ok && r.bytes == MIB as u64, "{b:?}: send {i}: {r:?}");
    }
    for (i, (id, _, _)) in sends.iter().enumerate() {
        let r = &res[id];
        assert!(r.ok || r.aborted, "{b:?}: send {i} failed: {}", r.err);
    }
    let mut got_in = Vec::new();
    for (i, id) in recvs.iter().enumerate() {
        let r = &res[id];
        assert!(r.ok || r.aborted, "{b:?}: receive {i} failed: {}", r.err);
        assert_eq!(r.bytes as usize, r.data.len(), "{b:?}: receive {i}");
        if kept_r.contains(&i) {
            assert!(r.ok && r.bytes > 0, "{b:?}: receive {i}: {r:?}");
        }
        got_in.extend_from_slice(&r.data);
    }
    assert_eq!(
        first_diff(&got_in, &want_in[..got_in.len().min(want_in.len())]),
        None,
        "{b:?}: the receives took the bytes out of order"
    );
    close_and_check_stream(b, (hx, hy), reader, &sends, seed, &res);
    drop(writer.join().unwrap());
}

/// Six 1 MiB sends and five receives queued on one socket each (so five and
/// four wait behind the front), the front and a middle op of each cancelled:
/// the others complete in submission order, the streams are intact. Then the
/// handles are closed and dropped, and the same again on new sockets, which
/// take the freed descriptor numbers where the kernel gives them back (the
/// side table is keyed by descriptor).
#[test]
fn queued_ops_keep_order_with_front_and_middle_cancelled_and_fd_reuse() {
    let _dog = harness::Watchdog::new("idle18 queued ops", Duration::from_secs(300));
    for b in backends() {
        let port = port_on(b);
        let mut fds = Vec::new();
        for round in 0..3u64 {
            let (x, xp) = unix_pair();
            let (y, yp) = unix_pair();
            let now = (x.as_raw_fd(), y.as_raw_fd());
            if round > 0 {
                eprintln!(
                    "{b:?} round {round}: descriptors {now:?}, before {:?}{}",
                    fds.last(),
                    if fds.contains(&now) { " (reused)" } else { "" }
                );
            }
            fds.push(now);
            set_buf(now.0, libc::SO_SNDBUF, 4096);
            let hx = port.associate(x, 10 + round);
            let hy = port.associate(y, 20 + round);
            let (cs, cr): (Vec<usize>, Vec<usize>) = match round {
                0 => (vec![0, 3], vec![0, 2]),
                1 => (vec![], vec![]),
                _ => (vec![1, 2, 5], vec![1, 4]),
            };
            queued_round(&port, b, hx, xp, hy, yp, 7 + round * 10, &cs, &cr);
        }
    }
}

/// A thread queues sends and receives on two sockets and exits without
/// waiting (its ring drains: each op yields one packet, aborted or done);
/// another thread then goes on with the same sockets, its ops queued too:
/// every op is accounted for once and the streams keep submission order.
#[test]
fn thread_exits_with_queued_ops_and_another_goes_on() {
    let _dog = harness::Watchdog::new("idle18 thread exit", Duration::from_secs(300));
    for b in backends() {
        let port = port_on(b);
        let (x, xp) = unix_pair();
        let (y, yp) = unix_pair();
        set_buf(x.as_raw_fd(), libc::SO_SNDBUF, 4096);
        let hx = port.associate(x, 1);
        let hy = port.associate(y, 2);
        let mut reader = Gated::reader(xp);
        let want_in = pattern(99, 0, 1000);
        let (wgate, writer) = gated_writer(yp, want_in.clone(), 3);
        let seed = 41;
        let (mut sends, gone_recvs) = {
            let (port, hx, hy) = (port.clone(), hx.clone(), hy.clone());
            thread::spawn(move || {
                port.attach().unwrap();
                (
                    submit_sends(&port, &hx, seed, 0..4),
                    submit_recvs(&port, &hy, 3),
                )
            })
            .join()
            .unwrap()
        };
        let mut res = HashMap::new();
        for _ in 0..7 {
            let p = port.get(T).unwrap_or_else(|e| {
                panic!("{b:?}: a packet of the exited thread's ops is missing: {e}")
            });
            let (id, r) = record(p);
            assert!(res.insert(id, r).is_none(), "{b:?}: two packets for {id:?}");
        }
        for id in &gone_recvs {
            let r = &res[id];
            assert!(
                r.aborted && r.bytes == 0,
                "{b:?}: a receive of the exited thread: {r:?}"
            );
        }
        for (id, _, _) in &sends {
            let r = res
                .get(id)
                .unwrap_or_else(|| panic!("{b:?}: no packet for {id:?}"));
            assert!(r.ok || r.aborted, "{b:?}: {r:?}");
        }
        // This thread goes on with both sockets, its ops queued again.
        let more = submit_sends(&port, &hx, seed, 4..7);
        let mine: Vec<OpId> = more.iter().map(|s| s.0).collect();
        sends.extend(more);
        let recvs = submit_recvs(&port, &hy, 3);
        reader.open();
        let _ = wgate.send(());
        let mut arrival = Vec::new();
        for _ in 0..6 {
            let p = port
                .get(T)
                .unwrap_or_else(|e| panic!("{b:?}: missing: {e}"));
            let (id, r) = record(p);
            arrival.push(id);
            assert!(res.insert(id, r).is_none(), "{b:?}: two packets for {id:?}");
        }
        let mine_order: Vec<OpId> = arrival
            .iter()
            .copied()
            .filter(|i| mine.contains(i))
            .collect();
        assert_eq!(mine_order, mine, "{b:?}: sends out of order");
        let recv_order: Vec<OpId> = arrival
            .iter()
            .copied()
            .filter(|i| recvs.contains(i))
            .collect();
        assert_eq!(recv_order, recvs, "{b:?}: receives out of order");
        let mut got_in = Vec::new();
        for id in &recvs {
            let r = &res[id];
            assert!(r.ok && r.bytes > 0, "{b:?}: {r:?}");
            got_in.extend_from_slice(&r.data);
        }
        assert_eq!(first_diff(&got_in, &want_in[..got_in.len()]), None, "{b:?}");
        for id in &mine {
            let r = &res[id];
            assert!(r.ok && r.bytes == MIB as u64, "{b:?}: {r:?}");
        }
        close_and_check_stream(b, (hx, hy), reader, &sends, seed, &res);
        drop(writer.join().unwrap());
    }
}

/// A handle closed while five sends and four receives wait on it (most of
/// them behind the front): every op yields one packet, the peer sees the end
/// after a prefix-consistent stream; then a new socket on the (likely) same
/// descriptor number queues ops of its own and they all run, in order.
#[test]
fn close_with_queued_ops_then_the_descriptor_is_reused() {
    let _dog = harness::Watchdog::new("idle18 close", Duration::from_secs(300));
    for b in backends() {
        let port = port_on(b);
        let (x, xp) = unix_pair();
        let xfd = x.as_raw_fd();
        set_buf(xfd, libc::SO_SNDBUF, 4096);
        let hx = port.associate(x, 5);
        let reader = Gated::reader(xp.try_clone().unwrap());
        let seed = 77;
        let sends = submit_sends(&port, &hx, seed, 0..5);
        let recvs: Vec<OpId> = (0..4)
            .map(|_| {
                port.submit(Recv::pooled(&hx, Vec::new()))
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        hx.close();
        let mut res = HashMap::new();
        for _ in 0..9 {
            let p = port.get(T).unwrap_or_else(|e| {
                panic!("{b:?}: a packet of the closed handle's ops is missing: {e}")
            });
            let (id, r) = record(p);
            assert!(res.insert(id, r).is_none(), "{b:?}: two packets for {id:?}");
        }
        for id in sends.iter().map(|s| &s.0).chain(&recvs) {
            let r = res
                .get(id)
                .unwrap_or_else(|| panic!("{b:?}: no packet for {id:?}"));
            assert!(r.aborted || r.ok, "{b:?}: {r:?}");
        }
        let want_out = expected_stream(&sends, seed, &res);
        let got_out = reader.finish();
        assert_eq!(first_diff(&got_out, &want_out), None, "{b:?}");
        drop(xp);
        // The descriptor number is free again once the packets' ops are gone.
        drop(res);
        let (y, yp) = unix_pair();
        let (z, zp) = unix_pair();
        eprintln!(
            "{b:?}: closed descriptor {xfd}; new ones {} and {}",
            y.as_raw_fd(),
            z.as_raw_fd()
        );
        set_buf(y.as_raw_fd(), libc::SO_SNDBUF, 4096);
        let hy = port.associate(y, 6);
        let hz = port.associate(z, 7);
        queued_round(&port, b, hy, yp, hz, zp, 500, &[2], &[3]);
    }
}
