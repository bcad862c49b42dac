//! One harness for every topic: a temporary tree, a server on `127.0.0.1:0`
//! serving it ([`Tree::serve`]), clients ([`client`]), a bounded runner for
//! child processes ([`run`]), one seeded generator ([`Rng`]), and the locks
//! that keep heavy tests from overloading a small machine ([`heavy`],
//! [`timed`]).
//!
//! Everything is bounded in time: sockets carry timeouts, polling loops have
//! deadlines, child processes are killed past theirs. Only loopback is used.

pub mod client;
pub mod http;
pub mod run;
pub mod tls;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use iocomp_server::{Config, Server};

pub use client::{Client, Response};

/// How long a client waits for the server before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for descriptors and connections to settle after clients close.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// A temporary directory tree, removed on drop: `root/` is served, files
/// beside it (in [`Tree::base`]) are not.
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
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        Tree { base, root }
    }

    /// The directory holding `root/`; files there are outside the served tree.
    pub fn base(&self) -> &Path {
        &self.base
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

    /// Creates the directory `rel` (and its parents) under the root.
    pub fn dir(&self, rel: &str) -> &Tree {
        std::fs::create_dir_all(self.path(rel)).unwrap();
        self
    }

    /// A symlink at `rel` under the root pointing at `target` (verbatim).
    pub fn link(&self, target: impl AsRef<Path>, rel: &str) -> &Tree {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
        self
    }

    /// A FIFO at `rel` under the root.
    pub fn fifo(&self, rel: &str) -> &Tree {
        let made = std::process::Command::new("mkfifo")
            .arg(self.path(rel))
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo {rel}");
        self
    }

    /// Writes `content` to `name` beside the root (outside the served tree).
    pub fn outside(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.base.join(name);
        std::fs::write(&path, content).unwrap();
        path
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

    /// Serves the tree with the default configuration (two threads, on
    /// `127.0.0.1:0`) changed by `tune`.
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
    pub addr: std::net::SocketAddr,
}

impl Running {
    /// A client of another address of a server (its metrics listener): the
    /// returned value shuts nothing down.
    pub fn at(addr: std::net::SocketAddr) -> Running {
        Running { server: None, addr }
    }

    /// Every address the server listens on, in order (plain, then TLS).
    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
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

    /// Polls (bounded by `within`) until `connections() == n`; whether it did.
    pub fn wait_connections(&self, n: usize, within: Duration) -> bool {
        poll_until(within, || self.connections() == n)
    }

    /// The metrics listener's address.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.server
            .as_ref()
            .and_then(Server::metrics_addr)
            .expect("a metrics listener")
    }

    /// A client of the metrics listener.
    pub fn admin(&self) -> Running {
        Running::at(self.metrics_addr())
    }

    /// Starts a graceful stop, with `drain` for transfers in flight, on a
    /// thread of its own; it ends with how many connections were cut off.
    pub fn shutdown(&mut self, drain: Duration) -> thread::JoinHandle<usize> {
        let server = self.server.take().expect("a server");
        thread::spawn(move || server.shutdown(drain))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(5));
        }
    }
}

/// The line protocol's error line for `reason`.
pub fn error_line(reason: &str) -> Vec<u8> {
    format!("{}{reason}\r\n", iocomp_server::ERROR_PREFIX).into_bytes()
}

/// Every failure reason the line protocol defines.
pub const REASONS: &[&str] = &[
    "not found",
    "forbidden",
    "not a regular file",
    "bad name",
    "line too long",
    "busy",
    "I/O error",
];

/// The one seeded generator of the tests (xorshift64*): file contents,
/// clients' choices. The same seed gives the same sequence.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x2545_F491_4F6C_DD1D)
            | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `percent`%.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    /// `len` bytes with no short repeating pattern.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Drops `path`'s pages from the page cache (`POSIX_FADV_DONTNEED` after
/// `fsync`), so that reading it needs the disk (a transmit then takes the
/// copying path, not `sendfile`).
pub fn evict(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).expect("open to evict");
    f.sync_all().expect("fsync before evicting");
    // SAFETY: `f` is open for the call; the advice only affects the cache.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

