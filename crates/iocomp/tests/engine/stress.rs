//! Cross-thread stress of the engine, on both backends: threads submitting,
//! cancelling, posting and getting at once for a bounded time, with every
//! packet accounted for — plus the known failure scenarios of issue 14, each
//! repeated until it would have shown:
//!
//! - two hour-long waitable timers cancelled and waited for, thousands of
//!   times, on a one-worker pool (a lost cancel hangs the wait);
//! - two big sends queued on one socket, to a slow reader and to a fast one
//!   (the stream must be the first send, then the second);
//! - a thread attaches, submits and detaches, then a new thread submits: ids
//!   are never reused;
//! - `get(Some(Duration::MAX))` returns (no overflow panic).
//!
//! Every wait is bounded; a failure says what is missing. Longer runs:
//! `IOCOMP_STRESS_SECS` (mixed test, per backend, default 3) and
//! `IOCOMP_STRESS_SCALE` (repetitions of the scenarios, default 1).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use iocomp::{Backend, GetError, Handle, Op, OpId, Packet, Pool, Port, Recv, Send, Timeout};

use crate::harness::{self, env_num, lock, pattern, Reader, Rng};

/// Bound on every wait for something that must happen.
const BOUND: Duration = Duration::from_secs(30);

/// A test that runs longer has hung in a call that never returns.
fn hang() -> Duration {
    Duration::from_secs(300 + 4 * env_num("IOCOMP_STRESS_SECS", 3)) * scale() as u32
}

fn scale() -> u64 {
    env_num("IOCOMP_STRESS_SCALE", 1).max(1)
}

/// What every thread reports to: operations submitted, packets taken.
#[derive(Default)]
struct Ledger {
    /// Accepted submissions: id → (thread, what).
    submitted: HashMap<u64, (usize, &'static str)>,
    /// Packets taken, by id.
    taken: HashSet<u64>,
    /// Posted tokens posted and taken.
    posted: HashSet<u64>,
    posted_taken: HashSet<u64>,
    /// Ids that may be cancelled by anyone (pending hour-long timers).
    cancellable: Vec<OpId>,
    errors: Vec<String>,
    cancels: u64,
}

impl Ledger {
    fn take(&mut self, p: &Packet, who: usize) {
        if let Op::Posted { token } = p.op {
            if !self.posted_taken.insert(token) {
                self.errors
                    .push(format!("thread {who}: posted token {token:#x} taken twice"));
            }
            return;
        }
        if !self.taken.insert(p.id.as_u64()) {
            self.errors.push(format!(
                "thread {who}: second packet for {:?} ({:?}, {:?})",
                p.id, p.op, p.status
            ));
        }
        if let Op::Timeout(t) = &p.op {
            // Hour-long timers (key 1) can only come back cancelled.
            if t.key == 1 && !p.is_aborted() {
                self.errors.push(format!(
                    "thread {who}: hour-long timer {:?} came back {:?}",
                    p.id, p.status
                ));
            }
            if t.key == 0 && p.status.is_err() && !p.is_aborted() {
                self.errors.push(format!(
                    "thread {who}: short timer {:?} failed: {:?}",
                    p.id, p.status
                ));
            }
        }
    }

    fn submitted(&mut self, id: OpId, who: usize, what: &'static str) {
        if let Some(prev) = self.submitted.insert(id.as_u64(), (who, what)) {
            self.errors.push(format!(
                "thread {who}: id {id:?} given to its {what} was already given to thread {}'s {}",
                prev.0, prev.1
            ));
        }
    }

    fn missing(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .submitted
            .iter()
            .filter(|(id, _)| !self.taken.contains(id))
            .map(|(id, (t, w))| format!("{w} {:?} of thread {t}", OpId::from_u64(*id)))
            .collect();
        v.extend(
            self.posted
                .difference(&self.posted_taken)
                .map(|t| format!("posted token {t:#x}")),
        );
        v.sort();
        v
    }
}

/// What every thread of the mixed stress shares.
#[derive(Clone)]
struct Shared {
    port: Port,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    start: Arc<Barrier>,
    next_token: Arc<AtomicU64>,
}

/// One thread of the mixed stress that submits, cancels, posts and gets on
/// a socket of its own, with a generator seeded by its index.
struct Worker {
    s: Shared,
    t: usize,
    sock: Handle,
    rng: Rng,
    sent: u64,
    mine: Vec<OpId>,
    ops: u64,
    got: u64,
}

impl Worker {
    /// Runs until told to stop, then takes what is left; (operations, packets).
    fn run(mut self) -> (u64, u64) {
        self.s.start.wait();
        while !self.s.stop.load(Ordering::Relaxed) {
            self.step();
        }
        self.wind_down();
        (self.ops, self.got)
    }

