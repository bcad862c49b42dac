//! A small driver for profiling the wake round trip outside criterion (callgrind, strace, perf):
//! `roundtrip MODE N` runs N ping-pong round trips between two threads, as `benches/sync.rs` does, and prints the
//! mean time per round trip. MODE: `event`, `semaphore`, `std` (the benchmark's three sides), `event-inf` and
//! `std-timeout` (the same with the other side's timeout choice: `Event::wait(None)`, `Condvar::wait_timeout`).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use iocomp_sync::{Event, Semaphore, Waitable};

const T: Option<Duration> = Some(Duration::from_secs(10));

#[derive(Default)]
struct StdEvent {
    set: Mutex<bool>,
    cv: Condvar,
}

impl StdEvent {
    fn set(&self) {
        *self.set.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn wait(&self, timeout: Option<Duration>) {
        let mut g = self.set.lock().unwrap();
        while !*g {
            g = match timeout {
                None => self.cv.wait(g).unwrap(),
                Some(t) => self.cv.wait_timeout(g, t).unwrap().0,
            };
        }
        *g = false;
    }
}

/// Runs `iters` round trips: the main thread calls `ping` then `pong_wait`, the other `ping_wait` then `pong`.
fn run<P, Q>(iters: u64, ping: P, pong: Q) -> Duration
where
    P: Fn(bool) + Send + Clone + 'static,
    Q: Fn(bool) + Send + Clone + 'static,
{
    let (p2, q2) = (ping.clone(), pong.clone());
    let t = thread::spawn(move || {
        for _ in 0..iters {
            p2(false); // wait on ping
            q2(true); // signal pong
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        ping(true);
        pong(false);
    }
    let d = start.elapsed();
    t.join().unwrap();
    d
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("event");
    let iters: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let d = match mode {
        "event" | "event-inf" => {
            let t = if mode == "event" { T } else { None };
            let side = |e: Event| {
                move |signal: bool| {
                    if signal {
                        e.set();
                    } else {
                        let _ = e.wait(t);
                    }
                }
            };
            run(iters, side(Event::new(false, false)), side(Event::new(false, false)))
        }
        "semaphore" => {
            let side = |s: Semaphore| {
                move |signal: bool| {
                    if signal {
                        let _ = s.release(1);
                    } else {
                        let _ = s.wait(T);
                    }
                }
            };
            run(iters, side(Semaphore::new(0, 1).unwrap()), side(Semaphore::new(0, 1).unwrap()))
        }
        "std" | "std-timeout" => {
            let t = if mode == "std" { None } else { T };
            let side = |e: Arc<StdEvent>| {
                move |signal: bool| {
                    if signal {
                        e.set();
                    } else {
                        e.wait(t);
                    }
                }
            };
            run(iters, side(Arc::default()), side(Arc::default()))
        }
        other => {
            eprintln!("unknown mode {other}: event, event-inf, semaphore, std, std-timeout");
            std::process::exit(2);
        }
    };
    println!("{mode}: {iters} round trips, {:.2} us each", d.as_secs_f64() * 1e6 / iters as f64);
}
