//! Regression tests for the review of the alertable wait, datagram and
//! vectored operations and descriptor handling (engine review 15): a shared
//! open file stays usable when one of its handles goes, a positional read of
//! a procfs file reads on to its end, a datagram socket's vectored send is
//! one datagram or none, and `RecvFrom`'s address is only ever the one the
//! kernel gave for this receive. Both backends, public API only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use iocomp::{Accept, Op, ReadAt, RecvFrom, Send, SendVectored};

mod support;
use support::{backends, port_on, T};

/// How long a step that must not block may take before the test calls it
/// blocked: far beyond any scheduling delay on a loaded machine.
const HANG: Duration = Duration::from_secs(20);

fn nonblocking(fd: i32) -> bool {
    // SAFETY: F_GETFL on a descriptor the caller keeps open.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(fl >= 0);
    fl & libc::O_NONBLOCK != 0
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors nobody else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A listener `try_clone`d onto two handles (the usual way to accept on
/// several ports): dropping one handle leaves the other's open file as it
/// was, so its next Accept waits in the port instead of blocking the
/// submitting thread in `accept4`.
#[test]
fn a_shared_listener_keeps_accepting_after_the_other_handle_is_dropped() {
    for b in backends() {
        let port = port_on(b);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let l2 = l.try_clone().unwrap();
        let ha = port.associate(OwnedFd::from(l), 1);
        let hb = port.associate(OwnedFd::from(l2), 2);
        let mut clients = Vec::new();
        for h in [&ha, &hb] {
            port.submit(Accept::new(h)).map_err(|(e, _)| e).unwrap();
            clients.push(TcpStream::connect(addr).unwrap());
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b}: {:?}", p.status);
        }
        let before = nonblocking(hb.as_raw_fd());
        drop(ha);
        let after = nonblocking(hb.as_raw_fd());
        let port2 = port.clone();
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            port2.attach().unwrap();
            let r = port2.submit(Accept::new(&hb)).map_err(|(e, _)| e);
            tx.send(r.is_ok()).unwrap();
            port2.get(T).map(|p| (p.key, p.status.is_ok()))
        });
        let submitted = rx.recv_timeout(HANG);
        // Let the Accept complete (and free the thread if it was stuck).
        clients.push(TcpStream::connect(addr).unwrap());
        let got = t.join().unwrap();
        assert_eq!(
            submitted,
            Ok(true),
            "{b}: submitting an Accept blocked in accept4"
        );
        assert_eq!(got, Ok((2, true)), "{b}");
        assert_eq!(
            after, before,
            "{b}: dropping one handle changed the other's open file"
        );
    }
}

/// One pipe's write end dup'd into two handles: dropping one leaves the
/// other non-blocking if the engine made it so, and a Send larger than the
/// pipe waits in the port instead of blocking the submitting thread in
/// `write`.
#[test]
fn a_shared_pipe_keeps_sending_after_the_other_handle_is_dropped() {
    for b in backends() {
        let port = port_on(b);
        let (r, w) = pipe();
        let w2 = w.try_clone().unwrap();
        let h1 = port.associate(w, 1);
        let h2 = port.associate(w2, 2);
        for h in [&h1, &h2] {
            port.submit(Send::new(h, b"x".to_vec()))
                .map_err(|(e, _)| e)
                .unwrap();
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b}: {:?}", p.status);
        }
        let before = nonblocking(h2.as_raw_fd());
        drop(h1);
        let after = nonblocking(h2.as_raw_fd());
        const BIG: usize = 1 << 20;
        let port2 = port.clone();
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            port2.attach().unwrap();
            let r = port2
                .submit(Send::new(&h2, vec![7u8; BIG]))
                .map_err(|(e, _)| e);
            tx.send(r.is_ok()).unwrap();
            port2.get(T).map(|p| (p.key, p.bytes, p.status.is_ok()))
        });
        let submitted = rx.recv_timeout(HANG);
        // Drain the pipe: the Send completes (and a stuck thread is freed).
        let mut rf = std::fs::File::from(r);
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0;
        while total < BIG + 2 {
            match rf.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        let got = t.join().unwrap();
        assert_eq!(
            submitted,
            Ok(true),
            "{b}: submitting a Send blocked in write"
        );
        assert_eq!(got, Ok((2, BIG as u64, true)), "{b}");
        assert_eq!(total, BIG + 2, "{b}");
        assert_eq!(
            after, before,
            "{b}: dropping one handle changed the other's open file"
        );
    }
}

