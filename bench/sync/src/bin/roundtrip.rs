//! A small driver for profiling the wake round trip outside criterion (callgrind, strace, perf):
//! `roundtrip MODE N` runs N ping-pong round trips between two threads, as `benches/sync.rs` does, and prints the
//! mean time per round trip. MODE: `event`, `semaphore`, `std` (the benchmark's three sides), `event-inf` and
//! `std-timeout` (the same with the other side's timeout choice: `Event::wait(None)`, `Condvar::wait_timeout`);
//! `periodic N PERIOD_US`: the waiter's CPU time per wait for an event another thread sets every PERIOD_US µs.

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

/// This thread's CPU time so far (ns), from /proc/thread-self/schedstat.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
        .unwrap_or(0)
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
            run(
                iters,
                side(Event::new(false, false)),
                side(Event::new(false, false)),
            )
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
            run(
                iters,
                side(Semaphore::new(0, 1).unwrap()),
                side(Semaphore::new(0, 1).unwrap()),
            )
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
        "periodic" => {
            // `roundtrip periodic N PERIOD_US`: another thread sets an auto-reset event every PERIOD_US microseconds
            // (timed by spinning on the clock), this one waits for it N times; prints this thread's CPU time per wait
            // (from /proc/thread-self/schedstat), the cost of waiting for a periodic signal.
            let period =
                Duration::from_micros(args.get(3).and_then(|s| s.parse().ok()).unwrap_or(15));
            let e = Event::new(false, false);
            let e2 = e.clone();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop2 = stop.clone();
            let producer = thread::spawn(move || {
                let mut next = Instant::now() + period;
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    while Instant::now() < next {
                        std::hint::spin_loop();
                    }
                    e2.set();
                    // A late set (the producer was descheduled) is not followed by a burst of catch-up sets.
                    next = (next + period).max(Instant::now() + period / 2);
                }
            });
            let cpu0 = thread_cpu_ns();
            let start = Instant::now();
            for _ in 0..iters {
                let _ = e.wait(T);
            }
            let d = start.elapsed();
            let cpu = thread_cpu_ns() - cpu0;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            producer.join().unwrap();
            println!(
                "periodic {} us: waiter CPU {:.2} us per wait ({:.0} % of its wall time)",
                period.as_micros(),
                cpu as f64 / 1e3 / iters as f64,
                cpu as f64 * 100.0 / d.as_nanos() as f64
            );
            d
        }
        other => {
            eprintln!(
                "unknown mode {other}: event, event-inf, semaphore, std, std-timeout, periodic"
            );
            std::process::exit(2);
        }
    };
    println!(
        "{mode}: {iters} round trips, {:.2} us each",
        d.as_secs_f64() * 1e6 / iters as f64
    );
}
