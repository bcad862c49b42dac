//! Model-based differential test of the engine.
//!
//! proptest generates random programs of operations — posts; sends, receives,
//! timers, transmits, connects and accepts on loopback sockets; cancels from the
//! issuing thread and from others; `get`/`get_many` with timeouts;
//! attach/detach; short-lived threads that submit and exit; LIFO probes; port
//! close — and runs each program on **both** backends, checking every step
//! against a small reference model of the IOCP rules, written from the
//! documentation (`docs/iocp-behaviours.md`, the crate's rustdoc), not from
//! the engine:
//!
//! - exactly one packet per accepted submission (`Ok`), none for a refused one;
//! - the peer's byte stream is the concatenation of the sends (and transmits)
//!   in submission order, each cut at the `bytes` its packet reports;
//! - receives on one socket take the peer's bytes in submission order;
//! - posted packets come out FIFO, with their values untouched, and a queued
//!   posted packet is never missed by `get`, whatever its timeout;
//! - `OpId`s are unique for the life of the port (across detach/attach and
//!   threads);
//! - a cancelled operation yields `ECANCELED` or its real result, and one that
//!   nobody cancelled is never aborted; `cancel` of an operation whose packet
//!   was taken says `NotFound`, of a pending hour-long timer `Ok`;
//! - the newest of two parked waiters gets a posted packet first (LIFO);
//! - after the port closes, `get` says `Abandoned`, `post` fails, and every
//!   descriptor is closed once the operations are gone;
//! - both backends accept and refuse the same submissions and agree on every
//!   result the specification makes deterministic.
//!
//! Cases: `IOCOMP_DIFF_CASES` (default [`CI_CASES`]; ten times that for a
//! longer run by hand), else `PROPTEST_CASES`. A failure is shrunk (for at most
//! `IOCOMP_DIFF_SHRINK_SECS`, default 180) and its seed saved in
//! `differential.proptest-regressions` beside this file, which every run
//! replays first; `PROPTEST_RNG_SEED` fixes the generator. Run with
//! `--nocapture` to see the totals (programs, steps, operations, packets).
//!
//! [`programs_that_found_defects_stay_fixed`] runs, by name, the programs that
//! found defects, so that each one stays a deterministic check.
//!
//! The types (programs, the model, the shared state of a run) are here; the
//! rest is in `differential/`: [`program`] (the generators and the known
//! programs), [`model`] (the reference model's rules), [`submit`] (turning
//! steps into submissions), [`packets`] (checking packets against the
//! model), [`run`] (running a program and checking the streams).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use iocomp::{
    Accept, Backend, Connect, GetError, Handle, Op, OpId, Packet, Port, Recv, Send, Timeout,
    TransmitFile,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

use crate::harness::{self, env_num, pattern, Reader};

macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

mod model;
mod packets;
mod program;
mod run;
mod submit;

use model::*;
use program::*;
use run::*;

/// Programs per run in CI (each runs on both backends).
const CI_CASES: u64 = 200;
/// Bound on every wait for a packet that must come.
const DRAIN: Duration = Duration::from_secs(20);
/// One program run that takes longer has hung (every wait in it is bounded
/// far below this): the process ends with the program printed.
const HANG: Duration = Duration::from_secs(300);
/// Size of the file that transmits read from.
const FILE_LEN: u64 = 300_000;
/// The most a program writes into one socket from the far side (so that a
/// plain blocking write never blocks: nobody may be receiving).
const PEER_BUDGET: u64 = 48 << 10;
/// Posted tokens at or above this go to LIFO probe threads only.
const PROBE: u64 = 1 << 62;

const SEND_SEED: u64 = 1 << 40;
const PEER_SEED: u64 = 2 << 40;
const HEAD_SEED: u64 = 3 << 40;
const TAIL_SEED: u64 = 4 << 40;
const FILE_SEED: u64 = 5 << 40;

#[derive(Debug, Clone)]
enum Dur {
    Zero,
    Ms(u8),
    Hour,
    Max,
}

