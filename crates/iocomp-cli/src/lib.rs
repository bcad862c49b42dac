//! The `iocomp` command: `iocomp serve [DIR]` serves a directory to `nc`-style
//! and HTTP clients over an I/O completion port; `iocomp get` downloads and
//! `iocomp bench` load-tests. The server lives in `iocomp-server`, the engine
//! in `iocomp`; the clients are the modules here.
//!
//! This library is the whole command; the `iocomp` binary only calls [`run`].
//! It is a library so that the fuzz targets in `fuzz/` can reach the parsers
//! of untrusted input here (the `fuzz` module, behind the `fuzz` feature
//! that only `fuzz/` and this crate's tests enable): `get`'s response head,
//! its body framing and content decoding, and `serve --config`'s file.
//!
//! Unsafe code is denied here and allowed in one module, `sys`, which wraps
//! every libc call the command makes, each with its `SAFETY` argument.
#![deny(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use iocomp_server::{
    AccessLogFormat, Config, KtlsMode, LogFile, NotsentLowat, PathOptions, Server,
};
use tracing::{error, info, warn};

mod bench;
mod client;
mod config;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
mod get;
mod privdrop;
mod progress;
mod proxy;
mod signals;
mod sys;
mod systemd;
mod target;

#[derive(Parser)]
#[command(
    name = "iocomp",
    about = "A file-download server on an I/O completion port",
    disable_version_flag = true,
    arg_required_else_help = true
)]
struct Cli {
    /// Print the version and the engine backend this machine would run.
    #[arg(short = 'V', long)]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the files under DIR over HTTP/1.1 (`curl http://127.0.0.1:8182/README.md`)
    /// and the seed's line protocol (`printf 'README.md\n' | nc -q1 127.0.0.1 8182`), on one port.
    Serve(Box<ServeArgs>),
    /// Load-test a server: keep-alive connections issuing requests back to back
    /// for a fixed time, on the iocomp engine; requests/s, bytes/s, errors and
    /// latency percentiles (`iocomp bench http://127.0.0.1:8182/f -c 64 -d 10s`).
    Bench(bench::BenchArgs),
    /// Download files over HTTP (or the line protocol with --raw), with
    /// progress, resume (-c) and parallel ranges (-j).
    #[command(after_help = get::EXIT_CODES)]
    Get(get::GetArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The directory to serve; nothing outside it is ever sent.
    #[arg(id = "root", value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Read options from a TOML file: each key is a long flag (`threads = 4`,
    /// `bind = ["[::]:80"]`, `hidden = true`, `root = "/srv"`); flags given here override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (file, flags and defaults) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Address to listen on (repeatable; IPv6 as `[::]:8182`). Under systemd socket
    /// activation the passed sockets are served, and an explicit --bind adds to them.
    #[arg(long = "bind", value_name = "ADDR", default_value = "0.0.0.0:8182")]
    bind: Vec<SocketAddr>,
    /// Worker threads [default: the number of CPUs available; at most 1024].
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    /// Only warnings and errors (the `listening on` lines are always printed).
    #[arg(long, short)]
    quiet: bool,
    /// Also log every connection and file (debug level).
    #[arg(long, short, conflicts_with = "quiet")]
    verbose: bool,
    /// Serve dotfiles (names with a component starting with '.').
    #[arg(long)]
    hidden: bool,
    /// Never follow symlinks, not even those that stay inside DIR.
    #[arg(long)]
    no_symlinks: bool,
    /// Longest wait for a complete request (a name line or an HTTP head), from its first byte (e.g. 10s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Longest wait for the next request after a reply (keep-alive).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Longest time a transfer may make no progress (a slow reader that moves is never cut).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    send_timeout: Duration,
    /// At this many open connections, stop accepting until one closes.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_conns: usize,
    /// On Ctrl+C/SIGTERM, how long transfers in flight may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Access log format: off, clf, combined or json [default: clf; off with --quiet
    /// unless --access-log-file is given].
    #[arg(long, value_name = "FORMAT")]
    access_log: Option<AccessLogFormat>,
    /// Write the access log to this file (appending) instead of standard output;
    /// SIGUSR1 reopens it (logrotate's `postrotate kill -USR1`).
    #[arg(long, value_name = "PATH")]
    access_log_file: Option<PathBuf>,
    /// When started as root: after binding and opening the log, become this user
    /// (and its groups) for good. Refused when not root.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// With --user: this group instead of the user's primary group.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// HTTP `Cache-Control` header for files (e.g. "max-age=3600"); none by default.
    #[arg(long, value_name = "VALUE")]
    cache_control: Option<String>,
    /// Regular files kept open between requests, small ones with their contents (0: none).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    open_file_cache: usize,
    /// How long a cached file is served without re-checking its name, as nginx's
    /// open_file_cache_valid (lighttpd: 1s); 0s checks on every request, so a replaced file is
    /// seen at once.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    open_file_cache_valid: Duration,
    /// Answer 404 for a directory without index.html instead of listing it.
    #[arg(long)]
    no_listing: bool,
    /// Engine backend: auto (io_uring, else epoll), uring or epoll; IOCOMP_BACKEND overrides auto.
    #[arg(long, value_name = "NAME", default_value = "auto")]
    backend: iocomp::Backend,
    /// Cap each reply at this many bytes per second after its first --rate-limit-after bytes
    /// (suffixes k, m, g: ×1024, as nginx's limit_rate); 0: no limit.
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_size)]
    rate_limit: u64,
    /// Bytes each reply sends at full speed before --rate-limit applies (nginx's limit_rate_after).
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_size)]
    rate_limit_after: u64,
    /// Open connections one client address may have; more get `503` (HTTP) or
    /// `File transmit error: busy` on their first request. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_conns_per_ip: usize,
    /// Unsent bytes the kernel may queue per connection (TCP_NOTSENT_LOWAT; suffixes k, m, g):
    /// auto (32k on loopback-class paths, whose MTU is 16 KiB or more; the system's
    /// elsewhere), 0 (the system's net.ipv4.tcp_notsent_lowat everywhere) or BYTES everywhere.
    #[arg(long, value_name = "auto|BYTES", default_value = "auto", value_parser = parse_notsent_lowat)]
    notsent_lowat: NotsentLowat,
    /// Serve /metrics (Prometheus), /status.json and a live status page / on this address (off by default).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Address to listen on with TLS: HTTPS, and the line protocol inside TLS (repeatable;
    /// needs --tls-cert and --tls-key).
    #[arg(long = "tls-bind", value_name = "ADDR")]
    tls_bind: Vec<SocketAddr>,
    /// TLS certificate chain, PEM, leaf first (repeatable, paired in order with --tls-key:
    /// chosen by SNI; no SNI or an unknown name gets the first). Read at start before --user
    /// gives root up; SIGHUP reloads the files as that user, so they must be readable by it
    /// for a reload (otherwise the certificates in use stay, with a warning).
    #[arg(long = "tls-cert", value_name = "FILE")]
    tls_cert: Vec<PathBuf>,
    /// The private key of the --tls-cert in the same position, PEM.
    #[arg(long = "tls-key", value_name = "FILE")]
    tls_key: Vec<PathBuf>,
    /// Turn TLS session tickets off: no resumption, every connection makes a full handshake
    /// (for benchmarks of the handshake).
    #[arg(long = "tls-no-tickets")]
    tls_no_tickets: bool,
    /// Kernel TLS for TLS 1.3 connections after their handshake: auto (where the probe at
    /// start finds the kernel taking the cipher's keys both ways), on (as auto, but refuse to
    /// start when the probe finds none) or off (always encrypt in user space). Stock kernels
    /// build it as a module: `modprobe tls` may be needed.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_ktls)]
    ktls: KtlsMode,
    /// Send `Strict-Transport-Security: max-age=` this duration (e.g. 8760h, a year) on
    /// every HTTPS response, never on plain HTTP; none by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    hsts: Option<Duration>,
    /// Answer plain HTTP requests with 301 to the same URL over HTTPS on this port (443 is
    /// left out of the URL); the line protocol is unaffected. Off by default.
    #[arg(long, value_name = "PORT")]
    https_redirect: Option<u16>,
}

