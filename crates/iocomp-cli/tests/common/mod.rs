//! Shared helpers for the `iocomp` integration tests: a self-deleting
//! temporary tree, a guard around a spawned `iocomp serve` process, and
//! bounded client helpers for the line protocol.
//!
//! Everything here is bounded in time: sockets carry read/write timeouts and
//! every wait is a polling loop with a deadline, so a broken server makes a
//! test fail instead of hang.

#![allow(dead_code)]

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default bound for a single socket read or write, and for server start-up.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Bound for the descriptor count to settle back after clients close.
pub const FD_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The error line the server sends for `reason`.
pub fn error_line(reason: &str) -> Vec<u8> {
    format!("File transmit error: {reason}\r\n").into_bytes()
}

/// Every failure reason the protocol defines.
pub const REASONS: &[&str] = &[
    "not found",
    "forbidden",
    "not a regular file",
    "bad name",
    "line too long",
    "busy",
    "I/O error",
];

/// Deterministic pseudo-random bytes (xorshift64*): `len` bytes derived from
/// `seed`, with no short repeating pattern, so an offset or duplication bug in
/// a transfer shows up as a mismatch.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x2545_F491_4F6C_DD1D)
        | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compares two byte buffers and, on mismatch, panics with the lengths and the
/// first differing offset instead of dumping megabytes of bytes.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first_diff = got
        .iter()
        .zip(want.iter())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {} bytes, first difference at offset {first_diff}\n  got:  {}\n  want: {}",
        got.len(),
        want.len(),
        show(&got[first_diff.min(got.len())..]),
        show(&want[first_diff.min(want.len())..]),
    );
}

/// A short, printable rendering of bytes for failure messages.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 160;
    let shown: String = bytes[..bytes.len().min(MAX)].escape_ascii().to_string();
    if bytes.len() > MAX {
        format!("b\"{shown}\"... ({} bytes)", bytes.len())
    } else {
        format!("b\"{shown}\"")
    }
}

static TREE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique temporary directory, removed (with everything in it) on drop.
///
/// Layout: `base/` holds the served tree `base/root/` and may hold files
/// *outside* the served tree (next to it), for escape tests.
pub struct TempTree {
    base: PathBuf,
    root: PathBuf,
}

impl TempTree {
    /// Creates a fresh, empty tree.
    pub fn new() -> TempTree {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = TREE_COUNTER.fetch_add(1, Ordering::SeqCst);
        let base =
            std::env::temp_dir().join(format!("iocomp-itest-{}-{n}-{nanos}", std::process::id()));
        // `create_dir` (not `_all`) so a leftover directory is never reused.
        fs::create_dir(&base).unwrap_or_else(|e| panic!("create {}: {e}", base.display()));
        let root = base.join("root");
        fs::create_dir(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        TempTree { base, root }
    }

    /// The directory the server serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding `root/`; files here are outside the served tree.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Creates (or replaces) the file `rel` under the root with `content`,
    /// creating parent directories. Returns its path.
    pub fn file(&self, rel: &str, content: &[u8]) -> PathBuf {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Creates a file next to the served tree (outside it). Returns its path.
    pub fn outside_file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.base.join(name);
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Creates the directory `rel` (and its parents) under the root.
    pub fn dir(&self, rel: &str) -> PathBuf {
        let path = self.root.join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        path
    }

    /// Creates the symlink `rel` under the root pointing at `target`
    /// (stored verbatim: relative targets are relative to the link's dir).
    pub fn symlink(&self, target: impl AsRef<Path>, rel: &str) -> PathBuf {
        let path = self.root.join(rel);
        std::os::unix::fs::symlink(target.as_ref(), &path)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
        path
    }

    /// Creates the FIFO `rel` under the root.
    pub fn fifo(&self, rel: &str) -> PathBuf {
        let path = self.root.join(rel);
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) };
        assert_eq!(
            rc,
            0,
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        path
    }
}

impl Default for TempTree {
    fn default() -> Self {
        TempTree::new()
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        // `remove_dir_all` does not follow symlinks, so escape links are safe.
        let _ = fs::remove_dir_all(&self.base);
    }
}

static LOG_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// How to spawn the server beyond its arguments (see [`Server::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// If set, the child's `RLIMIT_NOFILE` (soft and hard) is set to this
    /// before `exec`, so the server cannot raise it.
    pub nofile_limit: Option<u64>,
    /// `--threads` to pass instead of the default 2.
    pub threads: Option<usize>,
    /// Run the server under a seccomp filter that denies the io_uring system
    /// calls with EPERM, as Docker's default profile does (x86_64 only).
    pub deny_io_uring: bool,
    /// If set, the child drops its supplementary groups and switches to this
    /// user and group id (`setgroups`, `setgid`, `setuid`) before `exec`, so a
    /// test running as root can see what an unprivileged server sees (e.g.
    /// `EACCES` on a mode-000 file). The served tree and the binary must then
    /// be readable by that user.
    pub uid: Option<u32>,
    /// Start the server as systemd's socket activation would: this listening
    /// socket becomes descriptor 3, and `sh -c 'LISTEN_PID=$$ LISTEN_FDS=1
    /// exec iocomp ...'` sets the variables for the very process that runs
    /// the server. No `--bind` is passed then.
    pub listen_fd: Option<std::os::fd::RawFd>,
    /// Extra environment variables for the server.
    pub env: Vec<(String, String)>,
}