/// `ReadAt` on procfs files, whose `st_size` is 0 and whose reads return at
/// most about a page each: the buffer is filled up to the end of the file,
/// as `ReadFile` does, which takes several reads (the continuation step).
///
/// `/proc/self/smaps` always exists and is several pages for a test process
/// (a record of some 20 lines per mapping, dozens of mappings), but it changes
/// as the process runs, so only its size is checked: more than one page.
/// `/proc/kallsyms` (where the kernel has it) is megabytes long and its
/// first part is fixed while the system runs (module symbols come last):
/// there the bytes must equal what `std::fs::read` gives.
#[test]
fn read_at_on_a_procfs_file_reads_on_to_its_end() {
    for b in backends() {
        let port = port_on(b);
        let read_at = |path: &str, cap: usize| -> (u64, Vec<u8>) {
            let f = std::fs::File::open(path).unwrap();
            let h = port.associate(f, 1);
            port.submit(ReadAt::new(&h, Vec::with_capacity(cap), 0))
                .map_err(|(e, _)| e)
                .unwrap();
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b}: {path}: {:?}", p.status);
            let Op::ReadAt(r) = p.op else {
                panic!("{b}: not a ReadAt")
            };
            (p.bytes, r.buf)
        };
        let (n, buf) = read_at("/proc/self/smaps", 1 << 20);
        assert!(n > 8192, "{b}: /proc/self/smaps gave only {n} bytes");
        assert_eq!(n as usize, buf.len(), "{b}");
        assert_eq!(buf.last(), Some(&b'\n'), "{b}: smaps cut inside a line");
        if std::fs::File::open("/proc/kallsyms").is_ok() {
            const CAP: usize = 256 * 1024;
            let want = std::fs::read("/proc/kallsyms").unwrap();
            let want = &want[..want.len().min(CAP)];
            let (n, buf) = read_at("/proc/kallsyms", CAP);
            assert_eq!(n as usize, want.len(), "{b}: /proc/kallsyms");
            assert!(buf == want, "{b}: /proc/kallsyms bytes differ");
        }
    }
}

/// A connected datagram socket of each message-keeping type (UDP, and a
/// Unix `SOCK_SEQPACKET` pair): ours and the peer.
fn datagram_pairs() -> Vec<(&'static str, OwnedFd, OwnedFd)> {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(c.local_addr().unwrap()).unwrap();
    c.connect(a.local_addr().unwrap()).unwrap();
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: fresh descriptors nobody else owns.
    let (s, t) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    vec![("udp", a.into(), c.into()), ("seqpacket", s, t)]
}

/// The next message waiting on `fd` (a blocking receive, bounded by a poll).
fn next_message(fd: &OwnedFd) -> Vec<u8> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd in a live local.
    let rc = unsafe { libc::poll(&mut pfd, 1, 20_000) };
    assert_eq!(rc, 1, "no message came");
    let mut buf = vec![0u8; 1 << 16];
    // SAFETY: receives into a live buffer of that length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert!(n >= 0, "{}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf
}

fn send_marker(fd: &OwnedFd) {
    // SAFETY: sends from a live buffer of that length.
    let n = unsafe { libc::send(fd.as_raw_fd(), b"marker".as_ptr().cast(), 6, 0) };
    assert_eq!(n, 6);
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

/// A borrowed copy of a handle's descriptor, to send on it directly.
fn h_fd(h: &iocomp::Handle) -> OwnedFd {
    use std::os::fd::AsFd;
    h.as_fd().try_clone_to_owned().unwrap()
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
