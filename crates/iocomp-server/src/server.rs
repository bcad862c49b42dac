//! The server: listeners, the worker pool, packet dispatch, limits and shutdown.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use iocomp::{Accept, Backend, Handle, Op, OpId, Packet, Pool, Port, Timeout};
use tracing::{debug, info, warn};

use crate::access::{AccessLog, AccessLogFormat, LogFile};
use crate::conn::{self, Conn};
use crate::limit::{PerIp, Rate};
use crate::listener;
use crate::metrics::{ErrorKind, Metrics};
use crate::path::{PathOptions, Root};
use crate::status::{self, Transfers};
use crate::sys;
use crate::watch::{Limits, Registry};

/// Keys at and above this are listeners (key = LISTENER_KEY + index); below are
/// connections.
const LISTENER_KEY: u64 = u64::MAX - 0xffff;
/// Keys of the per-worker sweep timers: `TICK_KEY + shard`, just below the
/// listeners' keys.
const TICK_KEY: u64 = LISTENER_KEY - 0x1_0000;
/// An open file unused this long leaves the open-file cache.
const CACHE_IDLE: Duration = Duration::from_secs(3);
/// How long to wait before accepting again after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What to serve and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The directory served; nothing outside it is ever sent.
    pub root: PathBuf,
    /// Addresses to listen on.
    pub binds: Vec<SocketAddr>,
    /// Worker threads (0 = the number of CPUs); also the port's concurrency.
    pub threads: usize,
    /// Dotfiles and symlink policy.
    pub path: PathOptions,
    /// Longest wait for a complete line, from its first byte (or from the
    /// connection's start).
    pub header_timeout: Duration,
    /// Longest wait for the next line after a reply.
    pub idle_timeout: Duration,
    /// Longest time without send progress.
    pub send_timeout: Duration,
    /// At this many connections, stop accepting until one closes.
    pub max_conns: usize,
    /// On shutdown, how long transfers in flight may take to finish.
    pub drain_timeout: Duration,
    /// Access log format.
    pub access_log: AccessLogFormat,
    /// Where the access log goes: a file (reopened by
    /// [`Server::reopen_access_log`]), or standard output when `None`.
    pub access_log_file: Option<LogFile>,
    /// Sockets already listening (passed by systemd, or bound before dropping
    /// privileges): served before those of `binds`, in this order.
    pub listeners: Vec<Arc<TcpListener>>,
    /// The engine backend: `Auto` (io_uring, else epoll; `IOCOMP_BACKEND`
    /// overrides), or one forced.
    pub backend: Backend,
    /// HTTP `Cache-Control` value for files (none by default).
    pub cache_control: Option<String>,
    /// HTTP directory listings (when a directory has no `index.html`).
    pub listing: bool,
    /// Regular files kept open between requests (0: none), small ones with
    /// their contents; a hit is re-checked with one `fstatat` once
    /// `open_file_cache_valid` has passed; capped at a quarter of the
    /// descriptor limit; an entry unused for 3 s is closed.
    pub open_file_cache: usize,
    /// How long a cached file is used without checking that its name still
    /// leads to it unchanged (nginx's `open_file_cache_valid`; lighttpd's stat
    /// cache is one second). Zero, the default, checks on every request, so a
    /// replaced file is served at once.
    pub open_file_cache_valid: Duration,
    /// Bytes per second each reply may send after its first
    /// `rate_limit_after` bytes (0: no limit). Applies to both protocols.
    pub rate_limit: u64,
    /// Bytes each reply sends at full speed before `rate_limit` applies.
    pub rate_limit_after: u64,
    /// Open connections one client address may have (0: no limit); more are
    /// answered `503`/`busy` on their first request and closed.
    pub max_conns_per_ip: usize,
    /// Where to serve `/metrics`, `/status.json` and the status page `/`
    /// (none by default).
    pub metrics: Option<SocketAddr>,
}

impl Config {
    /// Serve `root` on the seed's port, `0.0.0.0:8182`, with one thread per CPU
    /// and the default limits.
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            binds: vec![SocketAddr::from(([0, 0, 0, 0], 8182))],
            threads: 0,
            path: PathOptions::default(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_conns: 10_000,
            drain_timeout: Duration::from_secs(10),
            access_log: AccessLogFormat::Off,
            access_log_file: None,
            listeners: Vec::new(),
            backend: Backend::Auto,
            cache_control: None,
            listing: true,
            open_file_cache: 4096,
            open_file_cache_valid: Duration::ZERO,
            rate_limit: 0,
            rate_limit_after: 0,
            max_conns_per_ip: 0,
            metrics: None,
        }
    }
}

