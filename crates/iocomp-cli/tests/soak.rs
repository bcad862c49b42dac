//! Long runs, hostile clients and faults against the real `iocomp serve`
//! binary (issue 8):
//!
//! - **Soak** ([`soak_rounds_honest_clients_verified_misbehaving_ones_harmless`]):
//!   rounds of ~100 concurrent honest clients over both protocols (HTTP
//!   keep-alive with pipelining, random files, random single and multipart
//!   ranges; the line protocol with several names per connection), every byte
//!   compared against the known content, plus ~20% misbehaving clients that at
//!   random disconnect mid-transfer, reset (`SO_LINGER 0`), stop reading with a
//!   small receive buffer, send garbage, or send a request head one byte at a
//!   time. After each round the server's descriptor count returns to its
//!   baseline and its resident memory (`VmRSS`) is recorded; no honest client
//!   may fail, and RSS after every round from the third on stays within
//!   `max(2 MiB, 10%)` of RSS after round 2.
//!
//!   CI runs 3 rounds of 6 s (about 35 s in all in a debug build). **The long soak command** (e.g. 10 rounds of 60 s):
//!
//!   ```text
//!   IOCOMP_SOAK_ROUNDS=10 IOCOMP_SOAK_SECS=60 \
//!       cargo test --release -p iocomp-cli --test soak soak_rounds -- --nocapture
//!   ```
//!
//! - **Fault injection**: descriptor exhaustion (`RLIMIT_NOFILE` 256, 1000
//!   concurrent clients), a file growing during its transfer (sent at its
//!   length at open), an unreadable file (403 / `forbidden`, no path
//!   disclosed; the server runs as `nobody`, since root reads anything).
//! - **Idle-connection memory**: 10,000 idle keep-alive connections from four
//!   loopback source addresses; the server's RSS per idle connection is printed
//!   and loosely bounded (`bench/run --scenarios idle-10000` compares it with nginx and lighttpd).
//!
//! The tests in this file run one at a time (a shared lock), so the soak's
//! timing and the memory measurements are not disturbed by each other. Every
//! wait is bounded: sockets carry timeouts, loops have deadlines. Only
//! loopback is used.

mod common;

use common::{
    connect_with_rcvbuf, error_line, expect_bytes, pseudo_random, read_to_end_timeout, send,
    set_linger_zero, show, Server, StartOptions, TempTree, FD_SETTLE_TIMEOUT, IO_TIMEOUT,
};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::FromRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Serialises the tests of this file (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// xorshift64*: a deterministic, seedable generator for the clients' choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `percent`%.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// The server's resident set size in bytes (`VmRSS` of /proc/PID/status).
fn rss_bytes(server: &Server) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .unwrap_or_else(|e| panic!("read /proc/{}/status: {e}", server.pid()));
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unparsable {line:?}"));
    kib * 1024
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Like `assert_bytes_eq` but returns the message instead of panicking.
fn compare(got: &[u8], want: &[u8], what: &str) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Err(format!(
        "{what}: got {} bytes, want {}, first difference at {at}: got {} want {}",
        got.len(),
        want.len(),
        show(&got[at.min(got.len())..]),
        show(&want[at.min(want.len())..])
    ))
}

/// Joins threads, returning the panic messages of those that panicked.
fn join_all<T>(handles: Vec<thread::JoinHandle<T>>) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::new();
    let mut panics = Vec::new();
    for h in handles {
        match h.join() {
            Ok(v) => ok.push(v),
            Err(e) => panics.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(non-string panic)".into()),
            ),
        }
    }
    (ok, panics)
}

/// A TCP connection from `src` (port chosen by the kernel) to `dst`, with
/// `timeout` on connect, reads and writes.
fn connect_from(src: Ipv4Addr, dst: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        panic!("connect_from: IPv4 only, got {dst}");
    };
    // SAFETY: socket(2) with constant arguments returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns; the stream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let sin = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(SocketAddrV4::new(src, 0));
    // SAFETY: `local` is a valid sockaddr_in of the length passed.
    if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    stream.set_write_timeout(Some(timeout))?; // bounds connect(2) too
    let remote = sin(dst);
    // SAFETY: `remote` is a valid sockaddr_in of the length passed.
    if unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    stream.set_read_timeout(Some(timeout))?;
    Ok(stream)
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to at least `want`
/// (raising the hard limit too when allowed, as for root); returns the new
/// soft limit.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the live struct passed.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: want.max(lim.rlim_cur),
        rlim_max: want.max(lim.rlim_max),
    };
    // SAFETY: setrlimit reads the live struct passed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return raised.rlim_cur;
    }
    let to_hard = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the live struct passed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &to_hard) }, 0);
    lim.rlim_max
}

// ---------------------------------------------------------------------------
// Minimal HTTP/1.1 client returning errors instead of panicking
// ---------------------------------------------------------------------------

struct Head {
    status: u16,
    fields: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection with a receive buffer (pipelined responses share reads).
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(s: TcpStream) -> Conn {
        Conn { s, buf: Vec::new() }
    }

