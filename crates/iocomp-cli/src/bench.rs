//! `iocomp bench`: a load generator on the iocomp engine. Each connection is a
//! small state machine whose state travels with its operations (as the
//! server's connections do): Connect → Send request → Recv response → again,
//! keep-alive, until the duration is over. Every response is checked: HTTP
//! bodies must be exactly `Content-Length` bytes (status 200), line-protocol
//! replies exactly the file's size, so a broken server cannot look fast.
//!
//! An `https://` target is measured over TLS (rustls, as `get` uses it:
//! the system's CAs, `--cacert`, or `-k`): each connection does its
//! handshake once, then keeps its requests on the session, as wrk does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use iocomp::{Backend, Pool, Port};

use crate::client::{self, Fail, Timeouts};
use crate::target::Target;

mod conn;
mod report;

use conn::{Conn, Phase};

/// Bytes one receive may take.
const RECV: usize = 64 * 1024;
/// After a failed connect, wait this long before the next try.
const BACKOFF: Duration = Duration::from_millis(20);

/// `iocomp bench` arguments.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// `http://host:port/path`, `https://host:port/path`, or `host:port/name` with --raw.
    target: String,
    /// Connections kept open, each with one request in flight (at most 100000).
    #[arg(
        short = 'c',
        long = "connections",
        value_name = "N",
        default_value_t = 16,
        value_parser = parse_conns
    )]
    conns: usize,
    /// How long to run (e.g. 10s, 500ms, 1m).
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "10s",
          value_parser = crate::parse_duration)]
    duration: Duration,
    /// Engine worker threads [default: the number of CPUs available; at most 1024].
    #[arg(short = 't', long, value_name = "N", value_parser = crate::parse_threads)]
    threads: Option<usize>,
    /// The line protocol: send `name\n`, expect exactly the file's size back.
    /// The size comes from --size, or else from one HTTP HEAD of the same
    /// name on the same port (the iocomp server speaks both).
    #[arg(long)]
    raw: bool,
    /// Expected reply size in bytes for --raw (every path).
    #[arg(long, value_name = "BYTES", requires = "raw")]
    size: Option<u64>,
    /// A file of paths (HTTP) or names (--raw), one per line, requested in
    /// turn on each connection, on TARGET's host and port.
    #[arg(long, value_name = "FILE")]
    paths: Option<PathBuf>,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Engine backend: auto (io_uring, else epoll), uring or epoll.
    #[arg(long, value_name = "NAME", default_value = "auto")]
    backend: Backend,
    /// https://: trust the CA certificates in FILE (PEM) instead of the system's.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// https://: do not check the server's certificate (a warning says so).
    #[arg(short = 'k', long)]
    insecure: bool,
    /// A new connection for every request (`Connection: close`; once the
    /// response is in, the connection is reset and a new one opened), so
    /// that over TLS every request is a full handshake: requests/s are then
    /// handshakes/s.
    #[arg(long = "new-connection", conflicts_with = "raw")]
    new_connection: bool,
    /// https://: offer only this cipher suite (repeatable; rustls names,
    /// e.g. TLS13_AES_128_GCM_SHA256), to compare servers on the same cipher.
    #[arg(long = "tls-suite", value_name = "NAME")]
    tls_suite: Vec<String>,
}

/// One kind of request: the bytes sent and, for the line protocol, the reply size.
struct Item {
    request: Vec<u8>,
    expect: Option<u64>,
}

/// What every connection shares.
struct Shared {
    addr: SocketAddr,
    /// `https://`: the client configuration, and the host for SNI and the check.
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    items: Vec<Item>,
    raw: bool,
    /// `--new-connection`: one request per connection.
    new_connection: bool,
    stop: AtomicBool,
    /// Connections not yet closed for good.
    active: AtomicUsize,
    /// Every worker's statistics (one entry per thread that handled a packet).
    stats: Mutex<Vec<Arc<Mutex<Stats>>>>,
    /// Distinguishes this run in the threads' local slots.
    run: usize,
}

