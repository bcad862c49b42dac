//! Clients: sockets with timeouts (from another loopback address, with a
//! small receive buffer), an HTTP/1.1 client that splits pipelined responses
//! by their framing, and the line protocol's bounded reads.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use super::{show, Running, IO_TIMEOUT};

/// Connects to `addr` with [`IO_TIMEOUT`] on connect, reads and writes.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// A socket option of `fd` set to the integer `value`.
fn set_int_option(fd: i32, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size; `fd` is open.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A TCP connection to the IPv4 `dst`, bound first to `src` (port chosen by
/// the kernel) when given, with `rcvbuf` set before connecting when given
/// (so the window it advertises stays small); `timeout` on connect, reads
/// and writes.
pub fn try_connect(
    dst: SocketAddr,
    src: Option<Ipv4Addr>,
    rcvbuf: Option<usize>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only, got {dst}");
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: socket(2) with constant arguments returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns; the stream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if let Some(size) = rcvbuf {
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size as i32)?;
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    if let Some(src) = src {
        let local = sin(src, 0);
        // SAFETY: `local` is a valid sockaddr_in of the length passed, live
        // for the call, which only reads it; `fd` is open (owned by `stream`).
        if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    stream.set_write_timeout(Some(timeout))?; // bounds connect(2) too
    let remote = sin(*dst.ip(), dst.port());
    // SAFETY: `remote` is a valid sockaddr_in of the length passed, live for
    // the call, which only reads it; `fd` is open (owned by `stream`).
    if unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    stream.set_read_timeout(Some(timeout))?;
    Ok(stream)
}

/// Connects to the IPv4 `addr` from source address `src` (e.g. `127.0.0.2`,
/// a second loopback client), with the harness's timeouts.
pub fn connect_from(addr: SocketAddr, src: Ipv4Addr) -> TcpStream {
    try_connect(addr, Some(src), None, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr} from {src}: {e}"))
}

/// Connects with `SO_RCVBUF` set to `rcvbuf` before connecting.
pub fn connect_with_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    try_connect(addr, None, Some(rcvbuf), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Sets `SO_LINGER {on, 0}`: dropping the socket then sends a RST, not a FIN.
pub fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is a live socket owned by `stream`; the option value
    // points at an initialised `linger` of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// `name` + LF: one line-protocol request.
pub fn line(name: &[u8]) -> Vec<u8> {
    let mut l = name.to_vec();
    l.push(b'\n');
    l
}

/// Writes `bytes`, panicking with context on failure or timeout.
pub fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream
        .write_all(bytes)
        .unwrap_or_else(|e| panic!("write {}: {e}", show(bytes)));
}

/// Reads until EOF; panics on an error, a stalled read or past `total`.
pub fn read_to_end_timeout(stream: &mut TcpStream, total: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let (_, end) = read_until_closed(stream, 64 * 1024, total, |c| out.extend_from_slice(c));
    if let End::Error(e) = end {
        panic!(
            "reading to EOF failed after {} bytes: {e}; last bytes: {}",
            out.len(),
            show(&out[out.len().saturating_sub(64)..])
        );
    }
    out
}

pub use iocomp_testkit::read_exact_timeout;

/// Reads exactly `expected.len()` bytes and checks they are `expected`
/// (within [`IO_TIMEOUT`]); fails as soon as they diverge.
pub fn expect_bytes(stream: &mut TcpStream, expected: &[u8], what: &str) {
    iocomp_testkit::expect_bytes(stream, expected, what, IO_TIMEOUT);
}

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    Eof,
    /// Read in failure messages (through `Debug`).
    Error(#[allow(dead_code)] std::io::Error),
}

/// Reads until the connection ends (EOF, or an error such as a reset),
/// handing every chunk to `on_chunk`; returns the byte count and how it
/// ended. Panics if a read stalls for the socket's timeout or past `total`.
pub fn read_until_closed(
    stream: &mut TcpStream,
    buf_len: usize,
    total: Duration,
    mut on_chunk: impl FnMut(&[u8]),
) -> (u64, End) {
    let deadline = Instant::now() + total;
    let mut buf = vec![0u8; buf_len];
    let mut n = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (n, End::Eof),
            Ok(k) => {
                on_chunk(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("read stalled after {n} bytes (neither served nor closed): {e}")
            }
            Err(e) => return (n, End::Error(e)),
        }
        assert!(
            Instant::now() < deadline,
            "reading until the connection closed took over {total:?} ({n} bytes so far)"
        );
    }
}

/// Waits (at most `within`) for the server to close `stream` without
/// sending anything; returns how long that took. Panics on data or a timeout.
pub fn wait_closed(stream: &mut TcpStream, within: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return t0.elapsed(),
            Ok(n) => panic!("{what}: expected a close, got {}", show(&buf[..n])),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: connection still open after {:?}", t0.elapsed())
            }
            Err(_) => return t0.elapsed(), // reset: the connection is gone
        }
    }
}