    fn fill(&mut self, what: &str) -> Result<(), String> {
        let mut chunk = [0u8; 64 * KIB];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => return Err(format!("{what}: EOF after {} bytes", self.buf.len())),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("{what}: read: {e}")),
            }
        }
    }

    fn head(&mut self, what: &str) -> Result<Head, String> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > 64 * KIB {
                return Err(format!("{what}: no end of head in 64 KiB"));
            }
            self.fill(what)?;
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("{what}: bad status line {status_line:?}"))?;
        let fields = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok(Head { status, fields })
    }

    fn body(&mut self, len: usize, what: &str) -> Result<Vec<u8>, String> {
        while self.buf.len() < len {
            self.fill(what)?;
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// Reads one response (head and `Content-Length` body).
    fn response(&mut self, what: &str) -> Result<(Head, Vec<u8>), String> {
        let head = self.head(what)?;
        let len: usize = head
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{what}: status {} without Content-Length", head.status))?;
        let body = self.body(len, what)?;
        Ok((head, body))
    }

    /// After `Connection: close` or a half-close: the server must close with
    /// nothing more to say.
    fn expect_eof(&mut self, what: &str) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!("{what}: stray bytes {}", show(&self.buf)));
        }
        let mut b = [0u8; 256];
        match self.s.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("{what}: bytes instead of EOF: {}", show(&b[..n]))),
            Err(e) => Err(format!("{what}: error instead of EOF: {e}")),
        }
    }
}

/// `bytes first-last/total`.
fn parse_content_range(v: &str) -> Option<(usize, usize, usize)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?, total.parse().ok()?))
}

/// One part of a `multipart/byteranges` body: (first, last, total, bytes).
type Part = (usize, usize, usize, Vec<u8>);

/// The parts of a `multipart/byteranges` body.
fn multipart_parts(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}");
    let mut at = find(body, delim.as_bytes()).ok_or_else(|| format!("no delimiter {delim:?}"))?;
    let mut parts = Vec::new();
    loop {
        at += delim.len();
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let head_end = find(rest, b"\r\n\r\n").ok_or("part without end of head")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let cr = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-range"))
            .map(|(_, v)| v.trim().to_string())
            .ok_or_else(|| format!("part without Content-Range: {head:?}"))?;
        let (first, last, total) =
            parse_content_range(&cr).ok_or_else(|| format!("bad part Content-Range {cr:?}"))?;
        let start = at + head_end + 4;
        let end = start + (last + 1).saturating_sub(first);
        if end + 2 > body.len() || &body[end..end + 2] != b"\r\n" {
            return Err(format!("part {cr:?} not followed by CRLF"));
        }
        parts.push((first, last, total, body[start..end].to_vec()));
        at = end + 2;
        if !body[at..].starts_with(delim.as_bytes()) {
            return Err("part not followed by a delimiter".into());
        }
    }
}

// ---------------------------------------------------------------------------
// The soak
// ---------------------------------------------------------------------------

/// The files every soak client draws from: name and content.
struct Files {
    names: Vec<String>,
    contents: Vec<Vec<u8>>,
}

fn soak_files(tree: &TempTree) -> Arc<Files> {
    let sizes = [
        0,
        1,
        17,
        1000,
        4096,
        65_537,
        200_003,
        512 * KIB + 3,
        MIB,
        2 * MIB + 11,
    ];
    let mut names = Vec::new();
    let mut contents = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let name = if i % 3 == 0 {
            format!("d{i}/f{i}.bin")
        } else {
            format!("f{i}.bin")
        };
        let content = pseudo_random(1000 + i as u64, len);
        tree.file(&name, &content);
        names.push(name);
        contents.push(content);
    }
    Arc::new(Files { names, contents })
}

impl Files {
    /// A random file, small ones more often than big ones (the minimum of two
    /// uniform draws), so that a round makes many connections, not only
    /// moves many bytes.
    fn pick(&self, rng: &mut Rng) -> usize {
        rng.below(self.names.len()).min(rng.below(self.names.len()))
    }
}

/// Per-round tallies.
#[derive(Default)]
struct Tally {
    honest_conns: AtomicUsize,
    honest_requests: AtomicUsize,
    honest_bytes: AtomicU64,
    misbehaved: [AtomicUsize; 6],
    failures: Mutex<Vec<String>>,
}

const MISBEHAVIOURS: [&str; 6] = [
    "disconnect mid-transfer",
    "reset (SO_LINGER 0)",
    "stop reading, then close",
    "garbage",
    "HTTP head one byte at a time",
    "line one byte at a time",
];

/// What one HTTP request asks for and how its answer is checked.
enum Want {
    Whole,
    /// One range: the header value, then the expected (first, last).
    Single(String, usize, usize),
    /// Several disjoint, well separated ranges.
    Multi(Vec<(usize, usize)>),
}

fn pick_request(rng: &mut Rng, len: usize) -> Want {
    match rng.below(10) {
        0..=3 => Want::Whole,
        4..=7 if len > 0 => {
            let a = rng.below(len);
            match rng.below(3) {
                0 => {
                    let b = rng.range(a, len - 1);
                    let past = if rng.chance(10) { len + 100 } else { b };
                    Want::Single(format!("bytes={a}-{past}"), a, past.min(len - 1))
                }
                1 => Want::Single(format!("bytes={a}-"), a, len - 1),
                _ => {
                    let n = rng.range(1, len);
                    Want::Single(format!("bytes=-{n}"), len - n, len - 1)
                }
            }
        }
        8..=9 if len >= 400 => {
            // Ranges inside separate slots with gaps, so none may be merged.
            let k = rng.range(2, 4);
            let slot = len / k;
            let ranges = (0..k)
                .map(|i| {
                    let lo = i * slot;
                    let first = lo + rng.below(slot / 2);
                    let last = first + rng.below(slot / 4);
                    (first, last)
                })
                .collect();
            Want::Multi(ranges)
        }
        _ => Want::Whole,
    }
}