/// `len` deterministic bytes of seed `seed`, so an offset or duplication bug
/// in a transfer shows up as a mismatch.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Compares two buffers; on mismatch panics with the lengths and the first
/// differing offset instead of dumping megabytes.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if let Err(e) = compare(got, want, what) {
        panic!("{e}");
    }
}

/// Like [`assert_bytes_eq`], returning the message instead of panicking.
pub fn compare(got: &[u8], want: &[u8], what: &str) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Err(format!(
        "{what}: got {} bytes, want {}, first difference at {at}\n  got:  {}\n  want: {}",
        got.len(),
        want.len(),
        show(&got[at.min(got.len())..]),
        show(&want[at.min(want.len())..])
    ))
}

pub use iocomp_testkit::show;

/// The lines of the (access) log at `path` so far; none if it does not exist yet.
pub fn log_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; whether it held.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Joins threads; returns their values and the panic messages of those that
/// panicked.
pub fn join_all<T>(handles: Vec<thread::JoinHandle<T>>) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::new();
    let mut panics = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(v) => ok.push(v),
            Err(e) => panics.push(format!(
                "thread {i}: {}",
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(non-string panic)".into())
            )),
        }
    }
    (ok, panics)
}

/// Spawns a client thread with a small stack (hundreds run at once).
pub fn spawn_client<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .stack_size(256 * KIB)
        .spawn(f)
        .expect("spawn a client thread")
}

static LOAD: RwLock<()> = RwLock::new(());

/// For a heavy test (large files, hundreds of clients, the soak): it runs
/// alone, with no other heavy or timed test beside it.
pub fn heavy() -> RwLockWriteGuard<'static, ()> {
    LOAD.write().unwrap_or_else(|e| e.into_inner())
}

/// For a test that measures time (pacing, timeouts): it may run beside
/// other timed tests, never beside a heavy one.
pub fn timed() -> RwLockReadGuard<'static, ()> {
    LOAD.read().unwrap_or_else(|e| e.into_inner())
}

/// The environment variable that names the one test a child runs.
const ISOLATED: &str = "IOCOMP_TEST_ISOLATED";

/// Runs `body` alone in a child process: this test binary run again with
/// only the test `path` (`module_path!()` plus `::` and the test's name), so
/// that the process's descriptors, CPU time and memory are the server's and
/// its clients' only, not those of tests running beside it. In the child,
/// runs `body` itself.
pub fn isolated(path: &str, limit: Duration, body: impl FnOnce()) {
    // `module_path!()` starts with the crate (this binary); libtest's names
    // do not.
    let name = path.split_once("::").map_or(path, |(_, rest)| rest);
    if std::env::var(ISOLATED).as_deref() == Ok(name) {
        body();
        return;
    }
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ISOLATED, name);
    let out = run::run_bounded(&mut c, None, limit);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{name} in its own process failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run in its own process:\n{stdout}"
    );
}

/// Descriptors this process has open, less the engine's own rings
/// (`[io_uring]`, `[eventpoll]`, `[eventfd]`: the worker pool adds a thread,
/// with its ring, when a handler blocks, and keeps it until shutdown, so
/// their number follows the peak of blocking work, not leaks). Meaningful
/// inside [`isolated`] only.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            !matches!(
                target.to_str(),
                Some("anon_inode:[io_uring]" | "anon_inode:[eventpoll]" | "anon_inode:[eventfd]")
            )
        })
        .count()
        // read_dir's own descriptor
        .saturating_sub(1)
}

/// This process's descriptors and what they point at, for messages.
pub fn fd_listing() -> String {
    iocomp_testkit::fd_listing("/proc/self/fd")
}

/// Asserts (polling, bounded) that [`fd_count`] returns to `baseline`.
pub fn assert_fds_back_to(baseline: usize) {
    let mut n = fd_count();
    let ok = poll_until(SETTLE_TIMEOUT, || {
        n = fd_count();
        n == baseline
    });
    assert!(
        ok,
        "descriptor count {n} did not return to its baseline {baseline} within {SETTLE_TIMEOUT:?}; open now:\n{}",
        fd_listing()
    );
}

