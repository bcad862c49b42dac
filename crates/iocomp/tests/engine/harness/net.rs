//! Loopback sockets, pipes and the peers on their far side.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// A connected loopback TCP pair.
pub fn pair() -> (TcpStream, TcpStream) {
    super::raise_nofile();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// A UDP socket bound to `addr`.
pub fn udp(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr).unwrap()
}

/// A pipe: (read end, write end), close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors nobody else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A pipe through `cat`: we write into its stdin (the write end) and read
/// its stdout (the read end); `cat` exits at EOF.
pub fn cat() -> (Child, ChildStdout, ChildStdin) {
    let mut c = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (r, w) = (c.stdout.take().unwrap(), c.stdin.take().unwrap());
    (c, r, w)
}

/// A connected datagram socket of each message-keeping type (UDP, and a
/// Unix `SOCK_SEQPACKET` pair): ours and the peer.
pub fn datagram_pairs() -> Vec<(&'static str, OwnedFd, OwnedFd)> {
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

/// The IPv4 address a handle's socket is bound to (`getsockname`).
pub fn local_addr(h: &iocomp::Handle) -> SocketAddr {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `st` and `len` are live locals of the sizes the kernel is told.
    let rc = unsafe {
        libc::getsockname(
            h.as_raw_fd(),
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    assert_eq!(i32::from(st.ss_family), libc::AF_INET);
    // SAFETY: the family says it is a sockaddr_in.
    let sin = unsafe { &*(&st as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
    SocketAddr::from((
        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
        u16::from_be(sin.sin_port),
    ))
}

/// A copy of a handle's descriptor, to use it directly.
pub fn h_fd(h: &iocomp::Handle) -> OwnedFd {
    h.as_fd().try_clone_to_owned().unwrap()
}

/// Whether `fd`'s open file is in non-blocking mode (`fcntl(F_GETFL)`).
pub fn nonblocking(fd: i32) -> bool {
    // SAFETY: F_GETFL on a descriptor the caller keeps open.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(fl >= 0);
    fl & libc::O_NONBLOCK != 0
}

/// The `flags:` line of `/proc/self/fdinfo/FD`, in octal.
pub fn fd_flags(fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let line = info.lines().find(|l| l.starts_with("flags:")).unwrap();
    u32::from_str_radix(line["flags:".len()..].trim(), 8).unwrap()
}

/// Where descriptor `fd` of this process points (`/proc/self/fd`).
pub fn fd_target(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// The next message waiting on `fd` (a blocking receive, bounded by a poll).
pub fn next_message(fd: &OwnedFd) -> Vec<u8> {
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

/// Sends the message `marker` on `fd` directly.
pub fn send_marker(fd: &OwnedFd) {
    // SAFETY: sends from a live buffer of that length.
    let n = unsafe { libc::send(fd.as_raw_fd(), b"marker".as_ptr().cast(), 6, 0) };
    assert_eq!(n, 6);
}

/// One blocking read, again after EINTR (a socket with a receive timeout
/// says EINTR when io_uring's task work interrupts the wait).
pub fn read_eintr(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => return r.unwrap(),
        }
    }
}

/// Writes all of `data` to `peer` (small amounts only: it must not block).
pub fn write_peer(peer: &mut TcpStream, data: &[u8]) {
    peer.write_all(data).unwrap();
}

/// Reads everything from `peer` until EOF, on a thread of its own.
pub fn drain(mut peer: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        peer.read_to_end(&mut all).unwrap();
        all
    })
}

/// Reads `r` to its end on another thread; the bytes, or `None` if no EOF
/// came within a generous bound.
pub fn read_to_eof(mut r: impl Read + Send + 'static) -> Option<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = r.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx.recv_timeout(Duration::from_secs(20)).ok()
}

/// Reads the far side of a pair until EOF on a thread of its own; `slow`
/// reads small pieces with pauses so that big sends go out in short pieces.
pub struct Reader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
}

impl Reader {
    /// Starts reading `peer`.
    pub fn start(mut peer: TcpStream, slow: bool) -> Reader {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = vec![0u8; if slow { 16 << 10 } else { 1 << 20 }];
            let r = loop {
                match peer.read(&mut buf) {
                    Ok(0) => break Ok(all),
                    Ok(n) => {
                        all.extend_from_slice(&buf[..n]);
                        if slow {
                            thread::sleep(Duration::from_micros(50));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.send(r);
        });
        Reader { rx }
    }

    /// Everything read up to EOF, or `Err` if EOF did not come within
    /// `within` (the descriptor on our side was never closed) or the read
    /// failed.
    pub fn finish(self, within: Duration) -> Result<Vec<u8>, String> {
        self.finish_or_reset(within, false)
    }

    /// As [`finish`](Reader::finish), but a reset (our side closed with
    /// bytes unread) also counts as closed: it returns no bytes.
    pub fn finish_or_reset(self, within: Duration, reset_ok: bool) -> Result<Vec<u8>, String> {
        match self.rx.recv_timeout(within) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if reset_ok && e.kind() == std::io::ErrorKind::ConnectionReset => {
                Ok(Vec::new())
            }
            Ok(Err(e)) => Err(format!("reading the peer failed: {e}")),
            Err(_) => Err(format!(
                "no EOF on the peer within {within:?}: our side of the socket was never closed \
                 (a Handle leaked, or an operation still holds it)"
            )),
        }
    }
}
