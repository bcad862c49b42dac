//! One instance of a program at a time, the Windows way: a named mutex (`CreateMutex(NULL, TRUE, name)` and
//! `ERROR_ALREADY_EXISTS`).
//!
//! ```text
//! single_instance [--name NAME] [--wait]     run as the instance until standard input closes
//! single_instance --self-test                start copies of itself, kill one, check what each does
//! ```
//!
//! The first copy creates the mutex owned and runs. A second copy finds it by name and exits with status 3
//! ("already running"), or with `--wait` waits for it: when the first copy exits, or is killed (SIGKILL, crash), the
//! mutex is abandoned and the waiting copy takes over. Each copy prints one line per event: `RUNNING <pid>`,
//! `ALREADY RUNNING`, `WAITING`, `TOOK OVER ABANDONED` or `TOOK OVER`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use iocomp_sync::{Mutex, WaitResult, Waitable};

const DEFAULT_NAME: &str = "Local\\iocomp-single-instance-example";
const ALREADY_RUNNING: i32 = 3;
const STEP: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if args.iter().any(|a| a == "--self-test") {
        match self_test() {
            Ok(()) => {
                println!("self-test passed");
                0
            }
            Err(e) => {
                eprintln!("self-test FAILED: {e}");
                1
            }
        }
    } else {
        let name = args
            .iter()
            .position(|a| a == "--name")
            .and_then(|i| args.get(i + 1))
            .map_or(DEFAULT_NAME, String::as_str);
        run(name, args.iter().any(|a| a == "--wait"))
    };
    std::process::exit(code);
}

/// The program proper: become the instance or leave.
fn run(name: &str, wait: bool) -> i32 {
    let (mutex, existed) = match Mutex::create_named(name, true) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cannot create the mutex {name:?}: {e}");
            return 2;
        }
    };
    if existed {
        // Somebody created it: we own it only if we can acquire it.
        let timeout = if wait { None } else { Some(Duration::ZERO) };
        if wait {
            say("WAITING");
        }
        match mutex.wait(timeout) {
            Ok(WaitResult::Signaled(_)) if wait => say("TOOK OVER"),
            Ok(WaitResult::Signaled(_)) => {}
            Ok(WaitResult::Abandoned(_)) => say("TOOK OVER ABANDONED"),
            Ok(WaitResult::TimedOut) => {
                say("ALREADY RUNNING");
                return ALREADY_RUNNING;
            }
            Ok(other) => {
                eprintln!("unexpected wait result {other:?}");
                return 2;
            }
            Err(e) => {
                eprintln!("wait failed: {e}");
                return 2;
            }
        }
    }
    say(&format!("RUNNING {}", std::process::id()));
    // The instance's work: here, until standard input closes.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let _ = mutex.release();
    0
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A copy of this program, its standard input and output piped, its output lines read by a thread.
struct Copy {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Copy {
    fn start(name: &str, wait: bool) -> Result<Copy, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["--name", name]);
        if wait {
            cmd.arg("--wait");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let out: ChildStdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Copy { child, lines })
    }

    /// The next line, which must start with `prefix`.
    fn expect(&self, who: &str, prefix: &str) -> Result<String, String> {
        match self.lines.recv_timeout(STEP) {
            Ok(line) if line.starts_with(prefix) => Ok(line),
            Ok(line) => Err(format!("{who}: expected {prefix:?}, got {line:?}")),
            Err(_) => Err(format!("{who}: no {prefix:?} within {STEP:?}")),
        }
    }

    /// Asserts that no line comes for a moment (the copy is blocked).
    fn expect_quiet(&self, who: &str) -> Result<(), String> {
        match self.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => Err(format!("{who}: expected to be blocked, printed {line:?}")),
            Err(_) => Ok(()),
        }
    }

    /// Closes its standard input (the instance's signal to finish) and checks its exit status.
    fn finish(mut self, who: &str, expected: i32) -> Result<(), String> {
        drop(self.child.stdin.take());
        self.exit_status(who, expected)
    }

    fn exit_status(&mut self, who: &str, expected: i32) -> Result<(), String> {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            match self
                .child
                .try_wait()
                .map_err(|e| format!("{who}: wait: {e}"))?
            {
                Some(status) if status.code() == Some(expected) => return Ok(()),
                Some(status) => {
                    return Err(format!("{who}: exited with {status}, expected {expected}"))
                }
                None if std::time::Instant::now() > deadline => {
                    let _ = self.child.kill();
                    return Err(format!("{who}: did not exit within {STEP:?}"));
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn kill(mut self) -> Result<(), String> {
        self.child.kill().map_err(|e| format!("kill: {e}"))?;
        self.child.wait().map_err(|e| format!("reap: {e}"))?;
        Ok(())
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        // On a failed check, leave nothing running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn self_test() -> Result<(), String> {
    let name = format!("iocomp-single-instance-selftest-{}", std::process::id());
    // 1. The first copy runs.
    let first = Copy::start(&name, false)?;
    first.expect("first", "RUNNING")?;
    // 2. A second copy finds it and exits.
    let mut second = Copy::start(&name, false)?;
    second.expect("second", "ALREADY RUNNING")?;
    second.exit_status("second", ALREADY_RUNNING)?;
    // 3. A waiting copy blocks while the first runs…
    let waiter = Copy::start(&name, true)?;
    waiter.expect("waiter", "WAITING")?;
    waiter.expect_quiet("waiter")?;
    // 4. …and takes over, told the mutex was abandoned, when the first is killed.
    first.kill()?;
    waiter.expect("waiter", "TOOK OVER ABANDONED")?;
    waiter.expect("waiter", "RUNNING")?;
    let mut third = Copy::start(&name, false)?;
    third.expect("third", "ALREADY RUNNING")?;
    third.exit_status("third", ALREADY_RUNNING)?;
    // 5. A copy that waits while the instance ends normally takes over without abandonment.
    let next = Copy::start(&name, true)?;
    next.expect("next", "WAITING")?;
    waiter.finish("waiter", 0)?;
    next.expect("next", "TOOK OVER").and_then(|l| {
        if l == "TOOK OVER" {
            Ok(())
        } else {
            Err(format!("next: {l:?}"))
        }
    })?;
    next.expect("next", "RUNNING")?;
    next.finish("next", 0)?;
    // 6. Every copy is gone: the name is free again, and a new copy is simply the first.
    let fresh = Copy::start(&name, false)?;
    fresh.expect("fresh", "RUNNING")?;
    fresh.finish("fresh", 0)?;
    Ok(())
}