fn http_request(path: &str, want: &Want, close: bool) -> Vec<u8> {
    let mut r = format!("GET /{path} HTTP/1.1\r\nHost: soak\r\n");
    match want {
        Want::Whole => {}
        Want::Single(h, _, _) => r.push_str(&format!("Range: {h}\r\n")),
        Want::Multi(v) => {
            let specs: Vec<String> = v.iter().map(|(a, b)| format!("{a}-{b}")).collect();
            r.push_str(&format!("Range: bytes={}\r\n", specs.join(",")));
        }
    }
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

fn check_http(
    head: &Head,
    body: &[u8],
    want: &Want,
    content: &[u8],
    what: &str,
) -> Result<(), String> {
    let len = content.len();
    match want {
        Want::Whole => {
            if head.status != 200 {
                return Err(format!("{what}: status {}, want 200", head.status));
            }
            compare(body, content, what)
        }
        Want::Single(_, first, last) => {
            if head.status != 206 {
                return Err(format!("{what}: status {}, want 206", head.status));
            }
            let cr = head.get("content-range").unwrap_or_default();
            if parse_content_range(cr) != Some((*first, *last, len)) {
                return Err(format!(
                    "{what}: Content-Range {cr:?}, want bytes {first}-{last}/{len}"
                ));
            }
            compare(body, &content[*first..=*last], what)
        }
        Want::Multi(ranges) => {
            if head.status != 206 {
                return Err(format!("{what}: status {}, want 206", head.status));
            }
            let ct = head.get("content-type").unwrap_or_default();
            let boundary = ct
                .strip_prefix("multipart/byteranges; boundary=")
                .ok_or_else(|| format!("{what}: Content-Type {ct:?}"))?
                .trim_matches('"');
            let parts = multipart_parts(body, boundary).map_err(|e| format!("{what}: {e}"))?;
            if parts.len() != ranges.len() {
                return Err(format!(
                    "{what}: {} parts, want {}",
                    parts.len(),
                    ranges.len()
                ));
            }
            for ((first, last, total, bytes), (wf, wl)) in parts.iter().zip(ranges) {
                if (*first, *last, *total) != (*wf, *wl, len) {
                    return Err(format!(
                        "{what}: part {first}-{last}/{total}, want {wf}-{wl}/{len}"
                    ));
                }
                compare(bytes, &content[*wf..=*wl], what)?;
            }
            Ok(())
        }
    }
}

/// Soak clients' socket timeout: a stall this long is a failure.
const SOAK_IO_TIMEOUT: Duration = Duration::from_secs(10);

fn soak_connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s =
        TcpStream::connect_timeout(&addr, SOAK_IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(SOAK_IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(SOAK_IO_TIMEOUT)).unwrap();
    Ok(s)
}

/// One honest HTTP keep-alive connection: 1..=8 requests, sometimes
/// pipelined, sometimes ending with `Connection: close`.
fn honest_http(
    addr: SocketAddr,
    files: &Files,
    rng: &mut Rng,
    tally: &Tally,
) -> Result<(), String> {
    let mut c = Conn::new(soak_connect(addr)?);
    let n = rng.range(1, 8);
    let close_last = rng.chance(30);
    let mut i = 0;
    while i < n {
        let batch = if rng.chance(30) {
            rng.range(1, 3).min(n - i)
        } else {
            1
        };
        let mut wants = Vec::new();
        let mut req = Vec::new();
        for j in 0..batch {
            let f = files.pick(rng);
            let want = pick_request(rng, files.contents[f].len());
            let close = close_last && i + j == n - 1;
            req.extend_from_slice(&http_request(&files.names[f], &want, close));
            wants.push((f, want));
        }
        c.s.write_all(&req).map_err(|e| format!("write: {e}"))?;
        for (f, want) in &wants {
            let what = format!(
                "HTTP GET /{} ({})",
                files.names[*f],
                match want {
                    Want::Whole => "whole".to_string(),
                    Want::Single(h, _, _) => h.clone(),
                    Want::Multi(v) => format!("{v:?}"),
                }
            );
            let (head, body) = c.response(&what)?;
            check_http(&head, &body, want, &files.contents[*f], &what)?;
            tally.honest_requests.fetch_add(1, Ordering::Relaxed);
            tally
                .honest_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
        }
        i += batch;
    }
    if close_last {
        c.expect_eof("after Connection: close")?;
    }
    Ok(())
}

/// One honest line-protocol connection: 1..=6 names (sometimes one missing
/// name), pipelined or one at a time, then a half-close and a clean EOF.
fn honest_line(
    addr: SocketAddr,
    files: &Files,
    rng: &mut Rng,
    tally: &Tally,
) -> Result<(), String> {
    let mut c = Conn::new(soak_connect(addr)?);
    let n = rng.range(1, 6);
    let mut picks: Vec<Option<usize>> =
        (0..n).map(|_| Some(rng.below(files.names.len()))).collect();
    if rng.chance(10) {
        picks[rng.below(n)] = None;
    }
    let line_of = |p: &Option<usize>| match p {
        Some(f) => format!("{}\n", files.names[*f]),
        None => "no-such-file.bin\n".to_string(),
    };
    let pipelined = rng.chance(50);
    if pipelined {
        let all: String = picks.iter().map(line_of).collect();
        c.s.write_all(all.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
    }
    for p in &picks {
        if !pipelined {
            c.s.write_all(line_of(p).as_bytes())
                .map_err(|e| format!("write: {e}"))?;
        }
        let (what, want) = match p {
            Some(f) => (
                format!("line {}", files.names[*f]),
                files.contents[*f].clone(),
            ),
            None => ("line no-such-file.bin".to_string(), error_line("not found")),
        };
        let got = c.body(want.len(), &what)?;
        compare(&got, &want, &what)?;
        tally.honest_requests.fetch_add(1, Ordering::Relaxed);
        tally
            .honest_bytes
            .fetch_add(got.len() as u64, Ordering::Relaxed);
    }
    c.s.shutdown(Shutdown::Write)
        .map_err(|e| format!("half-close: {e}"))?;
    c.expect_eof("line protocol after half-close")
}

fn honest_client(
    addr: SocketAddr,
    files: Arc<Files>,
    seed: u64,
    deadline: Instant,
    tally: Arc<Tally>,
) {
    let mut rng = Rng::new(seed);
    while Instant::now() < deadline {
        let http = rng.chance(50);
        let r = if http {
            honest_http(addr, &files, &mut rng, &tally)
        } else {
            honest_line(addr, &files, &mut rng, &tally)
        };
        tally.honest_conns.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = r {
            tally
                .failures
                .lock()
                .unwrap()
                .push(format!("honest client {seed}: {e}"));
        }
    }
}

/// Reads and discards up to `n` bytes (or until EOF, an error or a timeout).
fn read_some(s: &mut TcpStream, n: usize) {
    let mut buf = [0u8; 16 * KIB];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[..(n - got).min(16 * KIB)]) {
            Ok(0) | Err(_) => return,
            Ok(k) => got += k,
        }
    }
}

