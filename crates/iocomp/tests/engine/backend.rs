//! Backend selection (`PortBuilder::backend`, `IOCOMP_BACKEND`, io_uring
//! denied by seccomp → epoll), and what only the epoll backend has to get
//! right (descriptor registration, per-descriptor queues, turns). Everything
//! else runs on both backends through the other test files, with
//! `IOCOMP_BACKEND=uring` and `IOCOMP_BACKEND=epoll`.

use std::io::{Read, Write};
use std::time::Duration;

use iocomp::{Backend, GetError, Op, Port, Recv, Send, TransmitFile, BACKEND_ENV};

use crate::harness::{is_child, pair, port_on, test_name, Child, TempFile, T};

#[test]
fn the_environment_variable_picks_the_backend_of_auto_ports() {
    let port = Port::new().unwrap();
    match std::env::var(BACKEND_ENV).as_deref() {
        Ok("epoll") => assert_eq!(port.backend(), Backend::Epoll),
        Ok("uring") => assert_eq!(port.backend(), Backend::Uring),
        _ => assert_ne!(port.backend(), Backend::Auto),
    }
    if port.backend() == Backend::Uring {
        assert_eq!(port.fallback_reason(), None);
    }
}

#[test]
fn an_explicit_backend_wins_over_the_environment() {
    let port = Port::builder().backend(Backend::Epoll).build().unwrap();
    assert_eq!(port.backend(), Backend::Epoll);
    assert_eq!(port.fallback_reason(), None, "epoll was asked for");
    // io_uring may be unavailable where this runs; when it builds, it is io_uring.
    if let Ok(port) = Port::builder().backend(Backend::Uring).build() {
        assert_eq!(port.backend(), Backend::Uring);
    }
}

#[test]
fn backend_names_parse_and_display() {
    for b in [Backend::Auto, Backend::Uring, Backend::Epoll] {
        assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
    }
    assert_eq!(" EPOLL ".parse::<Backend>().unwrap(), Backend::Epoll);
    assert_eq!("io_uring".parse::<Backend>().unwrap(), Backend::Uring);
    let e = "kqueue".parse::<Backend>().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(Backend::Epoll.with_env().unwrap(), Backend::Epoll);
}

#[test]
fn epoll_a_reused_descriptor_number_is_registered_again() {
    // A descriptor registered for readiness is closed; the next socket gets the
    // same number. The registration cache must notice it is a new one.
    let port = port_on(Backend::Epoll);
    for round in 0..3u64 {
        let (ours, mut peer) = pair();
        let h = port.associate(ours, round);
        port.submit(Recv::new(&h, Vec::with_capacity(8)))
            .map_err(|(e, _)| e)
            .unwrap();
        // The receive waits (nothing sent yet), so the descriptor is registered.
        assert_eq!(
            port.get(Some(Duration::from_millis(20))).unwrap_err(),
            GetError::TimedOut
        );
        peer.write_all(b"hi").unwrap();
        let p = port.get(T).unwrap();
        assert_eq!((p.key, p.bytes), (round, 2));
        drop(p);
        drop(h); // closes the descriptor: its number is free for the next round
    }
}

#[test]
fn epoll_cancelling_a_blocked_send_lets_the_next_one_run() {
    let port = port_on(Backend::Epoll);
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 5);
    // Far more than the socket buffers hold: the first send blocks part-way.
    let big = vec![7u8; 64 * 1024 * 1024];
    let first = port.submit(Send::new(&h, big)).map_err(|(e, _)| e).unwrap();
    let second = port
        .submit(Send::new(&h, b"tail".to_vec()))
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(port.progress(first).unwrap() > 0, "the first send started");
    port.cancel(first).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.id, first);
    assert!(p.is_aborted(), "{:?}", p.status);
    let sent = p.bytes;
    assert!(sent > 0 && sent < 64 * 1024 * 1024);
    // The reader drains everything: the second send completes.
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; sent as usize + 4];
        peer.read_exact(&mut got).unwrap();
        got[sent as usize..].to_vec()
    });
    let p = port.get(T).unwrap();
    assert_eq!(p.id, second);
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!(reader.join().unwrap(), b"tail");
}