/// A running `iocomp serve` process. Dropping it SIGKILLs and reaps the
/// process unless it has already been waited for; if the test is panicking,
/// the server's stderr is printed so the failure comes with its logs.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    pid: i32,
    exit: Option<ExitStatus>,
    log_path: PathBuf,
    /// Every stdout line so far (the `listening on` line and the access log).
    stdout_lines: Arc<Mutex<Vec<String>>>,
    /// Set once the server's stdout reached EOF (the process closed it).
    stdout_eof: Arc<AtomicBool>,
}

impl Server {
    /// Spawns `iocomp serve ROOT --bind 127.0.0.1:0 --threads 2 EXTRA...` and
    /// waits (at most [`IO_TIMEOUT`]) for its `listening on ADDR` line.
    pub fn start(root: &Path, extra_args: &[&str]) -> Server {
        Server::start_with(root, extra_args, &StartOptions::default())
    }

    /// [`Server::start`] with spawn options (a descriptor limit, another
    /// thread count).
    pub fn start_with(root: &Path, extra_args: &[&str], options: &StartOptions) -> Server {
        let log_path = std::env::temp_dir().join(format!(
            "iocomp-itest-log-{}-{}.txt",
            std::process::id(),
            LOG_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let log = fs::File::create(&log_path).expect("create server log file");
        let threads = options.threads.unwrap_or(2).to_string();
        let mut command = match options.listen_fd {
            None => Command::new(env!("CARGO_BIN_EXE_iocomp")),
            Some(_) => {
                let mut c = Command::new("sh");
                c.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$@\"", "sh"])
                    .arg(env!("CARGO_BIN_EXE_iocomp"));
                c
            }
        };
        command.arg("serve").arg(root);
        if options.listen_fd.is_none() {
            command.args(["--bind", "127.0.0.1:0"]);
        }
        command
            .args(["--threads", &threads])
            .args(extra_args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(limit) = options.nofile_limit {
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            // SAFETY: the closure runs in the forked child before exec and only
            // calls setrlimit(2), which is async-signal-safe, on a local value.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(uid) = options.uid {
            // SAFETY: the closure runs in the forked child before exec and only
            // makes three async-signal-safe system calls on plain integers.
            unsafe {
                command.pre_exec(move || {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid as libc::gid_t) != 0
                        || libc::setuid(uid as libc::uid_t) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(fd) = options.listen_fd {
            // SAFETY: the closure runs in the forked child before exec and only
            // calls dup2/fcntl (async-signal-safe) on descriptors it inherited.
            unsafe {
                command.pre_exec(move || {
                    if fd == 3 {
                        // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
                        if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, 3) != 3 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if options.deny_io_uring {
            #[cfg(target_arch = "x86_64")]
            deny_io_uring(&mut command);
            #[cfg(not(target_arch = "x86_64"))]
            panic!("deny_io_uring: the seccomp filter is written for x86_64");
            command.env_remove("IOCOMP_BACKEND");
        }
        let mut child = command.spawn().expect("spawn iocomp");
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        let stdout = child.stdout.take().expect("piped stdout");

        // Read stdout on a thread so the wait for the first line is bounded;
        // the thread keeps draining stdout until the process exits.
        // Every line is also kept in `stdout_lines` for tests of the access log.
        let (tx, rx) = mpsc::channel::<String>();
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let stdout_eof = Arc::new(AtomicBool::new(false));
        let (lines, eof) = (stdout_lines.clone(), stdout_eof.clone());
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let l = line.trim_end().to_string();
                        lines
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(l.clone());
                        let _ = tx.send(l);
                    }
                }
            }
            eof.store(true, Ordering::SeqCst);
        });

        let mut server = Server {
            child,
            // Placeholder until the line is parsed; never used before that.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
            exit: None,
            log_path,
            stdout_lines,
            stdout_eof,
        };
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("listening on ") {
                        server.addr = rest.trim().parse().unwrap_or_else(|e| {
                            panic!("unparsable address in stdout line {line:?}: {e}")
                        });
                        return server;
                    }
                    // Some other stdout line: keep waiting for ours.
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("server printed no `listening on` line within {IO_TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.wait_exit(Duration::from_secs(5));
                    panic!("server closed stdout before a `listening on` line; exit: {status:?}")
                }
            }
        }
    }

    /// The address parsed from the `listening on` line.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The number of descriptors the server has open now.
    ///
    /// The engine's own ring descriptors (`[io_uring]`, `[eventpoll]`,
    /// `[eventfd]`) are not counted: the worker pool adds a thread, with its
    /// ring, when a handler blocks (a directory listing) while no other worker
    /// waits, and keeps it until shutdown, so their number follows the peak of
    /// blocking work, not leaks. Sockets, files and pipes are all counted.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap_or_else(|e| panic!("read /proc/{}/fd: {e}", self.pid))
            .filter_map(Result::ok)
            .filter(|e| {
                let target = fs::read_link(e.path()).unwrap_or_default();
                !matches!(
                    target.to_str(),
                    Some(
                        "anon_inode:[io_uring]" | "anon_inode:[eventpoll]" | "anon_inode:[eventfd]"
                    )
                )
            })
            .count()
    }

