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

mod support;

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

use support::{env_num, pattern, Reader};

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

// ---------------------------------------------------------------- programs

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

fn send_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 1usize..64,
        3 => 1024usize..65536,
        2 => 200_000usize..1_500_000,
        1 => 3_000_000usize..8_000_000,
    ]
}

/// Steps any thread may run: they submit, post or cancel, and never wait.
fn leaf() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<u64>(), any::<u64>()).prop_map(|(key, bytes)| Step::Post { key, bytes }),
        5 => (0usize..2, send_len()).prop_map(|(sock, len)| Step::Send { sock, len }),
        3 => (0usize..2, 1usize..9000, any::<bool>())
            .prop_map(|(sock, cap, pooled)| Step::Recv { sock, cap, pooled }),
        3 => (0usize..2, 1usize..6000).prop_map(|(sock, len)| Step::PeerWrite { sock, len }),
        4 => prop_oneof![
            1 => Just(Dur::Zero),
            4 => any::<u8>().prop_map(Dur::Ms),
            2 => Just(Dur::Hour),
            1 => Just(Dur::Max),
        ]
        .prop_map(Step::Timeout),
        2 => (
            0usize..2,
            prop_oneof![
                Just(0u64),
                0..FILE_LEN,
                Just(FILE_LEN),
                Just(FILE_LEN + 100)
            ],
            prop_oneof![Just(0u64), 1u64..100_000, Just(FILE_LEN)],
            0usize..300,
            0usize..300
        )
            .prop_map(|(sock, off, len, head, tail)| Step::Transmit { sock, off, len, head, tail }),
        2 => prop_oneof![3 => Just(true), 1 => Just(false)].prop_map(|live| Step::Connect { live }),
        1 => Just(Step::Accept),
        4 => (any::<usize>(), any::<bool>())
            .prop_map(|(target, other_thread)| Step::Cancel { target, other_thread }),
        1 => Just(Step::CancelPosted),
    ]
}

fn wait() -> impl Strategy<Value = Wait> {
    prop_oneof![
        3 => Just(Wait::Zero),
        4 => any::<u8>().prop_map(Wait::Ms),
        1 => Just(Wait::Max),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        30 => leaf(),
        8 => wait().prop_map(Step::Get),
        3 => (1usize..8, wait()).prop_map(|(max, wait)| Step::GetMany { max, wait }),
        1 => Just(Step::Attach),
        2 => Just(Step::Detach),
        3 => (any::<bool>(), any::<bool>(), prop::collection::vec(leaf(), 1..6))
            .prop_map(|(attach, detach, steps)| Step::Thread { attach, detach, steps }),
        1 => Just(Step::LifoProbe),
        1 => Just(Step::Close),
    ]
}

fn program() -> impl Strategy<Value = Program> {
    (
        prop_oneof![Just(1usize), Just(2), Just(4)],
        any::<bool>(),
        1usize..=2,
        any::<bool>(),
        prop::collection::vec(step(), 1..32),
    )
        .prop_map(|(concurrency, strict, socks, slow_reader, steps)| Program {
            concurrency,
            strict,
            socks,
            slow_reader,
            steps,
        })
}

// ---------------------------------------------------------------- the model

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

impl Kind {
    /// Completes by itself (given a reader that drains every socket).
    fn finite(self) -> bool {
        match self {
            Kind::Timeout { long, .. } => !long,
            Kind::Send { .. } | Kind::Transmit { .. } | Kind::Connect { .. } => true,
            Kind::Recv { .. } | Kind::Accept => false,
        }
    }
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

impl Model {
    fn describe(&self, i: usize) -> String {
        let o = &self.ops[i];
        format!(
            "op #{i} (step {}, {:?}, id {:?}, thread {}, disturbed {})",
            o.at, o.kind, o.id, o.owner, o.disturbed
        )
    }

    fn outstanding(&self) -> impl Iterator<Item = usize> + '_ {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.id.is_some() && o.got.is_none())
            .map(|(i, _)| i)
    }
}

type R<T = ()> = Result<T, String>;

macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn errno(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("os {n}"),
        None => format!("{:?}", e.kind()),
    }
}

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