    fn take(&mut self, p: Packet) {
        self.got += 1;
        lock(&self.s.ledger).take(&p, self.t);
    }

    /// One random action.
    fn step(&mut self) {
        match self.rng.below(10) {
            0 | 1 => self.post(),
            2 | 3 => self.short_timer(),
            4 => self.hour_timer(),
            5 => self.cancel_any(),
            6 => self.send(),
            7 => self.get_many(),
            _ => {
                let t = self.t;
                match self
                    .s
                    .port
                    .get(Some(Duration::from_millis(self.rng.below(3))))
                {
                    Ok(p) => self.take(p),
                    Err(GetError::TimedOut) => {}
                    Err(e) => panic!("thread {t}: get on an open port: {e:?}"),
                }
            }
        }
    }

    fn post(&mut self) {
        let token = self.s.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&self.s.ledger).posted.insert(token);
        self.s.port.post(self.t as u64, 0, token).unwrap();
    }

    fn short_timer(&mut self) {
        let (t, ms) = (self.t, self.rng.below(3));
        let mut l = lock(&self.s.ledger);
        match self
            .s
            .port
            .submit(Timeout::new(Duration::from_millis(ms), 0))
        {
            Ok(id) => l.submitted(id, t, "short timer"),
            Err((e, _)) => l.errors.push(format!("thread {t}: timer refused: {e}")),
        }
        self.ops += 1;
    }

    fn hour_timer(&mut self) {
        let t = self.t;
        let mut l = lock(&self.s.ledger);
        match self
            .s
            .port
            .submit(Timeout::new(Duration::from_secs(3600), 1))
        {
            Ok(id) => {
                l.submitted(id, t, "hour timer");
                l.cancellable.push(id);
                self.mine.push(id);
            }
            Err((e, _)) => l.errors.push(format!("thread {t}: timer refused: {e}")),
        }
        self.ops += 1;
    }

    /// Cancels anyone's pending timer, or our own.
    fn cancel_any(&mut self) {
        let t = self.t;
        let mut l = lock(&self.s.ledger);
        if !l.cancellable.is_empty() {
            let i = self.rng.below(l.cancellable.len() as u64) as usize;
            let id = l.cancellable.swap_remove(i);
            drop(l);
            let r = self.s.port.cancel(id);
            let mut l = lock(&self.s.ledger);
            l.cancels += 1;
            if let Err(e) = r {
                l.errors.push(format!(
                    "thread {t}: cancel of pending hour timer {id:?}: {e}"
                ));
            }
        }
    }

    fn send(&mut self) {
        let t = self.t;
        let len = 1 + self.rng.below(4096) as usize;
        let data = pattern(t as u64, self.sent, len);
        let mut l = lock(&self.s.ledger);
        match self.s.port.submit(Send::new(&self.sock, data)) {
            Ok(id) => l.submitted(id, t, "send"),
            Err((e, _)) => l.errors.push(format!("thread {t}: send refused: {e}")),
        }
        self.sent += len as u64;
        self.ops += 1;
    }

    fn get_many(&mut self) {
        let t = self.t;
        let mut out = Vec::new();
        let max = 1 + self.rng.below(8) as usize;
        match self
            .s
            .port
            .get_many(&mut out, max, Some(Duration::from_millis(5)))
        {
            Ok(n) => {
                assert_eq!(n, out.len());
                for p in out {
                    self.take(p);
                }
            }
            Err(GetError::TimedOut) => {}
            Err(e) => panic!("thread {t}: get_many on an open port: {e:?}"),
        }
    }

