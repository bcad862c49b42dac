//! What a server is told: the public [`Config`], and the [`Settings`] derived
//! from it once at start. Both are immutable while the server runs; everything
//! that changes (counters, caches, registries) lives elsewhere (`conn::Live`,
//! `obs::Obs`, the open-file cache inside `fs::Root`).
//!
//! This module imports nothing of the crate but `obs` (the access-log types a
//! `Config` names) and `fs` (the path options): every layer may read it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iocomp::Backend;

use crate::fs::PathOptions;
use crate::obs::{AccessLogFormat, LogFile};

/// How `TCP_NOTSENT_LOWAT` is set on accepted connections
/// ([`Config::notsent_lowat`]): the most bytes the kernel holds queued but not
/// yet sent before a send waits; the socket polls writable again once fewer
/// than half that are left (Linux 5.0 and later; before, below the cap). The
/// kernel stops queueing new segments once that many bytes are unsent, so up
/// to one segment more can wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NotsentLowat {
    /// [`AUTO_NOTSENT_LOWAT`] on connections whose path MTU (`TCP_INFO` after
    /// accept) is at least [`AUTO_MIN_MTU`]: loopback (65,535 on IPv4,
    /// 65,536 on IPv6), which includes a proxy on the same host that connects
    /// over it, and any other path configured that large (IPoIB connected
    /// mode, a 64 KiB virtual link). There a queue under one segment lets TCP
    /// see the sender as application-limited, so each send goes out at once
    /// in full-sized segments instead of piling up behind the congestion
    /// window (on loopback under BBR the full queue cost 2–3× the CPU per
    /// byte). On an Ethernet-sized path (1,500; jumbo frames 9,000) no such
    /// cap is under a segment, and it only adds wake-ups (measured 10–20 %
    /// more CPU per byte), so those connections keep the system's setting.
    /// Where the system's `net.ipv4.tcp_notsent_lowat` (read at start) is
    /// already at most [`AUTO_NOTSENT_LOWAT`], that stricter setting is kept
    /// everywhere.
    #[default]
    Auto,
    /// Leaves the socket's own setting: what it inherited from its listener,
    /// by default the system's `net.ipv4.tcp_notsent_lowat` (no cap unless
    /// changed).
    System,
    /// This many bytes on every connection (0 is taken by the kernel as
    /// [`NotsentLowat::System`]).
    Bytes(u32),
}

/// The cap [`NotsentLowat::Auto`] sets: 32 KiB, under one loopback segment.
pub const AUTO_NOTSENT_LOWAT: u32 = 32 * 1024;
/// The path MTU from which [`NotsentLowat::Auto`] sets its cap.
pub const AUTO_MIN_MTU: u32 = 16 * 1024;

impl NotsentLowat {
    /// The cap for a connection whose path MTU is `mtu` (`None`: leave the
    /// system's setting).
    #[must_use]
    pub fn for_path_mtu(self, mtu: u32) -> Option<u32> {
        match self {
            NotsentLowat::Auto => (mtu >= AUTO_MIN_MTU).then_some(AUTO_NOTSENT_LOWAT),
            NotsentLowat::System | NotsentLowat::Bytes(0) => None,
            NotsentLowat::Bytes(n) => Some(n),
        }
    }
}

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
    /// [`Server::reopen_access_log`](crate::Server::reopen_access_log)), or standard output when `None`.
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
    /// their contents; a hit is re-checked under the path policy (one
    /// `openat2(O_PATH)` and `fstat`) once `open_file_cache_valid` has passed; capped at a quarter of the
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
    /// answered `503`/`busy` on their first request and closed (a silent one
    /// after at most a second); they take no `max_conns` slot meanwhile.
    pub max_conns_per_ip: usize,
    /// `TCP_NOTSENT_LOWAT` on accepted connections (default
    /// [`NotsentLowat::Auto`]: 32 KiB on loopback-class paths only).
    pub notsent_lowat: NotsentLowat,
    /// Where to serve `/metrics`, `/status.json` and the status page `/`
    /// (none by default).
    pub metrics: Option<SocketAddr>,
    /// The metrics listener already listening (bound before dropping
    /// privileges, so that a privileged port works with `--user`): used
    /// instead of binding `metrics`.
    pub metrics_listener: Option<Arc<TcpListener>>,
    /// Addresses to listen on with TLS (HTTPS, and the line protocol inside
    /// TLS); they need `tls_certs`.
    pub tls_binds: Vec<SocketAddr>,
    /// TLS sockets already listening (bound before dropping privileges, so
    /// that port 443 works with `--user`): served before those of
    /// `tls_binds`.
    pub tls_listeners: Vec<Arc<TcpListener>>,
    /// Certificates for the TLS listeners, PEM files; the first is the
    /// default. Read at start unless `tls_pem` holds them already.
    pub tls_certs: Vec<CertFiles>,
    /// The certificates and keys already read (with [`CertPem::read`], as
    /// root, before dropping privileges, so that a key only root may read
    /// works with `--user`); used instead of reading `tls_certs` at start.
    /// A reload (`SIGHUP`) reads the files again as the user the server runs
    /// as: it needs them readable by that user, or keeps the old ones.
    pub tls_pem: Vec<CertPem>,
    /// Kernel TLS (`--ktls`): used where the probe at start found it
    /// working (the default), required, or never used.
    pub ktls: KtlsMode,
    /// Turn TLS session tickets off (no resumption; every connection makes a
    /// full handshake, as a benchmark of the handshake wants). On by default.
    pub tls_no_tickets: bool,
    /// Send `Strict-Transport-Security: max-age=N` (whole seconds) on every
    /// HTTP response over TLS, never over plain HTTP (RFC 6797 §7.2); none
    /// by default.
    pub hsts: Option<Duration>,
    /// Answer every HTTP request on a plain listener with `301` to the same
    /// name over HTTPS on this port (omitted from the URL when 443), as
    /// nginx's `return 301 https://$host$request_uri`; the line protocol is
    /// unaffected. Off by default.
    pub https_redirect: Option<u16>,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, leaf first (PEM `CERTIFICATE` blocks).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A certificate chain and its key as read from their files (PEM text), so
