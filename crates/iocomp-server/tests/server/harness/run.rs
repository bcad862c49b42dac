//! The bounded runner: child processes (curl, python3, openssl, this test
//! binary for an isolated test) run with their output drained as they go and
//! are killed, failing the test, past their deadline.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use iocomp_testkit::{drain, drained_tail};

/// Bound for one external client process (curl, python3).
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` with `input` on stdin (none: empty), stdout and stderr
/// captured; kills it and fails the test past `limit`.
pub fn run_bounded(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let writer = child.stdin.take().map(|mut stdin| {
        let data = input.unwrap_or_default().to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                // What the child said tells where it hung.
                let wait = Duration::from_secs(5);
                panic!(
                    "{cmd:?} did not finish within {limit:?}; killed.\nstdout (tail):\n{}\nstderr (tail):\n{}",
                    drained_tail(out, wait, 4096),
                    drained_tail(err, wait, 4096)
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait for {cmd:?}: {e}"),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Fails the test with a clear message when `program` cannot be run.
pub fn require(program: &str) {
    let ok = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{program}` is required by these tests but cannot be run (install it: CI does)"
    );
}

/// Runs curl with `args` (plus `-sS` and a time limit); asserts success.
pub fn curl(args: &[&str]) -> Output {
    require("curl");
    let out = run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .args(args),
        None,
        CHILD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "curl {args:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `python3 -c script args...` with `input` on stdin; asserts success.
pub fn python(script: &str, args: &[&str], input: Option<&[u8]>) -> Output {
    require("python3");
    let out = run_bounded(
        Command::new("python3").arg("-c").arg(script).args(args),
        input,
        CHILD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "python3 failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Python's `http.client` on one connection: GET each path of argv[2:],
/// then HEAD argv[2], then GET argv[3]; one line per request: method, path,
/// status, Content-Length, body in hex, whether the connection was the
/// first one, and whether the response will close.
pub const PY_CLIENT: &str = r#"
import http.client, sys
port = int(sys.argv[1])
c = http.client.HTTPConnection('127.0.0.1', port, timeout=20)
first = None
for path in sys.argv[2:]:
    c.request('GET', path)
    r = c.getresponse()
    body = r.read()
    if first is None:
        first = c.sock
    print('GET', path, r.status, r.getheader('Content-Length'), body.hex(), c.sock is first, r.will_close)
c.request('HEAD', sys.argv[2])
r = c.getresponse()
body = r.read()
print('HEAD', sys.argv[2], r.status, r.getheader('Content-Length'), body.hex(), c.sock is first, r.will_close)
c.request('GET', sys.argv[3])
r = c.getresponse()
body = r.read()
print('GET', sys.argv[3], r.status, r.getheader('Content-Length'), body.hex(), c.sock is first, r.will_close)
c.close()
"#;

/// Clients in a process of their own (this test binary again, in a test's
/// client role), driven by lines on its standard input and answering on its
/// standard output: what the test's process measures is then its server's
/// alone.
pub struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ClientProcess {
    /// Runs the test `path` (as for [`super::isolated`]) again in a
    /// process of its own with `var` set to `value`: the test sees the
    /// variable and plays its client role.
    pub fn start(path: &str, var: &str, value: &str) -> ClientProcess {
        let name = path.split_once("::").map_or(path, |(_, rest)| rest);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env(var, value)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client process");
        let (tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            out.lines()
                .map_while(Result::ok)
                .for_each(|l| drop(tx.send(l)))
        });
        let stdin = child.stdin.take();
        ClientProcess {
            child,
            stdin,
            lines,
        }
    }

    /// Waits (bounded) for a line holding `prefix` (libtest may print the
    /// test's name before it on the same line).
    pub fn expect(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(prefix) => return l[l.find(prefix).unwrap()..].to_string(),
                Ok(_) => {}
                Err(e) => panic!("no `{prefix}` line from the client process: {e}"),
            }
        }
    }

    pub fn tell(&mut self, line: &str) {
        writeln!(self.stdin.as_mut().unwrap(), "{line}").unwrap();
    }

    /// Closes its input (it closes every connection) and waits for its end.
    pub fn finish(&mut self) {
        drop(self.stdin.take());
        let ok = super::poll_until(Duration::from_secs(60), || {
            self.child.try_wait().unwrap().is_some()
        });
        if !ok {
            let _ = self.child.kill();
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the client process failed: {status:?}");
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_runner_timeout_shows_what_the_child_printed() {
    // `exec` so that the killed child is the one holding the pipes; the
    // words printed are computed, so the command line does not hold them.
    let mut c = Command::new("sh");
    c.args([
        "-c",
        "echo out-$((6*7)); echo err-$((6*7)) >&2; exec sleep 30",
    ]);
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_bounded(&mut c, None, Duration::from_secs(1))
    }))
    .expect_err("a 30 s child under a 1 s limit must fail the test");
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    for want in ["did not finish within 1s", "out-42", "err-42"] {
        assert!(msg.contains(want), "{want:?} not in the panic: {msg}");
    }
}