    /// The server's open descriptors and what they point at, for messages.
    pub fn fd_listing(&self) -> String {
        let dir = format!("/proc/{}/fd", self.pid);
        let Ok(entries) = fs::read_dir(&dir) else {
            return format!("(cannot read {dir})");
        };
        let mut lines: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| {
                let target = fs::read_link(e.path())
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|err| format!("? ({err})"));
                format!("  {} -> {target}", e.file_name().to_string_lossy())
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// Polls (bounded by `timeout`) until the descriptor count equals
    /// `expected`; returns the last count seen (equal to `expected` on success).
    pub fn wait_fd_count(&self, expected: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.fd_count();
            if n == expected || Instant::now() >= deadline {
                return n;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that the descriptor count returns to `baseline` within
    /// [`FD_SETTLE_TIMEOUT`], listing the open descriptors if it does not.
    pub fn assert_fds_back_to(&self, baseline: usize) {
        let got = self.wait_fd_count(baseline, FD_SETTLE_TIMEOUT);
        assert_eq!(
            got,
            baseline,
            "descriptor count did not return to its baseline within {FD_SETTLE_TIMEOUT:?}; open now:\n{}",
            self.fd_listing()
        );
    }

    /// Sends `sig` to the server.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our child,
        // which has not been reaped yet (so the pid cannot have been reused).
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    /// Waits (polling, bounded by `timeout`) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exit = Some(status);
                    return self.exit;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => return None,
                Err(e) => panic!("try_wait on server: {e}"),
            }
        }
    }