/// `--notsent-lowat`: `auto`, `0` (the socket's own setting, by default the
/// system's) or a size; 2 GiB or more is no cap (the kernel takes an int, and
/// the server caps it there).
pub(crate) fn parse_notsent_lowat(s: &str) -> Result<NotsentLowat, String> {
    if s.trim() == "auto" {
        return Ok(NotsentLowat::Auto);
    }
    match parse_size(s) {
        Ok(0) => Ok(NotsentLowat::System),
        Ok(n) => Ok(NotsentLowat::Bytes(u32::try_from(n).unwrap_or(u32::MAX))),
        Err(_) => Err(format!(
            "not auto or a size in bytes: {s:?} (try auto, 0, 32k)"
        )),
    }
}

/// `--ktls`: `auto`, `on` or `off`.
pub(crate) fn parse_ktls(s: &str) -> Result<KtlsMode, String> {
    match s {
        "auto" => Ok(KtlsMode::Auto),
        "on" => Ok(KtlsMode::On),
        "off" => Ok(KtlsMode::Off),
        _ => Err("expected auto, on or off".into()),
    }
}

/// `2000000`, `512k`, `10M`, `1g` (k, m, g are powers of 1024, as in nginx).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a size in bytes: {s:?} (try 500000, 512k, 10M)"))
}