fn the_file() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    // Always the same bytes: written under a name of this process's own and
    // renamed into place, so that runs in parallel never see it half written.
    PATH.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("differential-transmit.bin");
        let tmp = dir.join(format!("differential-transmit.{}", std::process::id()));
        let mut f = File::create(&tmp).unwrap();
        f.write_all(&pattern(FILE_SEED, 0, FILE_LEN as usize))
            .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, m: &mut Model, who: Who, at: &str, kind: Kind, op: Op) -> R {
        let idx = m.ops.len();
        let want = format!("{op:?}");
        let want = want.split(' ').next().unwrap_or("").to_string();
        let (id, refused) = match self.port.submit(op) {
            Ok(id) => {
                check!(
                    id != OpId::POSTED,
                    "step {at}: submit gave the posted packets' id"
                );
                if let Some(&j) = m.by_id.get(&id.as_u64()) {
                    return Err(format!(
                        "step {at}: OpId {id:?} reused: it was given to {} already",
                        m.describe(j)
                    ));
                }
                m.by_id.insert(id.as_u64(), idx);
                (Some(id), None)
            }
            Err((e, back)) => {
                let got = format!("{back:?}");
                check!(
                    got.split(' ').next() == Some(want.as_str()),
                    "step {at}: a refused {want} handed back {got}"
                );
                (None, Some(e.kind()))
            }
        };
        // Owner: the thread whose ring runs it. A thread that is not attached
        // hands its operations to the main thread, the only other one attached.
        let owner = if who.attached { who.thread } else { 0 };
        let orphan = !who.attached && !m.main_attached;
        m.ops.push(OpRec {
            at: at.to_string(),
            kind,
            owner,
            id,
            refused,
            disturbed: orphan,
            got: None,
        });
        Ok(())
    }

    /// A step that any thread may run.
    fn leaf(&self, step: &Step, who: Who, at: &str) -> R {
        let mut m = self.lock();
        check!(!m.closed, "internal: step after close");
        let idx = m.ops.len();
        let nsocks = self.socks.len();
        match *step {
            Step::Post { key, bytes } => {
                let token = m.posted_next;
                m.posted_next += 1;
                self.port
                    .post(key, bytes, token)
                    .map_err(|e| format!("step {at}: post on an open port failed: {e}"))?;
                m.posted.push_back((token, key, bytes));
            }
            Step::Send { sock, len } => {
                let sock = sock % nsocks;
                let data = pattern(SEND_SEED + idx as u64, 0, len);
                let op = Send::new(&self.socks[sock], data);
                self.submit(&mut m, who, at, Kind::Send { sock, len }, op.into())?;
            }
            Step::Recv { sock, cap, pooled } => {
                let sock = sock % nsocks;
                let prefix = vec![0xab, idx as u8, 0xcd];
                let mut buf = Vec::with_capacity(prefix.len() + cap);
                buf.extend_from_slice(&prefix);
                let spare = buf.capacity() - buf.len();
                let h = &self.socks[sock];
                let op = if pooled {
                    Recv::pooled(h, buf)
                } else {
                    Recv::new(h, buf)
                };
                let kind = Kind::Recv {
                    sock,
                    spare,
                    prefix: prefix.len(),
                    pooled,
                };
                self.submit(&mut m, who, at, kind, op.into())?;
            }
            Step::PeerWrite { sock, len } => {
                let sock = sock % nsocks;
                let done = m.peer_written[sock];
                let len = (len as u64).min(PEER_BUDGET - done);
                if len > 0 {
                    let data = pattern(PEER_SEED + sock as u64, done, len as usize);
                    support::write_peer(&mut self.peers.lock().unwrap()[sock], &data);
                    m.peer_written[sock] += len;
                }
            }
            Step::Timeout(ref d) => {
                let (dur, long) = match d {
                    Dur::Zero => (Duration::ZERO, false),
                    Dur::Ms(v) => (Duration::from_millis(1 + u64::from(*v) % 20), false),
                    Dur::Hour => (Duration::from_secs(3600), true),
                    Dur::Max => (Duration::MAX, true),
                };
                let key = 0x7000 + idx as u64;
                let op = Timeout::new(dur, key);
                self.submit(&mut m, who, at, Kind::Timeout { long, key }, op.into())?;
            }
            Step::Transmit {
                sock,
                off,
                len,
                head,
                tail,
            } => {
                let sock = sock % nsocks;
                let mut op = TransmitFile::new(&self.socks[sock], self.file.clone());
                op.offset = off;
                op.len = len;
                op.head = pattern(HEAD_SEED + idx as u64, 0, head);
                op.tail = pattern(TAIL_SEED + idx as u64, 0, tail);
                // What a correct transfer sends of the file, and whether the
                // specification says so for certain.
                let (file, sure) = if off > FILE_LEN {
                    (None, true) // outside the file: must fail
                } else if len == 0 {
                    (Some(FILE_LEN - off), off < FILE_LEN) // off == end: unspecified
                } else if off + len <= FILE_LEN {
                    (Some(len), true)
                } else {
                    (None, true) // shorter than promised: must fail
                };
                let kind = Kind::Transmit {
                    sock,
                    head,
                    off,
                    file,
                    tail,
                    sure,
                };
                self.submit(&mut m, who, at, kind, op.into())?;
            }
            Step::Connect { live } => {
                let addr = if live { self.live } else { self.dead };
                let fd = Connect::stream_socket(&addr)
                    .map_err(|e| format!("step {at}: stream_socket: {e}"))?;
                let key = 0x3000 + idx as u64;
                let h = self.port.associate(fd, key);
                m.conns.push(h.clone());
                let op = Connect::new(&h, addr);
                self.submit(&mut m, who, at, Kind::Connect { live, key }, op.into())?;
            }
            Step::Accept => {
                let op = Accept::new(&self.listener);
                self.submit(&mut m, who, at, Kind::Accept, op.into())?;
            }
            Step::Cancel {
                target,
                other_thread,
            } => {
                if m.ops.is_empty() {
                    return Ok(());
                }
                let t = target % m.ops.len();
                let Some(id) = m.ops[t].id else {
                    return Ok(());
                };
                let r = if other_thread {
                    let port = self.port.clone();
                    thread::spawn(move || port.cancel(id))
                        .join()
                        .map_err(|_| format!("step {at}: cancel panicked"))?
                } else {
                    self.port.cancel(id)
                };
                m.cancels += 1;
                let o = &m.ops[t];
                if let Err(e) = &r {
                    check!(
                        e.kind() == std::io::ErrorKind::NotFound,
                        "step {at}: cancel of {} failed with {e} (only Ok or NotFound)",
                        m.describe(t)
                    );
                }
                if o.got.is_some() {
                    check!(
                        r.is_err(),
                        "step {at}: cancel of {} answered Ok, but its packet was already taken",
                        m.describe(t)
                    );
                } else if matches!(o.kind, Kind::Timeout { long: true, .. }) && !o.disturbed {
                    check!(
                        r.is_ok(),
                        "step {at}: cancel of {}, a pending hour-long timer nobody touched, \
                         answered {r:?}",
                        m.describe(t)
                    );
                }
                if o.got.is_none() {
                    m.ops[t].disturbed = true;
                }
            }
            Step::CancelPosted => {
                let r = self.port.cancel(OpId::POSTED);
                check!(
                    matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::NotFound),
                    "step {at}: cancel(OpId::POSTED) answered {r:?}, not NotFound"
                );
            }
            _ => return Err(format!("internal: {step:?} is not a leaf")),
        }
        Ok(())
    }

    /// Checks one packet taken by the main thread against the model.
    fn on_packet(&self, m: &mut Model, p: Packet, at: &str) -> R {
        m.packets += 1;
        if let Op::Posted { token } = p.op {
            check!(
                token < PROBE,
                "step {at}: the main thread got LIFO probe packet {token:#x}"
            );
            let Some((want, key, bytes)) = m.posted.pop_front() else {
                return Err(format!(
                    "step {at}: posted packet {token} that is not queued (none pending)"
                ));
            };
            check!(
                token == want,
                "step {at}: posted packets out of FIFO order: got token {token}, oldest queued is {want}"
            );
            check!(
                (p.key, p.bytes, p.id) == (key, bytes, OpId::POSTED) && p.status.is_ok(),
                "step {at}: posted packet {token} altered: key {} bytes {} id {:?} status {:?}",
                p.key,
                p.bytes,
                p.id,
                p.status
            );
            return Ok(());
        }
        check!(
            p.id != OpId::POSTED,
            "step {at}: an I/O packet ({:?}) carries the posted id",
            p.op
        );
        let Some(&i) = m.by_id.get(&p.id.as_u64()) else {
            return Err(format!(
                "step {at}: packet for id {:?} ({:?}, {:?}) that no accepted submission has",
                p.id, p.op, p.status
            ));
        };
        check!(
            m.ops[i].got.is_none(),
            "step {at}: a second packet ({:?}, {:?}, {} bytes) for {}",
            p.op,
            p.status,
            p.bytes,
            m.describe(i)
        );
        let what = m.describe(i);
        let o = &m.ops[i];
        let aborted = p.is_aborted();
        let status = p.status.as_ref().map(|_| ()).map_err(errno);
        check!(
            !aborted || o.disturbed,
            "step {at}: {what} came back ECANCELED, but nobody cancelled it"
        );
        let sk = |s: usize| self.socks[s].key();
        let mut got = Got {
            status: status.clone(),
            bytes: p.bytes,
            aborted,
            data: Vec::new(),
            peer: None,
        };
        match (o.kind, p.op) {
            (Kind::Timeout { long, key }, Op::Timeout(_)) => {
                check!(p.key == key, "step {at}: {what}: key {}", p.key);
                match &p.status {
                    Ok(()) => check!(
                        !long && p.bytes == 0,
                        "step {at}: {what} completed with success and {} bytes \
                         (a timer of an hour or more cannot have fired)",
                        p.bytes
                    ),
                    Err(e) => check!(
                        aborted,
                        "step {at}: {what} failed with {e} (a timer succeeds or is cancelled)"
                    ),
                }
            }
            (Kind::Send { sock, len }, Op::Send(s)) => {
                check!(p.key == sk(sock), "step {at}: {what}: key {}", p.key);
                check!(
                    s.buf.len() == len,
                    "step {at}: {what}: buffer handed back with {} bytes",
                    s.buf.len()
                );
                match &p.status {
                    Ok(()) => check!(
                        p.bytes == len as u64,
                        "step {at}: {what} succeeded with {} of {len} bytes",
                        p.bytes
                    ),
                    Err(e) => check!(
                        aborted && p.bytes <= len as u64,
                        "step {at}: {what} failed: {e}, {} bytes",
                        p.bytes
                    ),
                }
            }
            (
                Kind::Recv {
                    sock,
                    spare,
                    prefix,
                    pooled,
                },
                Op::Recv(r),
            ) => {
                check!(p.key == sk(sock), "step {at}: {what}: key {}", p.key);
                check!(
                    r.buf.len() >= prefix && r.buf[..prefix] == [0xab, i as u8, 0xcd],
                    "step {at}: {what}: the bytes already in the buffer were not kept"
                );
                let n = r.buf.len() - prefix;
                check!(
                    n as u64 == p.bytes,
                    "step {at}: {what}: {} bytes reported, {n} appended",
                    p.bytes
                );
                match &p.status {
                    Ok(()) => check!(
                        n >= 1 && (pooled || n <= spare),
                        "step {at}: {what}: {n} bytes into {spare} spare \
                         (the peer is open: 0 would be EOF)"
                    ),
                    Err(e) => check!(aborted && n == 0, "step {at}: {what} failed: {e}"),
                }
                got.data = r.buf[prefix..].to_vec();
            }
            (
                Kind::Transmit {
                    sock,
                    head,
                    file,
                    tail,
                    sure,
                    ..
                },
                Op::TransmitFile(_),
            ) => {
                check!(p.key == sk(sock), "step {at}: {what}: key {}", p.key);
                let total = file.map(|f| head as u64 + f + tail as u64);
                match (&p.status, total) {
                    (Ok(()), Some(t)) => check!(
                        p.bytes == t,
                        "step {at}: {what} succeeded with {} of {t} bytes",
                        p.bytes
                    ),
                    (Ok(()), None) => {
                        return Err(format!(
                            "step {at}: {what} succeeded ({} bytes) although the range \
                             is outside the file",
                            p.bytes
                        ))
                    }
                    (Err(e), Some(_)) => check!(
                        aborted || !sure,
                        "step {at}: {what} failed: {e} ({} bytes)",
                        p.bytes
                    ),
                    (Err(_), None) => {}
                }
            }
            (Kind::Connect { live, key }, Op::Connect(_)) => {
                check!(p.key == key, "step {at}: {what}: key {}", p.key);
                check!(p.bytes == 0, "step {at}: {what}: {} bytes", p.bytes);
                if !aborted {
                    if live {
                        check!(
                            p.status.is_ok(),
                            "step {at}: {what} to a listener failed: {:?}",
                            p.status
                        );
                    } else {
                        check!(
                            matches!(&p.status, Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED)),
                            "step {at}: {what} to a closed port: {:?}",
                            p.status
                        );
                    }
                }
            }
            (Kind::Accept, Op::Accept(a)) => {
                check!(
                    p.key == self.listener.key(),
                    "step {at}: {what}: key {}",
                    p.key
                );
                match &p.status {
                    Ok(()) => {
                        check!(
                            a.socket.is_some() && a.peer.is_some(),
                            "step {at}: {what} succeeded without a socket or peer"
                        );
                        got.peer = a.peer;
                    }
                    Err(e) => check!(aborted, "step {at}: {what} failed: {e}"),
                }
            }
            (_, op) => return Err(format!("step {at}: {what} came back as {op:?}")),
        }
        m.ops[i].got = Some(got);
        Ok(())
    }

    /// `get` or `get_many` on the main thread.
    fn get(&self, max: Option<usize>, w: &Wait, at: &str) -> R {
        let mut m = self.lock();
        let posted = m.posted.len();
        let t = match w {
            Wait::Zero => Some(Duration::ZERO),
            Wait::Ms(v) => Some(Duration::from_millis(1 + u64::from(*v) % 30)),
            // An unbounded wait only where a packet is certainly queued.
            Wait::Max if posted > 0 => Some(Duration::MAX),
            Wait::Max => Some(Duration::ZERO),
        };
        m.gets += 1;
        drop(m);
        let mut out = Vec::new();
        let r = match max {
            None => self.port.get(t).map(|p| {
                out.push(p);
                1
            }),
            Some(max) => self.port.get_many(&mut out, max, t),
        };
        let mut m = self.lock();
        m.main_attached = true;
        match r {
            Ok(n) => {
                check!(
                    n == out.len() && n >= 1 && n <= max.unwrap_or(1),
                    "step {at}: get_many(max {max:?}) said {n} and gave {}",
                    out.len()
                );
                for p in out {
                    self.on_packet(&mut m, p, at)?;
                }
            }
            Err(GetError::TimedOut) => check!(
                posted == 0,
                "step {at}: get({t:?}) timed out with {posted} posted packet(s) queued"
            ),
            Err(e) => return Err(format!("step {at}: get on an open port: {e:?}")),
        }
        Ok(())
    }

    /// Two threads park in turn; posted packets must go to the newest first.
    fn lifo_probe(&self, prog: &Program, at: &str) -> R {
        {
            let m = self.lock();
            if prog.concurrency < 2 || !m.posted.is_empty() || m.outstanding().next().is_some() {
                return Ok(()); // not observable here
            }
        }
        let base = self.port.waiters();
        let park = |tx: mpsc::Sender<Result<Packet, GetError>>| {
            let port = self.port.clone();
            thread::spawn(move || {
                let _ = tx.send(port.get(Some(DRAIN)));
            })
        };
        let token = |r: Result<Packet, GetError>| match r {
            Ok(Packet {
                op: Op::Posted { token },
                ..
            }) => Ok(token),
            other => Err(format!("{other:?}")),
        };
        PROBES.fetch_add(1, Ordering::Relaxed);
        let (txa, rxa) = mpsc::channel();
        let a = park(txa);
        check!(
            support::until(DRAIN, || self.port.waiters() == base + 1),
            "step {at}: LIFO probe: first waiter never parked"
        );
        let (txb, rxb) = mpsc::channel();
        let b = park(txb);
        check!(
            support::until(DRAIN, || self.port.waiters() == base + 2),
            "step {at}: LIFO probe: second waiter never parked"
        );
        self.port.post(1, 2, PROBE).map_err(|e| e.to_string())?;
        let gb = rxb
            .recv_timeout(DRAIN)
            .map_err(|_| format!("step {at}: LIFO probe: the newest waiter got nothing"))?;
        check!(
            token(gb) == Ok(PROBE),
            "step {at}: LIFO probe: the newest waiter did not get the packet"
        );
        check!(
            rxa.try_recv().is_err(),
            "step {at}: LIFO probe: the older waiter woke too"
        );
        b.join().map_err(|_| "probe thread panicked".to_string())?;
        self.port.post(1, 2, PROBE + 1).map_err(|e| e.to_string())?;
        let ga = rxa
            .recv_timeout(DRAIN)
            .map_err(|_| format!("step {at}: LIFO probe: the older waiter got nothing"))?;
        check!(
            token(ga) == Ok(PROBE + 1),
            "step {at}: LIFO probe: the older waiter got the wrong packet"
        );
        a.join().map_err(|_| "probe thread panicked".to_string())?;
        Ok(())
    }
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