    /// Asserts the server process is still running.
    pub fn assert_alive(&mut self) {
        if self.exit.is_none() {
            match self.child.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => self.exit = Some(status),
                Err(e) => panic!("try_wait on server: {e}"),
            }
        }
        panic!("server exited unexpectedly: {:?}", self.exit);
    }

    /// Opens a client connection with [`IO_TIMEOUT`] read/write timeouts.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// A copy of every line the server has written to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Polls (bounded by `timeout`) for a stdout line satisfying `pred`.
    pub fn wait_stdout_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stdout_lines().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls (bounded by `timeout`) until the server's stdout reached EOF, so
    /// that [`Server::stdout_lines`] holds everything it will ever write.
    pub fn wait_stdout_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.stdout_eof.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Everything the server has written to stderr so far.
    pub fn stderr_text(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// CPU time (user + system) the server process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .unwrap_or_else(|e| panic!("read /proc/{}/stat: {e}", self.pid));
        // Fields after the command name (which may hold spaces) start at
        // field 3 (state); utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').expect("`)` in /proc/PID/stat") + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            if let Ok(log) = fs::read(&self.log_path) {
                let tail = &log[log.len().saturating_sub(16 * 1024)..];
                eprintln!(
                    "---- iocomp server stderr (last {} bytes) ----\n{}\n---- end of server stderr ----",
                    tail.len(),
                    String::from_utf8_lossy(tail)
                );
            }
        }
        let _ = fs::remove_file(&self.log_path);
    }
}

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

/// Connects to the IPv4 `addr` from source address `src` (e.g. `127.0.0.2`,
/// a second loopback client), with the same timeouts as [`connect`].
pub fn connect_from(addr: SocketAddr, src: std::net::Ipv4Addr) -> TcpStream {
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
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(src, 0);
    // SAFETY: `local` is a valid sockaddr_in of the length passed.
    let rc = unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) };
    assert_eq!(rc, 0, "bind to {src}: {}", std::io::Error::last_os_error());
    let remote = sin(*v4.ip(), v4.port());
    // SAFETY: `remote` is a valid sockaddr_in of the length passed.
    let rc = unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) };
    assert_eq!(
        rc,
        0,
        "connect to {addr} from {src}: {}",
        std::io::Error::last_os_error()
    );
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Encodes `name` as one request line (`name` + LF).
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

/// One connection: sends every name as a line, half-closes, and reads the
/// whole reply until the server closes the connection.
pub fn fetch(addr: SocketAddr, names: &[&[u8]]) -> Vec<u8> {
    let mut stream = connect(addr);
    let mut request = Vec::new();
    for name in names {
        request.extend_from_slice(&line(name));
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

/// Reads exactly `n` bytes within `total`; panics (showing what arrived) on
/// EOF, error or timeout.
pub fn read_exact_timeout(stream: &mut TcpStream, n: usize, total: Duration) -> Vec<u8> {
    let deadline = Instant::now() + total;
    let mut out = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match stream.read(&mut out[filled..]) {
            Ok(0) => panic!(
                "EOF after {filled} of {n} bytes; got: {}",
                show(&out[..filled])
            ),
            Ok(k) => filled += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "read failed after {filled} of {n} bytes: {e}; got: {}",
                show(&out[..filled])
            ),
        }
        assert!(
            filled == n || Instant::now() < deadline,
            "reading {n} bytes took longer than {total:?} ({filled} so far)"
        );
    }
    out
}

