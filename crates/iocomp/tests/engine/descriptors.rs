//! What the engine does to descriptors it is given, on both backends:
//! `Handle::close` retires a descriptor even when the process has no
//! descriptor left, and retires it with `/dev/null` even after the crate's
//! own `/dev/null` was closed behind its back (a port is built without one
//! when none can be opened); a descriptor the engine switched to
//! non-blocking mode stays so when its handle is dropped; one open file
//! shared by two handles (a listener, a pipe) stays usable through the
//! other when one goes. Tests that limit or close the process's descriptors
//! run alone in a child process.

use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use iocomp::{Accept, Op, Recv, Send};

use crate::harness::{
    backends, cat, fd_flags, fd_target, in_limited_child, nonblocking, pipe, port_on, read_to_eof,
    test_name, TempFile, T,
};

/// The descriptors above 2 that name `/dev/null`.
fn dev_nulls() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &i32| fd > 2 && fd_target(fd) == "/dev/null")
        .collect()
}

#[test]
fn close_retires_with_dev_null_after_its_descriptor_was_closed_and_reused() {
    // In a child of its own: this closes descriptors of the whole process.
    if in_limited_child(
        &test_name!(close_retires_with_dev_null_after_its_descriptor_was_closed_and_reused),
        64,
    ) {
        return;
    }
    for b in backends() {
        let port = port_on(b);
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors nobody else owns.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let h = port.associate(w, 1);
        // A close-all loop, behind the crate's back: the crate's /dev/null.
        let nulls = dev_nulls();
        for &fd in &nulls {
            // SAFETY: simulates a program closing descriptors it does not
            // own; none of them is used by this test afterwards.
            unsafe { libc::close(fd) };
        }
        // The lowest free number goes to the program's next file.
        let log = TempFile::new(&format!("dev-null-{b}.log"));
        let f = std::fs::File::create(&log.0).unwrap();
        let log_name = fd_target(f.as_raw_fd());
        let n = h.as_raw_fd();
        let h2 = h.clone();
        h.close();
        assert_eq!(fd_target(n), "/dev/null", "{b}: the retired descriptor");
        assert_eq!(
            fd_target(f.as_raw_fd()),
            log_name,
            "{b}: the program's file"
        );
        // The pipe's reader sees the end: our reference is gone.
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd in a live local.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 20_000) }, 1, "{b}: no EOF");
        let mut buf = [0u8; 1];
        // SAFETY: reads into a live one-byte buffer.
        let got = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
        assert_eq!(got, 0, "{b}: the pipe's write end is still open");
        drop((h2, r, f, log));
    }
}

/// A port is built even when `/dev/null` cannot be opened (here: no
/// descriptor left, EMFILE); a later close opens it when it can, and
/// retires with it as usual.
#[test]
fn a_port_is_built_without_dev_null_and_a_close_opens_it_later() {
    if in_limited_child(
        &test_name!(a_port_is_built_without_dev_null_and_a_close_opens_it_later),
        64,
    ) {
        return;
    }
    // The descriptors of /dev/null the process had (inherited ones).
    let before = dev_nulls();
    let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
    let mut hog = Vec::new();
    loop {
        match exe.try_clone() {
            Ok(f) => hog.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    // Free descriptors one by one until a port can be built: the first one
    // built had none to spare for /dev/null.
    let port = loop {
        match iocomp::Port::builder()
            .backend(iocomp::Backend::Epoll)
            .build()
        {
            Ok(p) => break p,
            Err(e) => {
                assert!(
                    hog.pop().is_some(),
                    "no port even with descriptors free: {e}"
                );
            }
        }
    };
    // (Reading /proc/self/fd takes a descriptor.)
    drop(hog);
    assert_eq!(dev_nulls(), before, "the build opened /dev/null");
    port.attach().unwrap();
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors nobody else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let h = port.associate(w, 1);
    let n = h.as_raw_fd();
    let keep = h.clone();
    h.close();
    assert_eq!(fd_target(n), "/dev/null", "the retired descriptor");
    let mut buf = [0u8; 1];
    // SAFETY: reads into a live one-byte buffer (no writer is left: EOF).
    let got = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
    assert_eq!(got, 0, "the pipe's write end is still open");
    drop((keep, r));
}

/// `Handle::close` with every descriptor of the process in use (EMFILE):
/// the pipe's write end is still retired — `cat` sees EOF and exits, and so
/// our reader sees EOF, although a clone of the handle keeps the descriptor
/// number reserved.
#[test]
fn close_retires_the_descriptor_when_none_is_left() {
    if in_limited_child(
        &test_name!(close_retires_the_descriptor_when_none_is_left),
        128,
    ) {
        return;
    }
    for b in backends() {
        let port = port_on(b);
        let (mut child, r, w) = cat();
        let h = port.associate(OwnedFd::from(w), 1);
        let keep = h.clone();
        // Use up every descriptor.
        let null = File::open("/dev/null").unwrap();
        let mut hog = Vec::new();
        loop {
            match null.try_clone() {
                Ok(f) => hog.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{b}: {e}");
                    break;
                }
            }
        }
        h.close();
        let got = read_to_eof(r);
        drop(hog);
        assert_eq!(
            got,
            Some(Vec::new()),
            "{b}: the reader saw no EOF: the pipe was not retired"
        );
        drop(keep);
        child.wait().unwrap();
    }
}

const O_NONBLOCK: u32 = libc::O_NONBLOCK as u32;

/// A blocking pipe given to the port: the engine may make it non-blocking
/// while it works on it (the epoll backend must), and leaves it so, as
/// tokio and mio do: dropping or closing the handle does not switch the
/// open file back (another handle on it may still rely on it), so another
/// descriptor of the same pipe finds it as the engine left it. The pipe runs
/// through `cat`, which echoes what we send.
#[test]
fn non_blocking_mode_stays_as_the_engine_left_it_after_the_handle_is_dropped() {
    for b in backends() {
        let port = port_on(b);
        let (mut child, r, w) = cat();
        let (r, w) = (OwnedFd::from(r), OwnedFd::from(w));
        let (r2, w2) = (r.try_clone().unwrap(), w.try_clone().unwrap());
        assert_eq!(fd_flags(w2.as_raw_fd()) & O_NONBLOCK, 0);
        let hw = port.associate(w, 1);
        let hr = port.associate(r, 2);
        port.submit(Send::new(&hw, b"through the pipe".to_vec()))
            .map_err(|(e, _)| e)
            .unwrap();
        port.submit(Recv::new(&hr, Vec::with_capacity(64)))
            .map_err(|(e, _)| e)
            .unwrap();
        for _ in 0..2 {
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b}: {:?}", p.status);
            if let Op::Recv(rv) = p.op {
                assert_eq!(rv.buf, b"through the pipe");
            }
        }
        let (wf, rf) = (fd_flags(w2.as_raw_fd()), fd_flags(r2.as_raw_fd()));
        // One handle dropped, the other closed: neither undoes the flag.
        drop(hw);
        hr.close();
        assert_eq!(fd_flags(w2.as_raw_fd()), wf, "{b}: the write end changed");
        assert_eq!(fd_flags(r2.as_raw_fd()), rf, "{b}: the read end changed");
        drop((w2, r2));
        child.wait().unwrap();
    }
}

/// How long a step that must not block may take before the test calls it
/// blocked: far beyond any scheduling delay on a loaded machine.
const HANG: Duration = Duration::from_secs(20);

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
