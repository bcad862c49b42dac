//! The dining philosophers, the book's way: each chopstick is a mutex, and a
//! philosopher picks up both with one `WaitForMultipleObjects(.., bWaitAll =
//! TRUE, ..)` ([`wait_all`]). Wait-all takes all of its objects or none, so no
//! philosopher ever holds one chopstick while waiting for the other: the
//! hold-and-wait that deadlocks the naive version cannot happen.
//!
//! ```text
//! cargo run -p iocomp --example philosophers              # 5 philosophers, 200 meals each
//! cargo run -p iocomp --example philosophers -- 7 1000    # 7 philosophers, 1000 meals each
//! ```
//!
//! Prints how many meals each one ate and how often one had to wait, checks
//! that every philosopher ate every meal and that no chopstick was ever held by
//! two at once, and exits 0 (or 1 if a check failed).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iocomp_sync::{wait_all, Mutex, Thread, WaitResult, Waitable};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let n = args.next().and_then(Result::ok).unwrap_or(5).max(2);
    let meals = args.next().and_then(Result::ok).unwrap_or(200) as u64;

    let chopsticks: Vec<Mutex> = (0..n).map(|_| Mutex::new(false)).collect();
    // Who holds each chopstick (0 = nobody), to prove exclusion independently.
    let holders: Arc<Vec<AtomicU32>> = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect());
    let waits: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();

    let philosophers: Vec<Thread> = (0..n)
        .map(|i| {
            let left = chopsticks[i].clone();
            let right = chopsticks[(i + 1) % n].clone();
            let (holders, waits) = (holders.clone(), waits.clone());
            Thread::spawn(move || {
                let me = i as u32 + 1;
                let mut eaten = 0u32;
                for meal in 0..meals {
                    // Try without blocking first, to count how often one waits.
                    let got = match wait_all(&[&left, &right], Some(Duration::ZERO)) {
                        Ok(WaitResult::TimedOut) => {
                            waits[i].fetch_add(1, Ordering::Relaxed);
                            wait_all(&[&left, &right], Some(Duration::from_secs(30)))
                        }
                        other => other,
                    };
                    if got != Ok(WaitResult::Signaled(0)) {
                        eprintln!("philosopher {me}: could not take the chopsticks: {got:?}");
                        return u32::MAX;
                    }
                    for c in [i, (i + 1) % n] {
                        if holders[c].swap(me, Ordering::SeqCst) != 0 {
                            eprintln!("philosopher {me}: chopstick {c} was already held!");
                            return u32::MAX;
                        }
                    }
                    eaten += 1; // eat
                    if meal % 16 == 0 {
                        std::thread::yield_now();
                    }
                    for c in [i, (i + 1) % n] {
                        holders[c].store(0, Ordering::SeqCst);
                    }
                    if left.release().is_err() || right.release().is_err() {
                        return u32::MAX;
                    }
                    std::thread::yield_now(); // think
                }
                eaten
            })
        })
        .collect();

    let mut ok = true;
    for (i, p) in philosophers.iter().enumerate() {
        let done = p.wait(Some(Duration::from_secs(60))) == Ok(WaitResult::Signaled(0));
        let eaten = p.exit_code().unwrap_or(0);
        let waited = waits[i].load(Ordering::Relaxed);
        println!(
            "philosopher {}: {eaten} meals, waited for chopsticks {waited} times",
            i + 1
        );
        ok &= done && u64::from(eaten) == meals;
    }
    println!(
        "{n} philosophers, {} meals in {:?}: {}",
        n as u64 * meals,
        start.elapsed(),
        if ok {
            "everyone ate, no deadlock"
        } else {
            "FAILED"
        }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
