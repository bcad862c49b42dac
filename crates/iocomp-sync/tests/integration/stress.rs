//! 8 threads × 100 000 mixed waits (800 000 in all) on random subsets of semaphores, mutexes and auto-reset events,
//! half wait-all, half wait-any, with poll, short and long timeouts. Every permit is tracked: a thread that acquires an
//! object marks it held and releases it before its next wait, so
//! - a semaphore never has more holders than its maximum, and its count returns to the initial value;
//! - a mutex never has two holders, and ends unowned;
//! - an auto-reset event (a binary semaphore here) is set again by its holder, and `set` must report that it was not
//!   set — a permit created out of nothing would show as "already set".

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iocomp_sync::{wait_all, wait_any, Event, Mutex, Semaphore, Thread, WaitResult, Waitable};

const THREADS: u64 = 8;
const OPS_PER_THREAD: u64 = 100_000;
const SEMAPHORE_MAX: u32 = 2;

/// xorshift64*: small, fast, deterministic per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

#[derive(Clone)]
enum Obj {
    Sem(Semaphore),
    Mutex(Mutex),
    Event(Event),
}

impl Obj {
    fn as_waitable(&self) -> &dyn Waitable {
        match self {
            Obj::Sem(s) => s,
            Obj::Mutex(m) => m,
            Obj::Event(e) => e,
        }
    }

    /// Gives back the permit; false if that revealed a created permit.
    fn release(&self) -> bool {
        match self {
            Obj::Sem(s) => s.release(1).is_ok(),
            Obj::Mutex(m) => m.release() == Ok(1),
            Obj::Event(e) => !e.set(),
        }
    }

    fn capacity(&self) -> u32 {
        match self {
            Obj::Sem(_) => SEMAPHORE_MAX,
            _ => 1,
        }
    }
}

struct Shared {
    objs: Vec<Obj>,
    holders: Vec<AtomicU32>,
    acquisitions: AtomicU64,
    timeouts: AtomicU64,
}

fn worker(shared: &Shared, seed: u64) -> u32 {
    let mut rng = Rng(seed);
    let n = shared.objs.len() as u64;
    for _ in 0..OPS_PER_THREAD {
        // A random subset of 1–4 distinct objects.
        let size = 1 + rng.below(4);
        let mut picked: Vec<usize> = Vec::with_capacity(size);
        while picked.len() < size {
            let i = rng.below(n);
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        let set: Vec<&dyn Waitable> = picked
            .iter()
            .map(|&i| shared.objs[i].as_waitable())
            .collect();
        let timeout = match rng.below(4) {
            0 => Some(Duration::ZERO),
            1 => Some(Duration::from_micros(100)),
            2 => Some(Duration::from_millis(2)),
            _ => Some(Duration::from_millis(50)),
        };
        let all = rng.below(2) == 0;
        let result = if all {
            wait_all(&set, timeout)
        } else {
            wait_any(&set, timeout)
        };
        let acquired: Vec<usize> = match result {
            Ok(WaitResult::Signaled(i)) if all && i == 0 => picked.clone(),
            Ok(WaitResult::Signaled(i)) if !all && i < picked.len() => vec![picked[i]],
            Ok(WaitResult::TimedOut) => {
                shared.timeouts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            _ => return 1, // abandoned, alerted or an error: impossible here
        };
        for &i in &acquired {
            let before = shared.holders[i].fetch_add(1, Ordering::SeqCst);
            if before >= shared.objs[i].capacity() {
                return 2; // more holders than permits
            }
        }
        shared.acquisitions.fetch_add(1, Ordering::Relaxed);
        if rng.below(8) == 0 {
            std::thread::yield_now(); // hold for a moment
        }
        for &i in &acquired {
            shared.holders[i].fetch_sub(1, Ordering::SeqCst);
            if !shared.objs[i].release() {
                return 3; // a permit was created
            }
        }
    }
    0
}

#[test]
fn stress_mixed_waits_conserve_permits() {
    let mut objs = Vec::new();
    for _ in 0..3 {
        objs.push(Obj::Sem(
            Semaphore::new(SEMAPHORE_MAX, SEMAPHORE_MAX).unwrap(),
        ));
        objs.push(Obj::Mutex(Mutex::new(false)));
        objs.push(Obj::Event(Event::new(false, true)));
    }
    let shared = Arc::new(Shared {
        holders: objs.iter().map(|_| AtomicU32::new(0)).collect(),
        objs,
        acquisitions: AtomicU64::new(0),
        timeouts: AtomicU64::new(0),
    });
    let threads: Vec<Thread> = (0..THREADS)
        .map(|t| {
            let shared = Arc::clone(&shared);
            Thread::spawn(move || worker(&shared, 0x9E37_79B9_7F4A_7C15 ^ (t + 1)))
        })
        .collect();
    let handles: Vec<&dyn Waitable> = threads.iter().map(|t| t as &dyn Waitable).collect();
    assert_eq!(
        wait_all(&handles, Some(Duration::from_secs(50))),
        Ok(WaitResult::Signaled(0)),
        "stress test did not finish in time"
    );
    let codes: Vec<Option<u32>> = threads.iter().map(Thread::exit_code).collect();
    assert!(codes.iter().all(|c| *c == Some(0)), "exit codes {codes:?}");

    for (obj, holders) in shared.objs.iter().zip(&shared.holders) {
        assert_eq!(holders.load(Ordering::SeqCst), 0);
        match obj {
            Obj::Sem(s) => assert_eq!(s.count(), SEMAPHORE_MAX, "semaphore permits conserved"),
            Obj::Mutex(m) => assert_eq!(m.state().count, 0, "mutex ends unowned"),
            Obj::Event(e) => assert!(e.is_set(), "event permit conserved"),
        }
        assert_eq!(obj.as_waitable().waiter_count(), 0, "no waiter left queued");
    }
    let acquisitions = shared.acquisitions.load(Ordering::Relaxed);
    let timeouts = shared.timeouts.load(Ordering::Relaxed);
    eprintln!("stress: {acquisitions} acquisitions, {timeouts} timeouts");
    assert_eq!(acquisitions + timeouts, THREADS * OPS_PER_THREAD);
    assert!(
        acquisitions > THREADS * OPS_PER_THREAD / 4,
        "too little progress: {acquisitions} acquisitions"
    );
}