fn classify(o: &OpRec) -> (String, Option<String>) {
    let accepted = match o.refused {
        Some(k) => format!("refused {k:?}"),
        None => "accepted".to_string(),
    };
    let Some(g) = &o.got else {
        return (accepted, None);
    };
    let exact = match o.kind {
        Kind::Timeout { long: true, .. } if g.aborted => Some("ECANCELED".to_string()),
        Kind::Timeout { long: true, .. } => Some(format!("{:?} {}", g.status, g.bytes)),
        Kind::Recv { .. } | Kind::Accept => None,
        _ if o.disturbed => None,
        Kind::Timeout { .. } | Kind::Send { .. } | Kind::Connect { .. } => {
            Some(format!("{:?} {}", g.status, g.bytes))
        }
        Kind::Transmit { .. } => Some(format!("{:?} {}", g.status.is_ok(), g.bytes)),
    };
    (accepted, exact)
}

fn run(prog: &Program, backend: Backend) -> R<Outcome> {
    let port = Port::builder()
        .backend(backend)
        .concurrency(prog.concurrency)
        .strict(prog.strict)
        .build()
        .map_err(|e| format!("building a {backend} port: {e}"))?;
    check!(
        port.backend() == backend,
        "asked for {backend}, got {}",
        port.backend()
    );
    port.attach().map_err(|e| format!("attach: {e}"))?;
    let mut socks = Vec::new();
    let mut peers = Vec::new();
    let mut readers = Vec::new();
    for s in 0..prog.socks {
        let (ours, theirs) = support::pair();
        socks.push(port.associate(ours, 100 + s as u64));
        peers.push(theirs.try_clone().unwrap());
        readers.push(Reader::start(theirs, prog.slow_reader));
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let live = l.local_addr().unwrap();
    // Refused for certain: while `live` holds 127.0.0.1:P, nobody can bind
    // 0.0.0.0:P, and nobody binds 127.0.0.2 on purpose.
    let dead = SocketAddr::from(([127, 0, 0, 2], live.port()));
    let listener = port.associate(l, 200);
    let sh = Arc::new(Shared {
        port,
        socks,
        peers: Mutex::new(peers),
        listener,
        live,
        dead,
        file: Arc::new(File::open(the_file()).unwrap()),
        m: Mutex::new(Model {
            peer_written: vec![0; prog.socks],
            main_attached: true,
            next_thread: 1,
            ..Model::default()
        }),
    });
    let main = |sh: &Shared| Who {
        thread: 0,
        attached: sh.lock().main_attached,
    };
    let mut steps = 0u64;
    for (n, step) in prog.steps.iter().enumerate() {
        let at = n.to_string();
        steps += 1;
        match step {
            Step::Get(w) => sh.get(None, w, &at)?,
            Step::GetMany { max, wait } => sh.get(Some(*max), wait, &at)?,
            Step::Attach => {
                sh.port
                    .attach()
                    .map_err(|e| format!("step {at}: attach: {e}"))?;
                sh.lock().main_attached = true;
            }
            Step::Detach => {
                let mut m = sh.lock();
                sh.port.detach();
                m.main_attached = false;
                for i in m.outstanding().collect::<Vec<_>>() {
                    if m.ops[i].owner == 0 {
                        m.ops[i].disturbed = true;
                    }
                }
            }
            Step::Thread {
                attach,
                detach,
                steps: sub,
            } => {
                let tid = {
                    let mut m = sh.lock();
                    m.next_thread += 1;
                    m.next_thread
                };
                let sh2 = sh.clone();
                let nsub = sub.len() as u64;
                let (attach, detach, sub) = (*attach, *detach, sub.clone());
                let at2 = at.clone();
                let t = thread::spawn(move || -> R {
                    if attach {
                        sh2.port
                            .attach()
                            .map_err(|e| format!("step {at2}: attach: {e}"))?;
                    }
                    for (j, s) in sub.iter().enumerate() {
                        let who = Who {
                            thread: tid,
                            attached: attach,
                        };
                        sh2.leaf(s, who, &format!("{at2}.{j}"))?;
                    }
                    if detach {
                        let m = sh2.lock();
                        sh2.port.detach();
                        drop(m);
                    }
                    Ok(())
                });
                let r = t
                    .join()
                    .map_err(|e| format!("step {at}: thread panicked: {e:?}"))?;
                steps += nsub;
                // Its operations were cancelled when it detached or exited.
                let mut m = sh.lock();
                for i in m.outstanding().collect::<Vec<_>>() {
                    if m.ops[i].owner == tid {
                        m.ops[i].disturbed = true;
                    }
                }
                r?;
            }
            Step::LifoProbe => sh.lifo_probe(prog, &at)?,
            Step::Close => {
                let mut m = sh.lock();
                sh.port.close();
                m.closed = true;
                check!(
                    sh.port.get(Some(Duration::ZERO)).err() == Some(GetError::Abandoned),
                    "step {at}: get after close did not say Abandoned"
                );
                check!(
                    sh.port.post(1, 1, 1).is_err(),
                    "step {at}: post after close succeeded"
                );
                sh.port.detach();
                for o in m.ops.iter_mut() {
                    o.disturbed = true;
                }
                break;
            }
            leaf => {
                let who = main(&sh);
                sh.leaf(leaf, who, &at)?;
            }
        }
    }

    let closed = sh.lock().closed;
    if !closed {
        drain(&sh)?;
    }

    // Every descriptor on our side must close once the port and the handles
    // are gone; then the peers hold the whole streams.
    let sh = Arc::try_unwrap(sh).map_err(|_| "internal: Shared still shared".to_string())?;
    let m = sh.m.into_inner().unwrap_or_else(|e| e.into_inner());
    let conns_local: HashSet<SocketAddr> = m
        .conns
        .iter()
        .filter_map(|h| {
            let fd = h.as_fd().try_clone_to_owned().ok()?;
            TcpStream::from(fd).local_addr().ok()
        })
        .collect();
    // Take what the receives left in our sockets (closing a socket with
    // unread bytes would reset the connection): with the bytes the receives
    // got, in submission order, they must be exactly what the peer wrote.
    let mut leftovers = Vec::new();
    for (s, h) in sh.socks.iter().enumerate() {
        let taken: u64 = m
            .ops
            .iter()
            .filter_map(|o| match (o.kind, &o.got) {
                (Kind::Recv { sock, .. }, Some(g)) if sock == s => Some(g.data.len() as u64),
                _ => None,
            })
            .sum();
        let want = if closed {
            None
        } else {
            Some(m.peer_written[s].saturating_sub(taken) as usize)
        };
        leftovers.push(read_leftover(h, want).map_err(|e| format!("socket {s}: {e}"))?);
    }
    drop(sh.port);
    drop(sh.socks);
    drop(sh.listener);
    let Model {
        ops,
        conns,
        peer_written,
        packets,
        cancels,
        ..
    } = m;
    drop(conns);
    let mut streams = Vec::new();
    for (s, r) in readers.into_iter().enumerate() {
        // After a close, a reset (bytes that no receive took, dropped with
        // the socket) closes as well as an EOF.
        let r = r.finish_or_reset(DRAIN, closed);
        streams.push(r.map_err(|e| format!("socket {s}: {e}"))?);
    }
    drop(sh.peers);

    if !closed {
        check_streams(&ops, &streams, &peer_written, &leftovers)?;
    }
    // Accepted connections: distinct, and each one of ours.
    let mut seen = HashSet::new();
    for (i, o) in ops.iter().enumerate() {
        if let Some(Got { peer: Some(p), .. }) = o.got {
            check!(seen.insert(p), "op #{i}: peer {p} accepted twice");
            check!(
                conns_local.contains(&p),
                "op #{i}: accepted {p}, which none of our connects is"
            );
        }
    }
    Ok(Outcome {
        sig: ops.iter().map(classify).collect(),
        steps,
        ops: ops.len() as u64,
        packets,
        cancels,
    })
}

/// Waits for every packet still owed, cancelling what would wait for ever.
fn drain(sh: &Shared) -> R {
    let at = "drain";
    for phase in 0..2 {
        if phase == 1 {
            let mut m = sh.lock();
            for i in m.outstanding().collect::<Vec<_>>() {
                let id = m.ops[i].id.unwrap();
                if let Err(e) = sh.port.cancel(id) {
                    check!(
                        e.kind() == std::io::ErrorKind::NotFound,
                        "drain: cancel of {} failed: {e}",
                        m.describe(i)
                    );
                }
                m.ops[i].disturbed = true;
            }
        }
        let start = Instant::now();
        loop {
            let m = sh.lock();
            let owed: Vec<usize> = m
                .outstanding()
                .filter(|&i| phase == 1 || (m.ops[i].kind.finite() && !m.ops[i].disturbed))
                .collect();
            if owed.is_empty() && m.posted.is_empty() {
                break;
            }
            if start.elapsed() > DRAIN {
                let list: Vec<String> = owed.iter().map(|&i| m.describe(i)).collect();
                return Err(format!(
                    "drain (phase {phase}): no packet within {DRAIN:?} for {} operation(s): {}; \
                     {} posted packet(s) missing",
                    owed.len(),
                    list.join("; "),
                    m.posted.len()
                ));
            }
            drop(m);
            match sh.port.get(Some(Duration::from_millis(50))) {
                Ok(p) => {
                    let mut m = sh.lock();
                    sh.on_packet(&mut m, p, at)?;
                }
                Err(GetError::TimedOut) => {}
                Err(e) => return Err(format!("drain: get: {e:?}")),
            }
        }
    }
    // Nothing more may come.
    match sh.port.get(Some(Duration::from_millis(20))) {
        Err(GetError::TimedOut) => Ok(()),
        Ok(p) => Err(format!(
            "drain: a packet nobody owes: {:?} id {:?} {:?}",
            p.op, p.id, p.status
        )),
        Err(e) => Err(format!("drain: get: {e:?}")),
    }
}

/// Reads from our side of a socket, through a duplicate of its descriptor,
/// `want` bytes (`None`: whatever is there).
fn read_leftover(h: &Handle, want: Option<usize>) -> R<Vec<u8>> {
    use std::io::Read;
    let fd = h
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup: {e}"))?;
    let mut s = TcpStream::from(fd);
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let start = Instant::now();
    loop {
        if want.is_some_and(|w| out.len() >= w) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if want.is_none() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(5) {
                    return Err(format!(
                        "{} of the peer's bytes are neither in a receive's packet nor in the socket                          (lost by a cancelled receive?)",
                        want.unwrap() - out.len()
                    ));
                }
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("reading what the receives left: {e}")),
        }
    }
    Ok(out)
}