/// The most worker threads `serve` and `bench` start.
const MAX_THREADS: usize = 1024;

/// A thread count, at most [`MAX_THREADS`] (0 is refused later, with the
/// other counts that must be at least 1).
pub(crate) fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_THREADS => Ok(n),
        _ => Err(format!("not a thread count: {s:?} (0 to {MAX_THREADS})")),
    }
}

/// `10s`, `500ms`, `2m`, or a plain number of seconds (`1.5`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m, h)")),
    };
    if !(0.0..=MAX_DURATION_SECS).contains(&secs) {
        return Err(format!(
            "not a valid duration: {s:?} (0 to {}h)",
            MAX_DURATION_SECS / 3600.0
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("not a valid duration: {s:?}"))
}

/// The longest duration any option takes: a year (deadlines are computed by
/// adding it to the clock, which must not overflow).
const MAX_DURATION_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Runs the `iocomp` command with the process's arguments; its exit code.
pub fn run() -> ExitCode {
    let top = Cli::command();
    let matches = top.clone().get_matches();
    let matches = match config::apply(&top, matches, std::env::args_os().collect()) {
        Ok(m) => m,
        Err(msg) => {
            eprintln!("iocomp: {msg}");
            return ExitCode::from(2);
        }
    };
    if let Some(("serve", m)) = matches.subcommand() {
        if m.get_flag("print_config") {
            if let Some(serve) = top.find_subcommand("serve") {
                print!("{}", config::print(serve, m));
            }
            return ExitCode::SUCCESS;
        }
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let bind_given = matches
        .subcommand_matches("serve")
        .is_some_and(|m| m.value_source("bind") == Some(clap::parser::ValueSource::CommandLine));
    if cli.version {
        return version();
    }
    match cli.cmd {
        Some(Cmd::Serve(args)) => serve(*args, bind_given),
        Some(Cmd::Bench(args)) => finish(bench::run(args)),
        Some(Cmd::Get(args)) => ExitCode::from(get::run(args)),
        None => ExitCode::from(2),
    }
}

/// A client command's end: its error on one line, and its exit code.
fn finish(r: Result<(), client::Fail>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iocomp: {e}");
            ExitCode::from(e.code())
        }
    }
}

/// `iocomp --version`: the version, and which backend a server would run on
/// this machine now (and why, when it falls back).
fn version() -> ExitCode {
    println!("iocomp {}", env!("CARGO_PKG_VERSION"));
    match iocomp::Port::builder().concurrency(1).build() {
        Ok(port) => match port.fallback_reason() {
            Some(why) => println!("backend: {} (io_uring unavailable: {why})", port.backend()),
            None => println!("backend: {}", port.backend()),
        },
        Err(e) => println!("backend: none ({e})"),
    }
    ExitCode::SUCCESS
}