    /// Takes what is left (the hour timers are cancelled by the main
    /// thread), until the ledger balances.
    fn wind_down(&mut self) {
        let t = self.t;
        let deadline = Instant::now() + BOUND;
        loop {
            {
                let l = lock(&self.s.ledger);
                if l.submitted.len() == l.taken.len() && l.posted.len() == l.posted_taken.len() {
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            match self.s.port.get(Some(Duration::from_millis(10))) {
                Ok(p) => self.take(p),
                Err(GetError::TimedOut) => {}
                Err(e) => panic!("thread {t}: get on an open port: {e:?}"),
            }
        }
    }
}

/// A thread that never waits: its operations (timers) are handed to the
/// others. Returns its count of operations.
fn foreign(s: Shared) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut rng = Rng::new(12345);
        let mut ops = 0u64;
        s.start.wait();
        while !s.stop.load(Ordering::Relaxed) {
            let mut l = lock(&s.ledger);
            if rng.below(2) == 0 {
                match s
                    .port
                    .submit(Timeout::new(Duration::from_millis(rng.below(2)), 0))
                {
                    Ok(id) => l.submitted(id, 99, "handed-over short timer"),
                    Err((e, _)) => l.errors.push(format!("foreign: timer refused: {e}")),
                }
            } else {
                match s.port.submit(Timeout::new(Duration::from_secs(3600), 1)) {
                    Ok(id) => {
                        l.submitted(id, 99, "handed-over hour timer");
                        l.cancellable.push(id);
                    }
                    Err((e, _)) => l.errors.push(format!("foreign: timer refused: {e}")),
                }
            }
            ops += 1;
            drop(l);
            thread::sleep(Duration::from_micros(200));
        }
        ops
    })
}

/// One backend's run of the mixed stress; returns (operations, packets).
fn mixed(backend: Backend, threads: usize, strict: bool, run_for: Duration) -> (u64, u64) {
    let port = Port::builder()
        .backend(backend)
        .concurrency(threads / 2)
        .strict(strict)
        .build()
        .unwrap();
    let s = Shared {
        port: port.clone(),
        ledger: Arc::new(Mutex::new(Ledger::default())),
        stop: Arc::new(AtomicBool::new(false)),
        start: Arc::new(Barrier::new(threads + 2)),
        next_token: Arc::new(AtomicU64::new(1)),
    };
    let mut handles = Vec::new();
    let mut readers = Vec::new();
    for t in 0..threads {
        let (ours, theirs) = harness::pair();
        readers.push(Reader::start(theirs, t % 2 == 0));
        let s = s.clone();
        handles.push(thread::spawn(move || {
            s.port.attach().unwrap();
            let sock = s.port.associate(ours, 100 + t as u64);
            let rng = Rng::new(0x9e37_79b9 + t as u64 * 7919);
            let w = Worker {
                s,
                t,
                sock,
                rng,
                sent: 0,
                mine: Vec::new(),
                ops: 0,
                got: 0,
            };
            w.run()
        }));
    }
    let foreign = foreign(s.clone());
    s.start.wait();
    thread::sleep(run_for);
    s.stop.store(true, Ordering::Relaxed);
    let foreign_ops = foreign.join().unwrap();
    // Cancel every hour timer still pending, from this thread.
    let pending: Vec<OpId> = std::mem::take(&mut lock(&s.ledger).cancellable);
    for id in pending {
        if let Err(e) = port.cancel(id) {
            // Only NotFound is possible, and only if it already completed —
            // which an hour timer cannot have done unless cancelled.
            lock(&s.ledger)
                .errors
                .push(format!("main: cancel of pending hour timer {id:?}: {e}"));
        }
    }
    let mut ops = foreign_ops;
    let mut got = 0;
    for h in handles {
        let (o, g) = h.join().unwrap();
        ops += o;
        got += g;
    }
    // The port goes (every reference to it) before the peers are read to EOF.
    let Shared { ledger, .. } = s;
    check_mixed(backend, strict, &ledger, readers, port);
    (ops, got)
}