/// Counters of one worker thread (merged at the end).
pub(crate) struct Stats {
    pub(crate) requests: u64,
    pub(crate) bytes: u64,
    pub(crate) body: u64,
    pub(crate) connects: u64,
    pub(crate) latency: Histogram<u64>,
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            requests: 0,
            bytes: 0,
            body: 0,
            connects: 0,
            // Microseconds, 1 µs to 1 h, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            errors: BTreeMap::new(),
        }
    }
}

thread_local! {
    static LOCAL: std::cell::RefCell<Option<(usize, Arc<Mutex<Stats>>)>> =
        const { std::cell::RefCell::new(None) };
}

static RUNS: AtomicUsize = AtomicUsize::new(1);

impl Shared {
    /// Runs `f` on this thread's statistics.
    fn with_stats(&self, f: impl FnOnce(&mut Stats)) {
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            let fresh = !matches!(&*l, Some((run, _)) if *run == self.run);
            if fresh {
                let s = Arc::new(Mutex::new(Stats::new()));
                self.stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(s.clone());
                *l = Some((self.run, s));
            }
            if let Some((_, s)) = &*l {
                f(&mut s.lock().unwrap_or_else(|e| e.into_inner()));
            }
        });
    }

    fn error(&self, kind: impl Into<String>) {
        let kind = kind.into();
        self.with_stats(|s| *s.errors.entry(kind).or_default() += 1);
    }
}

/// The most connections `bench` opens.
const MAX_CONNS: usize = 100_000;

/// A connection count, at most [`MAX_CONNS`] (0 is refused by [`run`]).
fn parse_conns(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_CONNS => Ok(n),
        _ => Err(format!("not a connection count: {s:?} (1 to {MAX_CONNS})")),
    }
}