/// Sends `bytes` one byte per write, with TCP_NODELAY and a short pause in
/// between, so each byte is its own segment.
fn dribble(s: &mut TcpStream, bytes: &[u8], rng: &mut Rng) -> Result<(), String> {
    s.set_nodelay(true).unwrap();
    for b in bytes {
        s.write_all(std::slice::from_ref(b))
            .map_err(|e| format!("write: {e}"))?;
        thread::sleep(Duration::from_millis(rng.range(2, 15) as u64));
    }
    Ok(())
}

/// One misbehaving connection of a random kind. The dribbling kinds must
/// still get a correct answer (their errors are failures); the others only
/// must not disturb anyone.
fn misbehave(addr: SocketAddr, files: &Files, rng: &mut Rng, tally: &Tally) -> Result<(), String> {
    let kind = rng.below(MISBEHAVIOURS.len());
    tally.misbehaved[kind].fetch_add(1, Ordering::Relaxed);
    // A big file, so that a transfer is in flight when the client misbehaves.
    let big = files.names.len() - 1 - rng.below(3);
    let request = if rng.chance(50) {
        format!("GET /{} HTTP/1.1\r\nHost: soak\r\n\r\n", files.names[big])
    } else {
        format!("{}\n", files.names[big])
    };
    match kind {
        0 | 1 => {
            let Ok(mut s) = soak_connect(addr) else {
                return Ok(());
            };
            let _ = s.write_all(request.as_bytes());
            read_some(&mut s, rng.range(0, 300 * KIB));
            if kind == 1 {
                set_linger_zero(&s);
            }
        }
        2 => {
            let mut s = connect_with_rcvbuf(addr, 4 * KIB);
            let _ = s.write_all(request.as_bytes());
            read_some(&mut s, rng.range(0, 16 * KIB));
            thread::sleep(Duration::from_millis(rng.range(200, 1500) as u64));
            if rng.chance(50) {
                set_linger_zero(&s);
            }
        }
        3 => {
            let Ok(mut s) = soak_connect(addr) else {
                return Ok(());
            };
            let n = rng.range(1, 3000);
            let mut junk = pseudo_random(rng.next(), n);
            match rng.below(4) {
                0 => {
                    let mut prefixed = b"GET /".to_vec();
                    prefixed.append(&mut junk);
                    junk = prefixed;
                }
                1 => junk.extend_from_slice(b"\r\n\r\n"),
                2 => junk.push(b'\n'),
                _ => {}
            }
            let _ = s.write_all(&junk);
            s.set_read_timeout(Some(Duration::from_millis(rng.range(50, 500) as u64)))
                .unwrap();
            read_some(&mut s, 64 * KIB);
        }
        4 => {
            let f = rng.below(files.names.len());
            let want = pick_request(rng, files.contents[f].len());
            let mut c = Conn::new(soak_connect(addr)?);
            dribble(&mut c.s, &http_request(&files.names[f], &want, false), rng)?;
            let what = format!("dribbled HTTP GET /{}", files.names[f]);
            let (head, body) = c.response(&what)?;
            check_http(&head, &body, &want, &files.contents[f], &what)?;
        }
        _ => {
            let f = rng.below(files.names.len());
            let mut c = Conn::new(soak_connect(addr)?);
            dribble(&mut c.s, format!("{}\n", files.names[f]).as_bytes(), rng)?;
            let what = format!("dribbled line {}", files.names[f]);
            let got = c.body(files.contents[f].len(), &what)?;
            compare(&got, &files.contents[f], &what)?;
        }
    }
    Ok(())
}

