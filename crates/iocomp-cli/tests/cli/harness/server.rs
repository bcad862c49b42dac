//! [`Server`]: a spawned `iocomp serve`, waited for by its `listening on`
//! banner, with its stdout (the access log) and stderr kept for the test.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{connect, poll, IO_TIMEOUT, WAIT};

static LOG_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// How to spawn the server beyond its arguments (see [`Server::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Run the server under a seccomp filter that denies the io_uring system
    /// calls with EPERM, as Docker's default profile does (x86_64 only).
    pub deny_io_uring: bool,
    /// Start the server as systemd's socket activation would: this listening
    /// socket becomes descriptor 3, and `sh -c 'LISTEN_PID=$$ LISTEN_FDS=1
    /// exec iocomp ...'` sets the variables for the very process that runs
    /// the server. No `--bind` is passed then.
    pub listen_fd: Option<std::os::fd::RawFd>,
    /// Extra environment variables for the server.
    pub env: Vec<(String, String)>,
    /// If set, the child's `RLIMIT_NOFILE` (soft and hard) is set to this
    /// before `exec`, so the server cannot raise it.
    pub nofile_limit: Option<u64>,
    /// If set, the child drops its supplementary groups and switches to this
    /// user and group id (`setgroups`, `setgid`, `setuid`) before `exec`, so a
    /// test running as root can see what an unprivileged server sees (e.g.
    /// `EACCES` on a mode-000 file). The served tree and the binary must then
    /// be readable by that user.
    pub uid: Option<u32>,
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
    /// Every stdout line so far (the `listening on` lines and the access log).
    stdout_lines: Arc<Mutex<Vec<String>>>,
    /// Set once the server's stdout reached EOF (the process closed it).
    stdout_eof: Arc<AtomicBool>,
}

