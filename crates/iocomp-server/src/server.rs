//! The server: start-up (root, port, listeners, workers), packet dispatch
//! (sweep timers, listeners, connections), accepting, and shutdown. The top
//! layer: it wires the others together and nothing imports it but the crate
//! root.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iocomp::{Accept, Backend, Op, Packet, Pool, Port, Timeout};
use tracing::{debug, info, warn};

use crate::config::{Config, KtlsMode, Settings};
use crate::conn::gate::Gate;
use crate::conn::ktls::Support;
use crate::conn::limit::PerIp;
use crate::conn::tls::Certs;
use crate::conn::watch::Registry;
use crate::conn::{self, Conn, Live, Shared};
use crate::fs::Root;
use crate::listener;
use crate::obs::access::AccessLog;
use crate::obs::metrics::{ErrorKind, Metrics};
use crate::obs::transfers::Transfers;
use crate::obs::Obs;
use crate::proto::Slots;
use crate::sys;

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

/// A running server. [`Server::shutdown`] stops it; dropping it stops it at once.
pub struct Server {
    pool: Pool,
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    threads: usize,
    ktls: bool,
}

impl Server {
    /// Binds every address, starts the workers and begins accepting. Returns
    /// when the server is ready: every worker is attached and every listener
    /// has accepts in flight.
    pub fn start(config: Config) -> io::Result<Server> {
        let mut settings = Settings::new(&config);
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
        let tls_from = bound.len();
        for l in config.tls_listeners {
            bound.push(Arc::try_unwrap(l).or_else(|l| l.try_clone())?);
        }
        for addr in &config.tls_binds {
            let l = listener::bind(*addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {addr} (TLS): {e}"))
            })?;
            bound.push(l);
        }
        let tls_range = tls_from..bound.len();
        // Kernel TLS: probed once, here, only for TLS listeners.
        let support = match config.ktls {
            KtlsMode::Off => Support::NONE,
            _ if tls_range.is_empty() => Support::NONE,
            mode => {
                let (support, why) = Support::probe();
                if !support.any() && mode == KtlsMode::On {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "--ktls on: the kernel TLS probe found no TLS 1.3 cipher the kernel \
                             takes both ways: {}",
                            why.join("; ")
                        ),
                    ));
                }
                for w in &why {
                    info!("kernel TLS probe: {w}");
                }
                support
            }
        };
        let mut ktls = support.any();
        settings.ktls = support;
        let mut certs = None;
        if !tls_range.is_empty() {
            let loaded = Arc::new(if config.tls_pem.is_empty() {
                Certs::load(&config.tls_certs)?
            } else {
                Certs::from_pem(&config.tls_pem)?
            });
            let tls = conn::tls::server_config(loaded.clone(), config.tls_no_tickets, ktls)?;
            if ktls && !tls.enable_secret_extraction {
                // Logged where it failed; never a reason to close connections.
                ktls = false;
                settings.ktls = Support::NONE;
            }
            settings.tls = Some(tls);
            certs = Some(loaded);
            info!(
                "TLS on {} listener(s): rustls (ring), TLS 1.2/1.3, encryption in user space; kernel TLS {}",
                tls_range.len(),
                if ktls {
                    "available: used per TLS 1.3 connection where the probe found the cipher working (counted in /metrics)"
                } else if config.ktls == KtlsMode::Off {
                    "off (--ktls off): every connection encrypts in user space"
                } else {
                    "unavailable: every connection encrypts in user space"
                }
            );
        }
        for (i, l) in bound.into_iter().enumerate() {
            addrs.push(l.local_addr()?);
            listeners.push(port.associate(l, LISTENER_KEY + i as u64));
        }
        let mut metrics_addr = None;
        let bound_metrics = match config.metrics_listener {
            Some(l) => Some(Arc::try_unwrap(l).or_else(|l| l.try_clone())?),
            None => match config.metrics {
                Some(addr) => Some(listener::bind(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr} (metrics): {e}"))
                })?),
                None => None,
            },
        };
        let admin = match bound_metrics {
            Some(l) => {
                metrics_addr = Some(l.local_addr()?);
                listeners.push(port.associate(l, LISTENER_KEY + listeners.len() as u64));
                Some(listeners.len() - 1)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            root,
            obs: Obs {
                access: AccessLog::new(config.access_log, config.access_log_file),
                metrics: admin.map(|_| Metrics::new()),
                transfers: admin.map(|_| Transfers::new()),
            },
            live: Live {
                gate: Gate::new(listeners, admin, config.max_conns).with_tls(tls_range),
                registry: Registry::new(threads),
                per_ip: (config.max_conns_per_ip > 0).then(|| PerIp::new(config.max_conns_per_ip)),
                // One listing per worker at most: each may hold a thread of the
                // blocking pool, so that pool stays within twice the workers.
                listings: Slots::new(threads.max(2)),
                certs,
            },
            settings,
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
            for i in 0..shared.live.gate.listeners() {
                let (port, shared, tx) = (port.clone(), shared.clone(), tx.clone());
                pool.queue(move || {
                    let _ = tx.send(shared.live.gate.accept(&port, i));
                })?;
            }
        }
        for shard in 0..shared.live.registry.shards() {
            let (p, tick) = (port.clone(), shared.settings.timeouts.tick());
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
            ktls,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether TLS connections may use kernel TLS: not `--ktls off`, there
    /// are TLS listeners, and the probe at start found at least one TLS 1.3
    /// cipher the kernel takes both ways (see [`probe_ktls`](crate::probe_ktls)).
    pub fn ktls_available(&self) -> bool {
        self.ktls
    }

    /// Reads the TLS certificates and keys again (on `SIGHUP`): new
    /// handshakes use them, connections already open keep theirs. The files
    /// are read with the privileges the process has now (after `--user`, that
    /// user's: files only root may read then fail). On an error, which names
    /// the file, the certificates in use stay. Without TLS listeners, does
    /// nothing.
    pub fn reload_tls(&self) -> io::Result<()> {
        match &self.shared.live.certs {
            Some(certs) => certs.reload().map_err(io::Error::from),
            None => Ok(()),
        }
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
        self.shared.obs.access.reopen()
    }

    /// Connections open right now.
    pub fn connections(&self) -> usize {
        self.shared.live.gate.active()
    }

    /// Graceful stop: stops accepting, closes connections that are not sending,
    /// lets transfers in flight finish for up to `drain` (connections close after
    /// their current transfer), then cancels whatever is left, closes everything
    /// and joins every worker. Returns how many connections were cut off.
    pub fn shutdown(mut self, drain: Duration) -> usize {
        let port = self.pool.port().clone();
        let shared = self.shared.clone();
        for id in shared.live.gate.drain() {
            let _ = port.cancel(id);
        }
        shared
            .live
            .registry
            .sweep_all(&port, &shared.settings.timeouts, true);
        let cut = shared.live.gate.wait_idle(Instant::now() + drain);
        if cut > 0 {
            info!("drain deadline passed: closing {cut} connections still sending");
        }
        self.pool.shutdown();
        shared.obs.access.flush();
        cut
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.pool.shutdown();
        self.shared.obs.access.flush();
    }
}

fn dispatch(port: &Port, shared: &Arc<Shared>, mut packet: Packet) {
    if (TICK_KEY..LISTENER_KEY).contains(&packet.key) {
        let shard = (packet.key - TICK_KEY) as usize;
        let draining = shared.live.gate.draining();
        let timeouts = &shared.settings.timeouts;
        let expired = shared.live.registry.sweep(shard, port, timeouts, draining);
        if let (Some(m), 1..) = (&shared.obs.metrics, expired) {
            m.error(ErrorKind::Timeout, expired);
        }
        shared.root.prune_cache();
        // Every buffer, not just this thread's: a worker whose shard's timer runs
        // elsewhere still gets its lines out within a tick.
        shared.obs.access.flush();
        if let Err((e, _)) = port.submit(Timeout::new(timeouts.tick(), packet.key)) {
            if !port.is_closed() {
                warn!("cannot re-arm the timeout sweep: {e}");
            }
        }
        return;
    }
    if packet.key >= LISTENER_KEY {
        let index = (packet.key - LISTENER_KEY) as usize;
        shared.live.gate.accepted(packet.id);
        match std::mem::replace(&mut packet.op, Op::Posted { token: 0 }) {
            Op::Accept(a) => on_accept(port, shared, index, packet.status, a),
            // The back-off timer after EMFILE and friends: accept again.
            Op::Timeout(_) => shared.live.gate.rearm(port, index),
            _ => {}
        }
        return;
    }
    conn::complete(port, packet);
}

fn on_accept(port: &Port, shared: &Arc<Shared>, index: usize, status: io::Result<()>, a: Accept) {
    let gate = &shared.live.gate;
    match status {
        Ok(()) => {
            let Some(sock) = a.socket else {
                gate.rearm(port, index);
                return;
            };
            if gate.refusing() {
                return; // dropping the socket closes it
            }
            let admin = gate.is_admin(index);
            let mut per_ip_ok = None;
            if let (false, Some(per_ip), Some(peer)) = (admin, &shared.live.per_ip, a.peer) {
                per_ip_ok = Some(per_ip.acquire(peer.ip()).then_some(peer.ip()));
            }
            if let Some(None) = per_ip_ok {
                // Over --max-conns-per-ip: no --max-conns slot, a budget of
                // its own and a short deadline, so it never keeps others out.
                if let Some(m) = &shared.obs.metrics {
                    m.error(ErrorKind::PerIpLimit, 1);
                }
                if let Some(id) = gate.open_refused() {
                    debug!(conn = id, peer = ?a.peer, "over --max-conns-per-ip: refusing");
                    let handle = port.associate(sock, id);
                    let watch = shared.live.registry.insert(id);
                    let mut conn = Conn::new(port, handle, a.peer, watch, shared.clone(), false);
                    // Counted as refused before anything can fail, so that
                    // dropping it releases what it holds.
                    conn.refuse_over_limit();
                    // On a TLS listener the refusal is answered inside TLS.
                    let tls = match (gate.is_tls(index), &shared.settings.tls) {
                        (true, Some(config)) => conn.start_tls(config),
                        _ => Ok(()),
                    };
                    match tls {
                        Ok(()) => conn::start(port, conn),
                        Err(e) => warn!("cannot start a TLS session: {e}"),
                    }
                } else {
                    debug!(peer = ?a.peer, "over --max-conns-per-ip, too many refused: closing");
                }
                gate.next(port, index, gate.active());
                return;
            }
            let (id, active) = gate.open(index);
            debug!(conn = id, peer = ?a.peer, "accepted");
            // Best effort: a socket that refuses it still works.
            let _ = listener::set_nodelay(&sock);
            listener::apply_notsent_lowat(&sock, shared.settings.notsent_lowat);
            let handle = port.associate(sock, id);
            let watch = shared.live.registry.insert(id);
            let mut conn = Conn::new(port, handle, a.peer, watch, shared.clone(), admin);
            // Counted before anything can fail: dropping the connection then
            // releases its per-address slot.
            if let Some(Some(ip)) = per_ip_ok {
                conn.count_per_ip(ip);
            }
            if gate.is_tls(index) {
                if let Some(config) = &shared.settings.tls {
                    if let Err(e) = conn.start_tls(config) {
                        warn!("cannot start a TLS session: {e}");
                        drop(conn);
                        gate.next(port, index, active);
                        return;
                    }
                }
            }
            conn::start(port, conn);
            gate.next(port, index, active);
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::ECANCELED) => {}
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                if let Some(m) = &shared.obs.metrics {
                    m.error(ErrorKind::Accept, 1);
                }
                if let Some(suppressed) = gate.accept_errors.allow() {
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
                gate.rearm(port, index);
            }
        },
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
