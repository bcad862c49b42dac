//! Named objects: the findings of the review of the named-object work, one test each (see each test's comment for
//! the Windows behaviour it checks and the defect it guards against).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use iocomp_sync::{
    signal_and_wait, wait_all, wait_any, Event, Mutex, Thread, WaitResult, Waitable,
};

use crate::named::{child_names, say, unique, ChildProc};
use crate::util::is_child;
use crate::util::{answer_with_pulses, wait_for_waiters, LONG, POLL};

/// A wait that must end because an owner died gets its answer long before this; one that only ends at its deadline
/// lost the owner's death (a lost wake-up). Generous on a loaded machine: the answer normally takes microseconds.
const PROMPT: Duration = Duration::from_secs(8);

/// A named mutex whose owning thread is parked until `go` is set, then exits owning the mutex.
fn owned_by_a_thread_that_exits_on(m: &Mutex, go: &Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let (tx, rx) = mpsc::channel();
    let (m, go) = (m.clone(), Arc::clone(go));
    let t = std::thread::spawn(move || {
        assert_eq!(m.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        tx.send(()).unwrap();
        while !go.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    rx.recv().unwrap();
    t
}

/// `WaitForSingleObject` on a mutex whose owner thread exits returns `WAIT_ABANDONED` — at once, not at its timeout —
/// even when another wait on the same mutex (a wait-all whose other object is not signalled, which cannot take the
/// mutex) is the one the owner's death woke first.
#[test]
fn owner_death_reaches_a_plain_waiter_past_a_wait_all_that_cannot_finish() {
    for _ in 0..3 {
        // Names sort the event before the mutex: the wait-all checks the event first.
        let base = unique("spent");
        let (e, _) = Event::create_named(&format!("{base}-a"), false, false).unwrap();
        let (m, _) = Mutex::create_named(&format!("{base}-b"), false).unwrap();
        let go = Arc::new(AtomicBool::new(false));
        let owner = owned_by_a_thread_that_exits_on(&m, &go);
        let all = {
            let (e, m) = (e.clone(), m.clone());
            std::thread::spawn(move || {
                let r = wait_all(&[&e, &m], Some(LONG));
                let _ = m.release();
                r
            })
        };
        wait_for_waiters(&m, 1);
        std::thread::sleep(Duration::from_millis(30)); // let the wait-all go to sleep (not needed for correctness)
        let plain = {
            let m = m.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = m.wait(Some(LONG));
                let took = t.elapsed();
                let _ = m.release();
                (r, took)
            })
        };
        wait_for_waiters(&m, 2);
        std::thread::sleep(Duration::from_millis(30));
        go.store(true, Ordering::Release);
        owner.join().unwrap();
        let (r, took) = plain.join().unwrap();
        assert_eq!(r, Ok(WaitResult::Abandoned(0)));
        assert!(
            took < PROMPT,
            "the plain waiter learnt of the death only after {took:?}"
        );
        e.set();
        assert_eq!(all.join().unwrap(), Ok(WaitResult::Signaled(0)));
    }
}

/// The owner of a named mutex dies while a wait-any on it (and on many other named objects, to widen the window
/// between its checks and its sleep) is getting ready to sleep: the wait still sees the abandonment at once.
/// A stress loop over the owner's exit time; the window itself is the argument (the owner's futex word is armed
/// with the other words, and a dead owner's word is reaped, never dropped).
#[test]
fn owner_death_while_a_wait_any_gets_ready_is_not_lost() {
    let extra: Vec<Event> = (0..24)
        .map(|i| {
            Event::create_named(&unique(&format!("win{i}")), false, false)
                .unwrap()
                .0
        })
        .collect();
    for trial in 0..150u64 {
        let (m, _) = Mutex::create_named(&unique("win"), false).unwrap();
        let go = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let owner = {
            let (m, go) = (m.clone(), Arc::clone(&go));
            std::thread::spawn(move || {
                assert_eq!(m.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
                tx.send(()).unwrap();
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
            })
        };
        rx.recv().unwrap();
        go.store(true, Ordering::Release);
        // Vary when the owner exits relative to the wait's checks.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_micros((trial * 37) % 200) {
            std::hint::spin_loop();
        }
        let mut objs: Vec<&dyn Waitable> = vec![&m];
        objs.extend(extra.iter().map(|e| e as &dyn Waitable));
        let t = Instant::now();
        let r = wait_any(&objs, Some(LONG));
        let took = t.elapsed();
        owner.join().unwrap();
        assert_eq!(r, Ok(WaitResult::Abandoned(0)), "trial {trial}");
        assert!(
            took < PROMPT,
            "trial {trial}: the death was seen only after {took:?}"
        );
        assert_eq!(m.release(), Ok(1));
    }
}

/// Wine's (and Windows') exit order: a thread's mutexes are abandoned before its thread object is signalled, so a
/// thread that waited for the exit finds the mutex abandoned with a poll.
#[test]
fn named_mutex_is_abandoned_before_its_owner_thread_is_signalled() {
    for i in 0..100 {
        let (m, _) = Mutex::create_named(&unique("order"), false).unwrap();
        let t = {
            let m = m.clone();
            Thread::spawn(move || u32::from(m.wait(POLL) == Ok(WaitResult::Signaled(0))))
        };
        assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        assert_eq!(t.exit_code(), Some(1));
        assert_eq!(m.wait(POLL), Ok(WaitResult::Abandoned(0)), "trial {i}");
        assert_eq!(m.release(), Ok(1));
    }
}

const SAW_ROUNDS: usize = 300;

/// `SignalObjectAndWait` across processes: this process signals a named event and waits on another; a child process
/// answers every signal with a *pulse* of the second, which releases only waits already in place. Every round ends
/// only if the signal and the start of the wait are one atomic step.
#[test]
fn signal_and_wait_is_atomic_across_processes() {
    let (req_name, ack_name) = (unique("xsaw-req"), unique("xsaw-ack"));
    let (req, _) = Event::create_named(&req_name, false, false).unwrap();
    let (ack, _) = Event::create_named(&ack_name, false, false).unwrap();
    let mut child = ChildProc::start(
        "named_review::signal_and_wait_answer_child",
        &[&req_name, &ack_name],
    );
    child.expect("READY");
    for round in 0..SAW_ROUNDS {
        assert_eq!(
            signal_and_wait(&req, &ack, Some(LONG)),
            Ok(WaitResult::Signaled(0)),
            "round {round}"
        );
    }
    child.finish();
}

#[test]
#[ignore = "child half of signal_and_wait_is_atomic_across_processes"]
fn signal_and_wait_answer_child() {
    if !is_child() {
        return;
    }
    let names = child_names();
    let req = Event::open_named(&names[0]).unwrap();
    let ack = Event::open_named(&names[1]).unwrap();
    say("READY");
    answer_with_pulses(&req, &ack, SAW_ROUNDS);
}

/// The namespace lives in `$XDG_RUNTIME_DIR` when that is a directory private to the user (another user cannot
/// pre-create it, as they can `/dev/shm/iocomp-sync-<uid>`), and falls back to `/dev/shm` when it is not private.
/// Run in child processes, each with its own environment.
#[test]
fn namespace_prefers_a_private_xdg_runtime_dir() {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir().join(unique("xdg"));
    let private = base.join("private");
    let open = base.join("open");
    for (dir, mode) in [(&private, 0o700), (&open, 0o755)] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let uid = std::fs::metadata(&base)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    for (dir, expect_in) in [
        (&private, private.join("iocomp-sync")),
        (
            &open,
            std::path::PathBuf::from(format!("/dev/shm/iocomp-sync-{uid}")),
        ),
    ] {
        let name = unique("xdgobj");
        let out = crate::util::reexec("named_review::namespace_child")
            .env("XDG_RUNTIME_DIR", dir)
            .env("IOCOMP_SYNC_TEST_NAMES", &name)
            .env(
                "IOCOMP_SYNC_TEST_EXPECT",
                expect_in.join(format!("l.{name}")),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child with XDG_RUNTIME_DIR={}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
#[ignore = "child half of namespace_prefers_a_private_xdg_runtime_dir"]
fn namespace_child() {
    if !is_child() {
        return;
    }
    let name = &child_names()[0];
    let expect = std::env::var("IOCOMP_SYNC_TEST_EXPECT").unwrap();
    let (e, existed) = Event::create_named(name, false, false).unwrap();
    assert!(!existed);
    assert!(
        std::path::Path::new(&expect).exists(),
        "no segment at {expect}"
    );
    drop(e);
    assert!(
        !std::path::Path::new(&expect).exists(),
        "segment left at {expect}"
    );
}

/// Handles opened separately in one process are one object: a mutex acquired through one handle and released through
/// another is released (`ReleaseMutex` takes any handle), the first handle can go, and the thread's later mutexes are
/// still abandoned when it exits.
#[test]
fn named_mutex_acquired_and_released_through_different_handles() {
    let (n1, n2) = (unique("xh1"), unique("xh2"));
    let (keep1, _) = Mutex::create_named(&n1, false).unwrap();
    let (m2, _) = Mutex::create_named(&n2, false).unwrap();
    let (a, b) = (n1.clone(), n2.clone());
    std::thread::spawn(move || {
        let h1 = Mutex::open_named(&a).unwrap();
        let h2 = Mutex::open_named(&a).unwrap();
        let other = Mutex::open_named(&b).unwrap();
        assert_eq!(other.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        assert_eq!(h1.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
        assert_eq!(h2.release(), Ok(1));
        drop(h1);
        drop(h2);
        for _ in 0..3 {
            assert_eq!(other.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
            assert_eq!(other.release(), Ok(2));
        }
        // exits owning `other` once
    })
    .join()
    .unwrap();
    assert_eq!(m2.wait(Some(LONG)), Ok(WaitResult::Abandoned(0)));
    assert_eq!(keep1.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(keep1.release(), Ok(1));
    assert_eq!(m2.release(), Ok(1));
}

/// `PulseEvent` releases a `WaitForMultipleObjects(.., bWaitAll = TRUE, ..)` that is waiting on the event when every
/// other object of the wait is signalled at that moment — a named event in a wait-all too.
#[test]
fn named_pulse_releases_a_wait_all_whose_other_objects_are_signalled() {
    for manual in [false, true] {
        let (e, _) = Event::create_named(&unique("allpulse"), manual, false).unwrap();
        let other = Event::new(true, true);
        let w = {
            let (e, other) = (e.clone(), other.clone());
            std::thread::spawn(move || wait_all(&[&e, &other], Some(LONG)))
        };
        wait_for_waiters(&e, 1);
        e.pulse();
        assert_eq!(
            w.join().unwrap(),
            Ok(WaitResult::Signaled(0)),
            "manual {manual}"
        );
        assert!(!e.is_set(), "a pulse leaves the event reset");
        assert_eq!(e.wait(POLL), Ok(WaitResult::TimedOut));
    }
}

/// A thread that owns a named mutex when the process's last handle to it is dropped still abandons it when it exits
/// (a waiter in another process sees `WAIT_ABANDONED`), and the object then goes (nobody holds a handle): the
/// owner's mapping is kept only while it owns the mutex, not for the rest of the process's life.
#[test]
fn named_mutex_owned_with_no_handle_left_is_freed_when_its_owner_exits() {
    let name = unique("nohandle");
    let (m, _) = Mutex::create_named(&name, false).unwrap();
    let (acquired_tx, acquired_rx) = mpsc::channel();
    let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
    let t = {
        let name = name.clone();
        Thread::spawn(move || {
            let h = Mutex::open_named(&name).unwrap();
            let got = h.wait(Some(LONG)) == Ok(WaitResult::Signaled(0));
            acquired_tx.send(()).unwrap();
            dropped_rx.recv().unwrap();
            drop(h); // the process's last handle, while owning the mutex
            u32::from(got)
        })
    };
    acquired_rx.recv().unwrap();
    drop(m);
    dropped_tx.send(()).unwrap();
    assert_eq!(t.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
    assert_eq!(t.exit_code(), Some(1));
    assert_eq!(
        Mutex::open_named(&name).err(),
        Some(iocomp_sync::NamedError::NotFound),
        "the object outlived its last handle and its owner"
    );
}