/// Reads until the server closes `s` or `within` passes; returns whether it
/// closed (EOF or a reset), and what it sent.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (true, got),
            Err(_) => return (false, got),
        }
    }
}

impl Running {
    /// Asserts (polling, 30 s at most) that the server has no connection
    /// open.
    pub fn assert_all_closed(&self, what: &str) {
        let closed = self.wait_connections(0, Duration::from_secs(30));
        assert!(
            closed,
            "{what}: {} connection(s) still open after 30 s",
            self.connections()
        );
    }

    /// A connection to the server with the harness's timeouts.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// An HTTP client connected to the server.
    pub fn client(&self) -> Client {
        Client::new(self.connect())
    }

    /// `GET target` with extra header lines, on a connection of its own.
    pub fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", target, headers)
    }

    /// `METHOD target` with extra header lines, on a connection of its own
    /// (`Connection: close`).
    pub fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
        let mut c = self.client();
        let mut all = headers.to_vec();
        all.push(("Connection", "close"));
        c.send(&req(method, target, &all));
        c.response(method == "HEAD")
    }

    /// Sends `names` as lines of the line protocol on one connection,
    /// half-closes, and returns everything the server sent back.
    pub fn lines(&self, names: &[&[u8]]) -> Vec<u8> {
        let mut s = self.connect();
        let request: Vec<u8> = names.iter().flat_map(|n| line(n)).collect();
        send(&mut s, &request);
        s.shutdown(Shutdown::Write).expect("half-close");
        read_to_end_timeout(&mut s, IO_TIMEOUT * 3)
    }
}

/// A request head: `METHOD PATH HTTP/1.1`, `Host`, then `headers`.
pub fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// An HTTP response as a client sees it.
#[derive(Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line.
    pub status_line: String,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nbody: {}", self.head_text(), show(&self.body))
    }
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many times header `name` appears.
    pub fn header_count(&self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(n, _)| *n == name).count()
    }

    /// The value of header `name`, or a panic showing the whole head.
    pub fn must(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in:\n{}", self.head_text()))
    }

    /// The head as text, for failure messages.
    pub fn head_text(&self) -> String {
        let mut s = self.status_line.clone();
        for (n, v) in &self.headers {
            s.push_str(&format!("\n{n}: {v}"));
        }
        s
    }

    /// Asserts the status, showing the head and the start of the body if not.
    pub fn assert_status(&self, want: u16, what: &str) {
        assert_eq!(
            self.status, want,
            "{what}: want status {want}, got:\n{self:?}"
        );
    }

    /// The values of every `Vary` field, joined.
    pub fn vary(&self) -> String {
        let all: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == "vary")
            .map(|(_, v)| v.as_str())
            .collect();
        all.join(", ")
    }

    /// The headers that must be identical between a HEAD and a GET (all but
    /// `Date`), sorted.
    pub fn comparable_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(n, _)| n != "date")
            .cloned()
            .collect();
        h.sort();
        h
    }
}