/// that the files may be read with privileges the server later gives up.
#[derive(Clone)]
pub struct CertPem {
    /// Where they were read from (for messages and a reload).
    pub files: CertFiles,
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

impl std::fmt::Debug for CertPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CertPem")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CertPem {
    /// Reads both files; an error names the file.
    pub fn read(files: &CertFiles) -> std::io::Result<CertPem> {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        Ok(CertPem {
            files: files.clone(),
            cert: read(&files.cert)?,
            key: read(&files.key)?,
        })
    }
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
            notsent_lowat: NotsentLowat::Auto,
            metrics: None,
            metrics_listener: None,
            tls_binds: Vec::new(),
            tls_listeners: Vec::new(),
            tls_certs: Vec::new(),
            tls_pem: Vec::new(),
            tls_no_tickets: false,
            ktls: KtlsMode::Auto,
            hsts: None,
            https_redirect: None,
        }
    }
}

/// The immutable settings every layer reads, derived from a [`Config`] at start.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The three timeouts.
    pub(crate) timeouts: Timeouts,
    /// HTTP `Cache-Control` value for files.
    pub(crate) cache_control: Option<String>,
    /// HTTP directory listings are on.
    pub(crate) listing: bool,
    /// The per-reply bandwidth cap, if any.
    pub(crate) rate: Option<Rate>,
    /// The TLS listeners' rustls configuration, if there are any.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The (TLS 1.3 cipher, direction) pairs the kernel took at the probe
    /// at start (none with `--ktls off`): TLS connections try the hand-off
    /// to it after their handshake where their cipher works both ways
    /// (`conn::ktls`).
    pub(crate) ktls: crate::conn::ktls::Support,
    /// The `Strict-Transport-Security` header line (with its CRLF) for HTTP
    /// responses over TLS.
    pub(crate) hsts: Option<Vec<u8>>,
    /// Redirect plain HTTP requests to HTTPS on this port.
    pub(crate) https_redirect: Option<u16>,
    /// `TCP_NOTSENT_LOWAT` for accepted connections.
    pub(crate) notsent_lowat: NotsentLowat,
}

impl Settings {
    /// The settings of `config`.
    pub(crate) fn new(config: &Config) -> Settings {
        Settings {
            timeouts: Timeouts {
                header: config.header_timeout,
                idle: config.idle_timeout,
                send: config.send_timeout,
            },
            cache_control: config.cache_control.clone(),
            listing: config.listing,
            rate: (config.rate_limit > 0).then_some(Rate {
                rate: config.rate_limit,
                after: config.rate_limit_after,
            }),
            tls: None,
            ktls: crate::conn::ktls::Support::NONE,
            https_redirect: config.https_redirect,
            notsent_lowat: match config.notsent_lowat {
                NotsentLowat::Auto if system_notsent_lowat() <= u64::from(AUTO_NOTSENT_LOWAT) => {
                    NotsentLowat::System
                }
                other => other,
            },
            hsts: config.hsts.map(|d| {
                format!("Strict-Transport-Security: max-age={}\r\n", d.as_secs()).into_bytes()
            }),
        }
    }
}

/// The system's `net.ipv4.tcp_notsent_lowat` in this network namespace
/// (unlimited, `u64::MAX`, where it cannot be read).
fn system_notsent_lowat() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_notsent_lowat")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// The three timeouts (`--header-timeout`, `--idle-timeout`, `--send-timeout`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
    pub(crate) send: Duration,
}

impl Timeouts {
    /// How often to sweep: often enough that a limit is enforced within about
    /// a quarter of itself, at most once a second, at least every 10 ms.
    pub(crate) fn tick(&self) -> Duration {
        (self.header.min(self.idle).min(self.send) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// A per-reply bandwidth cap (`--rate-limit`, `--rate-limit-after`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rate {
    /// Bytes per second after the burst.
    pub(crate) rate: u64,
    /// Bytes each reply may send before the cap applies.
    pub(crate) after: u64,
}

/// Whether TLS connections may hand their record layer to kernel TLS after
/// the handshake (`--ktls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KtlsMode {
    /// Where the probe at start found the kernel taking the cipher's keys
    /// both ways; user space otherwise.
    #[default]
    Auto,
    /// As `Auto`, but the server does not start when the probe finds no
    /// cipher the kernel takes both ways (the error says what the probe saw).
    On,
    /// Never: every TLS connection encrypts in user space.
    Off,
}