fn misbehaving_client(
    addr: SocketAddr,
    files: Arc<Files>,
    seed: u64,
    deadline: Instant,
    tally: Arc<Tally>,
) {
    let mut rng = Rng::new(seed);
    while Instant::now() < deadline {
        if let Err(e) = misbehave(addr, &files, &mut rng, &tally) {
            tally
                .failures
                .lock()
                .unwrap()
                .push(format!("dribbling client {seed}: {e}"));
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn soak_rounds_honest_clients_verified_misbehaving_ones_harmless() {
    let _serial = serial();
    const HONEST: usize = 100;
    const MISBEHAVING: usize = 20;
    let rounds = env_or("IOCOMP_SOAK_ROUNDS", 3).max(2) as usize;
    let secs = env_or("IOCOMP_SOAK_SECS", 6).max(1);
    raise_nofile(4096);

    let tree = TempTree::new();
    let files = soak_files(&tree);
    let mut server = Server::start_with(
        tree.root(),
        &["--access-log", "off"],
        &StartOptions {
            threads: Some(2),
            ..StartOptions::default()
        },
    );
    let addr = server.addr();
    let baseline = server.fd_count();
    let t_all = Instant::now();
    let mut rss = Vec::new();
    for round in 1..=rounds {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(secs);
        let tally = Arc::new(Tally::default());
        let mut handles = Vec::new();
        for i in 0..HONEST + MISBEHAVING {
            let (files, tally) = (files.clone(), tally.clone());
            let seed = (round * 1000 + i) as u64;
            handles.push(
                thread::Builder::new()
                    .stack_size(256 * KIB)
                    .spawn(move || {
                        if i < HONEST {
                            honest_client(addr, files, seed, deadline, tally)
                        } else {
                            misbehaving_client(addr, files, seed, deadline, tally)
                        }
                    })
                    .expect("spawn client thread"),
            );
        }
        let (_, panics) = join_all(handles);
        let load = t0.elapsed();
        server.assert_alive();
        let fds = server.wait_fd_count(baseline, FD_SETTLE_TIMEOUT);
        let r = rss_bytes(&server);
        rss.push(r);
        let failures = tally.failures.lock().unwrap().clone();
        let kinds: Vec<String> = MISBEHAVIOURS
            .iter()
            .zip(&tally.misbehaved)
            .map(|(k, n)| format!("{k}: {}", n.load(Ordering::Relaxed)))
            .collect();
        eprintln!(
            "soak round {round}/{rounds}: {:.1} s load + {:.1} s settle; honest: {} connections, {} requests, {:.1} MiB verified, {} failures; misbehaving: {}; fds {fds} (baseline {baseline}); RSS {:.2} MiB",
            load.as_secs_f64(),
            (t0.elapsed() - load).as_secs_f64(),
            tally.honest_conns.load(Ordering::Relaxed),
            tally.honest_requests.load(Ordering::Relaxed),
            tally.honest_bytes.load(Ordering::Relaxed) as f64 / MIB as f64,
            failures.len(),
            kinds.join(", "),
            r as f64 / MIB as f64,
        );
        assert!(
            panics.is_empty(),
            "round {round}: client threads panicked: {panics:#?}"
        );
        assert!(
            failures.is_empty(),
            "round {round}: {} honest (or dribbling) clients failed; first ones:\n{}",
            failures.len(),
            failures
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            tally.honest_requests.load(Ordering::Relaxed) >= HONEST,
            "round {round}: only {} honest requests completed",
            tally.honest_requests.load(Ordering::Relaxed)
        );
        assert_eq!(
            fds,
            baseline,
            "round {round}: descriptor count did not return to its baseline within {FD_SETTLE_TIMEOUT:?}; open now:\n{}",
            server.fd_listing()
        );
    }
    // Resident memory must not grow after round 2 (caches, pools and the
    // allocator's arenas are warm by then). Tolerance: 2 MiB or 10% of the
    // round-2 figure, whichever is larger: malloc keeps freed chunks in its
    // arenas and their fragmentation after ~120 concurrent connections varies
    // between rounds (measured: tens of KiB). A CI round makes ~700
    // connections and ~2,300 requests (debug build), so a leak of ~3 KiB per
    // connection or ~1 KiB per request fails within one round; the long soak
    // compares every later round with round 2 and so catches smaller leaks.
    let base = rss[1];
    let tolerance = (2 * MIB as u64).max(base / 10);
    for (i, &r) in rss.iter().enumerate().skip(2) {
        assert!(
            r <= base + tolerance,
            "RSS grew from {:.2} MiB after round 2 to {:.2} MiB after round {} (tolerance {:.2} MiB); all rounds: {:?}",
            base as f64 / MIB as f64,
            r as f64 / MIB as f64,
            i + 1,
            tolerance as f64 / MIB as f64,
            rss
        );
    }
    eprintln!(
        "soak: {rounds} rounds in {:.1} s; RSS per round (KiB): {:?}",
        t_all.elapsed().as_secs_f64(),
        rss.iter().map(|r| r / 1024).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------

const OK_CONTENT: &[u8] = b"ok.txt: the small file of the fault tests\n";

/// One non-blocking read of a fault-test client's answer to `ok.txt` into
/// `got`; true once it is complete. Panics on wrong bytes, EOF or an error.
fn poll_answer(s: &mut TcpStream, got: &mut Vec<u8>, buf: &mut [u8]) -> bool {
    match s.read(buf) {
        Ok(0) => panic!(
            "client closed by the server after {} bytes: {}",
            got.len(),
            show(got)
        ),
        Ok(n) => {
            got.extend_from_slice(&buf[..n]);
            assert!(
                OK_CONTENT.starts_with(got),
                "wrong bytes for ok.txt under descriptor exhaustion: {}",
                show(got)
            );
            got.len() == OK_CONTENT.len()
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
        Err(e) => panic!("client read failed after {} bytes: {e}", got.len()),
    }
}

/// `RLIMIT_NOFILE` 256 and 1000 clients at once (the kernel's listen backlog
/// holds those not yet accepted). Each client asks for `ok.txt` over the line
/// protocol and closes once it has its answer, which frees a descriptor for
/// the next one. While no client closes, the server is out of descriptors:
/// the clients it accepted are served and it does not spin. Then every client
/// must be served byte-exact, the condition logged at a bounded rate, and
/// afterwards a fresh client is served and the descriptors return to their
/// baseline.
#[test]
fn descriptor_limit_256_under_1000_clients_serves_all_recovers_and_logs_bounded() {
    let _serial = serial();
    const LIMIT: u64 = 256;
    const CLIENTS: usize = 1000;
    raise_nofile(CLIENTS as u64 + 512);
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let mut server = Server::start_with(
        tree.root(),
        &["--access-log", "off"],
        &StartOptions {
            nofile_limit: Some(LIMIT),
            threads: Some(2),
            ..StartOptions::default()
        },
    );
    let baseline = server.fd_count();
    let t_start = Instant::now();

    let mut pending: Vec<(TcpStream, Vec<u8>)> = (0..CLIENTS)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("connect client {i}: {e}"));
            send(&mut s, b"ok.txt\n");
            s.set_nonblocking(true).unwrap();
            (s, Vec::new())
        })
        .collect();
    eprintln!(
        "{CLIENTS} clients connected and sent their request in {:.2} s",
        t_start.elapsed().as_secs_f64()
    );

    // Exhaustion: the server holds (nearly) all of its descriptors and says so.
    let exhausted = |server: &Server| {
        server.stderr_text().contains("accept:") && server.fd_count() as u64 >= LIMIT - 16
    };
    let t_wait = Instant::now();
    while !exhausted(&server) {
        assert!(
            t_wait.elapsed() < Duration::from_secs(10),
            "the server did not run out of descriptors within 10 s ({} open, limit {LIMIT}); stderr:\n{}",
            server.fd_count(),
            server.stderr_text()
        );
        thread::sleep(Duration::from_millis(10));
    }

    // While exhausted (no client closes yet), the accepted ones are served,
    // and the server does not spin retrying accept(2).
    let cpu0 = server.cpu_time();
    let window = Duration::from_millis(1000);
    thread::sleep(window);
    let cpu = server.cpu_time().saturating_sub(cpu0);
    let mut buf = [0u8; 256];
    let mut served_while_exhausted = 0;
    for (s, got) in &mut pending {
        if poll_answer(s, got, &mut buf) {
            served_while_exhausted += 1;
        }
    }
    let fds_exhausted = server.fd_count();
    eprintln!(
        "descriptor limit {LIMIT}: {served_while_exhausted} of {CLIENTS} clients served while exhausted ({fds_exhausted} descriptors open); server CPU {cpu:?} in {window:?}"
    );
    assert!(
        served_while_exhausted >= 1,
        "no client was served while the server was out of descriptors"
    );
    assert!(
        served_while_exhausted < CLIENTS,
        "all {CLIENTS} clients were served at once: the limit of {LIMIT} was never binding"
    );
    assert!(
        cpu < window / 4,
        "server used {cpu:?} of CPU in {window:?} while out of descriptors (spinning on accept?)"
    );

    // Load drops as clients get their answers and close: every pending
    // client must be served, byte-exact, from the backlog.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut served = 0;
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {CLIENTS} clients still unserved after 60 s ({served} served)",
            pending.len()
        );
        let mut i = 0;
        while i < pending.len() {
            let (s, got) = &mut pending[i];
            let done = got.len() == OK_CONTENT.len() || poll_answer(s, got, &mut buf);
            if done {
                pending.swap_remove(i);
                served += 1;
            } else {
                i += 1;
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    let took = t_start.elapsed();
    eprintln!(
        "descriptor limit {LIMIT}: all {CLIENTS} clients served, byte-exact, {:.2} s after connecting",
        took.as_secs_f64()
    );

    // Recovery: a fresh client, then the baseline.
    let t0 = Instant::now();
    let got = common::fetch(server.addr(), &[b"ok.txt"]);
    common::assert_bytes_eq(&got, OK_CONTENT, "fresh client after the exhaustion");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "fresh client served only after {:?}",
        t0.elapsed()
    );
    server.assert_fds_back_to(baseline);
    server.assert_alive();

    // Bounded logging: the server promises at most one warning a second.
    let secs = t_start.elapsed().as_secs() + 1;
    let stderr = server.stderr_text();
    let accept_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("accept:")).collect();
    eprintln!("{} `accept:` lines in ~{secs} s", accept_lines.len());
    assert!(
        accept_lines
            .iter()
            .any(|l| l.contains("Too many open files") || l.contains("os error 24")),
        "no EMFILE among the accept warnings:\n{}",
        accept_lines.join("\n")
    );
    assert!(
        accept_lines.len() as u64 <= secs + 1,
        "{} `accept:` lines in about {secs} s (a log flood):\n{}",
        accept_lines.len(),
        accept_lines.join("\n")
    );
}

/// Reads from `s` until `n` bytes arrived, into `out`, pausing `pause`
/// between reads; panics on EOF, error or a 20 s total.
fn read_slowly(s: &mut TcpStream, out: &mut Vec<u8>, n: usize, pause: Duration, what: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = vec![0u8; 64 * KIB];
    while out.len() < n {
        let want = (n - out.len()).min(buf.len());
        match s.read(&mut buf[..want]) {
            Ok(0) => panic!("{what}: EOF after {} of {n} bytes", out.len()),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: read failed after {} of {n} bytes: {e}", out.len()),
        }
        assert!(Instant::now() < deadline, "{what}: reading took too long");
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
}

/// Appends `extra` to the file at `path` (the file grows in place, same inode).
fn append(path: &std::path::Path, extra: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", path.display()));
    f.write_all(extra).unwrap();
    f.sync_all().unwrap();
}

/// A file that grows while it is being sent is sent at its length at open,
/// over both protocols: the client gets exactly the original bytes, then the
/// connection goes on (the next request is answered, and a new request for
/// the grown file gets all of it), then ends cleanly.
#[test]
fn file_growing_during_transfer_is_sent_at_its_length_at_open() {
    let _serial = serial();
    const LEN: usize = 12 * MIB;
    const GROWTH: usize = MIB + 5;
    let tree = TempTree::new();
    let original = pseudo_random(71, LEN);
    let extra = pseudo_random(72, GROWTH);
    let mut grown = original.clone();
    grown.extend_from_slice(&extra);
    tree.file("ok.txt", OK_CONTENT);
    let server = Server::start(tree.root(), &["--access-log", "off"]);
    let baseline = server.fd_count();

    for proto in ["http", "line"] {
        let name = format!("grow-{proto}.bin");
        let path = tree.file(&name, &original);
        let what = format!("{proto}: {name}");
        let mut s = connect_with_rcvbuf(server.addr(), 16 * KIB);
        let mut got = Vec::new();
        let expected_len;
        if proto == "http" {
            send(
                &mut s,
                format!("GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
            );
            let mut c = Conn::new(s);
            let head = c.head(&what).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(head.status, 200, "{what}: status");
            assert_eq!(
                head.get("content-length"),
                Some(LEN.to_string().as_str()),
                "{what}: Content-Length is the length at open"
            );
            got = std::mem::take(&mut c.buf);
            s = c.s;
            expected_len = LEN;
        } else {
            send(&mut s, format!("{name}\n").as_bytes());
            expected_len = LEN;
        }
        // Start slowly, so the transfer is in flight when the file grows.
        read_slowly(&mut s, &mut got, 256 * KIB, Duration::from_millis(2), &what);
        append(&path, &extra);
        read_slowly(&mut s, &mut got, expected_len, Duration::ZERO, &what);
        common::assert_bytes_eq(&got, &original, &format!("{what}: body"));

        // The connection goes on: the next request is answered at once
        // (nothing of the growth was sent in between), and a new request
        // for the grown file gets all of it.
        if proto == "http" {
            let mut c = Conn::new(s);
            c.s.write_all(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let (head, body) = c.response(&what).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(head.status, 200, "{what}: ok.txt after the grown file");
            common::assert_bytes_eq(&body, OK_CONTENT, &format!("{what}: ok.txt after"));
            c.s.write_all(
                format!("GET /{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .unwrap();
            let (head, body) = c.response(&what).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(head.status, 200, "{what}: the grown file again");
            common::assert_bytes_eq(&body, &grown, &format!("{what}: grown file, new request"));
            c.expect_eof(&what).unwrap_or_else(|e| panic!("{e}"));
        } else {
            send(&mut s, b"ok.txt\n");
            expect_bytes(&mut s, OK_CONTENT, &format!("{what}: ok.txt after"));
            send(&mut s, format!("{name}\n").as_bytes());
            s.shutdown(Shutdown::Write).unwrap();
            let rest = read_to_end_timeout(&mut s, IO_TIMEOUT);
            common::assert_bytes_eq(&rest, &grown, &format!("{what}: grown file, new request"));
        }
    }
    server.assert_fds_back_to(baseline);
}

/// An unreadable file (mode 000) and a file in an untraversable directory
/// are 403 over HTTP and `forbidden` over the line protocol, and no answer
/// discloses a path. The server runs as `nobody` (uid 65534): root reads
/// anything, so only an unprivileged server sees `EACCES`.
#[test]
fn unreadable_file_is_403_and_forbidden_without_disclosing_paths() {
    let _serial = serial();
    const NOBODY: u32 = 65534;
    let tree = TempTree::new();
    // The tree must be readable by nobody, except what is locked.
    fs::set_permissions(tree.base(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(tree.root(), fs::Permissions::from_mode(0o755)).unwrap();
    tree.file("ok.txt", OK_CONTENT);
    let secret = tree.file("secret.bin", b"the secret content\n");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    tree.file("locked/inner.txt", b"inner content\n");
    fs::set_permissions(
        tree.root().join("locked"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let server = Server::start_with(
        tree.root(),
        &[],
        &StartOptions {
            uid: Some(NOBODY),
            ..StartOptions::default()
        },
    );
    let status = fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == NOBODY.to_string()),
        "the server does not run as nobody: {uid_line:?}"
    );
    let base = tree.base().display().to_string();
    let leaks = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        text.contains(&base) || text.contains("/tmp") || text.contains("root/")
    };

    let mut c = Conn::new(server.connect());
    for path in ["secret.bin", "locked/inner.txt"] {
        let what = format!("HTTP GET /{path}");
        c.s.write_all(format!("GET /{path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let (head, body) = c.response(&what).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.status, 403, "{what}: body {}", show(&body));
        let all_fields: String = head
            .fields
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect();
        assert!(
            !leaks(&body) && !leaks(all_fields.as_bytes()),
            "{what}: the 403 discloses a path:\n{all_fields}{}",
            show(&body)
        );
        assert!(
            !body.windows(6).any(|w| w == b"secret") && !body.windows(5).any(|w| w == b"inner"),
            "{what}: the 403 body shows content or a name: {}",
            show(&body)
        );
    }
    // The connection survives and readable files are still served.
    c.s.write_all(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (head, body) = c
        .response("ok.txt after 403s")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status, 200, "ok.txt after the 403s");
    common::assert_bytes_eq(&body, OK_CONTENT, "ok.txt after the 403s");

    let mut s = server.connect();
    for path in ["secret.bin", "locked/inner.txt"] {
        send(&mut s, format!("{path}\n").as_bytes());
        expect_bytes(&mut s, &error_line("forbidden"), &format!("line {path}"));
    }
    send(&mut s, b"ok.txt\n");
    expect_bytes(&mut s, OK_CONTENT, "line ok.txt after forbidden");
    s.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_end_timeout(&mut s, IO_TIMEOUT);
    assert!(rest.is_empty(), "stray bytes: {}", show(&rest));
}

// ---------------------------------------------------------------------------
// Idle-connection memory
// ---------------------------------------------------------------------------

/// 10,000 idle keep-alive connections at once, from four loopback source
/// addresses (2,500 each): each connection made one HTTP request (so it has
/// been through a whole exchange) and then stays open. The server's RSS
/// growth divided by the connection count is printed and loosely bounded
/// (8 KiB: an idle connection should hold no buffers); a fresh client is
/// still served meanwhile, and the descriptors return to their baseline
/// once all close. Socket buffers are kernel memory and not in RSS.
#[test]
fn ten_thousand_idle_keepalive_connections_memory_per_connection() {
    let _serial = serial();
    const CONNS: usize = 10_000;
    const SOURCES: [Ipv4Addr; 4] = [
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 4),
        Ipv4Addr::new(127, 0, 0, 5),
    ];
    const LIMIT_PER_CONN: u64 = 8 * 1024;
    let have = raise_nofile(CONNS as u64 + 1024);
    assert!(
        have >= CONNS as u64 + 256,
        "RLIMIT_NOFILE is {have} and cannot be raised: {CONNS} connections need more"
    );
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let max_conns = (CONNS + 1000).to_string();
    let server = Server::start_with(
        tree.root(),
        &[
            "--access-log",
            "off",
            "--max-conns",
            &max_conns,
            "--idle-timeout",
            "300s",
        ],
        &StartOptions {
            nofile_limit: Some(CONNS as u64 + 2048),
            threads: Some(2),
            ..StartOptions::default()
        },
    );
    let addr = server.addr();
    let fds0 = server.fd_count();
    let request = b"GET /ok.txt HTTP/1.1\r\nHost: idle\r\n\r\n";
    let exchange = |c: &mut Conn| -> Result<(), String> {
        c.s.write_all(request).map_err(|e| format!("write: {e}"))?;
        let (head, body) = c.response("GET /ok.txt")?;
        if head.status != 200 {
            return Err(format!("status {}", head.status));
        }
        compare(&body, OK_CONTENT, "ok.txt")
    };
    // Warm-up: the file cache, the allocator and the engine see some traffic
    // (and a burst of concurrent connections) before the first measurement.
    let warm: Vec<Conn> = (0..200)
        .map(|_| {
            let mut c = Conn::new(server.connect());
            exchange(&mut c).unwrap_or_else(|e| panic!("warm-up: {e}"));
            c
        })
        .collect();
    drop(warm);
    thread::sleep(Duration::from_millis(300));
    let rss0 = rss_bytes(&server);

    let t0 = Instant::now();
    let handles: Vec<_> = SOURCES
        .iter()
        .map(|&src| {
            thread::spawn(move || -> Result<Vec<Conn>, String> {
                let mut conns = Vec::with_capacity(CONNS / SOURCES.len());
                // In batches: connect and send a batch, then read its answers.
                while conns.len() < CONNS / SOURCES.len() {
                    let n = 100.min(CONNS / SOURCES.len() - conns.len());
                    let mut batch = Vec::with_capacity(n);
                    for _ in 0..n {
                        let mut s = connect_from(src, addr, IO_TIMEOUT)
                            .map_err(|e| format!("connect from {src}: {e}"))?;
                        s.write_all(request).map_err(|e| format!("write: {e}"))?;
                        batch.push(Conn::new(s));
                    }
                    for mut c in batch {
                        let (head, body) = c.response("GET /ok.txt")?;
                        if head.status != 200 {
                            return Err(format!("status {}", head.status));
                        }
                        compare(&body, OK_CONTENT, "ok.txt")?;
                        conns.push(c);
                    }
                }
                Ok(conns)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(CONNS);
    for h in handles {
        match h.join() {
            Ok(Ok(conns)) => all.extend(conns),
            Ok(Err(e)) => panic!("opening idle connections: {e}"),
            Err(_) => panic!("a connecting thread panicked"),
        }
    }
    let opened_in = t0.elapsed();
    // Every connection is accepted and idle now; let the server settle.
    let want_fds = fds0 + CONNS; // plus ok.txt in the open-file cache
    let fds1 = server.wait_fd_count(want_fds, Duration::from_secs(10));
    assert!(
        fds1 >= want_fds,
        "the server holds {fds1} descriptors, want at least {want_fds} with {CONNS} idle connections"
    );
    thread::sleep(Duration::from_millis(500));
    let rss1 = rss_bytes(&server);

    // A fresh client is still served while 10,000 are idle.
    let mut fresh = Conn::new(server.connect());
    exchange(&mut fresh).unwrap_or_else(|e| panic!("fresh client with {CONNS} idle: {e}"));
    drop(fresh);
    // The idle connections are still open (none was cut) and still usable:
    // a sample of them makes a second request.
    for c in all.iter_mut().step_by(CONNS / 20) {
        exchange(c).unwrap_or_else(|e| panic!("second request on an idle connection: {e}"));
    }

    let per_conn = rss1.saturating_sub(rss0) / CONNS as u64;
    println!(
        "idle keep-alive memory: {CONNS} connections opened in {:.1} s; server RSS {:.2} MiB -> {:.2} MiB: {per_conn} bytes ({:.2} KiB) per idle connection",
        opened_in.as_secs_f64(),
        rss0 as f64 / MIB as f64,
        rss1 as f64 / MIB as f64,
        per_conn as f64 / 1024.0
    );
    eprintln!(
        "idle keep-alive memory: {per_conn} bytes per idle connection (RSS {rss0} -> {rss1})"
    );
    drop(all);
    let fds2 = server.wait_fd_count(fds0, FD_SETTLE_TIMEOUT + Duration::from_secs(5));
    let rss2 = rss_bytes(&server);
    eprintln!(
        "after closing all: {fds2} descriptors (before: {fds0}), RSS {:.2} MiB",
        rss2 as f64 / MIB as f64
    );
    assert!(
        per_conn < LIMIT_PER_CONN,
        "{per_conn} bytes of server RSS per idle keep-alive connection (limit {LIMIT_PER_CONN})"
    );
    assert_eq!(
        fds2, fds0,
        "descriptors did not return after closing {CONNS} connections"
    );
}
