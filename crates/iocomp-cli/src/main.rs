//! The `iocomp` command: `iocomp serve [DIR]` serves a directory to `nc`-style
//! and HTTP clients over an I/O completion port; `iocomp get` downloads and
//! `iocomp bench` load-tests. The server lives in `iocomp-server`, the engine
//! in `iocomp`; the clients are the modules here.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use iocomp_server::{AccessLogFormat, Config, PathOptions, Server};
use tracing::{error, info};

mod bench;
mod client;
mod get;
mod progress;
mod proxy;
mod signals;
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
    Serve(ServeArgs),
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
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Address to listen on (repeatable; IPv6 as `[::]:8182`).
    #[arg(long = "bind", value_name = "ADDR", default_value = "0.0.0.0:8182")]
    bind: Vec<SocketAddr>,
    /// Worker threads [default: the number of CPUs available].
    #[arg(long, value_name = "N")]
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
    /// Access log on standard output: off, clf, combined or json [default: clf; off with --quiet].
    #[arg(long, value_name = "FORMAT")]
    access_log: Option<AccessLogFormat>,
    /// HTTP `Cache-Control` header for files (e.g. "max-age=3600"); none by default.
    #[arg(long, value_name = "VALUE")]
    cache_control: Option<String>,
    /// Regular files kept open between requests, each re-checked with one fstatat per hit (0: none).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    open_file_cache: usize,
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
    /// Serve /metrics (Prometheus), /status.json and a live status page / on this address (off by default).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
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
    Duration::try_from_secs_f64(secs).map_err(|_| format!("not a valid duration: {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.version {
        return version();
    }
    match cli.cmd {
        Some(Cmd::Serve(args)) => serve(args),
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

fn serve(args: ServeArgs) -> ExitCode {
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
    // Block SIGINT/SIGTERM before any thread starts, so every thread inherits the
    // mask and only `signals::wait` sees them.
    let sigs = match signals::Signals::block() {
        Ok(s) => s,
        Err(e) => {
            error!("cannot block signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = Config::new(&args.dir);
    config.binds = args.bind;
    config.threads = args.threads.unwrap_or(0);
    config.path = PathOptions {
        hidden: args.hidden,
        no_symlinks: args.no_symlinks,
    };
    config.header_timeout = args.header_timeout;
    config.idle_timeout = args.idle_timeout;
    config.send_timeout = args.send_timeout;
    config.max_conns = args.max_conns;
    config.drain_timeout = args.drain_timeout;
    config.access_log = args.access_log.unwrap_or(if args.quiet {
        AccessLogFormat::Off
    } else {
        AccessLogFormat::Clf
    });
    config.backend = args.backend;
    config.cache_control = args.cache_control;
    config.listing = !args.no_listing;
    config.open_file_cache = args.open_file_cache;
    if args.rate_limit_after > 0 && args.rate_limit == 0 {
        tracing::warn!("--rate-limit-after has no effect without --rate-limit");
    }
    config.rate_limit = args.rate_limit;
    config.rate_limit_after = args.rate_limit_after;
    config.max_conns_per_ip = args.max_conns_per_ip;
    config.metrics = args.metrics;
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

    let sig = sigs.wait();
    info!("Shutdown ({sig}): no new connections; letting transfers finish (up to {drain:?}; Ctrl+C again to stop now)");
    // A second signal exits at once.
    std::thread::spawn(move || {
        let sig = sigs.wait();
        eprintln!("iocomp: second signal ({sig}), exiting now");
        std::process::exit(130);
    });
    let cut = server.shutdown(drain);
    info!("stopped ({cut} transfers cut off)");
    ExitCode::SUCCESS
}
