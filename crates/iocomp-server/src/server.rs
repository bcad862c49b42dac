//! The server: listeners, the worker pool, and packet dispatch.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iocomp::{Accept, Handle, Op, Packet, Pool, Port, Timeout};
use tracing::{debug, warn};

use crate::conn::{self, Conn};
use crate::listener;
use crate::path::{PathOptions, Root};

/// Keys at and above this are listeners (key = LISTENER_KEY + index); below are
/// connections.
const LISTENER_KEY: u64 = u64::MAX - 0xffff;
/// How long to wait before accepting again after the process ran out of
/// descriptors or memory.
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
}

impl Config {
    /// Serve `root` on the seed's port, `0.0.0.0:8182`, with one thread per CPU.
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            binds: vec![SocketAddr::from(([0, 0, 0, 0], 8182))],
            threads: 0,
            path: PathOptions::default(),
        }
    }
}

/// A running server. [`Server::shutdown`] stops it; dropping it does too.
pub struct Server {
    pool: Pool,
    addrs: Vec<SocketAddr>,
    threads: usize,
}

struct Shared {
    root: Root,
    listeners: Vec<Handle>,
    next_conn: AtomicU64,
}

impl Server {
    /// Binds every address, starts the workers and begins accepting. Returns
    /// when the server is ready: every worker is attached and every listener
    /// has accepts in flight.
    pub fn start(config: Config) -> io::Result<Server> {
        let root = Root::open(&config.root, config.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot serve {}: {e}", config.root.display()),
            )
        })?;
        let port = Port::builder().concurrency(config.threads).build()?;
        let threads = port.concurrency();
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for (i, addr) in config.binds.iter().enumerate() {
            let l = listener::bind(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            addrs.push(l.local_addr()?);
            listeners.push(port.associate(l, LISTENER_KEY + i as u64));
        }
        let shared = Arc::new(Shared {
            root,
            listeners,
            next_conn: AtomicU64::new(1),
        });
        let s2 = shared.clone();
        let pool = Pool::new(&port, threads, move |port, packet| {
            dispatch(port, &s2, packet)
        })?;
        // One accept per worker per listener, each issued on a worker so that it
        // lives in that worker's ring and its connections start there.
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..threads {
            for l in &shared.listeners {
                let (port, l, tx) = (port.clone(), l.clone(), tx.clone());
                pool.queue(move || {
                    let _ = tx.send(port.submit(Accept::new(&l)).map(|_| ()).map_err(|(e, _)| e));
                })?;
            }
        }
        drop(tx);
        for r in rx {
            r?;
        }
        Ok(Server {
            pool,
            addrs,
            threads,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The engine backend in use.
    pub fn backend(&self) -> &'static str {
        "io_uring"
    }

    /// Stops accepting, closes every connection (cancelling transfers in
    /// flight), and joins every worker.
    pub fn shutdown(mut self) {
        self.pool.shutdown();
    }
}

fn dispatch(port: &Port, shared: &Shared, mut packet: Packet) {
    if packet.key >= LISTENER_KEY {
        let index = (packet.key - LISTENER_KEY) as usize;
        let Some(listener) = shared.listeners.get(index) else {
            return;
        };
        match std::mem::replace(&mut packet.op, Op::Posted { token: 0 }) {
            Op::Accept(a) => on_accept(port, shared, listener, packet.status, a),
            // The back-off timer after EMFILE and friends: accept again.
            Op::Timeout(_) => rearm(port, listener),
            _ => {}
        }
        return;
    }
    conn::complete(port, &shared.root, packet);
}

fn on_accept(port: &Port, shared: &Shared, listener: &Handle, status: io::Result<()>, a: Accept) {
    match status {
        Ok(()) => {
            if let Some(sock) = a.socket {
                let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                debug!(conn = id, peer = ?a.peer, "accepted");
                let handle = port.associate(sock, id);
                conn::start(port, &shared.root, Conn::new(handle, a.peer));
            }
            rearm(port, listener);
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::ECANCELED) => {}
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                warn!("accept: {e}; retrying in {ACCEPT_BACKOFF:?}");
                let t = Timeout::new(ACCEPT_BACKOFF, listener.key());
                if let Err((e, _)) = port.submit(t) {
                    debug!("cannot arm the accept back-off: {e}");
                }
            }
            // The connection died between SYN and accept, and the like: go on.
            _ => {
                debug!("accept: {e}");
                rearm(port, listener);
            }
        },
    }
}

fn rearm(port: &Port, listener: &Handle) {
    if let Err((e, _)) = port.submit(Accept::new(listener)) {
        if !port.is_closed() {
            warn!("cannot accept again: {e}");
        }
    }
}