#[test]
fn epoll_a_hot_transmit_longer_than_one_turn_is_byte_exact() {
    // More than one 2 MiB turn of sendfile: the transmit yields and resumes
    // without a readiness edge.
    let port = port_on(Backend::Epoll);
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 6);
    let tmp = TempFile::new("turns");
    let body: Vec<u8> = (0..7_000_003u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&tmp.0, &body).unwrap();
    let file = std::fs::File::open(&tmp.0).unwrap();
    drop(tmp);
    let mut tf = TransmitFile::new(&h, file);
    tf.head = b"H".to_vec();
    tf.disconnect = true;
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    });
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!(p.bytes, body.len() as u64 + 1);
    let got = reader.join().unwrap();
    assert_eq!(got[0], b'H');
    assert!(got[1..] == body[..], "bytes differ");
}

#[test]
fn epoll_operations_handed_over_from_a_foreign_thread_run_on_the_parked_thread() {
    let port = Port::builder()
        .concurrency(1)
        .backend(Backend::Epoll)
        .build()
        .unwrap();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 9);
    let waiter = {
        let port = port.clone();
        std::thread::spawn(move || port.get(T).unwrap())
    };
    while port.waiters() == 0 {
        std::thread::yield_now();
    }
    port.submit(Recv::pooled(&h, Vec::new()))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"over").unwrap();
    let p = waiter.join().unwrap();
    assert_eq!((p.key, p.bytes), (9, 4));
    let Op::Recv(r) = p.op else { panic!() };
    assert_eq!(r.buf, b"over");
}

/// In a child process whose seccomp filter denies the io_uring system calls
/// with EPERM (as Docker's default profile does), `Backend::Auto` runs on
/// epoll, says why, and works.
#[cfg(target_arch = "x86_64")]
#[test]
fn auto_falls_back_to_epoll_when_seccomp_denies_io_uring() {
    if is_child() {
        seccomp_child();
        println!("seccomp child: ok");
        return;
    }
    let ran = Child::test(&test_name!(
        auto_falls_back_to_epoll_when_seccomp_denies_io_uring
    ))
    .env_remove(BACKEND_ENV)
    .configure(iocomp_testkit::deny_io_uring)
    .passes();
    let (stdout, stderr) = (&ran.stdout, &ran.stderr);
    assert!(
        stdout.contains("seccomp child: ok"),
        "the child did not reach the end of its body:\n{stdout}\n{stderr}"
    );
    for line in stdout.lines().filter(|l| l.contains("seccomp child")) {
        println!("{line}");
    }
}

/// The child's part: io_uring is denied, so Auto picks epoll and says why;
/// forcing io_uring fails; posted packets and socket receives work.
#[cfg(target_arch = "x86_64")]
fn seccomp_child() {
    let forced = Port::builder().backend(Backend::Uring).build();
    let e = forced.expect_err("io_uring is denied in this process");
    assert!(e.to_string().contains("io_uring_setup"), "{e}");

    let port = Port::new().unwrap();
    assert_eq!(port.backend(), Backend::Epoll);
    let reason = port.fallback_reason().expect("a fallback reason");
    assert!(
        reason.contains("io_uring_setup") && reason.contains("os error 1"),
        "{reason}"
    );
    println!("seccomp child: epoll because {reason}");

    port.post(3, 4, 5).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!((p.key, p.bytes), (3, 4));
    assert!(matches!(p.op, Op::Posted { token: 5 }));

    let (ours, mut peer) = pair();
    let h = port.associate(ours, 8);
    port.submit(Recv::new(&h, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .unwrap();
    peer.write_all(b"epoll").unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!((p.key, p.bytes), (8, 5));
    let Op::Recv(r) = p.op else { panic!() };
    assert_eq!(r.buf, b"epoll");
}
