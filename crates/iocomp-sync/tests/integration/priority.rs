//! Thread priorities mapped to nice values, and the refusal an unprivileged process gets (in a child process that
//! has dropped root: tests run as root, which may do everything).

use std::process::Stdio;

use iocomp_sync::{
    current_thread_nice, current_thread_priority, set_current_thread_priority, Priority,
    PriorityError, Thread, WaitResult, Waitable,
};

use crate::util::{is_child, reexec};

const TABLE: [(Priority, i32, i32); 7] = [
    (Priority::Idle, -15, 19),
    (Priority::Lowest, -2, 10),
    (Priority::BelowNormal, -1, 5),
    (Priority::Normal, 0, 0),
    (Priority::AboveNormal, 1, -5),
    (Priority::Highest, 2, -10),
    (Priority::TimeCritical, 15, -20),
];

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)) // effective uid
        == Some("0")
}

#[test]
fn levels_map_to_nice_values() {
    for (p, win32, nice) in TABLE {
        assert_eq!(p.win32(), win32, "{p:?}");
        assert_eq!(p.nice(), nice, "{p:?}");
        assert_eq!(Priority::from_win32(win32), Some(p));
        assert_eq!(Priority::from_nice(nice), p);
    }
    assert_eq!(Priority::ALL.map(|p| p.nice()), TABLE.map(|t| t.2));
    assert_eq!(Priority::from_win32(3), None);
    assert_eq!(Priority::from_nice(-1), Priority::Normal);
    assert_eq!(Priority::from_nice(-3), Priority::AboveNormal);
    assert_eq!(Priority::from_nice(15), Priority::Idle);
    assert_eq!(Priority::from_nice(-15), Priority::Highest); // a tie: the lower priority
}

#[test]
fn root_sets_every_level_on_its_own_thread_only() {
    if !is_root() {
        println!("SKIPPED root_sets_every_level_on_its_own_thread_only: not running as root");
        return;
    }
    let mine = current_thread_nice().unwrap();
    // In a thread of its own, so the test harness's threads keep their nice value.
    let t = Thread::spawn(|| {
        let before = current_thread_nice().unwrap();
        let observer = std::thread::spawn(|| ()); // a sibling must stay unaffected
        for (p, _, nice) in TABLE {
            set_current_thread_priority(p).unwrap();
            assert_eq!(current_thread_nice().unwrap(), nice, "{p:?}");
            assert_eq!(current_thread_priority().unwrap(), p);
        }
        observer.join().unwrap();
        set_current_thread_priority(Priority::Normal).unwrap();
        assert_eq!(current_thread_nice().unwrap(), before);
        0
    });
    assert_eq!(t.wait(Some(crate::util::LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(0), "the thread's assertions failed");
    assert_eq!(
        current_thread_nice().unwrap(),
        mine,
        "other threads are not affected"
    );
}

#[test]
fn unprivileged_raise_is_refused() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        println!("SKIPPED unprivileged_raise_is_refused: needs root to drop privileges to nobody");
        return;
    }
    let out = reexec("priority::unprivileged_child")
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {}\n{text}", out.status);
    assert!(text.contains("REFUSED AS NOBODY"), "{text}");
}

#[test]
#[ignore = "child half of unprivileged_raise_is_refused"]
fn unprivileged_child() {
    if !is_child() {
        return;
    }
    assert!(!is_root(), "the child must have dropped root");
    assert_eq!(current_thread_nice().unwrap(), 0);
    for p in [
        Priority::AboveNormal,
        Priority::Highest,
        Priority::TimeCritical,
    ] {
        assert_eq!(
            set_current_thread_priority(p),
            Err(PriorityError::NotPermitted {
                requested: p,
                nice: p.nice()
            })
        );
        assert_eq!(current_thread_nice().unwrap(), 0, "nothing changed");
    }
    // Lowering is allowed…
    set_current_thread_priority(Priority::BelowNormal).unwrap();
    assert_eq!(current_thread_priority().unwrap(), Priority::BelowNormal);
    // …but going back up is a raise too, unless RLIMIT_NICE allows it (soft limit 0 by default).
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let nice_limit = limits
        .lines()
        .find(|l| l.starts_with("Max nice priority"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    if nice_limit <= 15 {
        assert!(matches!(
            set_current_thread_priority(Priority::Normal),
            Err(PriorityError::NotPermitted { .. })
        ));
    }
    println!("REFUSED AS NOBODY");
}

#[test]
fn set_thread_priority_on_another_threads_handle() {
    if !is_root() {
        println!("SKIPPED set_thread_priority_on_another_threads_handle: not running as root");
        return;
    }
    let mine = current_thread_nice().unwrap();
    // Set before it starts: applied when it does.
    let t = Thread::spawn_suspended(|| current_thread_nice().unwrap() as u32);
    t.set_priority(Priority::Lowest).unwrap();
    assert_eq!(t.priority(), Ok(Priority::Lowest));
    t.resume();
    assert_eq!(t.wait(Some(crate::util::LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(10), "the started thread ran at nice 10");
    assert_eq!(
        t.set_priority(Priority::Normal),
        Err(PriorityError::NoSuchThread)
    );
    // Set while it runs, from here: its nice value changes, ours does not.
    let (go, done) = (
        iocomp_sync::Event::new(true, false),
        iocomp_sync::Event::new(true, false),
    );
    let (g2, d2) = (go.clone(), done.clone());
    let r = Thread::spawn(move || {
        d2.set();
        let _ = g2.wait(Some(crate::util::LONG));
        current_thread_nice().unwrap() as u32
    });
    assert_eq!(
        done.wait(Some(crate::util::LONG)),
        Ok(WaitResult::Signaled(0))
    );
    r.set_priority(Priority::BelowNormal).unwrap();
    assert_eq!(r.priority(), Ok(Priority::BelowNormal));
    go.set();
    assert_eq!(r.wait(Some(crate::util::LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(r.exit_code(), Some(5));
    assert_eq!(
        current_thread_nice().unwrap(),
        mine,
        "the caller is not affected"
    );
}