/// `command` with descriptor `fd` of the parent as descriptor 3 of the child
/// (what systemd's socket activation passes), and `LISTEN_PID`/`LISTEN_FDS`
/// set for the very process that runs `program`: `sh -c 'LISTEN_PID=$$
/// LISTEN_FDS=1 exec "$@"' sh program`.
pub fn activated(fd: std::os::fd::RawFd, program: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$@\"", "sh"])
        .arg(program);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls dup2/fcntl (async-signal-safe) on descriptors it inherited.
    unsafe {
        c.pre_exec(move || {
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
    c
}

impl Server {
    /// Spawns `iocomp serve ROOT --bind 127.0.0.1:0 --threads 2 EXTRA...` and
    /// waits (at most [`IO_TIMEOUT`]) for its `listening on ADDR` line.
    pub fn start(root: &Path, extra_args: &[&str]) -> Server {
        Server::start_with(root, extra_args, &StartOptions::default())
    }

    /// [`Server::start`] with spawn options.
    pub fn start_with(root: &Path, extra_args: &[&str], options: &StartOptions) -> Server {
        let log_path = std::env::temp_dir().join(format!(
            "iocomp-itest-log-{}-{}.txt",
            std::process::id(),
            LOG_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let log = fs::File::create(&log_path).expect("create server log file");
        let bin = env!("CARGO_BIN_EXE_iocomp");
        let mut command = match options.listen_fd {
            None => Command::new(bin),
            Some(fd) => activated(fd, bin),
        };
        command.arg("serve").arg(root);
        if options.listen_fd.is_none() {
            command.args(["--bind", "127.0.0.1:0"]);
        }
        command
            .args(["--threads", "2"])
            .args(extra_args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(limit) = options.nofile_limit {
            limit_descriptors(&mut command, limit);
        }
        if let Some(uid) = options.uid {
            run_as(&mut command, uid);
        }
        if options.deny_io_uring {
            #[cfg(target_arch = "x86_64")]
            iocomp_testkit::deny_io_uring(&mut command);
            #[cfg(not(target_arch = "x86_64"))]
            panic!("deny_io_uring: the seccomp filter is written for x86_64");
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
        server.addr = server.first_address(&rx);
        server
    }

    /// Waits for the first `listening on ADDR` line and parses ADDR.
    fn first_address(&mut self, rx: &mpsc::Receiver<String>) -> SocketAddr {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("listening on ") {
                        return rest.trim().parse().unwrap_or_else(|e| {
                            panic!("unparsable address in stdout line {line:?}: {e}")
                        });
                    }
                    // Some other stdout line: keep waiting for ours.
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("server printed no `listening on` line within {IO_TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    panic!("server closed stdout before a `listening on` line; exit: {status:?}")
                }
            }
        }
    }

    /// The address parsed from the (first) `listening on` line.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/name` on the plain listener.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// The TLS listener's address: the second `listening on` line (the
    /// server was started with `--tls-bind`).
    pub fn tls_addr(&self) -> SocketAddr {
        let plain = format!("listening on {}", self.addr);
        let line = self
            .wait_stdout_line(IO_TIMEOUT, |l| {
                l.starts_with("listening on ") && l.trim() != plain
            })
            .expect("a second `listening on` line (the TLS listener)");
        line["listening on ".len()..].trim().parse().unwrap()
    }

    /// The `--metrics` listener's address, from its `metrics on ADDR` line.
    pub fn metrics_addr(&self) -> String {
        let line = self
            .wait_stdout_line(WAIT, |l| l.starts_with("metrics on "))
            .expect("a `metrics on ADDR` line");
        line["metrics on ".len()..].trim().to_string()
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
    fn fd_listing(&self) -> String {
        iocomp_testkit::fd_listing(&format!("/proc/{}/fd", self.pid))
    }

    /// Asserts that the descriptor count returns to `baseline` within
    /// [`WAIT`], listing the open descriptors if it does not.
    pub fn assert_fds_back_to(&self, baseline: usize) {
        let deadline = Instant::now() + WAIT;
        let mut got = self.fd_count();
        while got != baseline && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            got = self.fd_count();
        }
        assert_eq!(
            got,
            baseline,
            "descriptor count did not return to its baseline within {WAIT:?}; open now:\n{}",
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

    /// Access-log lines (everything on stdout but the `listening on` lines)
    /// once `ready` holds of them (waited for at most [`IO_TIMEOUT`]: the
    /// log is flushed on a timer, late on a loaded machine) and their count
    /// has then stopped changing. A test passes what it is about to assert
    /// (or a weaker condition), so a log that never gets there fails the
    /// assertion, only later.
    pub fn settled_log(&self, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        let log = || -> Vec<String> {
            self.stdout_lines()
                .into_iter()
                .filter(|l| !l.starts_with("listening on"))
                .collect()
        };
        let deadline = Instant::now() + IO_TIMEOUT;
        while !ready(&log()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let mut last = usize::MAX;
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = log();
            if lines.len() == last || Instant::now() > deadline {
                return lines;
            }
            last = lines.len();
            thread::sleep(Duration::from_millis(1500));
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

    /// Everything the server has written to stderr so far.
    pub fn stderr_text(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Polls the server's stderr (bounded by [`IO_TIMEOUT`]) until `needle`
    /// shows up; returns the whole text then.
    pub fn wait_stderr(&self, needle: &str) -> String {
        poll(
            IO_TIMEOUT,
            || format!("no {needle:?} in stderr:\n{}", self.stderr_text()),
            || Some(self.stderr_text()).filter(|t| t.contains(needle)),
        )
    }
}

/// Sets `RLIMIT_NOFILE` (soft and hard) of `command`'s process to `limit`
/// before `exec`.
fn limit_descriptors(command: &mut Command, limit: u64) {
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

/// Makes `command`'s process drop its supplementary groups and switch to
/// user and group id `uid` before `exec` (the test must run as root).
fn run_as(command: &mut Command, uid: u32) {
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