/// Reads exactly `expected.len()` bytes and checks they equal `expected`.
/// Fails as soon as the bytes diverge (after briefly collecting the rest of
/// the line for the message), so a wrong error line fails fast instead of
/// waiting for bytes that will never come.
pub fn expect_bytes(stream: &mut TcpStream, expected: &[u8], what: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut got: Vec<u8> = Vec::with_capacity(expected.len());
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < expected.len() {
        let want = (expected.len() - got.len()).min(buf.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => panic!(
                "{what}: EOF after {} of {} bytes; got {}, want {}",
                got.len(),
                expected.len(),
                show(&got),
                show(expected)
            ),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "{what}: read failed after {} of {} bytes: {e}; got {}, want {}",
                got.len(),
                expected.len(),
                show(&got),
                show(expected)
            ),
        }
        if got[..] != expected[..got.len()] {
            collect_rest_of_line(stream, &mut got);
            assert_bytes_eq(&got, expected, what);
        }
        assert!(
            got.len() == expected.len() || Instant::now() < deadline,
            "{what}: reply took longer than {IO_TIMEOUT:?} ({} of {} bytes)",
            got.len(),
            expected.len()
        );
    }
}

/// After a mismatch: reads a little more (up to a LF, 256 bytes or 300 ms) so
/// the failure message shows the server's whole line.
fn collect_rest_of_line(stream: &mut TcpStream, got: &mut Vec<u8>) {
    let old = stream.read_timeout().ok().flatten();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") && got.len() < 256 {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    let _ = stream.set_read_timeout(old);
}

/// Sets `SO_LINGER {on, 0}` so that dropping the socket sends a RST instead
/// of a FIN.
pub fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is a live socket owned by `stream`; the option value
    // points at a properly initialised `linger` of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        std::io::Error::last_os_error()
    );
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

/// Makes `command`'s process deny `io_uring_setup`, `io_uring_enter` and
/// `io_uring_register` with EPERM (a seccomp filter installed between fork and
/// exec, after `PR_SET_NO_NEW_PRIVS`), as Docker's default seccomp profile does.
/// Only this child is affected; nothing global (such as
/// `kernel.io_uring_disabled`) is touched. The system call numbers and the
/// architecture check are x86_64's.
#[cfg(target_arch = "x86_64")]
pub fn deny_io_uring(command: &mut Command) {
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000; // EM_X86_64 | 64BIT | LE
    const ARCH: u32 = 4; // offsetof(struct seccomp_data, arch)
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let filter = vec![
        stmt(load, ARCH),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, NR),
        jeq(425, 3, 0), // io_uring_setup
        jeq(426, 2, 0), // io_uring_enter
        jeq(427, 1, 0), // io_uring_register
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ];
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // two prctl system calls (async-signal-safe) on memory prepared before the
    // fork: the filter moved in and a program header on the stack.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let prog = libc::sock_fprog {
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            let rc = libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            );
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The `iocomp` binary, with no proxy variables from the environment that runs
/// the tests (`iocomp get` honours them).
pub fn iocomp_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iocomp"));
    for k in ["http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"] {
        c.env_remove(k);
    }
    c
}

/// Runs `iocomp ARGS` in `dir`, bounded to 120 s.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut c = iocomp_command();
    c.args(args).current_dir(dir);
    output_within(c, Duration::from_secs(120))
}

/// Runs `iocomp get -q ARGS` in `dir`, bounded to 120 s.
pub fn get(dir: &Path, args: &[&str]) -> Output {
    let mut c = iocomp_command();
    c.arg("get").arg("-q").args(args).current_dir(dir);
    output_within(c, Duration::from_secs(120))
}