/// Parses a response head (status line and fields, without the final
/// CRLF); panics on anything that is not one.
fn parse_head(head: &[u8]) -> Response {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    assert!(
        version == "HTTP/1.1" || version == "HTTP/1.0",
        "not an HTTP status line: {status_line:?} (head {})",
        show(head)
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {status_line:?}"));
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (n, v) = l
            .split_once(':')
            .unwrap_or_else(|| panic!("malformed header line {l:?} in {}", show(head)));
        assert!(
            !n.is_empty() && !n.contains(' '),
            "malformed header name in {l:?}"
        );
        headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    Response {
        status,
        status_line,
        headers,
        body: Vec::new(),
    }
}

/// A client connection with a receive buffer, so that pipelined responses
/// are split by their framing.
pub struct Client {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet taken.
    pub buf: Vec<u8>,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn connect(addr: SocketAddr) -> Client {
        Client::new(connect(addr))
    }

    pub fn send(&mut self, bytes: &[u8]) {
        send(&mut self.stream, bytes);
    }

    /// One read into the buffer; the number of bytes (0 at EOF or a reset),
    /// or the error (a timeout).
    pub fn try_read_more(&mut self) -> Result<usize, String> {
        // On the stack: a heap buffer per read would make the clients' own
        // allocations weigh in the memory of a test's process.
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!("read timed out; buffered: {}", show(&self.buf)))
                }
                Err(_) => return Ok(0),
            }
        }
    }

    /// [`Client::try_read_more`], panicking on a timeout.
    pub fn read_more(&mut self) -> usize {
        self.try_read_more().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads one response head (none of its body).
    pub fn try_head(&mut self) -> Result<Response, String> {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(format!("no end of head in 64 KiB: {}", show(&self.buf)));
            }
            if self.try_read_more()? == 0 {
                return Err(format!("closed before a whole head: {}", show(&self.buf)));
            }
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        Ok(parse_head(&head[..end]))
    }

    /// Takes `len` body bytes, reading as needed.
    pub fn try_body(&mut self, len: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < len {
            if self.try_read_more()? == 0 {
                return Err(format!("EOF after {} of {len} bytes", self.buf.len()));
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// Reads one response; its body is framed by `Content-Length` (none for
    /// HEAD, 1xx, 204 and 304).
    pub fn try_response(&mut self, head_only: bool) -> Result<Response, String> {
        let mut resp = self.try_head()?;
        let no_body = head_only || matches!(resp.status, 100..=199 | 204 | 304);
        let len = if no_body {
            0
        } else {
            let cl = resp
                .header("content-length")
                .ok_or_else(|| format!("no Content-Length:\n{}", resp.head_text()))?;
            cl.parse()
                .map_err(|e| format!("bad Content-Length {cl:?}: {e}"))?
        };
        resp.body = self
            .try_body(len)
            .map_err(|e| format!("{e}; head:\n{}", resp.head_text()))?;
        Ok(resp)
    }

    /// [`Client::try_response`], panicking on any failure.
    pub fn response(&mut self, head_only: bool) -> Response {
        self.try_response(head_only)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The server must close with nothing more to say.
    pub fn try_expect_eof(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!("stray bytes {}", show(&self.buf)));
        }
        let mut b = [0u8; 256];
        match self.stream.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("bytes instead of EOF: {}", show(&b[..n]))),
            Err(e) => Err(format!("error instead of EOF: {e}")),
        }
    }

    /// Asserts nothing more was sent and the server closes the connection
    /// (EOF or a reset, within 5 s).
    pub fn expect_closed(&mut self, what: &str) {
        assert!(
            self.buf.is_empty(),
            "{what}: extra bytes after the response: {}",
            show(&self.buf)
        );
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 256];
        match self.stream.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("{what}: expected EOF, got {}", show(&b[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: connection still open (read timed out)")
            }
            Err(_) => {} // a reset: the connection is gone, as required
        }
    }

    /// Reads until EOF (bounded), returning everything including the buffer.
    pub fn read_to_eof(&mut self, total: Duration) -> Vec<u8> {
        self.stream
            .set_read_timeout(Some(total.min(IO_TIMEOUT)))
            .unwrap();
        let deadline = Instant::now() + total;
        while Instant::now() < deadline {
            if self.try_read_more().unwrap_or(0) == 0 {
                break;
            }
        }
        std::mem::take(&mut self.buf)
    }
}

/// Sends `request` on a connection of its own and reads to EOF: the raw
/// response, head and body, as the client got it.
pub fn raw_http(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut s = connect(addr);
    send(&mut s, request.as_bytes());
    read_to_end_timeout(&mut s, Duration::from_secs(20))
}

/// `GET path` with `Connection: close`, raw (see [`raw_http`]).
pub fn raw_get(addr: SocketAddr, path: &str) -> Vec<u8> {
    raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
}

/// The status code of a raw response.
pub fn status_of(resp: &[u8]) -> u16 {
    std::str::from_utf8(&resp[9.min(resp.len())..12.min(resp.len())])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {}", show(resp)))
}

/// The body of a raw response.
pub fn body_of(resp: &[u8]) -> &[u8] {
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    &resp[at + 4..]
}