/// Every packet taken once, no error, and each socket's stream in order.
fn check_mixed(
    backend: Backend,
    strict: bool,
    ledger: &Mutex<Ledger>,
    readers: Vec<Reader>,
    port: Port,
) {
    let l = lock(ledger);
    let missing = l.missing();
    assert!(
        l.errors.is_empty() && missing.is_empty(),
        "{backend} (strict {strict}): {} error(s): {:?}; {} packet(s) never taken within {BOUND:?} \
         (first 20): {:?}",
        l.errors.len(),
        &l.errors[..l.errors.len().min(20)],
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    drop(l);
    drop(port);
    for (t, r) in readers.into_iter().enumerate() {
        let s = r.finish(BOUND).unwrap();
        assert!(
            s == pattern(t as u64, 0, s.len()),
            "{backend}: thread {t}'s sends reached its peer out of order"
        );
    }
}

#[test]
fn threads_submit_cancel_post_and_get_with_every_packet_accounted_for() {
    let _dog = harness::Watchdog::new(
        "threads_submit_cancel_post_and_get_with_every_packet_accounted_for",
        hang(),
    );
    let secs = env_num("IOCOMP_STRESS_SECS", 3);
    for backend in harness::backends() {
        for (threads, strict) in [(6, false), (4, true)] {
            let t = Instant::now();
            let (ops, got) = mixed(backend, threads, strict, Duration::from_secs(secs) / 2);
            println!(
                "stress: {backend} {threads} threads strict {strict}: {ops} operations, {got} packets, {:.1?}",
                t.elapsed()
            );
            assert!(ops > 0 && got > 0);
        }
    }
}

#[test]
fn cancelled_waitable_timers_on_a_one_worker_pool_always_complete() {
    let _dog = harness::Watchdog::new(
        "cancelled_waitable_timers_on_a_one_worker_pool_always_complete",
        hang(),
    );
    let rounds = 3000 * scale();
    for backend in harness::backends() {
        let port = Port::builder().backend(backend).build().unwrap();
        let mut pool = Pool::new(&port, 1, |_, _| {}).unwrap();
        let t = Instant::now();
        for i in 0..rounds {
            let [a, b] = harness::two_cancelled_hour_timers(&port);
            for (name, ov) in [("first", &a), ("second", &b)] {
                let p = ov.wait(Some(Duration::from_secs(10))).unwrap_or_else(|| {
                    panic!(
                        "{backend}: round {i}: the {name} cancelled timer ({:?}) never completed \
                         (10 s): a lost cancel or a lost wake",
                        ov.id()
                    )
                });
                assert!(p.is_aborted(), "{backend}: round {i}: {:?}", p.status);
            }
        }
        println!(
            "stress: {backend}: {rounds} rounds of two cancelled waitable timers in {:.1?}",
            t.elapsed()
        );
        pool.shutdown();
    }
}

#[test]
fn two_big_sends_on_one_socket_reach_the_reader_in_order() {
    let _dog = harness::Watchdog::new(
        "two_big_sends_on_one_socket_reach_the_reader_in_order",
        hang(),
    );
    const BIG: usize = 8 << 20;
    let rounds = 4 * scale();
    for backend in harness::backends() {
        let port = Port::builder().backend(backend).build().unwrap();
        port.attach().unwrap();
        for round in 0..rounds {
            // A slow reader (short reads, pauses) and a fast one, in turn: the
            // first send goes out in short pieces either way.
            let (ours, theirs) = harness::pair();
            let reader = Reader::start(theirs, round % 2 == 1);
            let h = port.associate(ours, 5);
            let a = port
                .submit(Send::new(&h, pattern(1, 0, BIG)))
                .map_err(|(e, _)| e)
                .unwrap();
            let b = port
                .submit(Send::new(&h, pattern(2, 0, BIG)))
                .map_err(|(e, _)| e)
                .unwrap();
            let mut ids = HashSet::new();
            for _ in 0..2 {
                let p = port.get(Some(BOUND)).unwrap_or_else(|e| {
                    panic!("{backend}: round {round}: a send's packet never came: {e:?}")
                });
                assert!(
                    p.status.is_ok() && p.bytes == BIG as u64,
                    "{backend}: round {round}: {:?}, {} bytes",
                    p.status,
                    p.bytes
                );
                ids.insert(p.id);
            }
            assert_eq!(ids, HashSet::from([a, b]));
            drop(h);
            let s = reader.finish(BOUND).unwrap();
            assert_eq!(s.len(), 2 * BIG, "{backend}: round {round}");
            let first = s[..BIG] == pattern(1, 0, BIG)[..];
            let second = s[BIG..] == pattern(2, 0, BIG)[..];
            assert!(
                first && second,
                "{backend}: round {round}: the peer did not get the first send then the second \
                 (first intact: {first}, second intact: {second})"
            );
        }
    }
}

#[test]
fn ids_are_not_reused_across_detach_and_new_threads() {
    let _dog = harness::Watchdog::new("ids_are_not_reused_across_detach_and_new_threads", hang());
    let cycles = 200 * scale();
    for backend in harness::backends() {
        let port = Port::builder().backend(backend).build().unwrap();
        let mut seen = HashMap::new();
        for cycle in 0..cycles {
            let p = port.clone();
            let ids = thread::spawn(move || {
                p.attach().unwrap();
                let mut ids = Vec::new();
                for k in 0..3 {
                    let id = p
                        .submit(Timeout::new(Duration::ZERO, k))
                        .map_err(|(e, _)| e)
                        .unwrap();
                    ids.push(id);
                }
                // Take one, detach with the others perhaps still pending.
                let _ = p.get(Some(BOUND)).unwrap();
                p.detach();
                // After detaching, the thread's next operation (handed over or
                // refused) must not reuse an id either: attach again first.
                p.attach().unwrap();
                let id = p
                    .submit(Timeout::new(Duration::ZERO, 9))
                    .map_err(|(e, _)| e)
                    .unwrap();
                ids.push(id);
                ids
            })
            .join()
            .unwrap();
            for id in ids {
                if let Some(prev) = seen.insert(id, cycle) {
                    panic!(
                        "{backend}: id {id:?} of cycle {cycle} was already given in cycle {prev}"
                    );
                }
            }
            // Take every packet so the port stays small.
            while port.get(Some(Duration::from_millis(20))).is_ok() {}
        }
        // One thread, many operations: all ids distinct.
        port.attach().unwrap();
        let mut mine = HashSet::new();
        for _ in 0..2000 * scale() {
            let id = port
                .submit(Timeout::new(Duration::ZERO, 0))
                .map_err(|(e, _)| e)
                .unwrap();
            assert!(mine.insert(id), "{backend}: id {id:?} reused on one thread");
            assert!(!seen.contains_key(&id), "{backend}: id {id:?} reused");
            let p = port.get(Some(BOUND)).unwrap();
            assert!(p.id == id || seen.contains_key(&p.id) || mine.contains(&p.id));
        }
    }
}

#[test]
fn get_with_the_longest_timeout_returns_instead_of_panicking() {
    let _dog = harness::Watchdog::new(
        "get_with_the_longest_timeout_returns_instead_of_panicking",
        hang(),
    );
    for backend in harness::backends() {
        let port = Port::builder()
            .backend(backend)
            .concurrency(2)
            .build()
            .unwrap();
        // A packet is queued: returns it at once.
        harness::queued_packets_come_back_under_the_largest_timeout(&port);
        // Nothing queued: parks, and a post wakes it.
        let p2 = port.clone();
        let waiter = thread::spawn(move || p2.get(Some(Duration::MAX)).map(|p| p.key));
        assert!(
            harness::until(BOUND, || port.waiters() == 1),
            "{backend}: the waiter never parked (or panicked)"
        );
        port.post(7, 0, 0).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(7), "{backend}");
        // A waitable operation waited for with the longest timeout.
        let mut pool = Pool::new(&port, 1, |_, _| {}).unwrap();
        let ov = port
            .submit_waitable(Timeout::new(Duration::from_millis(1), 8))
            .map_err(|(e, _)| e)
            .unwrap();
        let p = ov.wait(Some(Duration::MAX)).expect("the timer's packet");
        assert_eq!(p.key, 8);
        // A receive, to keep `Recv` honest under the same port: nothing sent,
        // cancelled, ECANCELED.
        let (ours, _theirs) = harness::pair();
        let h = port.associate(ours, 9);
        let ov = port
            .submit_waitable(Recv::new(&h, Vec::with_capacity(8)))
            .map_err(|(e, _)| e)
            .unwrap();
        ov.cancel().unwrap();
        let p = ov.wait(Some(Duration::MAX)).expect("the receive's packet");
        assert!(p.is_aborted(), "{backend}: {:?}", p.status);
        pool.shutdown();
    }
}
