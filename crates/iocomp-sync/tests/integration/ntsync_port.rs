//! Port of the Linux ntsync selftests, `tools/testing/selftests/drivers/ntsync/ntsync.c` (torvalds/linux, read at
//! commit 16dc8c8683342cd170c741c6bf80c4f8d249acb3), one Rust test per kselftest `TEST()`, same names, same order.
//!
//! Adaptations, applied throughout:
//! - **Owners are threads.** ntsync's arbitrary owner ids (123, 456) become [`Actor`] threads; `MUTEX_KILL(owner)`
//!   becomes that thread exiting (the mutex is abandoned by the exit sequence). A killed owner that the C test uses
//!   again afterwards becomes a fresh actor.
//! - **`wait_*` with the "now" timeout** is a poll (`Some(Duration::ZERO)`); `ETIMEDOUT` is `WaitResult::TimedOut`,
//!   `EOWNERDEAD` with index i is `WaitResult::Abandoned(i)`.
//! - **`pthread_timedjoin_np(.., 100ms) == ETIMEDOUT`** (the waiter is blocked) becomes: wait until the waiter is
//!   queued on the object (`waiter_count`), then check that no result arrives for 30 ms. `pthread_tryjoin_np ==
//!   EBUSY` becomes an immediate "no result yet". A join that must succeed waits up to 20 s.
//! - **`close(obj)` while waited on**: our handles are reference-counted, so dropping every handle we hold does not
//!   disturb the wait, which times out, as in the C test.
//! - **The alert event** is the thread's APC alert: "alert signalled" = an APC queued to the waiting thread, "index ==
//!   count" = `WaitResult::Alerted` (and the APC ran). Our alert behaves as an auto-reset event consumed when the APCs
//!   run, so the manual-reset alert variants check the same sequence with one APC queued per expected alert.
//!
//! | C check (TEST: what) | port |
//! |---|---|
//! | semaphore_state: create count 3 > max 2 → EINVAL | `Semaphore::new(3, 2)` → `InitialAboveMaximum` |
//! | semaphore_state: create 2/2, read (2,2) | same |
//! | semaphore_state: release 0 → ok, prev 2, (2,2) | **differs**: `release(0)` → `ZeroRelease` (Win32 requires n > 0); state (2,2) |
//! | semaphore_state: release 1 at max → EOVERFLOW, (2,2) | `TooManyPosts`, (2,2) |
//! | semaphore_state: wait ×2 → index 0, (1,2) then (0,2) | same |
//! | semaphore_state: wait at 0 → ETIMEDOUT | `TimedOut` |
//! | semaphore_state: release 3 → EOVERFLOW, (0,2) | same |
//! | semaphore_state: release 2 → prev 0, (2,2); wait ×2 ok | same |
//! | semaphore_state: release 1 → prev 0, (1,2) | same |
//! | semaphore_state: release ~0u → EOVERFLOW, (1,2) | `release(u32::MAX)` → `TooManyPosts`, no wrap-around |
//! | mutex_state: create owner 123 count 0 / owner 0 count 2 → EINVAL | n/a: `Mutex::new(bool)` cannot express them |
//! | mutex_state: create owner 123 count 2, read (2,123) | actor A creates it with count 2 |
//! | mutex_state: unlock owner 0 → EINVAL | n/a: the releasing owner is always the calling thread |
//! | mutex_state: unlock by 456 → EPERM, (2,123) | B: `release()` → `NotOwner`, state unchanged |
//! | mutex_state: unlock by 123 → prev 2 (1,123), prev 1 (0,0), then EPERM | same, by A |
//! | mutex_state: wait by 456 ×2 → (1,456), (2,456); unlock → prev 2, (1,456) | same, by B |
//! | mutex_state: wait by 123 → ETIMEDOUT | A polls → `TimedOut` |
//! | mutex_state: kill owner 0 → EINVAL | n/a (no owner 0) |
//! | mutex_state: kill 123 (not owner) → EPERM, (1,456) | a non-owner thread exits: state unchanged |
//! | mutex_state: kill 456 → ok; read → EOWNERDEAD (0,0), twice | B exits; `state()` → unowned, count 0, abandoned (twice) |
//! | mutex_state: wait by 123 → EOWNERDEAD index 0, (1,123) | A polls → `Abandoned(0)`, owner A count 1, flag cleared |
//! | mutex_state: kill 123; read → EOWNERDEAD; wait by 123 → EOWNERDEAD, (1,123) | A exits; flag; fresh actor A2 → `Abandoned(0)`, (1,A2) |
//! | mutex_state: create (0,0) → (0,0); wait by 123 → (1,123) | same |
//! | mutex_state: create owner 123 count ~0u → (~0u,123); wait by 123 → ETIMEDOUT | **differs**: the wait is `RecursionOverflow` (a typed error, not a timeout) |
//! | manual_event_state: all 12 checks (create, set ×2, wait, reset ×2, wait → ETIMEDOUT, set, pulse ×2) | same, previous states included |
//! | auto_event_state: all 11 checks | same |
//! | test_wait_any: sem 2/3 + free mutex: index 0, 0, then 1 (mutex taken), states after each | same (owner 123 = actor A) |
//! | test_wait_any: release 1 → prev 0; index 0; index 1 (count 2) | same |
//! | test_wait_any: by 456 → ETIMEDOUT; kill 123; by 456 → EOWNERDEAD index 1; again → index 1 | same (A exits) |
//! | test_wait_any: same object twice → index 0, sem (1,3) | **differs**: `Duplicate { first: 0, second: 1 }`, sem untouched (Win32 forbids copies) |
//! | test_wait_any: count 0 → ETIMEDOUT | **differs**: `Empty` (Win32: nCount ≥ 1) |
//! | test_wait_any: 64 objects ok, 65 → EINVAL | **differs**: no limit: 64, 65 and 1000 distinct objects all work |
//! | test_wait_any: count −1 → EINVAL | n/a (a slice has a length) |
//! | test_wait_all: sem 2/3 + mutex: by 123 → ok (1,3),(1,123); by 456 → ETIMEDOUT, unchanged | same |
//! | test_wait_all: by 123 → (0,3),(2,123); again → ETIMEDOUT, unchanged | same |
//! | test_wait_all: release 3 → prev 0; by 123 → (2,3),(3,123) | same |
//! | test_wait_all: kill 123; by 123 → EOWNERDEAD, (1,3),(1,123) | A exits; A2 → `Abandoned(1)`, (1,3), (1,A2) |
//! | test_wait_all: sem + manual event set → ok, (0,3), event still set | same |
//! | test_wait_all: same object twice → EINVAL | `Duplicate { first: 0, second: 1 }` |
//! | wake_any: sem 0/3 + mutex(123,1); waiter blocked; release 1 → prev 0, (0,3); waiter → index 0 | same |
//! | wake_any: 123 re-takes mutex; waiter blocked; unlock → prev 2; still blocked; unlock → prev 1; (1,456); waiter → index 1 | same |
//! | wake_any: auto event: blocked; set → prev 0, (0,auto); → index 1; blocked; pulse → prev 0, (0,auto); → index 1 | same |
//! | wake_any: manual event: blocked; set → prev 0, (1,manual); → index 1; reset → prev 1; blocked; pulse → prev 0, (0,manual); → index 1 | same |
//! | wake_any: objects closed while waited → ETIMEDOUT | handles dropped; the 200 ms wait → `TimedOut` |
//! | wake_all: sem 0/3, mutex(123,1), manual set, auto set; waiter blocked | same |
//! | wake_all: release sem 1 → prev 0; still blocked; sem (1,3) (nothing taken) | same |
//! | wake_all: 123 takes sem → index 0; unlock → prev 1; still blocked; (0,0) | same |
//! | wake_all: reset manual → 1; release 2 → prev 0, (2,3); reset auto → 1; set manual → 0; set auto → 0 | same |
//! | wake_all: then (1,3), (1,456), manual set, auto reset; waiter → 0 | same |
//! | wake_all: objects closed while waited → ETIMEDOUT | same as wake_any |
//! | alert_any: 0 objects + alert set → index 0; reset; → ETIMEDOUT | `sleep_alertable(0)` → `Alerted` (APC ran); then `Elapsed` |
//! | alert_any: sem 0/2, sem 1/2, alert set → index 1 (objects win), then index 2 (alert) | `Signaled(1)` (APC still queued), then `Alerted` |
//! | alert_any: blocked waiter; alert set → index 2 | APC queued to the blocked thread → `Alerted`, APC ran on it |
//! | alert_any: auto alert: release sem0; → index 0; → index 2; → ETIMEDOUT | same with one APC |
//! | alert_all: sems 2/2, 1/2, alert set → index 0 (objects win), then index 2 | `Signaled(0)`, then `Alerted` |
//! | alert_all: blocked waiter; alert → index 2 | `Alerted`, nothing acquired |
//! | alert_all: auto alert: release sem1 2; → 0; → 2; → ETIMEDOUT | same with one APC |
//! | stress_wait: 4 threads × 10 000 mutex acquisitions, counter == 40 000 | same (a racy load/store counter detects a mutual-exclusion failure) |

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iocomp_sync::{
    sleep_alertable, wait_all, wait_all_alertable, wait_any, wait_any_alertable, Event, Mutex,
    MutexError, MutexState, Semaphore, SemaphoreError, SleepResult, Thread, ThreadId, WaitError,
    WaitResult, Waitable,
};