/// The exit code of `o` (-1 when a signal ended it).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The standard error of `o`, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The standard error of `o`, which must be one line and no panic.
pub fn one_line(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e:?}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// Runs `command` to its end with stdout and stderr captured (stdin empty;
/// both pipes drained as it runs, so a chatty child never blocks on them);
/// kills it and fails the test if it runs longer than `limit`.
pub fn output_within(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} ran over {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// One request a [`Scripted`] server received: its head as text.
#[derive(Clone, Debug)]
pub struct Req {
    /// The request line and header lines, CRLF-separated.
    pub head: String,
}

impl Req {
    /// The value of header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// `Range: bytes=A-[B]` as `(A, B)`.
    pub fn range(&self) -> Option<(u64, Option<u64>)> {
        let v = self.header("range")?;
        let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()))
    }
}

/// A loopback HTTP server whose every answer a test writes: `reply(n, req)`
/// answers the `n`th request (from 0), one request per connection, and the
/// connection is closed after the answer. It records every request, and
/// stops accepting when dropped.
pub struct Scripted {
    addr: SocketAddr,
    reqs: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Scripted {
    /// Starts the server.
    pub fn start(reply: impl Fn(usize, &Req) -> Vec<u8> + Send + Sync + 'static) -> Scripted {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reply = Arc::new(reply);
        let (r, st) = (reqs.clone(), stop.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((mut s, _)) = l.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (r, reply) = (r.clone(), reply.clone());
                thread::spawn(move || {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                        head.push(b[0]);
                    }
                    let req = Req {
                        head: String::from_utf8_lossy(&head).into_owned(),
                    };
                    let n = {
                        let mut v = r.lock().unwrap();
                        v.push(req.clone());
                        v.len() - 1
                    };
                    let _ = s.write_all(&reply(n, &req));
                    let _ = s.shutdown(Shutdown::Write);
                    // Drain until the client closes, so the answer is not cut by a reset.
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut sink = [0u8; 4096];
                    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                });
            }
        });
        Scripted { addr, reqs, stop }
    }

    /// `http://ADDR/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One version of a file as a [`Scripted`] server serves it.
#[derive(Clone, Copy)]
pub struct Version<'a> {
    /// The bytes.
    pub body: &'a [u8],
    /// `ETag` (quoted), if sent.
    pub etag: Option<&'a str>,
    /// `Last-Modified`, if sent.
    pub last_modified: Option<&'a str>,
    /// Whether a mismatching `If-Range` makes the answer a 200 (RFC 9110
    /// §13.1.5); a broken server or cache ignores it and sends the range anyway.
    pub honours_if_range: bool,
}

impl Version<'_> {
    /// The answer to `req` as a server of this version gives it: a 200, a 206
    /// of `Range: bytes=A-[B]`, or a 416 `bytes */LEN`.
    pub fn answer(&self, req: &Req) -> Vec<u8> {
        let len = self.body.len() as u64;
        let mut validators = String::new();
        if let Some(e) = self.etag {
            validators.push_str(&format!("ETag: {e}\r\n"));
        }
        if let Some(lm) = self.last_modified {
            validators.push_str(&format!("Last-Modified: {lm}\r\n"));
        }
        let if_range_ok = match req.header("if-range") {
            None => true,
            Some(v) => {
                !self.honours_if_range
                    || Some(v.as_str()) == self.etag
                    || Some(v.as_str()) == self.last_modified
            }
        };
        let range = req.range().filter(|_| if_range_ok);
        let (status, first, last) = match range {
            None => ("200 OK", 0, len.saturating_sub(1)),
            Some((a, _)) if a >= len => {
                return format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\n{validators}Content-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                )
                .into_bytes();
            }
            Some((a, b)) => ("206 Partial Content", a, b.unwrap_or(len - 1).min(len - 1)),
        };
        let body = if len == 0 {
            &[][..]
        } else {
            &self.body[first as usize..=last as usize]
        };
        let mut out = format!(
            "HTTP/1.1 {status}\r\n{validators}Content-Length: {}\r\n",
            body.len()
        );
        if status.starts_with("206") {
            out.push_str(&format!("Content-Range: bytes {first}-{last}/{len}\r\n"));
        }
        out.push_str("Accept-Ranges: bytes\r\n\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }
}
