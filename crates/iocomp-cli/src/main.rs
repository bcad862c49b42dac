//! The `iocomp` command: `iocomp serve [DIR]` serves a directory to `nc`-style
//! clients over an I/O completion port. Argument parsing and wiring only; the
//! server lives in `iocomp-server`, the engine in `iocomp`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iocomp_server::{Config, PathOptions, Server};
use tracing::{error, info};

mod signals;

#[derive(Parser)]
#[command(
    name = "iocomp",
    version,
    about = "A file-download server on an I/O completion port"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the files under DIR: a client sends a file name and a newline
    /// (`printf 'README.md\n' | nc -q1 127.0.0.1 8182`) and gets the file.
    Serve(ServeArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(args) => serve(args),
    }
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

    if args.threads == Some(0) {
        error!("--threads must be at least 1");
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
    info!(
        "{} worker threads, backend {}",
        server.threads(),
        server.backend()
    );
    info!("press Ctrl+C to shut down");
    {
        let mut out = std::io::stdout().lock();
        for a in &addrs {
            let _ = writeln!(out, "listening on {a}");
        }
        let _ = out.flush();
    }

    let sig = sigs.wait();
    info!("Shutdown ({sig}): closing connections, please wait");
    // A second signal exits at once.
    std::thread::spawn(move || {
        let sig = sigs.wait();
        eprintln!("iocomp: second signal ({sig}), exiting now");
        std::process::exit(130);
    });
    server.shutdown();
    info!("stopped");
    ExitCode::SUCCESS
}