fn check_streams(
    ops: &[OpRec],
    streams: &[Vec<u8>],
    peer_written: &[u64],
    leftovers: &[Vec<u8>],
) -> R {
    for (s, stream) in streams.iter().enumerate() {
        // Sends and transmits, in submission order, each cut at its bytes.
        let mut pos = 0usize;
        for (i, o) in ops.iter().enumerate() {
            let Some(g) = &o.got else { continue };
            let expect = match o.kind {
                Kind::Send { sock, len } if sock == s => pattern(SEND_SEED + i as u64, 0, len),
                Kind::Transmit {
                    sock,
                    head,
                    off,
                    file,
                    tail,
                    ..
                } if sock == s => {
                    let mut v = pattern(HEAD_SEED + i as u64, 0, head);
                    // A range past the end fails, after what the file has.
                    let body = file.unwrap_or(FILE_LEN.saturating_sub(off)) as usize;
                    v.extend(pattern(FILE_SEED, off, body));
                    v.extend(pattern(TAIL_SEED + i as u64, 0, tail));
                    v
                }
                _ => continue,
            };
            let n = g.bytes as usize;
            check!(
                n <= expect.len(),
                "socket {s}: op #{i} ({:?}) reports {n} bytes of {}",
                o.kind,
                expect.len()
            );
            let have = stream
                .get(pos..pos + n)
                .unwrap_or(&stream[pos.min(stream.len())..]);
            if have != &expect[..n] {
                let k = have
                    .iter()
                    .zip(&expect[..n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(have.len());
                let owner = ops.iter().enumerate().find_map(|(j, oj)| {
                    if let Kind::Send { sock, len } = oj.kind {
                        if sock == s {
                            let pj = pattern(SEND_SEED + j as u64, 0, len);
                            let win = &stream[pos + k..(pos + k + 16).min(stream.len())];
                            if pj.windows(win.len().max(1)).any(|w| w == win) {
                                return Some(j);
                            }
                        }
                    }
                    None
                });
                return Err(format!(
                    "socket {s}: the peer's stream is not the sends in submission order: \
                     at stream offset {} (byte {k} of op #{i}, {:?}, {n} bytes reported) \
                     the bytes belong to op {owner:?}",
                    pos + k,
                    o.kind
                ));
            }
            pos += n;
        }
        check!(
            pos == stream.len(),
            "socket {s}: the peer received {} bytes, the packets account for {pos}",
            stream.len()
        );
        // Receives, in submission order, take the peer's bytes in order.
        let mut got = Vec::new();
        for o in ops {
            if let (Kind::Recv { sock, .. }, Some(g)) = (o.kind, &o.got) {
                if sock == s {
                    got.extend_from_slice(&g.data);
                }
            }
        }
        check!(
            got.len() as u64 <= peer_written[s],
            "socket {s}: received {} bytes, {} were written",
            got.len(),
            peer_written[s]
        );
        check!(
            got == pattern(PEER_SEED + s as u64, 0, got.len()),
            "socket {s}: the receives, in submission order, do not hold the peer's bytes in order"
        );
        let all = got.len() + leftovers[s].len();
        check!(
            all as u64 == peer_written[s]
                && leftovers[s] == pattern(PEER_SEED + s as u64, got.len() as u64, leftovers[s].len()),
            "socket {s}: the receives took {} bytes and {} were left in the socket, of {} written, \
             or the rest is not the continuation",
            got.len(),
            leftovers[s].len(),
            peer_written[s]
        );
    }
    Ok(())
}

/// Programs that failed once (shrunk by the random test, or the issue's own
/// reproductions), run on both backends every time: a named, deterministic
/// check per defect. Every failure is reported, not only the first.
#[test]
fn programs_that_found_defects_stay_fixed() {
    let p = |steps: Vec<Step>| Program {
        concurrency: 2,
        strict: false,
        socks: 1,
        slow_reader: false,
        steps,
    };
    let thread = |attach: bool, steps: Vec<Step>| Step::Thread {
        attach,
        detach: false,
        steps,
    };
    let send = |len: usize| Step::Send { sock: 0, len };
    let recv = || Step::Recv {
        sock: 0,
        cap: 1,
        pooled: false,
    };
    let transmit = Step::Transmit {
        sock: 0,
        off: 0,
        len: 0,
        head: 0,
        tail: 0,
    };
    let known: Vec<(&str, Program)> = vec![
        (
            "issue 14 item 1: two big sends on one socket keep their order",
            p(vec![
                send(8 << 20),
                send(8 << 20),
                Step::Get(Wait::Ms(29)),
                Step::Get(Wait::Ms(29)),
                send(8 << 20),
                send(8 << 20),
                send(8 << 20),
                send(8 << 20),
            ]),
        ),
        (
            "issue 14 item 3: a new thread's first id is not a detached thread's",
            p(vec![
                thread(true, vec![Step::Timeout(Dur::Zero)]),
                thread(true, vec![Step::Timeout(Dur::Zero)]),
                Step::Send { sock: 0, len: 1 },
                Step::Detach,
                Step::Get(Wait::Ms(1)),
                Step::Send { sock: 0, len: 1 },
            ]),
        ),
        (
            "issue 14 item 4: get(Some(Duration::MAX)) with a packet queued",
            p(vec![Step::Post { key: 0, bytes: 0 }, Step::Get(Wait::Max)]),
        ),
        (
            "issue 14 item 10: Timeout(Duration::MAX) succeeds or is cancelled, alike on both",
            p(vec![Step::Timeout(Dur::Max), Step::Get(Wait::Ms(5))]),
        ),
        (
            "a transmit then a send on one socket keep their order",
            p(vec![transmit.clone(), send(1)]),
        ),
        (
            "a send handed over by another thread, then a send of this thread, keep their order",
            p(vec![thread(false, vec![send(1)]), send(1)]),
        ),
        (
            "a send of this thread, then a transmit of another attached thread, keep their order",
            p(vec![send(1), thread(true, vec![transmit.clone()])]),
        ),
        (
            "two receives on one socket take the bytes in submission order",
            p(vec![
                recv(),
                recv(),
                Step::Get(Wait::Zero),
                Step::PeerWrite { sock: 0, len: 2 },
            ]),
        ),
        (
            "a receive handed over, then one of another attached thread, take the bytes in order",
            p(vec![
                Step::PeerWrite { sock: 0, len: 1 },
                thread(false, vec![recv()]),
                thread(true, vec![recv()]),
            ]),
        ),
    ];
    let backends = support::backends();
    let mut failed = Vec::new();
    for (name, prog) in &known {
        for &backend in &backends {
            let dog = support::Watchdog::new(format!("[{backend}] {name}"), HANG);
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
    let backends = support::backends();
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
            let dog = support::Watchdog::new(format!("[{backend}] {prog:#?}"), HANG);
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
            "{e}\n(the failing case's seed is saved in tests/differential.proptest-regressions and \
             replayed first by the next run)"
        );
    }
}
