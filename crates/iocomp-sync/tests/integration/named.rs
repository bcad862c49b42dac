//! Named objects shared between processes (`CreateMutex`/`OpenMutex` with a name, and the event and semaphore
//! equivalents), tested across real processes: this test binary re-executed for an `#[ignore]`d child half, which
//! finds its object names in `NAMED_ENV`. Every name starts with this process's id and a counter, so parallel test
//! runs never share an object; every object goes away with its last handle.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use iocomp_sync::{
    wait_all, wait_any, Event, Mutex, MutexError, NamedError, NamedKind, Semaphore, Thread,
    WaitError, WaitResult, Waitable, MAX_NAME_LEN,
};

use crate::util::{is_child, reexec, wait_for_waiters, wait_until, BLOCKED, LONG, POLL};

const NAMED_ENV: &str = "IOCOMP_SYNC_TEST_NAMES";

/// A name no other test (or test run) uses.
pub fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "iocomp-test-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child process running the ignored test `role` with `names` (comma-separated) in its environment; its standard
/// output is piped so the parent can wait for its markers.
pub struct ChildProc {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl ChildProc {
    pub fn start(role: &str, names: &[&str]) -> ChildProc {
        ChildProc::spawn(ChildProc::command(role), names)
    }

    /// [`ChildProc::start`], the child running under `umask` (set by a shell that then execs it: the umask is
    /// process-wide, so it cannot be changed in this test process).
    pub fn start_under_umask(role: &str, names: &[&str], umask: &str) -> ChildProc {
        let inner = ChildProc::command(role);
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        ChildProc::spawn(cmd, names)
    }

    fn command(role: &str) -> std::process::Command {
        // `role` is a test of this module, or a full path (`module::test`).
        let path = if role.contains("::") {
            role.to_owned()
        } else {
            format!("named::{role}")
        };
        reexec(&path)
    }

    fn spawn(mut cmd: std::process::Command, names: &[&str]) -> ChildProc {
        let mut child = cmd
            .env(NAMED_ENV, names.join(","))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let out = BufReader::new(child.stdout.take().unwrap());
        ChildProc { child, out }
    }

    /// Reads lines until one ends with `marker` (libtest writes "test NAME ... " before the child's first line).
    pub fn expect(&mut self, marker: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).expect("read child output");
            assert_ne!(n, 0, "child ended before printing {marker}");
            if line.trim_end().ends_with(marker) {
                return;
            }
        }
    }

    /// Waits for the child to exit; asserts it succeeded.
    pub fn finish(mut self) {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut rest);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}; output: {rest}");
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// The names the parent passed (child side).
pub fn child_names() -> Vec<String> {
    std::env::var(NAMED_ENV)
        .expect("names in the environment")
        .split(',')
        .map(str::to_owned)
        .collect()
}

pub fn say(marker: &str) {
    println!("{marker}");
}

#[test]
fn create_reports_existing_and_open_finds_it() {
    let name = unique("ev");
    let (a, existed) = Event::create_named(&name, true, false).unwrap();
    assert!(!existed);
    // Win32: a second create returns the same object with ERROR_ALREADY_EXISTS; its arguments are ignored.
    let (b, existed) = Event::create_named(&name, false, true).unwrap();
    assert!(existed);
    assert!(b.is_manual_reset());
    assert!(!b.is_set());
    let c = Event::open_named(&name).unwrap();
    c.set();
    assert!(a.is_set() && b.is_set());
    // Local\ names the same object; Global\ another one; names are case-sensitive.
    assert!(Event::open_named(&format!("Local\\{name}")).is_ok());
    assert_eq!(
        Event::open_named(&format!("Global\\{name}")).err(),
        Some(NamedError::NotFound)
    );
    assert_eq!(
        Event::open_named(&name.to_uppercase()).err(),
        Some(NamedError::NotFound)
    );
    let (g, existed) = Event::create_named(&format!("Global\\{name}"), false, false).unwrap();
    assert!(!existed);
    assert!(!g.is_set());
}

#[test]
fn object_disappears_with_its_last_handle() {
    let name = unique("gone");
    let (m, _) = Mutex::create_named(&name, false).unwrap();
    let m2 = m.clone();
    let m3 = Mutex::open_named(&name).unwrap();
    drop(m);
    drop(m3);
    assert!(Mutex::open_named(&name).is_ok(), "a clone still holds it");
    drop(m2);
    assert_eq!(Mutex::open_named(&name).err(), Some(NamedError::NotFound));
    let (_m, existed) = Mutex::create_named(&name, false).unwrap();
    assert!(!existed, "a new object, not the old one");
}