/// Runs `iocomp bench`.
pub fn run(args: BenchArgs) -> Result<(), Fail> {
    if args.conns == 0 || args.threads == Some(0) {
        return Err(Fail::Usage(
            "--connections and --threads must be at least 1".into(),
        ));
    }
    let target = Target::parse(&args.target, args.raw)?;
    let paths = match &args.paths {
        None => vec![target.path.clone()],
        Some(f) => read_paths(f, args.raw)?,
    };
    let addr = *target
        .resolve()
        .map_err(|e| Fail::Network(format!("{}: cannot resolve: {e}", target.host)))?
        .first()
        .ok_or_else(|| Fail::Network("no address".into()))?;
    let mut items = Vec::with_capacity(paths.len());
    for p in &paths {
        items.push(if args.raw {
            let size = match args.size {
                Some(s) => s,
                None => head_size(&target, p)?,
            };
            let mut request = p.as_bytes().to_vec();
            request.push(b'\n');
            Item {
                request,
                expect: Some(size),
            }
        } else {
            let close = if args.new_connection {
                "Connection: close\r\n"
            } else {
                ""
            };
            let request = format!(
                "GET {p} HTTP/1.1\r\nHost: {}\r\nUser-Agent: iocomp-bench\r\n{close}\r\n",
                target.host_header()
            );
            Item {
                request: request.into_bytes(),
                expect: None,
            }
        });
    }
    let tls = if target.https {
        if args.insecure {
            eprintln!("iocomp: WARNING: --insecure: the server's certificate is NOT checked");
        }
        let trust = crate::get::tls::Trust {
            cacert: args.cacert.clone(),
            insecure: args.insecure,
        };
        let cfg = if args.tls_suite.is_empty() {
            crate::get::tls::config(&trust)?
        } else {
            crate::get::tls::config_with_suites(&trust, &args.tls_suite)?
        };
        Some((cfg, target.host.clone()))
    } else {
        None
    };
    let threads = args.threads.unwrap_or_else(iocomp::default_threads);
    let port = Port::builder()
        .concurrency(threads)
        .backend(args.backend)
        .build()
        .map_err(|e| Fail::Local(format!("cannot create the completion port: {e}")))?;
    let shared = Arc::new(Shared {
        addr,
        tls,
        items,
        raw: args.raw,
        new_connection: args.new_connection,
        stop: AtomicBool::new(false),
        active: AtomicUsize::new(args.conns),
        stats: Mutex::new(Vec::new()),
        run: RUNS.fetch_add(1, Ordering::Relaxed),
    });
    let mut pool = Pool::new(&port, threads, conn::on_packet)
        .map_err(|e| Fail::Local(format!("cannot start worker threads: {e}")))?;
    let start = Instant::now();
    for i in 0..args.conns {
        let conn = Box::new(Conn {
            shared: shared.clone(),
            handle: None,
            buf: Vec::with_capacity(RECV),
            item: i % shared.items.len(),
            phase: Phase::Head,
            started: start,
            got: 0,
            body: 0,
            req: Vec::new(),
            tls: None,
            cipher: Vec::new(),
        });
        let p = port.clone();
        // Queued, so that each connection's operations start on a worker's own ring.
        if pool.queue(move || conn::connect(&p, conn)).is_err() {
            shared.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
    std::thread::sleep(args.duration);
    shared.stop.store(true, Ordering::Relaxed);
    let stopped = start.elapsed();
    // Responses in flight may finish; a stalled one is cut after a grace period.
    let grace = Instant::now() + Duration::from_secs(2).max(args.duration / 10);
    while shared.active.load(Ordering::Relaxed) > 0 && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(5));
    }
    let in_flight = shared.active.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    pool.shutdown();
    let mut total = Stats::new();
    for s in shared
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        total.requests += s.requests;
        total.bytes += s.bytes;
        total.body += s.body;
        total.connects += s.connects;
        let _ = total.latency.add(&s.latency);
        for (k, v) in &s.errors {
            *total.errors.entry(k.clone()).or_default() += v;
        }
    }
    let info = report::Info {
        target: target.to_string(),
        raw: args.raw,
        conns: args.conns,
        threads,
        backend: port.backend().name(),
        duration: stopped,
        elapsed,
        in_flight,
    };
    if args.json {
        println!("{}", report::json(&info, &total));
    } else {
        print!("{}", report::text(&info, &total));
    }
    if total.requests == 0 && !total.errors.is_empty() {
        return Err(Fail::Network("no request succeeded".into()));
    }
    Ok(())
}

/// Paths from a file, one per line (blank lines and `#` comments skipped).
fn read_paths(f: &PathBuf, raw: bool) -> Result<Vec<String>, Fail> {
    let text =
        std::fs::read_to_string(f).map_err(|e| Fail::Local(format!("{}: {e}", f.display())))?;
    let paths: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            if raw {
                l.trim_start_matches('/').to_string()
            } else if l.starts_with('/') {
                l.to_string()
            } else {
                format!("/{l}")
            }
        })
        .collect();
    if paths.is_empty() {
        return Err(Fail::Usage(format!(
            "{}: no paths in the file",
            f.display()
        )));
    }
    Ok(paths)
}

/// The size of `name` by an HTTP HEAD on the target's port (for --raw).
fn head_size(t: &Target, name: &str) -> Result<u64, Fail> {
    let http = Target {
        path: format!("/{name}"),
        raw: false,
        ..t.clone()
    };
    let to = Timeouts {
        connect: Duration::from_secs(10),
        stall: Duration::from_secs(10),
    };
    let head = client::head(&http, to)?;
    if head.status != 200 {
        return Err(Fail::Http(format!(
            "{http}: HEAD answered {} {} (give --size)",
            head.status, head.reason
        )));
    }
    head.content_length()
        .ok_or_else(|| Fail::Network(format!("{http}: HEAD gave no Content-Length (give --size)")))
}