/// This process's resident set size in bytes (`VmRSS`).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unparsable {line:?}"));
    kib * 1024
}

/// CPU time (user + system) this process has used so far.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').expect("`)` in /proc/self/stat") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to at least `want`
/// (the hard one too when allowed, as for root); returns the new soft limit.
pub fn raise_nofile(want: u64) -> u64 {
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
        rlim_cur: want,
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

/// Deterministic content of `len` bytes built from 1 MiB blocks (block `i`
/// is `pseudo_random(seed * 2^20 + i)`), so that a large file is written and
/// checked a block at a time instead of held in memory.
pub struct Pattern {
    seed: u64,
    /// The length.
    pub len: u64,
}

impl Pattern {
    pub fn new(seed: u64, len: u64) -> Pattern {
        Pattern { seed, len }
    }

    pub fn block(&self, i: u64) -> Vec<u8> {
        let start = i * MIB as u64;
        assert!(start < self.len, "block {i} is past the end");
        let n = (self.len - start).min(MIB as u64) as usize;
        pseudo_random((self.seed << 20) + i, n)
    }

    /// Writes the whole content to `path`.
    pub fn write(&self, path: &Path) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(path).unwrap();
        for i in 0..self.len.div_ceil(MIB as u64) {
            f.write_all_at(&self.block(i), i * MIB as u64).unwrap();
        }
    }

    pub fn verifier(&self, what: &str) -> Verifier<'_> {
        Verifier {
            pat: self,
            what: what.to_string(),
            pos: 0,
            idx: u64::MAX,
            block: Vec::new(),
        }
    }
}

/// Checks a stream against a [`Pattern`] chunk by chunk, as it arrives.
pub struct Verifier<'a> {
    pat: &'a Pattern,
    what: String,
    /// Bytes checked so far.
    pub pos: u64,
    idx: u64,
    block: Vec<u8>,
}

impl Verifier<'_> {
    /// Checks the next bytes; panics at the first wrong byte (with its
    /// offset) or past the end.
    pub fn feed(&mut self, mut got: &[u8]) {
        while !got.is_empty() {
            assert!(
                self.pos < self.pat.len,
                "{}: {} bytes beyond the file's {} bytes: {}",
                self.what,
                got.len(),
                self.pat.len,
                show(got)
            );
            let idx = self.pos / MIB as u64;
            if idx != self.idx {
                self.block = self.pat.block(idx);
                self.idx = idx;
            }
            let off = (self.pos % MIB as u64) as usize;
            let take = got.len().min(self.block.len() - off);
            check_chunk(&self.block[off..off + take], 0, &got[..take], &self.what);
            self.pos += take as u64;
            got = &got[take..];
        }
    }
}

/// Checks `got`, which arrived at offset `pos` of a stream, against `want`.
pub fn check_chunk(want: &[u8], pos: usize, got: &[u8], what: &str) {
    assert!(
        pos + got.len() <= want.len(),
        "{what}: {} bytes beyond the file's {} bytes",
        pos + got.len() - want.len(),
        want.len()
    );
    let w = &want[pos..pos + got.len()];
    if got != w {
        let d = got.iter().zip(w).position(|(a, b)| a != b).unwrap();
        panic!(
            "{what}: wrong byte at offset {}\n  got:  {}\n  want: {}",
            pos + d,
            show(&got[d..]),
            show(&w[d..])
        );
    }
}

/// Panics so far on the server's own threads (`iocomp-worker-N`,
/// `iocomp-blocking`), counted by a panic hook installed on first use.
pub fn server_panics() -> usize {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if thread::current()
                .name()
                .is_some_and(|n| n.starts_with("iocomp-"))
            {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// How long ago this process started (`/proc/self/stat` field 22 against
/// `/proc/uptime`).
pub fn process_age() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').expect("`)` in /proc/self/stat") + 1..];
    let start_ticks: f64 = rest.split_whitespace().nth(19).unwrap().parse().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Duration::from_secs_f64((uptime - start_ticks / hz).max(0.0))
}