fn serve(args: ServeArgs, bind_given: bool) -> ExitCode {
    // systemd's variables are read and removed before anything else runs.
    let passed = systemd::listen_fds();
    let notifier = systemd::Notifier::from_env();
    let level = if args.quiet {
        tracing::Level::WARN
    } else if args.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();

    if args.threads == Some(0) || args.max_conns == 0 {
        error!("--threads and --max-conns must be at least 1");
        return ExitCode::from(2);
    }
    let notifier = match notifier {
        Ok(n) => n,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let identity = match (&args.user, &args.group) {
        (None, None) => None,
        (None, Some(_)) => {
            error!("--group needs --user");
            return ExitCode::from(2);
        }
        (Some(user), group) => match privdrop::lookup(user, group.as_deref()) {
            Ok(id) => Some(id),
            Err(e) => {
                error!("{e}");
                return ExitCode::from(2);
            }
        },
    };
    // Block SIGINT/SIGTERM before any thread starts, so every thread inherits the
    // mask and only `signals::wait` sees them.
    let sigs = match signals::Signals::block() {
        Ok(s) => s,
        Err(e) => {
            error!("cannot block signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match listen(passed, &args.bind, bind_given) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The metrics listener too: a privileged port is bound only as root.
    let metrics_listener = match args.metrics.map(bind_metrics).transpose() {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Opened as root (a log directory only root may write), never through a
    // symlink (`LogFile::open` refuses one).
    if args.tls_cert.len() != args.tls_key.len() {
        error!("--tls-cert and --tls-key come in pairs");
        return ExitCode::from(2);
    }
    if args.tls_bind.is_empty()
        && (!args.tls_cert.is_empty() || args.tls_no_tickets || args.ktls == KtlsMode::On)
    {
        error!("--tls-cert, --tls-key, --tls-no-tickets and --ktls on need --tls-bind");
        return ExitCode::from(2);
    }
    // Read as root (a key only root may read, as nginx reads its keys), before
    // `--user` gives root up; a reload reads them again as that user.
    let mut tls_pem = Vec::new();
    if !args.tls_bind.is_empty() {
        for (cert, key) in args.tls_cert.iter().zip(&args.tls_key) {
            let files = iocomp_server::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            match iocomp_server::CertPem::read(&files) {
                Ok(p) => tls_pem.push(p),
                Err(e) => {
                    error!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let mut tls_listeners = Vec::new();
    for addr in &args.tls_bind {
        match iocomp_server::listener::bind(*addr) {
            Ok(l) => tls_listeners.push(Arc::new(l)),
            Err(e) => {
                error!("cannot listen on {addr} (TLS): {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let log_file = match args
        .access_log_file
        .as_deref()
        .map(LogFile::open)
        .transpose()
    {
        Ok(f) => f,
        Err(e) => {
            let path = args
                .access_log_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            error!("cannot open the access log {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    // Still one thread: give root up before the workers start.
    if let (Some(id), Some(user)) = (&identity, &args.user) {
        if let Err(e) = privdrop::switch(id) {
            error!("--user {user}: {e}");
            return ExitCode::FAILURE;
        }
        info!("running as user {user} (uid {}, gid {})", id.uid, id.gid);
        // The root was checked as root; as the new user it may be closed.
        if let Err(e) = std::fs::read_dir(&args.dir) {
            warn!(
                "as user {user}, {} cannot be read ({e}): listings fail, and files are served only if \
                 the directory is searchable",
                args.dir.display()
            );
        }
    }
    let mut config = Config::new(&args.dir);
    config.binds = Vec::new();
    config.listeners = listeners;
    config.access_log_file = log_file;
    config.threads = args.threads.unwrap_or(0);
    config.path = PathOptions {
        hidden: args.hidden,
        no_symlinks: args.no_symlinks,
        ..PathOptions::default()
    };
    config.header_timeout = args.header_timeout;
    config.idle_timeout = args.idle_timeout;
    config.send_timeout = args.send_timeout;
    config.max_conns = args.max_conns;
    config.drain_timeout = args.drain_timeout;
    config.access_log =
        args.access_log
            .unwrap_or(if args.quiet && args.access_log_file.is_none() {
                AccessLogFormat::Off
            } else {
                AccessLogFormat::Clf
            });
    config.backend = args.backend;
    config.cache_control = args.cache_control;
    config.listing = !args.no_listing;
    config.open_file_cache = args.open_file_cache;
    config.open_file_cache_valid = args.open_file_cache_valid;
    if args.rate_limit_after > 0 && args.rate_limit == 0 {
        tracing::warn!("--rate-limit-after has no effect without --rate-limit");
    }
    config.rate_limit = args.rate_limit;
    config.rate_limit_after = args.rate_limit_after;
    config.max_conns_per_ip = args.max_conns_per_ip;
    config.notsent_lowat = args.notsent_lowat;
    config.metrics = args.metrics;
    config.metrics_listener = metrics_listener;
    let tls = !tls_listeners.is_empty();
    config.tls_listeners = tls_listeners;
    config.hsts = args.hsts;
    config.https_redirect = args.https_redirect;
    config.tls_certs = (args.tls_cert.iter().zip(&args.tls_key))
        .map(|(cert, key)| iocomp_server::CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        })
        .collect();
    config.tls_pem = tls_pem;
    config.tls_no_tickets = args.tls_no_tickets;
    // Probed in `Server::start` (on loopback sockets; loads no module).
    config.ktls = args.ktls;
    let drain = config.drain_timeout;
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let addrs: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    info!(
        "Startup: serving {} on {}",
        args.dir.display(),
        addrs.join(", ")
    );
    match server.fallback_reason() {
        None => info!(
            "{} worker threads, backend {}",
            server.threads(),
            server.backend()
        ),
        Some(why) => info!(
            "{} worker threads, backend {} (io_uring unavailable: {why})",
            server.threads(),
            server.backend()
        ),
    }
    if let Some(m) = server.metrics_addr() {
        info!("metrics on http://{m}/metrics, status page on http://{m}/");
    }
    info!("press Ctrl+C to shut down");
    {
        let mut out = std::io::stdout().lock();
        for a in &addrs {
            let _ = writeln!(out, "listening on {a}");
        }
        if let Some(m) = server.metrics_addr() {
            let _ = writeln!(out, "metrics on {m}");
        }
        let _ = out.flush();
    }
    notifier.notify("READY=1");

    let sig = loop {
        match sigs.wait() {
            "SIGUSR1" => reopen(&server),
            // Nothing to reload without a TLS listener.
            "SIGHUP" if tls => match server.reload_tls() {
                Ok(()) => info!("SIGHUP: TLS certificates reloaded"),
                Err(e) => warn!("SIGHUP: {e}; the certificates in use stay"),
            },
            "SIGHUP" => info!("SIGHUP: nothing to reload"),
            sig => break sig,
        }
    };
    notifier.notify("STOPPING=1");
    info!("Shutdown ({sig}): no new connections; letting transfers finish (up to {drain:?}; Ctrl+C again to stop now)");
    // A second signal exits at once.
    std::thread::spawn(move || {
        let sig = loop {
            match sigs.wait() {
                "SIGUSR1" => info!("SIGUSR1 while shutting down: the access log is not reopened"),
                "SIGHUP" => info!("SIGHUP while shutting down: nothing reloaded"),
                sig => break sig,
            }
        };
        eprintln!("iocomp: second signal ({sig}), exiting now");
        std::process::exit(130);
    });
    let cut = server.shutdown(drain);
    info!("stopped ({cut} transfers cut off)");
    ExitCode::SUCCESS
}

/// The listening sockets: those systemd passed, and the `--bind` addresses
/// when there are none or when --bind was given explicitly (command line or
/// config file). Bound here, before root is given up.
fn listen(
    passed: Result<Vec<systemd::Passed>, String>,
    binds: &[SocketAddr],
    bind_given: bool,
) -> Result<Vec<Arc<TcpListener>>, String> {
    let mut out = Vec::new();
    for p in passed? {
        info!("socket activation: descriptor {} ({})", p.fd, p.name);
        out.push(Arc::new(p.listener));
    }
    if out.is_empty() || bind_given {
        for addr in binds {
            let l = iocomp_server::listener::bind(*addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            out.push(Arc::new(l));
        }
    }
    Ok(out)
}

/// The `--metrics` listener, bound here with the others, before root is
/// given up.
fn bind_metrics(addr: SocketAddr) -> Result<Arc<TcpListener>, String> {
    iocomp_server::listener::bind(addr)
        .map(Arc::new)
        .map_err(|e| format!("cannot listen on {addr} (metrics): {e}"))
}

/// SIGUSR1: reopens the access-log file (logrotate).
fn reopen(server: &Server) {
    match server.reopen_access_log() {
        Ok(Some(path)) => info!("SIGUSR1: access log reopened: {}", path.display()),
        Ok(None) => info!("SIGUSR1: the access log goes to standard output; nothing to reopen"),
        Err(e) => {
            warn!("SIGUSR1: cannot reopen the access log ({e}); still writing to the old file")
        }
    }
}