#[test]
fn bad_names_and_wrong_kinds_are_typed_errors() {
    for bad in ["", "a/b", "a\0b", "Global\\", "Local\\x\\y", "x\\y"] {
        assert_eq!(
            Event::create_named(bad, false, false).err(),
            Some(NamedError::InvalidName),
            "{bad:?}"
        );
        assert_eq!(Mutex::open_named(bad).err(), Some(NamedError::InvalidName));
    }
    let long = "x".repeat(MAX_NAME_LEN + 1);
    assert_eq!(
        Semaphore::create_named(&long, 0, 1).err(),
        Some(NamedError::TooLong {
            len: MAX_NAME_LEN + 1,
            max: MAX_NAME_LEN
        })
    );
    let ok_len = "y".repeat(MAX_NAME_LEN);
    assert!(Semaphore::create_named(&format!("Global\\{ok_len}"), 0, 1).is_ok());

    let name = unique("kind");
    let (_e, _) = Event::create_named(&name, false, false).unwrap();
    assert_eq!(
        Mutex::open_named(&name).err(),
        Some(NamedError::WrongKind {
            requested: NamedKind::Mutex,
            found: NamedKind::Event
        })
    );
    assert_eq!(
        Semaphore::create_named(&name, 0, 1).err(),
        Some(NamedError::WrongKind {
            requested: NamedKind::Semaphore,
            found: NamedKind::Event
        })
    );
    assert!(matches!(
        Semaphore::create_named(&unique("s"), 2, 1).err(),
        Some(NamedError::Semaphore(_))
    ));
    assert_eq!(
        Semaphore::open_named(&unique("never")).err(),
        Some(NamedError::NotFound)
    );
}