#[derive(Debug, Clone)]
enum Wait {
    Zero,
    Ms(u8),
    Max,
}

#[derive(Debug, Clone)]
enum Step {
    Post {
        key: u64,
        bytes: u64,
    },
    Send {
        sock: usize,
        len: usize,
    },
    Recv {
        sock: usize,
        cap: usize,
        pooled: bool,
    },
    PeerWrite {
        sock: usize,
        len: usize,
    },
    Timeout(Dur),
    Transmit {
        sock: usize,
        off: u64,
        len: u64,
        head: usize,
        tail: usize,
    },
    Connect {
        live: bool,
    },
    Accept,
    Cancel {
        target: usize,
        other_thread: bool,
    },
    CancelPosted,
    Get(Wait),
    GetMany {
        max: usize,
        wait: Wait,
    },
    Attach,
    Detach,
    Thread {
        attach: bool,
        detach: bool,
        steps: Vec<Step>,
    },
    LifoProbe,
    Close,
}

#[derive(Debug, Clone)]
struct Program {
    concurrency: usize,
    strict: bool,
    socks: usize,
    slow_reader: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Timeout {
        long: bool,
        key: u64,
    },
    Send {
        sock: usize,
        len: usize,
    },
    Recv {
        sock: usize,
        spare: usize,
        prefix: usize,
        pooled: bool,
    },
    /// `file`: the file bytes a correct transfer sends, `None` where the range
    /// is outside the file (the operation must fail); `sure`: whether the
    /// specification fixes the outcome (not for an offset at the very end).
    Transmit {
        sock: usize,
        head: usize,
        off: u64,
        file: Option<u64>,
        tail: usize,
        sure: bool,
    },
    Connect {
        live: bool,
        key: u64,
    },
    Accept,
}

#[derive(Debug)]
struct Got {
    status: Result<(), String>,
    bytes: u64,
    aborted: bool,
    data: Vec<u8>,
    peer: Option<SocketAddr>,
}

#[derive(Debug)]
struct OpRec {
    at: String,
    kind: Kind,
    owner: usize,
    id: Option<OpId>,
    refused: Option<std::io::ErrorKind>,
    /// A cancel was asked for, or its thread detached or exited, while it was
    /// in flight: its packet may say ECANCELED.
    disturbed: bool,
    got: Option<Got>,
}

#[derive(Default)]
struct Model {
    ops: Vec<OpRec>,
    by_id: HashMap<u64, usize>,
    posted_next: u64,
    posted: VecDeque<(u64, u64, u64)>,
    peer_written: Vec<u64>,
    main_attached: bool,
    closed: bool,
    conns: Vec<Handle>,
    next_thread: usize,
    packets: u64,
    cancels: u64,
    gets: u64,
}

type R<T = ()> = Result<T, String>;

struct Shared {
    port: Port,
    socks: Vec<Handle>,
    peers: Mutex<Vec<TcpStream>>,
    listener: Handle,
    live: SocketAddr,
    dead: SocketAddr,
    file: Arc<File>,
    m: Mutex<Model>,
}

#[derive(Clone, Copy)]
struct Who {
    thread: usize,
    attached: bool,
}

/// What one run of a program on one backend established.
struct Outcome {
    /// Per operation: acceptance and, where the specification fixes it, the result.
    sig: Vec<(String, Option<String>)>,
    steps: u64,
    ops: u64,
    packets: u64,
    cancels: u64,
}

/// Programs that failed once (shrunk by the random test, or the issue's own
/// reproductions), run on both backends every time: a named, deterministic
/// check per defect. Every failure is reported, not only the first.
#[test]
fn programs_that_found_defects_stay_fixed() {
    let known = known_programs();
    let backends = harness::backends();
    let mut failed = Vec::new();
    for (name, prog) in &known {
        for &backend in &backends {
            let dog = harness::Watchdog::new(format!("[{backend}] {name}"), HANG);
            let r = std::panic::catch_unwind(|| run(prog, backend));
            drop(dog);
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => failed.push(format!("[{backend}] {name}: {e}")),
                Err(panic) => failed.push(format!(
                    "[{backend}] {name}: panicked: {}",
                    panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or(panic.downcast_ref::<&str>().copied())
                        .unwrap_or("?")
                )),
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} known programs failed:\n{}",
        failed.len(),
        known.len() * backends.len(),
        failed.join("\n")
    );
}