use crate::util::{wait_for_waiters, Actor, LONG, POLL};

fn sem_state(s: &Semaphore) -> (u32, u32) {
    (s.count(), s.max())
}

fn mstate(m: &Mutex) -> (u32, Option<ThreadId>) {
    let MutexState { owner, count, .. } = m.state();
    (count, owner)
}

fn event_state(e: &Event) -> (bool, bool) {
    (e.is_set(), e.is_manual_reset())
}

#[test]
fn semaphore_state() {
    assert_eq!(
        Semaphore::new(3, 2).err(),
        Some(SemaphoreError::InitialAboveMaximum { initial: 3, max: 2 })
    );
    let sem = Semaphore::new(2, 2).unwrap();
    assert_eq!(sem_state(&sem), (2, 2));

    assert_eq!(sem.release(0), Err(SemaphoreError::ZeroRelease));
    assert_eq!(sem_state(&sem), (2, 2));

    assert_eq!(
        sem.release(1),
        Err(SemaphoreError::TooManyPosts {
            count: 2,
            max: 2,
            release: 1
        })
    );
    assert_eq!(sem_state(&sem), (2, 2));

    assert_eq!(sem.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(sem_state(&sem), (1, 2));
    assert_eq!(sem.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(sem_state(&sem), (0, 2));
    assert_eq!(sem.wait(POLL), Ok(WaitResult::TimedOut));

    assert!(matches!(
        sem.release(3),
        Err(SemaphoreError::TooManyPosts { .. })
    ));
    assert_eq!(sem_state(&sem), (0, 2));

    assert_eq!(sem.release(2), Ok(0));
    assert_eq!(sem_state(&sem), (2, 2));
    assert_eq!(sem.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(sem.wait(POLL), Ok(WaitResult::Signaled(0)));

    assert_eq!(sem.release(1), Ok(0));
    assert_eq!(sem_state(&sem), (1, 2));

    assert!(matches!(
        sem.release(u32::MAX),
        Err(SemaphoreError::TooManyPosts { .. })
    ));
    assert_eq!(sem_state(&sem), (1, 2));
}

#[test]
fn mutex_state() {
    let a = Actor::new(); // owner 123
    let b = Actor::new(); // owner 456
    let (ida, idb) = (a.id(), b.id());

    let mutex = a.run(|| Mutex::with_owner_count(2));
    assert_eq!(mstate(&mutex), (2, Some(ida)));

    let m = mutex.clone();
    assert_eq!(b.run(move || m.release()), Err(MutexError::NotOwner));
    assert_eq!(mstate(&mutex), (2, Some(ida)));

    let m = mutex.clone();
    assert_eq!(a.run(move || m.release()), Ok(2));
    assert_eq!(mstate(&mutex), (1, Some(ida)));
    let m = mutex.clone();
    assert_eq!(a.run(move || m.release()), Ok(1));
    assert_eq!(mstate(&mutex), (0, None));
    let m = mutex.clone();
    assert_eq!(a.run(move || m.release()), Err(MutexError::NotOwner));

    let m = mutex.clone();
    assert_eq!(b.run(move || m.wait(POLL)), Ok(WaitResult::Signaled(0)));
    assert_eq!(mstate(&mutex), (1, Some(idb)));
    let m = mutex.clone();
    assert_eq!(b.run(move || m.wait(POLL)), Ok(WaitResult::Signaled(0)));
    assert_eq!(mstate(&mutex), (2, Some(idb)));
    let m = mutex.clone();
    assert_eq!(b.run(move || m.release()), Ok(2));
    assert_eq!(mstate(&mutex), (1, Some(idb)));

    let m = mutex.clone();
    assert_eq!(a.run(move || m.wait(POLL)), Ok(WaitResult::TimedOut));

    // "Kill" a thread that does not own it: nothing changes.
    Actor::new().exit();
    assert_eq!(mstate(&mutex), (1, Some(idb)));

    b.exit();
    let dead = |s: MutexState| s.owner.is_none() && s.count == 0 && s.abandoned;
    assert!(dead(mutex.state()));
    assert!(dead(mutex.state()), "reading does not clear the flag");

    let m = mutex.clone();
    assert_eq!(a.run(move || m.wait(POLL)), Ok(WaitResult::Abandoned(0)));
    assert_eq!(mstate(&mutex), (1, Some(ida)));
    assert!(!mutex.state().abandoned);

    a.exit();
    assert!(dead(mutex.state()));
    let a2 = Actor::new();
    let m = mutex.clone();
    assert_eq!(a2.run(move || m.wait(POLL)), Ok(WaitResult::Abandoned(0)));
    assert_eq!(mstate(&mutex), (1, Some(a2.id())));

    let mutex = Mutex::new(false);
    assert_eq!(mstate(&mutex), (0, None));
    let m = mutex.clone();
    assert_eq!(a2.run(move || m.wait(POLL)), Ok(WaitResult::Signaled(0)));
    assert_eq!(mstate(&mutex), (1, Some(a2.id())));

    let mutex = a2.run(|| Mutex::with_owner_count(u32::MAX));
    assert_eq!(mstate(&mutex), (u32::MAX, Some(a2.id())));
    let m = mutex.clone();
    assert_eq!(
        a2.run(move || m.wait(POLL)),
        Err(WaitError::RecursionOverflow { index: 0 })
    );
    assert_eq!(mstate(&mutex), (u32::MAX, Some(a2.id())));
}

#[test]
fn manual_event_state() {
    let event = Event::new(true, false);
    assert_eq!(event_state(&event), (false, true));

    assert!(!event.set());
    assert_eq!(event_state(&event), (true, true));
    assert!(event.set());
    assert_eq!(event_state(&event), (true, true));

    assert_eq!(event.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(event_state(&event), (true, true));

    assert!(event.reset());
    assert_eq!(event_state(&event), (false, true));
    assert!(!event.reset());
    assert_eq!(event_state(&event), (false, true));

    assert_eq!(event.wait(POLL), Ok(WaitResult::TimedOut));

    assert!(!event.set());
    assert!(event.pulse());
    assert_eq!(event_state(&event), (false, true));
    assert!(!event.pulse());
    assert_eq!(event_state(&event), (false, true));
}

#[test]
fn auto_event_state() {
    let event = Event::new(false, true);
    assert_eq!(event_state(&event), (true, false));

    assert!(event.set());
    assert_eq!(event_state(&event), (true, false));

    assert_eq!(event.wait(POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(event_state(&event), (false, false));

    assert!(!event.reset());
    assert_eq!(event_state(&event), (false, false));

    assert_eq!(event.wait(POLL), Ok(WaitResult::TimedOut));

    assert!(!event.set());
    assert!(event.pulse());
    assert_eq!(event_state(&event), (false, false));
    assert!(!event.pulse());
    assert_eq!(event_state(&event), (false, false));
}

#[test]
fn test_wait_any() {
    let a = Actor::new(); // 123
    let b = Actor::new(); // 456
    let ida = a.id();
    let sem = Semaphore::new(2, 3).unwrap();
    let mutex = Mutex::new(false);

    let any = |who: &Actor| {
        let (s, m) = (sem.clone(), mutex.clone());
        who.run(move || wait_any(&[&s, &m], POLL))
    };

    assert_eq!(any(&a), Ok(WaitResult::Signaled(0)));
    assert_eq!(sem_state(&sem), (1, 3));
    assert_eq!(mstate(&mutex), (0, None));

    assert_eq!(any(&a), Ok(WaitResult::Signaled(0)));
    assert_eq!(sem_state(&sem), (0, 3));
    assert_eq!(mstate(&mutex), (0, None));

    assert_eq!(any(&a), Ok(WaitResult::Signaled(1)));
    assert_eq!(sem_state(&sem), (0, 3));
    assert_eq!(mstate(&mutex), (1, Some(ida)));

    assert_eq!(sem.release(1), Ok(0));
    assert_eq!(any(&a), Ok(WaitResult::Signaled(0)));
    assert_eq!(sem_state(&sem), (0, 3));
    assert_eq!(mstate(&mutex), (1, Some(ida)));

    assert_eq!(any(&a), Ok(WaitResult::Signaled(1)));
    assert_eq!(sem_state(&sem), (0, 3));
    assert_eq!(mstate(&mutex), (2, Some(ida)));

    assert_eq!(any(&b), Ok(WaitResult::TimedOut));

    a.exit();
    assert_eq!(any(&b), Ok(WaitResult::Abandoned(1)));
    assert_eq!(any(&b), Ok(WaitResult::Signaled(1)));
    assert_eq!(mstate(&mutex), (2, Some(b.id())));

    // The same object twice.
    assert_eq!(sem.release(2), Ok(0));
    assert_eq!(
        wait_any(&[&sem, &sem], POLL),
        Err(WaitError::Duplicate {
            first: 0,
            second: 1
        })
    );
    assert_eq!(sem_state(&sem), (2, 3));

    assert_eq!(wait_any(&[], POLL), Err(WaitError::Empty));

    // 64, 65 and 1000 objects: no limit.
    for n in [64, 65, 1000] {
        let sems: Vec<Semaphore> = (0..n).map(|_| Semaphore::new(1, 1).unwrap()).collect();
        let objs: Vec<&dyn Waitable> = sems.iter().map(|s| s as &dyn Waitable).collect();
        assert_eq!(wait_any(&objs, POLL), Ok(WaitResult::Signaled(0)));
        assert_eq!(sems[0].count(), 0);
        assert!(sems[1..].iter().all(|s| s.count() == 1));
    }
}

#[test]
fn test_wait_all() {
    let a = Actor::new(); // 123
    let b = Actor::new(); // 456
    let ida = a.id();
    let sem = Semaphore::new(2, 3).unwrap();
    let mutex = Mutex::new(false);

    let all = |who: &Actor| {
        let (s, m) = (sem.clone(), mutex.clone());
        who.run(move || wait_all(&[&s, &m], POLL))
    };

    assert_eq!(all(&a), Ok(WaitResult::Signaled(0)));
    assert_eq!(sem_state(&sem), (1, 3));
    assert_eq!(mstate(&mutex), (1, Some(ida)));

    assert_eq!(all(&b), Ok(WaitResult::TimedOut));
    assert_eq!(sem_state(&sem), (1, 3));
    assert_eq!(mstate(&mutex), (1, Some(ida)));

    assert_eq!(all(&a), Ok(WaitResult::Signaled(0)));
    assert_eq!(sem_state(&sem), (0, 3));
    assert_eq!(mstate(&mutex), (2, Some(ida)));

    assert_eq!(all(&a), Ok(WaitResult::TimedOut));
    assert_eq!(sem_state(&sem), (0, 3));
    assert_eq!(mstate(&mutex), (2, Some(ida)));

    assert_eq!(sem.release(3), Ok(0));
    assert_eq!(all(&a), Ok(WaitResult::Signaled(0)));
    assert_eq!(sem_state(&sem), (2, 3));
    assert_eq!(mstate(&mutex), (3, Some(ida)));

    a.exit();
    let a2 = Actor::new();
    assert_eq!(all(&a2), Ok(WaitResult::Abandoned(1)));
    assert_eq!(sem_state(&sem), (1, 3));
    assert_eq!(mstate(&mutex), (1, Some(a2.id())));

    let event = Event::new(true, true);
    let (s, e) = (sem.clone(), event.clone());
    assert_eq!(
        a2.run(move || wait_all(&[&s, &e], POLL)),
        Ok(WaitResult::Signaled(0))
    );
    assert_eq!(sem_state(&sem), (0, 3));
    assert_eq!(event_state(&event), (true, true));

    assert_eq!(
        wait_all(&[&sem, &sem], POLL),
        Err(WaitError::Duplicate {
            first: 0,
            second: 1
        })
    );
}

/// Starts, on `waiter`, a wait-any (or wait-all) on `objs` with `timeout`, and returns once it is queued on `probe`.
fn start_wait(
    waiter: &Actor,
    objs: Vec<Box<dyn Waitable + Send>>,
    all: bool,
    timeout: Duration,
    probe: &dyn Waitable,
) -> crate::util::Pending<Result<WaitResult, WaitError>> {
    let before = probe.waiter_count();
    let pending = waiter.start(move || {
        let refs: Vec<&dyn Waitable> = objs.iter().map(|o| &**o as &dyn Waitable).collect();
        if all {
            wait_all(&refs, Some(timeout))
        } else {
            wait_any(&refs, Some(timeout))
        }
    });
    wait_for_waiters(probe, before + 1);
    pending
}

#[test]
fn wake_any() {
    let a = Actor::new(); // 123
    let w = Actor::new(); // 456, the waiting thread
    let sem = Semaphore::new(0, 3).unwrap();
    let mutex = a.run(|| Mutex::new(true));

    // Waking the semaphore.
    let objs = || -> Vec<Box<dyn Waitable + Send>> {
        vec![Box::new(sem.clone()), Box::new(mutex.clone())]
    };
    let pending = start_wait(&w, objs(), false, LONG, &sem);
    pending.assert_blocked();
    assert_eq!(sem.release(1), Ok(0));
    assert_eq!(sem_state(&sem), (0, 3));
    assert_eq!(pending.join(), Ok(WaitResult::Signaled(0)));

    // Waking the mutex: first grab it again for 123.
    let m = mutex.clone();
    assert_eq!(a.run(move || m.wait(POLL)), Ok(WaitResult::Signaled(0)));
    let pending = start_wait(&w, objs(), false, LONG, &mutex);
    pending.assert_blocked();
    let m = mutex.clone();
    assert_eq!(a.run(move || m.release()), Ok(2));
    pending.assert_not_done();
    let m = mutex.clone();
    assert_eq!(a.run(move || m.release()), Ok(1));
    assert_eq!(mstate(&mutex), (1, Some(w.id())));
    assert_eq!(pending.join(), Ok(WaitResult::Signaled(1)));

    // Waking an auto-reset event, by set and by pulse.
    let event = Event::new(false, false);
    let objs = || -> Vec<Box<dyn Waitable + Send>> {
        vec![Box::new(sem.clone()), Box::new(event.clone())]
    };
    let pending = start_wait(&w, objs(), false, LONG, &event);
    pending.assert_blocked();
    assert!(!event.set());
    assert_eq!(event_state(&event), (false, false));
    assert_eq!(pending.join(), Ok(WaitResult::Signaled(1)));

    let pending = start_wait(&w, objs(), false, LONG, &event);
    pending.assert_blocked();
    assert!(!event.pulse());
    assert_eq!(event_state(&event), (false, false));
    assert_eq!(pending.join(), Ok(WaitResult::Signaled(1)));

    // A manual-reset event, by set and by pulse.
    let event = Event::new(true, false);
    let objs = || -> Vec<Box<dyn Waitable + Send>> {
        vec![Box::new(sem.clone()), Box::new(event.clone())]
    };
    let pending = start_wait(&w, objs(), false, LONG, &event);
    pending.assert_blocked();
    assert!(!event.set());
    assert_eq!(event_state(&event), (true, true));
    assert_eq!(pending.join(), Ok(WaitResult::Signaled(1)));

    assert!(event.reset());
    let pending = start_wait(&w, objs(), false, LONG, &event);
    pending.assert_blocked();
    assert!(!event.pulse());
    assert_eq!(event_state(&event), (false, true));
    assert_eq!(pending.join(), Ok(WaitResult::Signaled(1)));

    // Our handles go away while the wait is pending: it times out.
    let pending = start_wait(&w, objs(), false, Duration::from_millis(200), &event);
    pending.assert_blocked();
    drop((sem, event, mutex));
    assert_eq!(pending.join(), Ok(WaitResult::TimedOut));
}

#[test]
fn wake_all() {
    let a = Actor::new(); // 123
    let w = Actor::new(); // 456
    let sem = Semaphore::new(0, 3).unwrap();
    let mutex = a.run(|| Mutex::new(true));
    let manual = Event::new(true, true);
    let auto = Event::new(false, true);
    let objs = || -> Vec<Box<dyn Waitable + Send>> {
        vec![
            Box::new(sem.clone()),
            Box::new(mutex.clone()),
            Box::new(manual.clone()),
            Box::new(auto.clone()),
        ]
    };

    let pending = start_wait(&w, objs(), true, LONG, &sem);
    pending.assert_blocked();

    assert_eq!(sem.release(1), Ok(0));
    pending.assert_not_done();
    assert_eq!(sem_state(&sem), (1, 3));

    let s = sem.clone();
    assert_eq!(
        a.run(move || wait_any(&[&s], POLL)),
        Ok(WaitResult::Signaled(0))
    );
    let m = mutex.clone();
    assert_eq!(a.run(move || m.release()), Ok(1));
    pending.assert_not_done();
    assert_eq!(mstate(&mutex), (0, None));

    assert!(manual.reset());
    assert_eq!(sem.release(2), Ok(0));
    assert_eq!(sem_state(&sem), (2, 3));
    assert!(auto.reset());
    assert!(!manual.set());
    assert!(!auto.set());

    assert_eq!(sem_state(&sem), (1, 3));
    assert_eq!(mstate(&mutex), (1, Some(w.id())));
    assert_eq!(event_state(&manual), (true, true));
    assert_eq!(event_state(&auto), (false, false));
    assert_eq!(pending.join(), Ok(WaitResult::Signaled(0)));

    // Our handles go away while the wait is pending: it times out.
    let pending = start_wait(&w, objs(), true, Duration::from_millis(200), &sem);
    pending.assert_blocked();
    drop((sem, mutex, manual, auto));
    assert_eq!(pending.join(), Ok(WaitResult::TimedOut));
}

/// An APC that counts its runs and records the thread it ran on.
fn counting_apc(
    runs: &Arc<AtomicUsize>,
    ran_on: &Arc<AtomicU32>,
) -> impl FnOnce() + Send + 'static {
    let (runs, ran_on) = (Arc::clone(runs), Arc::clone(ran_on));
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        ran_on.store(Thread::current().id().as_u64() as u32, Ordering::SeqCst);
    }
}

#[test]
fn alert_any() {
    let me = Thread::current();
    let runs = Arc::new(AtomicUsize::new(0));
    let ran_on = Arc::new(AtomicU32::new(0));
    let sems = [Semaphore::new(0, 2).unwrap(), Semaphore::new(1, 2).unwrap()];
    let objs: [&dyn Waitable; 2] = [&sems[0], &sems[1]];

    me.queue_apc(counting_apc(&runs, &ran_on)).unwrap();
    assert_eq!(sleep_alertable(Duration::ZERO), SleepResult::Alerted);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(sleep_alertable(Duration::ZERO), SleepResult::Elapsed);

    me.queue_apc(counting_apc(&runs, &ran_on)).unwrap();
    assert_eq!(wait_any_alertable(&objs, POLL), Ok(WaitResult::Signaled(1)));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "objects win over the alert");
    assert_eq!(me.pending_apcs(), 1);
    assert_eq!(wait_any_alertable(&objs, POLL), Ok(WaitResult::Alerted));
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // Wake-up by alert.
    let w = Actor::new();
    let (s0, s1) = (sems[0].clone(), sems[1].clone());
    let pending = w.start(move || wait_any_alertable(&[&s0, &s1], Some(LONG)));
    wait_for_waiters(&sems[0], 1);
    pending.assert_blocked();
    w.thread().queue_apc(counting_apc(&runs, &ran_on)).unwrap();
    assert_eq!(pending.join(), Ok(WaitResult::Alerted));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(ran_on.load(Ordering::SeqCst), w.id().as_u64() as u32);

    // An "auto-reset" alert: one APC.
    me.queue_apc(counting_apc(&runs, &ran_on)).unwrap();
    assert_eq!(sems[0].release(1), Ok(0));
    assert_eq!(wait_any_alertable(&objs, POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(wait_any_alertable(&objs, POLL), Ok(WaitResult::Alerted));
    assert_eq!(wait_any_alertable(&objs, POLL), Ok(WaitResult::TimedOut));
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

#[test]
fn alert_all() {
    let me = Thread::current();
    let runs = Arc::new(AtomicUsize::new(0));
    let ran_on = Arc::new(AtomicU32::new(0));
    let sems = [Semaphore::new(2, 2).unwrap(), Semaphore::new(1, 2).unwrap()];
    let objs: [&dyn Waitable; 2] = [&sems[0], &sems[1]];

    me.queue_apc(counting_apc(&runs, &ran_on)).unwrap();
    assert_eq!(wait_all_alertable(&objs, POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(runs.load(Ordering::SeqCst), 0, "objects win over the alert");
    assert_eq!(wait_all_alertable(&objs, POLL), Ok(WaitResult::Alerted));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!((sems[0].count(), sems[1].count()), (1, 0));

    // Wake-up by alert: nothing acquired.
    let w = Actor::new();
    let (s0, s1) = (sems[0].clone(), sems[1].clone());
    let pending = w.start(move || wait_all_alertable(&[&s0, &s1], Some(LONG)));
    wait_for_waiters(&sems[0], 1);
    pending.assert_blocked();
    w.thread().queue_apc(counting_apc(&runs, &ran_on)).unwrap();
    assert_eq!(pending.join(), Ok(WaitResult::Alerted));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(ran_on.load(Ordering::SeqCst), w.id().as_u64() as u32);
    assert_eq!((sems[0].count(), sems[1].count()), (1, 0));

    // An "auto-reset" alert: one APC.
    me.queue_apc(counting_apc(&runs, &ran_on)).unwrap();
    assert_eq!(sems[1].release(2), Ok(0));
    assert_eq!(wait_all_alertable(&objs, POLL), Ok(WaitResult::Signaled(0)));
    assert_eq!(wait_all_alertable(&objs, POLL), Ok(WaitResult::Alerted));
    assert_eq!(wait_all_alertable(&objs, POLL), Ok(WaitResult::TimedOut));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!((sems[0].count(), sems[1].count()), (0, 1));
}

#[test]
fn stress_wait() {
    const LOOPS: u32 = 10_000;
    const THREADS: u32 = 4;
    let mutex = Mutex::new(false);
    let start = Event::new(true, false);
    let counter = Arc::new(AtomicU32::new(0));

    let threads: Vec<Thread> = (0..THREADS)
        .map(|_| {
            let (mutex, start, counter) = (mutex.clone(), start.clone(), Arc::clone(&counter));
            Thread::spawn(move || {
                assert_eq!(start.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
                for _ in 0..LOOPS {
                    assert_eq!(mutex.wait(Some(LONG)), Ok(WaitResult::Signaled(0)));
                    // A non-atomic increment: loses counts unless the mutex excludes.
                    let v = counter.load(Ordering::Relaxed);
                    counter.store(v + 1, Ordering::Relaxed);
                    assert_eq!(mutex.release(), Ok(1));
                }
                0
            })
        })
        .collect();
    assert!(!start.set());
    let handles: Vec<&dyn Waitable> = threads.iter().map(|t| t as &dyn Waitable).collect();
    assert_eq!(
        wait_all(&handles, Some(LONG * 3)),
        Ok(WaitResult::Signaled(0))
    );
    assert!(
        threads.iter().all(|t| t.exit_code() == Some(0)),
        "a thread panicked"
    );
    assert_eq!(counter.load(Ordering::Relaxed), LOOPS * THREADS);
    assert_eq!(mutex.state().count, 0);
}
