//! Bounded clients: connect with timeouts, send, read to the end, expect
//! exact bytes, see a connection close.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use super::{show, IO_TIMEOUT};

/// Connects to `addr` with bounded connect, read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Connects to `addr` from a socket whose `SO_RCVBUF` is set to `rcvbuf`
/// bytes *before* connecting (so the window it advertises stays small), with
/// the same timeouts as [`connect`]. IPv4 only.
pub fn connect_with_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("connect_with_rcvbuf: IPv4 only, got {addr}");
    };
    // SAFETY: socket(2) with constant arguments returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns; the stream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let size = libc::c_int::try_from(rcvbuf).expect("rcvbuf fits in c_int");
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_RCVBUF): {}",
        std::io::Error::last_os_error()
    );
    // Bound the connect itself (SO_SNDTIMEO applies to connect(2) on Linux).
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in of the length passed.
    let rc = unsafe {
        libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "connect to {addr}: {}",
        std::io::Error::last_os_error()
    );
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Writes `bytes`, panicking with context on failure or timeout.
pub fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream
        .write_all(bytes)
        .unwrap_or_else(|e| panic!("write {}: {e}", show(bytes)));
}

/// One line-protocol connection: sends every name as a line, half-closes,
/// and reads the whole reply until the server closes the connection.
pub fn fetch(addr: SocketAddr, names: &[&[u8]]) -> Vec<u8> {
    let mut stream = connect(addr);
    let mut request = Vec::new();
    for name in names {
        request.extend_from_slice(name);
        request.push(b'\n');
    }
    send(&mut stream, &request);
    stream.shutdown(Shutdown::Write).expect("half-close");
    read_to_end_timeout(&mut stream, IO_TIMEOUT * 3)
}

/// Reads until EOF; panics if a single read stalls for the socket timeout or
/// the whole read takes longer than `total`.
pub fn read_to_end_timeout(stream: &mut TcpStream, total: Duration) -> Vec<u8> {
    let deadline = Instant::now() + total;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "reading to EOF failed after {} bytes (did the server close the connection?): {e}; last bytes: {}",
                out.len(),
                show(&out[out.len().saturating_sub(64)..])
            ),
        }
        assert!(
            Instant::now() < deadline,
            "reading to EOF took longer than {total:?} ({} bytes so far)",
            out.len()
        );
    }
}

pub use iocomp_testkit::read_exact_timeout;

/// Reads exactly `expected.len()` bytes and checks they are `expected`
/// (within [`IO_TIMEOUT`]); fails as soon as they diverge.
pub fn expect_bytes(stream: &mut TcpStream, expected: &[u8], what: &str) {
    iocomp_testkit::expect_bytes(stream, expected, what, IO_TIMEOUT);
}

/// Asserts that a read on `stream` ends the connection: it returns EOF or an
/// error such as a reset, but neither data nor a timeout.
pub fn assert_read_sees_close(stream: &mut TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: expected EOF, got {n} bytes: {}", show(&buf[..n])),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{what}: connection still open (read timed out)")
        }
        Err(_) => {} // reset or similar: the connection is gone, as required
    }
}

/// Reads a request head (to the blank line; over 64 KiB fails) from `s`; stops
/// early at EOF, an error or a timeout. A head that does not start like an
/// HTTP request (a TLS ClientHello, say) is read as whatever arrives until
/// the peer pauses for 300 ms.
pub fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
        assert!(head.len() < 64 * 1024, "request head too long");
        if head.len() == 1 && !head[0].is_ascii_alphabetic() {
            let old = s.read_timeout().ok().flatten();
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut rest = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut rest) {
                head.extend_from_slice(&rest[..n]);
            }
            let _ = s.set_read_timeout(old);
            break;
        }
    }
    head
}
