//! Test helpers: bounded waits and "actor" threads that run closures on demand, standing in for ntsync's arbitrary
//! owner ids.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use iocomp_sync::{Event, Thread, ThreadId, WaitResult, Waitable};

/// Bound for anything that must happen: generous, so a loaded CI machine does not fail a correct test.
pub const LONG: Duration = Duration::from_secs(20);
/// How long a test checks that something does *not* happen.
pub const BLOCKED: Duration = Duration::from_millis(30);
/// A poll.
pub const POLL: Option<Duration> = Some(Duration::ZERO);

/// Polls `cond` until it holds; fails the test after [`LONG`].
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits until `n` waits are queued on `obj`.
pub fn wait_for_waiters(obj: &dyn Waitable, n: usize) {
    wait_until("waiters to queue", || obj.waiter_count() == n);
}

/// `rounds` times, waits for `req` and answers with a pulse of `ack`: a pulse releases only waits already in place,
/// so a peer's `signal_and_wait(req, ack)` round ends only if its signal and the start of its wait were one step.
pub fn answer_with_pulses(req: &Event, ack: &Event, rounds: usize) {
    for round in 0..rounds {
        assert_eq!(
            req.wait(Some(LONG)),
            Ok(WaitResult::Signaled(0)),
            "round {round}"
        );
        ack.pulse();
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread (made with [`Thread::spawn`]) that runs the closures it is given, in order: a stable owner for mutexes.
pub struct Actor {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Thread,
}

/// The result of a closure given to an [`Actor`], once it comes.
pub struct Pending<R>(mpsc::Receiver<R>);

impl Actor {
    pub fn new() -> Actor {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = Thread::spawn(move || {
            for job in rx {
                job();
            }
            0
        });
        Actor {
            jobs: Some(tx),
            thread,
        }
    }

    pub fn id(&self) -> ThreadId {
        self.thread.id()
    }

    pub fn thread(&self) -> &Thread {
        &self.thread
    }

    /// Starts `f` on the actor's thread.
    pub fn start<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Pending<R> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .as_ref()
            .expect("actor still running")
            .send(job)
            .expect("actor thread alive");
        Pending(rx)
    }

    /// Runs `f` on the actor's thread and returns its result.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.start(f).join()
    }

    /// Ends the actor's thread (abandoning the mutexes it owns) and waits until its handle is signalled.
    pub fn exit(mut self) {
        self.jobs = None;
        assert_eq!(self.thread.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        assert_eq!(self.thread.exit_code(), Some(0));
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        self.jobs = None; // the thread ends on its own
    }
}

impl<R> Pending<R> {
    /// The result; fails the test if it takes longer than [`LONG`].
    pub fn join(self) -> R {
        match self.0.recv_timeout(LONG) {
            Ok(r) => r,
            Err(e) => panic!("actor did not finish: {e}"),
        }
    }

    /// Asserts that no result comes for a short while ([`BLOCKED`]).
    pub fn assert_blocked(&self) {
        assert_eq!(
            self.0.recv_timeout(BLOCKED).err(),
            Some(RecvTimeoutError::Timeout),
            "expected the actor to be blocked"
        );
    }

    /// Asserts that there is no result right now (ntsync's `pthread_tryjoin_np == EBUSY`).
    pub fn assert_not_done(&self) {
        assert!(
            self.0.try_recv().is_err(),
            "expected the actor to be still blocked"
        );
    }
}

/// The environment variable that tells a re-executed test binary it is a child of a test (see [`reexec`]).
pub const CHILD_ENV: &str = "IOCOMP_SYNC_TEST_CHILD";

/// A command that runs this test binary again, for the one `#[ignore]`d test `name` only (the child half of a
/// test that needs its own process: its own standard input, dropped privileges). The child checks [`CHILD_ENV`].
pub fn reexec(name: &str) -> std::process::Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1");
    cmd
}

/// Whether this process is a child started by [`reexec`]; the child halves return at once otherwise (when someone
/// runs the ignored tests by hand).
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}
