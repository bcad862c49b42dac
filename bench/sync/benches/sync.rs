//! iocomp-sync against std equivalents, as ratios the README can quote:
//! - wake latency: a ping-pong between two threads through two auto-reset
//!   `Event`s (or a `Semaphore` pair) vs. two `Mutex<bool>` + `Condvar` pairs.
//!   The headline pair is the original one: iocomp-sync waits with a 10 s
//!   timeout, std's `Condvar::wait` has none. A timed futex sleep costs the
//!   kernel a timer per sleep, so the group also has each side with the
//!   other's choice (iocomp-sync `wait(None)`, std `Condvar::wait_timeout`)
//!   for like-for-like ratios;
//! - uncontended `Mutex` acquire + release (`wait` + `release`) vs. std `Mutex` lock + unlock;
//! - wait-all throughput: philosophers taking two "chopsticks" atomically with
//!   `wait_all` on two `iocomp_sync::Mutex`es vs. std mutexes locked in a
//!   global order (the classic deadlock-free std equivalent).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use iocomp_sync::{wait_all, Event, Semaphore, Waitable};

const T: Option<Duration> = Some(Duration::from_secs(10));

/// A std "auto-reset event": a flag under a mutex and a condvar.
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
    fn wait(&self) {
        let mut g = self.set.lock().unwrap();
        while !*g {
            g = self.cv.wait(g).unwrap();
        }
        *g = false;
    }
    /// `wait` with the timeout iocomp-sync's side uses (a wait that times out just waits again, as `wait` would).
    fn wait_timeout(&self, t: Duration) {
        let mut g = self.set.lock().unwrap();
        while !*g {
            g = self.cv.wait_timeout(g, t).unwrap().0;
        }
        *g = false;
    }
}

/// The iocomp-sync ping-pong through `ping` and `pong`, waiting with `timeout`.
fn iocomp_ping_pong<W: Waitable + Clone + Send + 'static>(
    iters: u64,
    (ping, pong): (W, W),
    signal: fn(&W),
    timeout: Option<Duration>,
) -> Duration {
    let (p2, q2) = (ping.clone(), pong.clone());
    let t = thread::spawn(move || {
        for _ in 0..iters {
            let _ = p2.wait(timeout);
            signal(&q2);
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        signal(&ping);
        let _ = pong.wait(timeout);
    }
    let d = start.elapsed();
    t.join().unwrap();
    d
}

/// The std ping-pong, waiting with `timeout` (`None`: `Condvar::wait`).
fn std_ping_pong(iters: u64, timeout: Option<Duration>) -> Duration {
    let (ping, pong) = (Arc::new(StdEvent::default()), Arc::new(StdEvent::default()));
    let (p2, q2) = (ping.clone(), pong.clone());
    let wait = move |e: &StdEvent| match timeout {
        None => e.wait(),
        Some(t) => e.wait_timeout(t),
    };
    let t = thread::spawn(move || {
        for _ in 0..iters {
            wait(&p2);
            q2.set();
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        ping.set();
        wait(&pong);
    }
    let d = start.elapsed();
    t.join().unwrap();
    d
}

fn events() -> (Event, Event) {
    (Event::new(false, false), Event::new(false, false))
}

fn semaphores() -> (Semaphore, Semaphore) {
    (Semaphore::new(0, 1).unwrap(), Semaphore::new(0, 1).unwrap())
}

fn set_event(e: &Event) {
    e.set();
}

fn release_semaphore(s: &Semaphore) {
    let _ = s.release(1);
}

fn ping_pong(c: &mut Criterion) {
    let mut g = c.benchmark_group("wake round trip");
    g.bench_function("iocomp_sync::Event", |b| {
        b.iter_custom(|iters| iocomp_ping_pong(iters, events(), set_event, T))
    });
    g.bench_function("iocomp_sync::Semaphore", |b| {
        b.iter_custom(|iters| iocomp_ping_pong(iters, semaphores(), release_semaphore, T))
    });
    g.bench_function("std Mutex+Condvar", |b| {
        b.iter_custom(|iters| std_ping_pong(iters, None))
    });
    g.bench_function("iocomp_sync::Event, no timeout", |b| {
        b.iter_custom(|iters| iocomp_ping_pong(iters, events(), set_event, None))
    });
    g.bench_function("iocomp_sync::Semaphore, no timeout", |b| {
        b.iter_custom(|iters| iocomp_ping_pong(iters, semaphores(), release_semaphore, None))
    });
    g.bench_function("std Mutex+Condvar, wait_timeout", |b| {
        b.iter_custom(|iters| std_ping_pong(iters, T))
    });
    g.finish();
}

fn uncontended_mutex(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended mutex acquire+release");
    g.bench_function("iocomp_sync::Mutex", |b| {
        let m = iocomp_sync::Mutex::new(false);
        b.iter(|| {
            let _ = std::hint::black_box(m.wait(T));
            let _ = std::hint::black_box(m.release());
        })
    });
    g.bench_function("std Mutex", |b| {
        let m = Mutex::new(0u32);
        b.iter(|| {
            *std::hint::black_box(m.lock().unwrap()) += 1;
        })
    });
    g.finish();
}

const PHILOSOPHERS: usize = 4;

fn wait_all_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("two-resource meals (4 threads)");
    g.bench_function("iocomp_sync wait_all", |b| {
        b.iter_custom(|iters| {
            let sticks: Vec<iocomp_sync::Mutex> = (0..PHILOSOPHERS)
                .map(|_| iocomp_sync::Mutex::new(false))
                .collect();
            let sticks = Arc::new(sticks);
            let per = iters.div_ceil(PHILOSOPHERS as u64);
            let start = Instant::now();
            let ts: Vec<_> = (0..PHILOSOPHERS)
                .map(|i| {
                    let s = sticks.clone();
                    thread::spawn(move || {
                        let (l, r) = (&s[i], &s[(i + 1) % PHILOSOPHERS]);
                        for _ in 0..per {
                            let _ = wait_all(&[l, r], T);
                            let _ = l.release();
                            let _ = r.release();
                        }
                    })
                })
                .collect();
            for t in ts {
                t.join().unwrap();
            }
            start.elapsed()
        })
    });
    g.bench_function("std Mutex, ordered locking", |b| {
        b.iter_custom(|iters| {
            let sticks: Arc<Vec<Mutex<()>>> =
                Arc::new((0..PHILOSOPHERS).map(|_| Mutex::new(())).collect());
            let per = iters.div_ceil(PHILOSOPHERS as u64);
            let start = Instant::now();
            let ts: Vec<_> = (0..PHILOSOPHERS)
                .map(|i| {
                    let s = sticks.clone();
                    thread::spawn(move || {
                        let (a, b) = (i, (i + 1) % PHILOSOPHERS);
                        let (lo, hi) = (a.min(b), a.max(b));
                        for _ in 0..per {
                            let _g1 = s[lo].lock().unwrap();
                            let _g2 = s[hi].lock().unwrap();
                        }
                    })
                })
                .collect();
            for t in ts {
                t.join().unwrap();
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    targets = ping_pong, uncontended_mutex, wait_all_throughput
}
criterion_main!(benches);