/// A running server. [`Server::shutdown`] stops it; dropping it stops it at once.
pub struct Server {
    pool: Pool,
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    threads: usize,
}

/// State every worker shares.
pub(crate) struct Shared {
    pub(crate) root: Root,
    pub(crate) registry: Registry,
    pub(crate) access: AccessLog,
    pub(crate) limits: Limits,
    pub(crate) draining: AtomicBool,
    pub(crate) cache_control: Option<String>,
    pub(crate) listing: bool,
    /// The per-reply bandwidth cap, if any.
    pub(crate) rate: Option<Rate>,
    pub(crate) per_ip: Option<PerIp>,
    /// Counters and transfers: only with a metrics listener.
    pub(crate) metrics: Option<Metrics>,
    pub(crate) transfers: Option<Transfers>,
    /// The index of the metrics listener among `listeners`.
    admin: Option<usize>,
    /// Connections to the metrics listener open now.
    pub(crate) admin_active: AtomicUsize,
    listeners: Vec<Handle>,
    next_conn: AtomicU64,
    active: AtomicUsize,
    max_conns: usize,
    /// Listeners whose accept is parked because of `max_conns`.
    paused: Mutex<Vec<usize>>,
    /// Accepts in flight, to cancel on shutdown.
    accepts: Mutex<Vec<OpId>>,
    /// Signalled when the last connection closes during a drain.
    idle: (Mutex<()>, Condvar),
    accept_errors: RateLimit,
}

