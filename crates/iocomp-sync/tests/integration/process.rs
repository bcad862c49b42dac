//! `Process`: pidfd-backed process handles in waits, exit codes without reaping, non-child processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use iocomp_sync::{wait_all, wait_any, Event, Process, ProcessError, WaitResult, Waitable};

use crate::util::{wait_for_waiters, LONG, POLL};

/// A child that runs until its standard input is closed (`cat`).
fn cat() -> std::process::Child {
    Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn cat")
}

#[test]
fn exit_signals_wait_any_with_its_index() {
    let mut child = cat();
    let process = Process::from_child(&child).unwrap();
    let (a, b) = (Event::new(false, false), Event::new(true, false));
    assert!(!process.has_exited());
    assert_eq!(
        wait_any(&[&a, &b, &process], POLL),
        Ok(WaitResult::TimedOut)
    );
    // A waiter blocked before the exit is woken by the reactor.
    let waiter = {
        let (a, b, p) = (a.clone(), b.clone(), process.clone());
        std::thread::spawn(move || wait_any(&[&a, &b, &p], Some(LONG)))
    };
    wait_for_waiters(&process, 1);
    drop(child.stdin.take()); // cat sees end of input and exits
    assert_eq!(waiter.join().unwrap(), Ok(WaitResult::Signaled(2)));
    assert!(process.has_exited());
    // Waiting changes nothing: still signalled; a lower signalled index still wins.
    assert_eq!(process.wait(POLL), Ok(WaitResult::Signaled(0)));
    b.set();
    assert_eq!(
        wait_any(&[&a, &b, &process], POLL),
        Ok(WaitResult::Signaled(1))
    );
    assert_eq!(process.exit_code(), Some(0));
    assert!(child.wait().unwrap().success());
}

#[test]
fn wait_all_over_a_process_and_an_event() {
    let mut child = cat();
    let process = Process::from_child(&child).unwrap();
    let ev = Event::new(false, true); // auto-reset, set
    assert_eq!(wait_all(&[&process, &ev], POLL), Ok(WaitResult::TimedOut));
    assert!(ev.is_set(), "a failed wait-all must not consume the event");
    drop(child.stdin.take());
    assert_eq!(process.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(
        wait_all(&[&process, &ev], POLL),
        Ok(WaitResult::Signaled(0))
    );
    assert!(!ev.is_set(), "the wait-all consumed the auto-reset event");
    assert_eq!(wait_all(&[&ev, &process], POLL), Ok(WaitResult::TimedOut));
    // Blocked wait-all, completed by the event.
    let waiter = {
        let (ev, p) = (ev.clone(), process.clone());
        std::thread::spawn(move || wait_all(&[&p, &ev], Some(LONG)))
    };
    wait_for_waiters(&ev, 1);
    ev.set();
    assert_eq!(waiter.join().unwrap(), Ok(WaitResult::Signaled(0)));
    child.wait().unwrap();
}

#[test]
fn exit_code_of_a_child_and_child_wait_still_works() {
    let mut child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
    let process = Process::from_child(&child).unwrap();
    assert_eq!(process.pid(), child.id());
    assert_eq!(process.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(process.exit_code(), Some(7));
    // WNOWAIT: the zombie is still there for std to reap, with the same status.
    assert_eq!(child.try_wait().unwrap().and_then(|s| s.code()), Some(7));
    // The status was kept: still readable after std reaped the child.
    assert_eq!(process.exit_code(), Some(7));
}

#[test]
fn exit_status_of_a_child_killed_by_a_signal() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = cat();
    let process = Process::from_child(&child).unwrap();
    assert_eq!(process.exit_status(), None, "still running");
    child.kill().unwrap();
    assert_eq!(process.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    let status = process.exit_status().expect("a child's status");
    assert_eq!(status.signal(), Some(9));
    assert_eq!(process.exit_code(), None);
    assert_eq!(child.wait().unwrap().signal(), Some(9));
}

#[test]
fn a_non_child_signals_on_exit_without_an_exit_code() {
    // sh starts `cat` in the background on our pipe (fd 3, since a background job's stdin is /dev/null), prints its
    // pid and exits: `cat` is our grandchild, not our child.
    let mut sh = Command::new("sh")
        .args(["-c", "exec 3<&0; cat <&3 >/dev/null 2>&1 3<&- & echo $!"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sh.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line.trim().parse().expect("grandchild pid");
    let stdin = sh.stdin.take().unwrap();
    assert!(sh.wait().unwrap().success());
    let process = Process::open(pid).unwrap();
    assert_eq!(process.wait(POLL), Ok(WaitResult::TimedOut));
    let ev = Event::new(false, false);
    let waiter = {
        let (ev, p) = (ev.clone(), process.clone());
        std::thread::spawn(move || wait_any(&[&ev, &p], Some(LONG)))
    };
    wait_for_waiters(&process, 1);
    drop(stdin); // the grandchild's input ends
    assert_eq!(waiter.join().unwrap(), Ok(WaitResult::Signaled(1)));
    assert_eq!(process.exit_code(), None, "not our child: no exit code");
    assert_eq!(process.exit_status(), None);
}

#[test]
fn bad_pids_are_typed_errors() {
    assert_eq!(
        Process::open(0).unwrap_err(),
        ProcessError::NoSuchProcess { pid: 0 }
    );
    assert_eq!(
        Process::open(u32::MAX).unwrap_err(),
        ProcessError::NoSuchProcess { pid: u32::MAX }
    );
    // pid_max is at most 2^22: this pid cannot exist.
    assert_eq!(
        Process::open(1 << 23).unwrap_err(),
        ProcessError::NoSuchProcess { pid: 1 << 23 }
    );
    // A reaped child is refused by from_child.
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    assert!(matches!(
        Process::from_child(&child),
        Err(ProcessError::NotAChild { .. })
    ));
}

#[test]
fn our_own_process_is_not_signalled() {
    let me = Process::open(std::process::id()).unwrap();
    assert_eq!(me.wait(POLL), Ok(WaitResult::TimedOut));
    assert_eq!(me.exit_code(), None);
}
