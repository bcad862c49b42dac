//! The bounded child-process runner. A test that must be alone in its
//! process — it sets a fault switch read once per process
//! (`IOCOMP_URING_COMPAT`, `IOCOMP_EPOLL_COMPAT`), a descriptor limit, a
//! signal action or a seccomp filter, closes descriptors it does not own, or
//! could hang — runs its body again in a child: this test binary, re-run with
//! `--exact` on that one test. The parent kills a child that outlives its
//! limit (a hang fails the test, it does not hang the suite), reads its
//! output while it runs (a child that writes more than a pipe holds must not
//! block), and checks that it passed and really ran the test.
//!
//! ```ignore
//! fn a_test_alone_in_its_process() { // a test function
//!     if in_child(&test_name!(a_test_alone_in_its_process), &[("IOCOMP_EPOLL_COMPAT", "nowait-enosys")], LIMIT) {
//!         return; // the parent: the child passed
//!     }
//!     // the body, in the child
//! }
//! ```

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Set in a child process that this runner started.
pub const CHILD: &str = "IOCOMP_TEST_CHILD";

/// The fault switches a child starts without, unless its test sets them.
const SWITCHES: [&str; 2] = ["IOCOMP_URING_COMPAT", "IOCOMP_EPOLL_COMPAT"];

/// Whether this process is a child that [`Child::test`] started.
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// libtest's name of the test function `f` in the module `module` (a
/// `module_path!()`, whose first part, the crate, libtest leaves out).
pub fn test_path(module: &str, f: &str) -> String {
    match module.split_once("::") {
        Some((_, path)) => format!("{path}::{f}"),
        None => f.to_owned(),
    }
}

/// libtest's name of the test function `$f` of the calling module (which
/// must exist: a renamed test fails to compile, not to run).
macro_rules! test_name {
    ($f:ident) => {{
        let _: fn() = $f;
        $crate::harness::child::test_path(module_path!(), stringify!($f))
    }};
}
pub(crate) use test_name;

/// Runs the test `name` (see [`test_name!`]) again in a child process with
/// the environment `env` added, within `limit`. True in the parent, which
/// has checked that the child passed; false in the child, which then runs
/// the body.
pub fn in_child(name: &str, env: &[(&str, &str)], limit: Duration) -> bool {
    if is_child() {
        return false;
    }
    let mut child = Child::test(name).limit(limit);
    for (k, v) in env {
        child = child.env(k, v);
    }
    child.passes();
    true
}

/// As [`in_child`], with a descriptor limit of `nofile` in the child
/// (`ulimit -n`) and no time limit but the runner's default.
pub fn in_limited_child(name: &str, nofile: u32) -> bool {
    if is_child() {
        return false;
    }
    Child::test_with_nofile(name, nofile).passes();
    true
}

/// How a child ended and what it wrote.
pub struct Ran {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Ran {
    /// Both outputs, standard output first.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

type Hook = Box<dyn FnOnce(&mut Command)>;

/// A child process to run with a time bound.
pub struct Child {
    cmd: Command,
    what: String,
    limit: Duration,
    hook: Option<Hook>,
}

impl Child {
    /// The test `name` of this binary, alone (`--exact`, one test thread,
    /// output not captured), in a child marked with [`CHILD`], without the
    /// fault switches.
    pub fn test(name: &str) -> Child {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(CHILD, "1");
        for s in SWITCHES {
            cmd.env_remove(s);
        }
        Child {
            cmd,
            what: name.to_owned(),
            limit: Duration::from_secs(60),
            hook: None,
        }
    }

    /// As [`Child::test`], with a descriptor limit of `nofile`
    /// (`ulimit -n`, through `sh`, which then execs the test binary).
    pub fn test_with_nofile(name: &str, nofile: u32) -> Child {
        let plain = Child::test(name);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(plain.cmd.get_program())
            .args(plain.cmd.get_args())
            .env(CHILD, "1");
        for s in SWITCHES {
            cmd.env_remove(s);
        }
        Child {
            cmd,
            what: format!("{name} (ulimit -n {nofile})"),
            ..plain
        }
    }

    /// The program `path` with `args`.
    pub fn program(path: &Path, args: &[&str]) -> Child {
        let mut cmd = Command::new(path);
        cmd.args(args);
        Child {
            cmd,
            what: format!("{} {}", path.display(), args.join(" ")),
            limit: Duration::from_secs(60),
            hook: None,
        }
    }

    /// Adds `key=value` to its environment.
    pub fn env(mut self, key: &str, value: &str) -> Child {
        self.cmd.env(key, value);
        self.what = format!("{} {key}={value:?}", self.what);
        self
    }

    /// Removes `key` from its environment.
    pub fn env_remove(mut self, key: &str) -> Child {
        self.cmd.env_remove(key);
        self
    }

    /// How long it may run (60 s unless said).
    pub fn limit(mut self, limit: Duration) -> Child {
        self.limit = limit;
        self
    }

    /// Lets `f` change the command just before it starts (a `pre_exec`).
    pub fn configure(mut self, f: impl FnOnce(&mut Command) + 'static) -> Child {
        self.hook = Some(Box::new(f));
        self
    }

    /// Runs it to its end, reading its output meanwhile; a child still
    /// running after the limit is killed and fails the test.
    pub fn run(self) -> Ran {
        let Child {
            mut cmd,
            what,
            limit,
            hook,
        } = self;
        if let Some(f) = hook {
            f(&mut cmd);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        let drain = |mut r: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                String::from_utf8_lossy(&v).into_owned()
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                let err = err.join().unwrap();
                panic!("{what} did not finish in {limit:?}: hung\n{err}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        Ran {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }

    /// Runs a [`Child::test`] and checks that it passed and ran the test.
    pub fn passes(self) -> Ran {
        let what = self.what.clone();
        let ran = self.run();
        let out = ran.all();
        assert!(
            ran.status.success(),
            "child ({what}) failed: {}\n{out}",
            ran.status
        );
        assert!(
            ran.stdout.contains("running 1 test")
                && ran.stdout.contains("test result: ok. 1 passed;"),
            "the child did not run exactly the one test:\n{out}"
        );
        ran
    }
}