impl Server {
    /// Binds every address, starts the workers and begins accepting. Returns
    /// when the server is ready: every worker is attached and every listener
    /// has accepts in flight.
    pub fn start(config: Config) -> io::Result<Server> {
        let nofile = raise_nofile_limit();
        let cache = config.open_file_cache.min(nofile / 4);
        let root = Root::open(&config.root, config.path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot serve {}: {e}", config.root.display()),
                )
            })?
            .with_cache_valid(cache, CACHE_IDLE, config.open_file_cache_valid);
        let port = Port::builder()
            .concurrency(config.threads)
            .backend(config.backend)
            .build()?;
        let threads = port.concurrency();
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        let mut bound = Vec::new();
        for l in config.listeners {
            bound.push(Arc::try_unwrap(l).or_else(|l| l.try_clone())?);
        }
        for addr in &config.binds {
            let l = listener::bind(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            bound.push(l);
        }
        for (i, l) in bound.into_iter().enumerate() {
            addrs.push(l.local_addr()?);
            listeners.push(port.associate(l, LISTENER_KEY + i as u64));
        }
        let mut metrics_addr = None;
        let admin = match config.metrics {
            Some(addr) => {
                let l = listener::bind(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr} (metrics): {e}"))
                })?;
                metrics_addr = Some(l.local_addr()?);
                listeners.push(port.associate(l, LISTENER_KEY + listeners.len() as u64));
                Some(listeners.len() - 1)
            }
            None => None,
        };
        let limits = Limits {
            header: config.header_timeout,
            idle: config.idle_timeout,
            send: config.send_timeout,
        };
        let shared = Arc::new(Shared {
            root,
            registry: Registry::new(threads),
            access: AccessLog::new(config.access_log, config.access_log_file),
            limits,
            draining: AtomicBool::new(false),
            cache_control: config.cache_control.clone(),
            listing: config.listing,
            rate: (config.rate_limit > 0).then_some(Rate {
                rate: config.rate_limit,
                after: config.rate_limit_after,
            }),
            per_ip: (config.max_conns_per_ip > 0).then(|| PerIp::new(config.max_conns_per_ip)),
            metrics: admin.map(|_| Metrics::new()),
            transfers: admin.map(|_| Transfers::new()),
            admin,
            admin_active: AtomicUsize::new(0),
            listeners,
            next_conn: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            max_conns: config.max_conns.max(1),
            paused: Mutex::new(Vec::new()),
            accepts: Mutex::new(Vec::new()),
            idle: (Mutex::new(()), Condvar::new()),
            accept_errors: RateLimit::new(),
        });
        let s2 = shared.clone();
        let pool = Pool::new(&port, threads, move |port, packet| {
            dispatch(port, &s2, packet)
        })?;
        // One accept per worker per listener, each issued on a worker so that it
        // lives in that worker's ring and its connections start there; and the
        // sweep timer.
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..threads {
            for i in 0..shared.listeners.len() {
                let (port, shared, tx) = (port.clone(), shared.clone(), tx.clone());
                pool.queue(move || {
                    let _ = tx.send(shared.accept(&port, i));
                })?;
            }
        }
        for shard in 0..shared.registry.shards() {
            let (p, tick) = (port.clone(), limits.tick());
            pool.queue(move || {
                if let Err((e, _)) = p.submit(Timeout::new(tick, TICK_KEY + shard as u64)) {
                    warn!("cannot start the timeout sweep: {e}");
                }
            })?;
        }
        drop(tx);
        for r in rx {
            r?;
        }
        Ok(Server {
            pool,
            shared,
            addrs,
            metrics_addr,
            threads,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The metrics listener's address (port 0 resolved), if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The engine backend in use.
    pub fn backend(&self) -> Backend {
        self.pool.port().backend()
    }

    /// Why the backend is epoll although io_uring was tried first, if it is.
    pub fn fallback_reason(&self) -> Option<String> {
        self.pool.port().fallback_reason().map(str::to_owned)
    }

    /// Opens the access-log file again by its name, for log rotation (the old
    /// file, already renamed, gets what was buffered; later lines go to the new
    /// one). On error the old file stays in use. Returns the file's name, or
    /// `None` when the log goes to standard output.
    pub fn reopen_access_log(&self) -> io::Result<Option<PathBuf>> {
        self.shared.access.reopen()
    }

    /// Connections open right now.
    pub fn connections(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Graceful stop: stops accepting, closes connections that are not sending,
    /// lets transfers in flight finish for up to `drain` (connections close after
    /// their current transfer), then cancels whatever is left, closes everything
    /// and joins every worker. Returns how many connections were cut off.
    pub fn shutdown(mut self, drain: Duration) -> usize {
        let port = self.pool.port().clone();
        let shared = self.shared.clone();
        shared.draining.store(true, Ordering::SeqCst);
        let accepts: Vec<OpId> =
            std::mem::take(&mut *shared.accepts.lock().unwrap_or_else(|e| e.into_inner()));
        for id in accepts {
            let _ = port.cancel(id);
        }
        shared.registry.sweep_all(&port, &shared.limits, true);
        let deadline = Instant::now() + drain;
        let (lock, cv) = &shared.idle;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let left = shared.active.load(Ordering::SeqCst);
            let now = Instant::now();
            if left == 0 || now >= deadline {
                break;
            }
            guard = match cv.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        drop(guard);
        let cut = shared.active.load(Ordering::SeqCst);
        if cut > 0 {
            info!("drain deadline passed: closing {cut} connections still sending");
        }
        self.pool.shutdown();
        shared.access.flush();
        cut
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.pool.shutdown();
        self.shared.access.flush();
    }
}

impl Shared {
    /// Issues an accept on listener `i` from the calling thread.
    fn accept(&self, port: &Port, i: usize) -> io::Result<()> {
        if self.draining.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(l) = self.listeners.get(i) else {
            return Ok(());
        };
        let id = port.submit(Accept::new(l)).map_err(|(e, _)| e)?;
        self.accepts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
        Ok(())
    }

    fn rearm(&self, port: &Port, i: usize) {
        if let Err(e) = self.accept(port, i) {
            if !port.is_closed() {
                warn!("cannot accept again: {e}");
            }
        }
    }

    /// Client connections open now (not those to the metrics listener).
    pub(crate) fn client_connections(&self) -> u64 {
        let all = self.active.load(Ordering::Relaxed);
        all.saturating_sub(self.admin_active.load(Ordering::Relaxed)) as u64
    }

    /// The `/metrics` exposition.
    pub(crate) fn render_metrics(&self, port: &Port) -> String {
        let Some(m) = &self.metrics else {
            return String::new();
        };
        let backend = port.backend().to_string();
        m.render(&status::gauges(
            &backend,
            self.client_connections(),
            self.admin_active.load(Ordering::Relaxed) as u64,
            self.transfers.as_ref(),
            self.rate.map_or(0, |r| r.rate),
        ))
    }

    /// A connection is gone: count it out, resume a paused accept, wake a drain.
    pub(crate) fn closed(&self, port: &Port, key: u64, watch: &crate::watch::Watch) {
        self.registry.remove(watch, key);
        let left = self.active.fetch_sub(1, Ordering::SeqCst) - 1;
        let resume = self.paused.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(i) = resume {
            self.rearm(port, i);
        }
        if left == 0 && self.draining.load(Ordering::SeqCst) {
            let _g = self.idle.0.lock().unwrap_or_else(|e| e.into_inner());
            self.idle.1.notify_all();
        }
    }
}

fn dispatch(port: &Port, shared: &Arc<Shared>, mut packet: Packet) {
    if (TICK_KEY..LISTENER_KEY).contains(&packet.key) {
        let shard = (packet.key - TICK_KEY) as usize;
        let draining = shared.draining.load(Ordering::Relaxed);
        let expired = shared.registry.sweep(shard, port, &shared.limits, draining);
        if let (Some(m), 1..) = (&shared.metrics, expired) {
            m.error(ErrorKind::Timeout, expired);
        }
        shared.root.prune_cache();
        // Every buffer, not just this thread's: a worker whose shard's timer runs
        // elsewhere still gets its lines out within a tick.
        shared.access.flush();
        if let Err((e, _)) = port.submit(Timeout::new(shared.limits.tick(), packet.key)) {
            if !port.is_closed() {
                warn!("cannot re-arm the timeout sweep: {e}");
            }
        }
        return;
    }
    if packet.key >= LISTENER_KEY {
        let index = (packet.key - LISTENER_KEY) as usize;
        shared
            .accepts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&id| id != packet.id);
        match std::mem::replace(&mut packet.op, Op::Posted { token: 0 }) {
            Op::Accept(a) => on_accept(port, shared, index, packet.status, a),
            // The back-off timer after EMFILE and friends: accept again.
            Op::Timeout(_) => shared.rearm(port, index),
            _ => {}
        }
        return;
    }
    conn::complete(port, packet);
}

fn on_accept(port: &Port, shared: &Arc<Shared>, index: usize, status: io::Result<()>, a: Accept) {
    match status {
        Ok(()) => {
            if let Some(sock) = a.socket {
                if shared.draining.load(Ordering::SeqCst) {
                    return; // dropping the socket closes it
                }
                let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                debug!(conn = id, peer = ?a.peer, "accepted");
                // Best effort: a socket that refuses it still works.
                let _ = listener::set_nodelay(&sock);
                let handle = port.associate(sock, id);
                let active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
                let watch = shared.registry.insert(id);
                let mut conn = Conn::new(port, handle, a.peer, watch, shared.clone());
                if shared.admin == Some(index) {
                    shared.admin_active.fetch_add(1, Ordering::Relaxed);
                    conn.make_admin();
                } else if let (Some(per_ip), Some(peer)) = (&shared.per_ip, a.peer) {
                    if per_ip.acquire(peer.ip()) {
                        conn.per_ip = Some(peer.ip());
                    } else {
                        debug!(conn = id, peer = ?a.peer, "over --max-conns-per-ip: refusing");
                        conn.over_limit = true;
                        if let Some(m) = &shared.metrics {
                            m.error(ErrorKind::PerIpLimit, 1);
                        }
                    }
                }
                conn::start(port, conn);
                if active >= shared.max_conns {
                    debug!("{active} connections: accepting paused");
                    shared
                        .paused
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(index);
                    // A connection may have closed meanwhile: never park forever.
                    if shared.active.load(Ordering::SeqCst) < shared.max_conns {
                        if let Some(i) = shared
                            .paused
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .pop()
                        {
                            shared.rearm(port, i);
                        }
                    }
                    return;
                }
            }
            shared.rearm(port, index);
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::ECANCELED) => {}
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                if let Some(m) = &shared.metrics {
                    m.error(ErrorKind::Accept, 1);
                }
                if let Some(suppressed) = shared.accept_errors.allow() {
                    warn!("accept: {e} ({suppressed} more since the last report); retrying every {ACCEPT_BACKOFF:?}");
                }
                let t = Timeout::new(ACCEPT_BACKOFF, LISTENER_KEY + index as u64);
                if let Err((e, _)) = port.submit(t) {
                    debug!("cannot arm the accept back-off: {e}");
                }
            }
            // The connection died between SYN and accept, and the like: go on.
            _ => {
                debug!("accept: {e}");
                shared.rearm(port, index);
            }
        },
    }
}

/// At most one report per second; counts what it held back.
struct RateLimit {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimit {
    fn new() -> RateLimit {
        RateLimit {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last report)` if a report may go out now.
    fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// Raises the soft descriptor limit to the hard one: each connection and each
/// file being sent costs a descriptor. Returns the limit in force.
fn raise_nofile_limit() -> usize {
    let Ok((soft, hard)) = sys::nofile_limit() else {
        return 1024;
    };
    let mut cur = soft;
    if soft < hard && sys::set_nofile_limit(hard, hard).is_ok() {
        debug!("descriptor limit raised from {soft} to {hard}");
        cur = hard;
    }
    usize::try_from(cur).unwrap_or(usize::MAX)
}
