//! Overlapped operations: one packet per operation, buffers handed back, keys,
//! cancellation (C8, C11, C23, C26) — on real loopback sockets.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use iocomp::{Accept, GetError, Op, Port, Recv, Send, Timeout, TransmitFile};

mod support;

use support::{pair, port, T};

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
fn timeout_completes_with_success_after_its_duration() {
    let port = port();
    let start = Instant::now();
    port.submit(Timeout::new(Duration::from_millis(50), 4))
        .map_err(|(e, _)| e)
        .unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok());
    assert_eq!(p.key, 4);
    assert!(start.elapsed() >= Duration::from_millis(50));
}

#[test]
fn c28_transmit_file_sends_head_file_and_tail_in_one_packet() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 11);
    let path = std::env::temp_dir().join(format!("iocomp-tf-{}", std::process::id()));
    let body: Vec<u8> = (0..300_001u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut tf = TransmitFile::new(&h, file);
    tf.head = b"HEAD".to_vec();
    tf.tail = b"TAIL".to_vec();
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let total = 4 + body.len() + 4;
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        peer.read_exact(&mut got).unwrap();
        got
    });
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!(p.bytes, total as u64);
    let got = reader.join().unwrap();
    assert_eq!(&got[..4], b"HEAD");
    assert_eq!(&got[4..4 + body.len()], &body[..]);
    assert_eq!(&got[4 + body.len()..], b"TAIL");
}

#[test]
fn c28_transmit_file_range_and_bad_offset_einval() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 12);
    let path = std::env::temp_dir().join(format!("iocomp-tfr-{}", std::process::id()));
    std::fs::write(&path, b"0123456789").unwrap();
    let mut tf = TransmitFile::new(&h, std::fs::File::open(&path).unwrap());
    tf.offset = 11;
    let (e, _) = port.submit(tf).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let mut tf = TransmitFile::new(&h, std::fs::File::open(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    tf.offset = 3;
    tf.len = 4;
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let p = port.get(T).unwrap();
    assert_eq!(p.bytes, 4);
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"3456");
}

#[test]
fn c28_transmit_of_cold_pages_is_byte_exact_and_disconnect_ends_the_stream() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 13);
    let path = std::env::temp_dir().join(format!("iocomp-cold-{}", std::process::id()));
    let body: Vec<u8> = (0..3_000_017u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &body).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    // Write the pages back and drop them from the page cache, so the transmit
    // finds them cold and must read them through io_uring.
    file.sync_all().unwrap();
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fadvise on a descriptor we own; it only drops clean cache pages.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }
    let mut tf = TransmitFile::new(&h, file);
    tf.disconnect = true;
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap(); // ends only because of TF_DISCONNECT
        got
    });
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok(), "{:?}", p.status);
    assert_eq!(p.bytes, body.len() as u64);
    assert!(reader.join().unwrap() == body, "bytes differ");
}

#[test]
fn c28_transmit_with_nothing_to_send_still_yields_one_packet() {
    let port = port();
    let (ours, _peer) = pair();
    let h = port.associate(ours, 14);
    let tf = TransmitFile::buffers(&h, Vec::new(), Vec::new());
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok());
    assert_eq!((p.key, p.bytes), (14, 0));
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
fn pooled_recvs_beyond_the_pool_fall_back_to_their_own_buffers() {
    // More pooled receives complete at once than the pool has buffers (256):
    // the kernel answers ENOBUFS for the rest, which retry with their own.
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

#[test]
fn c28_small_cached_file_goes_out_with_head_and_tail_in_one_packet() {
    let port = port();
    let (ours, mut peer) = pair();
    let h = port.associate(ours, 15);
    let path = std::env::temp_dir().join(format!("iocomp-small-{}", std::process::id()));
    std::fs::write(&path, b"small body").unwrap();
    let mut tf = TransmitFile::new(&h, std::fs::File::open(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    tf.head = b"H:".to_vec();
    tf.tail = b":T".to_vec();
    tf.disconnect = true;
    port.submit(tf).map_err(|(e, _)| e).unwrap();
    let p = port.get(T).unwrap();
    assert!(p.status.is_ok());
    assert_eq!(p.bytes, 14);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"H:small body:T");
}