#[test]
fn events_signal_between_processes() {
    let (ping, pong) = (unique("ping"), unique("pong"));
    let (ping_ev, _) = Event::create_named(&ping, false, false).unwrap();
    let (pong_ev, _) = Event::create_named(&pong, false, false).unwrap();
    let mut child = ChildProc::start("event_child", &[&ping, &pong]);
    child.expect("READY");
    for _ in 0..20 {
        wait_for_waiters(&ping_ev, 1); // the child is asleep on it
        ping_ev.set();
        assert_eq!(pong_ev.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    }
    child.finish();
    assert!(
        !ping_ev.is_set(),
        "each set was consumed by exactly one wait"
    );
}

#[test]
#[ignore = "child half of events_signal_between_processes"]
fn event_child() {
    if !is_child() {
        return;
    }
    let names = child_names();
    let ping = Event::open_named(&names[0]).unwrap();
    let pong = Event::open_named(&names[1]).unwrap();
    say("READY");
    for _ in 0..20 {
        assert_eq!(ping.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        pong.set();
    }
}

#[test]
fn semaphores_count_across_processes() {
    let (sem_name, done_name) = (unique("sem"), unique("done"));
    let (sem, _) = Semaphore::create_named(&sem_name, 0, 1000).unwrap();
    let (done, _) = Semaphore::create_named(&done_name, 0, 2).unwrap();
    let children: Vec<ChildProc> = (0..2)
        .map(|_| ChildProc::start("semaphore_child", &[&sem_name, &done_name]))
        .collect();
    // 200 permits, one at a time and in bursts; each child takes exactly 100.
    for i in 0..100 {
        if i % 2 == 0 {
            sem.release(1).unwrap();
            sem.release(1).unwrap();
        } else {
            sem.release(2).unwrap();
        }
    }
    for _ in 0..2 {
        assert_eq!(done.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    }
    for c in children {
        c.finish();
    }
    assert_eq!(sem.count(), 0, "no permit created or lost");
    assert_eq!(sem.wait(POLL), Ok(WaitResult::TimedOut));
    assert_eq!(sem.release(1000), Ok(0));
    assert!(matches!(
        sem.release(1),
        Err(iocomp_sync::SemaphoreError::TooManyPosts { count: 1000, .. })
    ));
}

#[test]
#[ignore = "child half of semaphores_count_across_processes"]
fn semaphore_child() {
    if !is_child() {
        return;
    }
    let names = child_names();
    let sem = Semaphore::open_named(&names[0]).unwrap();
    let done = Semaphore::open_named(&names[1]).unwrap();
    for _ in 0..100 {
        assert_eq!(sem.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    }
    done.release(1).unwrap();
}

#[test]
fn mutex_is_abandoned_when_its_owner_process_is_killed() {
    let name = unique("mtx");
    let (m, existed) = Mutex::create_named(&name, false).unwrap();
    assert!(!existed);
    let mut child = ChildProc::start("mutex_owner_child", &[&name]);
    child.expect("OWNED");
    assert_eq!(m.wait(Some(BLOCKED)), Ok(WaitResult::TimedOut));
    assert_eq!(m.release(), Err(MutexError::NotOwner));
    // A thread of this process blocks on it; SIGKILL the owner: the waiter acquires it, abandoned.
    let waiter = {
        let m = m.clone();
        Thread::spawn(move || {
            let r = m.wait(Some(LONG));
            let owned = m.state().owned_by_caller;
            let released = m.release();
            u32::from(r == Ok(WaitResult::Abandoned(0)) && owned && released == Ok(1))
        })
    };
    wait_for_waiters(&m, 1);
    child.kill();
    assert_eq!(waiter.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(waiter.exit_code(), Some(1), "the waiter got Abandoned(0)");
    // Abandonment is reported once: the next acquisition is normal.
    assert_eq!(m.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(m.release(), Ok(1));
}

#[test]
#[ignore = "child half of mutex_is_abandoned_when_its_owner_process_is_killed"]
fn mutex_owner_child() {
    if !is_child() {
        return;
    }
    let m = Mutex::open_named(&child_names()[0]).unwrap();
    assert_eq!(m.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    say("OWNED");
    std::thread::sleep(Duration::from_secs(60)); // killed long before
}

#[test]
fn mutex_killed_owner_is_noticed_by_a_later_waiter_too() {
    // Nobody waits when the owner dies: the next wait (here a poll) still finds it abandoned.
    let name = unique("mtx2");
    let mut child = ChildProc::start("mutex_creator_child", &[&name]);
    child.expect("OWNED");
    let (m, existed) = Mutex::create_named(&name, false).unwrap();
    assert!(existed);
    child.kill();
    assert_eq!(m.wait(POLL), Ok(WaitResult::Abandoned(0)));
    assert_eq!(m.release(), Ok(1));
}

#[test]
#[ignore = "child half of mutex_killed_owner_is_noticed_by_a_later_waiter_too"]
fn mutex_creator_child() {
    if !is_child() {
        return;
    }
    let (_m, existed) = Mutex::create_named(&child_names()[0], true).unwrap();
    assert!(!existed);
    say("OWNED");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn segment_of_a_killed_process_is_cleaned_up() {
    let name = unique("stale");
    let mut child = ChildProc::start("mutex_creator_child", &[&name]);
    child.expect("OWNED");
    child.kill();
    // Every process that held it died: the object is gone, and a create makes a new one.
    assert_eq!(Mutex::open_named(&name).err(), Some(NamedError::NotFound));
    let (m, existed) = Mutex::create_named(&name, false).unwrap();
    assert!(!existed);
    assert_eq!(m.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(m.release(), Ok(1));
}

#[test]
fn named_mutex_is_abandoned_when_its_owner_thread_exits() {
    let (m, _) = Mutex::create_named(&unique("thr"), false).unwrap();
    let t = {
        let m = m.clone();
        Thread::spawn(move || u32::from(m.wait(POLL) == Ok(WaitResult::Signaled(0))))
    };
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(1));
    assert_eq!(m.wait(Some(LONG)), Ok(WaitResult::Abandoned(0)));
    assert_eq!(m.wait(POLL), Ok(WaitResult::Signaled(0)), "recursion");
    assert_eq!(m.release(), Ok(2));
    assert_eq!(m.release(), Ok(1));
    assert_eq!(m.release(), Err(MutexError::NotOwner));
}

#[test]
fn wait_any_mixes_local_and_named_objects() {
    let name = unique("mix");
    let local = Event::new(false, false);
    let (named, _) = Event::create_named(&name, false, false).unwrap();
    let mut child = ChildProc::start("set_after_ready_child", &[&name]);
    child.expect("READY");
    // The named event, set by the other process, ends the wait.
    assert_eq!(
        wait_any(&[&local, &named], Some(LONG)),
        Ok(WaitResult::Signaled(1))
    );
    child.finish();
    // A local signal ends a wait that also sleeps on a named object.
    let t = {
        let (local, named) = (local.clone(), named.clone());
        Thread::spawn(move || match wait_any(&[&named, &local], Some(LONG)) {
            Ok(WaitResult::Signaled(i)) => i as u32,
            _ => 99,
        })
    };
    wait_for_waiters(&local, 1);
    local.set();
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(1));
    // Both signalled: the lowest index wins and the other is untouched.
    local.set();
    named.set();
    assert_eq!(
        wait_any(&[&named, &local], POLL),
        Ok(WaitResult::Signaled(0))
    );
    assert!(local.is_set() && !named.is_set());
    assert_eq!(
        wait_any(&[&named, &local], POLL),
        Ok(WaitResult::Signaled(1))
    );
    assert_eq!(wait_any(&[&named, &local], POLL), Ok(WaitResult::TimedOut));
    // Two handles to one named object are a duplicate.
    let again = Event::open_named(&name).unwrap();
    assert_eq!(
        wait_any(&[&named, &again], POLL),
        Err(WaitError::Duplicate {
            first: 0,
            second: 1
        })
    );
}

#[test]
#[ignore = "child half of wait_any_mixes_local_and_named_objects"]
fn set_after_ready_child() {
    if !is_child() {
        return;
    }
    let ev = Event::open_named(&child_names()[0]).unwrap();
    say("READY");
    ev.set();
}

#[test]
fn wait_all_with_named_objects_is_all_or_nothing() {
    let (m, _) = Mutex::create_named(&unique("wa-m"), false).unwrap();
    let (s, _) = Semaphore::create_named(&unique("wa-s"), 0, 1).unwrap();
    let local = Event::new(true, true);
    // The semaphore is empty: nothing is taken, not even the free mutex.
    assert_eq!(wait_all(&[&m, &s, &local], POLL), Ok(WaitResult::TimedOut));
    assert_eq!(m.state().count, 0);
    assert_eq!(m.state().owner_process, None);
    // A waiter sleeps until the last object is signalled, then has them all.
    let t = {
        let (m, s, local) = (m.clone(), s.clone(), local.clone());
        Thread::spawn(move || {
            let r = wait_all(&[&m, &s, &local], Some(LONG));
            let owned = m.state().owned_by_caller;
            let _ = m.release();
            u32::from(r == Ok(WaitResult::Signaled(0)) && owned)
        })
    };
    wait_for_waiters(&s, 1);
    std::thread::sleep(BLOCKED);
    assert_eq!(s.count(), 0);
    s.release(1).unwrap();
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(1));
    assert_eq!(s.count(), 0, "the wait-all took the permit");
    assert!(local.is_set(), "manual-reset stays set");
}

#[test]
fn named_pulse_releases_a_sleeping_waiter_only() {
    let (ev, _) = Event::create_named(&unique("pulse"), false, false).unwrap();
    assert!(!ev.pulse(), "nobody waiting: nothing happens");
    assert_eq!(ev.wait(POLL), Ok(WaitResult::TimedOut));
    let t = {
        let ev = ev.clone();
        Thread::spawn(move || u32::from(ev.wait(Some(LONG)) == Ok(WaitResult::Signaled(0))))
    };
    wait_for_waiters(&ev, 1);
    ev.pulse();
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(1));
    assert!(!ev.is_set());
    wait_until("the waiter to leave", || ev.waiter_count() == 0);
}

/// A named object created by a process whose umask takes the owner's write bit (0277) can still be opened for reading
/// and writing by another process of the same user: the object's file is mode 0600 whatever the creator's umask.
#[test]
fn object_created_under_a_restrictive_umask_opens_from_another_process() {
    let name = unique("umask");
    let mut child = ChildProc::start_under_umask("umask_child", &[&name], "0277");
    child.expect("created");
    // The file's mode itself (root, which runs CI, opens a mode 0400 file for writing all the same).
    let file = object_file(&name);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{file:?}: mode {mode:o}");
    let ev = Event::open_named(&name).expect("open an object created under umask 0277");
    ev.set();
    child.finish();
}

#[test]
#[ignore = "child half of object_created_under_a_restrictive_umask_opens_from_another_process"]
fn umask_child() {
    if !is_child() {
        return;
    }
    let names = child_names();
    let (ev, existed) = Event::create_named(&names[0], false, false).unwrap();
    assert!(!existed);
    say("created");
    assert_eq!(ev.wait(Some(LONG)).unwrap(), WaitResult::Signaled(0));
}

/// The file of this user's named object `name` (no `Global\\` prefix), in the namespace directory the crate
/// documents: `$XDG_RUNTIME_DIR/iocomp-sync` if that is a private directory, else `/dev/shm/iocomp-sync-<uid>`.
fn object_file(name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let mut dirs = vec![std::path::PathBuf::from(format!(
        "/dev/shm/iocomp-sync-{uid}"
    ))];
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        dirs.insert(0, std::path::Path::new(&runtime).join("iocomp-sync"));
    }
    dirs.iter()
        .map(|d| d.join(format!("l.{name}")))
        .find(|f| f.exists())
        .unwrap_or_else(|| panic!("no file for {name} in {dirs:?}"))
}
