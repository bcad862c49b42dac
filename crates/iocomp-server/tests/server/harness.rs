//! One harness: a temporary tree, a server on `127.0.0.1:0` serving it, and
//! two clients (HTTP/1.1 and the line protocol), each bounded by socket
//! timeouts so that no test can hang.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use iocomp_server::{Config, Server};

/// How long a client waits for the server before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A temporary directory tree, removed on drop: `root/` is served, files
/// beside it are not.
pub struct Tree {
    base: PathBuf,
    /// The directory served.
    pub root: PathBuf,
}

impl Tree {
    /// A fresh, empty tree.
    pub fn new(tag: &str) -> Tree {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!(
            "iocomp-server-test-{}-{tag}-{n}",
            std::process::id()
        ));
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        Tree { base, root }
    }

    /// The path of `rel` under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel.as_bytes()))
    }

    /// Writes `content` to `rel` under the root, creating directories.
    pub fn file(&self, rel: &str, content: &[u8]) -> &Tree {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    /// A symlink at `rel` under the root pointing at `target`.
    pub fn link(&self, target: &str, rel: &str) -> &Tree {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
        self
    }

    /// Serves the tree once per way the server can resolve names (with
    /// `openat2`, and by its walk without it, as where the kernel refuses
    /// `openat2`), each with the configuration changed by `tune`, and runs
    /// `check` on each server with a label that names the way.
    pub fn serve_each(&self, tune: impl Fn(&mut Config), mut check: impl FnMut(&Running, &str)) {
        for (no_openat2, label) in [(false, "openat2"), (true, "walk without openat2")] {
            let srv = self.serve(|c| {
                c.path.no_openat2 = no_openat2;
                tune(c);
            });
            check(&srv, label);
        }
    }

    /// Serves the tree with the default configuration changed by `tune`.
    pub fn serve(&self, tune: impl FnOnce(&mut Config)) -> Running {
        let mut config = Config::new(&self.root);
        config.binds = vec!["127.0.0.1:0".parse().unwrap()];
        config.threads = 2;
        tune(&mut config);
        let server = Server::start(config).expect("server starts");
        let addr = server.local_addrs()[0];
        Running {
            server: Some(server),
            addr,
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A server running in this process; shut down on drop.
pub struct Running {
    server: Option<Server>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Running {
    /// A client of another address of a server (its metrics listener): the
    /// returned value shuts nothing down.
    pub fn at(addr: SocketAddr) -> Running {
        Running { server: None, addr }
    }

    /// Every address the server listens on, in order (plain, then TLS).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.server
            .as_ref()
            .map(|s| s.local_addrs().to_vec())
            .unwrap_or_default()
    }

    /// The server itself.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("a server")
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.server.as_ref().map_or(0, |s| s.connections())
    }

    /// The metrics listener's address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .and_then(Server::metrics_addr)
            .expect("a metrics listener")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(5));
        }
    }
}

/// An HTTP response as a client sees it.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Response {
    /// The value of header `name` (case-insensitive), if present once or more
    /// (the first).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

impl Running {
    /// `GET target` with extra header lines, on a connection of its own.
    pub fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", target, headers)
    }

    /// `METHOD target` with extra header lines, on a connection of its own
    /// (`Connection: close`); the whole response is read.
    pub fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
        let mut s = connect(self.addr);
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read the response");
        parse_response(&raw, method == "HEAD")
    }

    /// Sends `names` as lines of the line protocol, half-closes, and returns
    /// everything the server sent back.
    pub fn lines(&self, names: &[&[u8]]) -> Vec<u8> {
        let mut s = connect(self.addr);
        let mut req = Vec::new();
        for n in names {
            req.extend_from_slice(n);
            req.push(b'\n');
        }
        s.write_all(&req).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read the reply");
        out
    }
}

/// Splits a raw response into status, headers and body (by Content-Length).
fn parse_response(raw: &[u8], head_only: bool) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header field");
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if !head_only {
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse::<usize>().expect("a length"));
        if let Some(len) = len {
            assert!(body.len() >= len, "body shorter than Content-Length");
            body.truncate(len);
        }
    }
    Response {
        status,
        headers,
        body,
    }
}

/// The line protocol's error line for `reason`.
pub fn error_line(reason: &str) -> Vec<u8> {
    format!("{}{reason}\r\n", iocomp_server::ERROR_PREFIX).into_bytes()
}

/// Connects to the IPv4 `addr` from source address `src` (e.g. `127.0.0.2`,
/// a second loopback client), with the harness's timeouts.
pub fn connect_from(addr: SocketAddr, src: std::net::Ipv4Addr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("connect_from: IPv4 only, got {addr}");
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: socket(2) with constant arguments returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns; the stream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(src, 0);
    // SAFETY: `local` is a valid sockaddr_in of the length passed, live for
    // the call, which only reads it; `fd` is open (owned by `stream`).
    let rc = unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) };
    assert_eq!(rc, 0, "bind to {src}: {}", std::io::Error::last_os_error());
    let remote = sin(*v4.ip(), v4.port());
    // SAFETY: `remote` is a valid sockaddr_in of the length passed, live for
    // the call, which only reads it; `fd` is open (owned by `stream`).
    let rc = unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) };
    assert_eq!(
        rc,
        0,
        "connect to {addr} from {src}: {}",
        std::io::Error::last_os_error()
    );
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}
