//! The bounded child runner and the client subcommands run through it:
//! `iocomp get`, `iocomp bench`, and what their tests read back.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use iocomp_testkit::drain;

use super::Json;

/// Bound for one run of a client subcommand.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The `iocomp` binary, with none of the proxy or CA variables of the
/// environment that runs the tests (`iocomp get` honours them): a test sets
/// what it means to on the command.
pub fn iocomp_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iocomp"));
    for k in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
        "SSL_CERT_FILE",
    ] {
        c.env_remove(k);
    }
    c
}

/// Runs `command` to its end with stdout and stderr captured (stdin empty;
/// both pipes drained as it runs, so a chatty child never blocks on them);
/// kills it and fails the test if it runs longer than `limit`.
pub fn output_within(command: Command, limit: Duration) -> Output {
    bounded(command, limit, false)
}

/// As [`output_within`], with the child in a process group of its own that
/// is killed (SIGKILL) past `limit`, and once the child has exited as well:
/// nothing it started (a browser) outlives the run.
pub fn output_within_group(command: Command, limit: Duration) -> Output {
    bounded(command, limit, true)
}

fn bounded(mut command: Command, limit: Duration, group: bool) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if group {
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let pgid = i32::try_from(child.id()).expect("pid fits in i32");
    let kill_group = || {
        if group {
            // SAFETY: kill(2) on our own child's process group; no memory involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    };
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            kill_group();
            let _ = child.kill();
            let _ = child.wait();
            // With the whole group gone nothing holds stderr open: show it.
            let stderr = if group {
                String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned()
            } else {
                String::new()
            };
            panic!("{command:?} ran over {limit:?}; killed. stderr:\n{stderr}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    kill_group();
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs `iocomp ARGS` in `dir`, bounded.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    run_env(dir, args, &[])
}

/// [`run_in`] with environment variables set.
pub fn run_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = iocomp_command();
    c.args(args).envs(env.iter().copied()).current_dir(dir);
    output_within(c, RUN_LIMIT)
}

/// Runs `iocomp get -q ARGS` in `dir`, bounded.
pub fn get(dir: &Path, args: &[&str]) -> Output {
    get_with(dir, args, &[])
}

/// [`get`] with environment variables set (a proxy, `SSL_CERT_FILE`).
pub fn get_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["get", "-q"];
    all.extend_from_slice(args);
    run_env(dir, &all, env)
}

/// Runs `iocomp bench ARGS` (a short run), bounded.
pub fn bench(args: &[&str]) -> Output {
    let mut c = iocomp_command();
    c.arg("bench").args(args);
    output_within(c, Duration::from_secs(60))
}

/// The number `key` of bench's `--json` summary (its last line that is an
/// object).
pub fn json_number(stdout: &[u8], key: &str) -> u64 {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON object in {text}"));
    let n = Json::parse(line).get(key).num();
    assert!(
        n >= 0.0 && n.fract() == 0.0,
        "{key} is no count: {n} in {text}"
    );
    n as u64
}

/// Starts `iocomp ARGS` in `dir` and SIGKILLs it once `ready` says so
/// (bounded: it must get ready within 60 s, and must not finish before).
pub fn kill_when(dir: &Path, args: &[&str], ready: impl Fn() -> bool) {
    let mut child = iocomp_command()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        let early = child.try_wait().unwrap();
        if early.is_some() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(Instant::now() < deadline, "the download did not start");
        assert!(early.is_none(), "finished too early: {early:?}");
        thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Streams two files and says whether they are equal (no 200 MiB in memory).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
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

/// `iocomp serve ROOT --bind 127.0.0.1:0 EXTRA...`, for a server expected to
/// exit by itself (see [`exit_of`]).
pub fn serve_command(root: &Path, extra: &[&str]) -> Command {
    let mut c = iocomp_command();
    c.arg("serve")
        .arg(root)
        .args(["--bind", "127.0.0.1:0"])
        .args(extra);
    c
}

/// Runs `command` to its end (bounded by [`WAIT`](super::WAIT)): its exit
/// code and its stderr.
pub fn exit_of(command: Command) -> (Option<i32>, String) {
    let out = output_within(command, super::WAIT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `curl` fetching `https://localhost:PORT/name` (resolved to 127.0.0.1)
/// with `cacert` as its only trusted CA, bounded to 20 s; it must be
/// installed.
pub fn curl_https(cacert: &Path, port: u16, name: &str) -> Output {
    let mut c = Command::new("curl");
    c.args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
        .arg(cacert)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/{name}"));
    output_within(c, Duration::from_secs(30))
}