static PROGRAMS: AtomicU64 = AtomicU64::new(0);
static STEPS: AtomicU64 = AtomicU64::new(0);
static OPS: AtomicU64 = AtomicU64::new(0);
static PACKETS: AtomicU64 = AtomicU64::new(0);
static CANCELS: AtomicU64 = AtomicU64::new(0);
static PROBES: AtomicU64 = AtomicU64::new(0);

#[test]
fn random_programs_follow_the_iocp_model_and_agree_across_backends() {
    let backends = harness::backends();
    let cases = match std::env::var("IOCOMP_DIFF_CASES") {
        Ok(_) => env_num("IOCOMP_DIFF_CASES", CI_CASES),
        Err(_) => env_num("PROPTEST_CASES", CI_CASES),
    };
    let mut config = Config::with_cases(cases as u32);
    config.source_file = Some(file!());
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    config.max_shrink_iters = 4096;
    config.max_shrink_time = (env_num("IOCOMP_DIFF_SHRINK_SECS", 180) * 1000) as u32;
    let time: Vec<Mutex<Duration>> = backends
        .iter()
        .map(|_| Mutex::new(Duration::ZERO))
        .collect();
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let result = runner.run(&program(), |prog| {
        let mut outs = Vec::new();
        for (b, &backend) in backends.iter().enumerate() {
            let t = Instant::now();
            let dog = harness::Watchdog::new(format!("[{backend}] {prog:#?}"), HANG);
            let out =
                run(&prog, backend).map_err(|e| TestCaseError::fail(format!("[{backend}] {e}")));
            drop(dog);
            *time[b].lock().unwrap() += t.elapsed();
            let out = out?;
            PROGRAMS.fetch_add(1, Ordering::Relaxed);
            STEPS.fetch_add(out.steps, Ordering::Relaxed);
            OPS.fetch_add(out.ops, Ordering::Relaxed);
            PACKETS.fetch_add(out.packets, Ordering::Relaxed);
            CANCELS.fetch_add(out.cancels, Ordering::Relaxed);
            outs.push((backend, out));
        }
        if let [(b0, o0), (b1, o1)] = &outs[..] {
            for (i, (x, y)) in o0.sig.iter().zip(&o1.sig).enumerate() {
                let same_fate = x.0 == y.0;
                let same_result = match (&x.1, &y.1) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if !same_fate || !same_result {
                    return Err(TestCaseError::fail(format!(
                        "backends disagree on op #{i}: {b0}: {x:?}, {b1}: {y:?}"
                    )));
                }
            }
        }
        Ok(())
    });
    println!(
        "differential: {} program runs ({} cases x {} backend(s)), {} steps, {} operations submitted, \
         {} packets checked, {} cancels, {} LIFO probes, in {:.1?}",
        PROGRAMS.load(Ordering::Relaxed),
        cases,
        backends.len(),
        STEPS.load(Ordering::Relaxed),
        OPS.load(Ordering::Relaxed),
        PACKETS.load(Ordering::Relaxed),
        CANCELS.load(Ordering::Relaxed),
        PROBES.load(Ordering::Relaxed),
        started.elapsed()
    );
    for (b, backend) in backends.iter().enumerate() {
        println!("differential: {backend}: {:.1?}", *time[b].lock().unwrap());
    }
    if let Err(e) = result {
        panic!(
            "{e}\n(the failing case's seed is saved in tests/engine/differential.proptest-regressions and \
             replayed first by the next run)"
        );
    }
}
