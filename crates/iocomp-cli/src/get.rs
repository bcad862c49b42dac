//! `iocomp get`: a downloader. HTTP/1.1 GET (or the line protocol with
//! `--raw`), written to `NAME.part` and renamed on success, so an interrupted
//! download never looks complete; `-c` resumes with `Range` + `If-Range`
//! (the validator of the first response is kept in `NAME.part.meta`), and a
//! file that changed meanwhile is downloaded afresh; `-j N` fetches N ranges
//! on N connections. Redirects are followed (at most 10).
//! `https://` speaks HTTP inside TLS (rustls, see [`tls`]): the server's
//! certificate must chain to the system's CAs or those of `--cacert`, and
//! name the URL's host, unless `-k`.
//! `http_proxy` / `https_proxy` / `no_proxy` are honoured (see [`crate::proxy`]); `--compressed`
//! asks for gzip or deflate and decodes it, and a body compressed unasked is
//! refused.
//! `-c` with `-j`: a `.part` left by one connection is resumed on one
//! connection; a `.part` left by a parallel download has holes (its `.meta`
//! says so) and is downloaded afresh.
//!
//! Two versions of a file are never joined, as far as the server's
//! validators tell them apart: every 206 of a resume must carry the
//! validator saved in `.meta` (a strong ETag, else Last-Modified), the weak
//! ETag saved (byte for byte: `If-Range` cannot carry a weak one, but another
//! weak tag proves a change) and the total size saved, in a `Content-Range`
//! that runs from the local size to the end, and bring exactly those bytes
//! in whatever framing; the `.part` is renamed only at the total size. Every
//! part of a `-j` download must repeat the probe's validators and total and
//! bring exactly its range; a 416 to a part that names another size or
//! validator means the file changed. A 416 `bytes */LEN` to a resume means
//! "already whole" only with LEN equal to the local size, a saved validator
//! the answer does not contradict, and the answer's validator or the saved
//! total to vouch for it. A mismatch downloads the file afresh, once. With no
//! validator at all (no ETag, no Last-Modified) versions cannot be told
//! apart: `-c` downloads afresh (curl would trust the server; iocomp chooses
//! safety) and `-j` uses one connection. A server that keeps a validator
//! across a change cannot be detected.
//!
//! `-c` where the output file exists and no `NAME.part` does continues that
//! file in place, as `wget -c` does: it is taken as a prefix left by another
//! tool (no validator is known, so only its size and the `Content-Range` are
//! checked), and an answer that cannot continue it (a 200, another range)
//! leaves it as it is, with an error naming `--force`.
//!
//! `NAME.part` is held with an exclusive `flock` from the start to the
//! rename: a second download to the same output stops with "another
//! download is writing NAME.part". Responses whose framing cannot be trusted
//! are refused (a transfer coding other than `chunked`, conflicting
//! `Content-Length` values, a signed chunk size); interim 1xx answers are
//! skipped.
//!
//! Local files: `.part` and `.meta` are opened with `O_NOFOLLOW` (a new one
//! with `O_EXCL`), and the final rename uses `RENAME_NOREPLACE`, so a file
//! that appears at `NAME` during the download is not replaced (without
//! `--force`). `--compressed` decodes in bounded steps and stops a body that
//! expands more than 200 times beyond its first 64 MiB.
//!
//! Built on the engine: one thread drives every connection of every URL
//! through one completion port (see [`driver`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::MultiProgress;

use crate::client::{Fail, Head, Timeouts};
use crate::progress::{Mode, Progress};
use crate::target::Target;

pub(crate) mod body;
mod driver;
mod job;
mod raw;
pub(crate) mod tls;

use body::Coding;
use driver::Driver;
use job::Job;

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES: &str = "Exit codes:
  0  every download complete
  2  usage: bad arguments or URL
  3  network: cannot resolve or connect, timed out, connection broken, short or malformed response,
     a compressed body not asked for (see --compressed) or not decodable
  4  HTTP status (404, 416, ...) or a line-protocol error line
  5  local I/O: cannot write the output, or it exists (use --force)
  6  TLS: the server's certificate cannot be verified (unknown CA, expired, another name; see --cacert
     and -k), the handshake failed or timed out (--connect-timeout), a body delimited by the close
     ended without TLS close_notify (it may be cut short), an https:// redirect to http:// (see
     --allow-downgrade), or --cacert (or the system's CA bundle) cannot be read
With several URLs, the code of the first that failed.";

/// `--connect-timeout`'s default; also the TLS handshake's limit when it is 0.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Redirects followed at most.
pub(crate) const MAX_REDIRECTS: usize = 10;
/// Bytes read per step.
pub(crate) const CHUNK: usize = 256 * 1024;

/// `iocomp get` arguments.
#[derive(clap::Args)]
pub struct GetArgs {
    /// `http://host[:port]/path`, `https://host[:port]/path`, or `host:port/name` with --raw;
    /// several download concurrently.
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Write to FILE (one URL only) instead of the remote file name in the current directory.
    #[arg(short = 'o', long, value_name = "FILE", conflicts_with = "remote_name")]
    output: Option<PathBuf>,
    /// Write to the remote file name in the current directory (the default).
    #[arg(short = 'O', long)]
    remote_name: bool,
    /// Resume NAME.part with a Range request; a file changed on the server is downloaded afresh.
    /// Without NAME.part, an existing NAME is continued in place (as wget -c does).
    #[arg(short = 'c', long = "continue")]
    resume: bool,
    /// Download in N parallel ranges on N connections (HTTP servers with range support).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 1)]
    parallel: usize,
    /// The line protocol: send the name, half-close, read until the server closes (or --size bytes).
    #[arg(long)]
    raw: bool,
    /// With --raw: the expected size; fewer bytes are an error, and no EOF is waited for.
    #[arg(long, value_name = "BYTES", requires = "raw")]
    size: Option<u64>,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
    /// Longest wait for the next bytes (a stalled server), e.g. 30s; 0 for none.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// Longest wait for a connection, and for the whole TLS handshake of https:// (receives do
    /// not extend it); 0 for none (the kernel's own limit; the handshake then gets 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::parse_duration)]
    connect_timeout: Duration,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
    /// Ask for a compressed body (Accept-Encoding: gzip, deflate) and decode it. Without it, a
    /// server that compresses anyway is refused. A body that decodes to more than 64 MiB plus
    /// 200 times its compressed size is stopped (a decompression bomb).
    #[arg(long, conflicts_with_all = ["resume", "parallel", "raw"])]
    compressed: bool,
    /// Receive at most this many bytes per second per download (e.g. 500K, 2M; at most 1024G).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,
    /// https://: trust the CA certificates in FILE (PEM) instead of the system's
    /// (SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt or the like).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// https://: do not check the server's certificate (anyone on the path can then read and
    /// change the download). A warning says so on stderr.
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Follow a redirect from https:// to http:// (as curl does), with a warning on stderr.
    /// Without it such a redirect is refused (exit 6, as apt does): the rest of the download
    /// would come unencrypted and unauthenticated, appended (-c, -j) to authenticated bytes.
    #[arg(long)]
    allow_downgrade: bool,
}

/// The highest `--limit-rate`: 1 TiB/s (more is no limit at all).
const MAX_RATE: u64 = 1 << 40;

/// `500K`, `2M`, `1G` or plain bytes, from 1 to [`MAX_RATE`].
fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1024),
        Some('M') => (&s[..s.len() - 1], 1024 * 1024),
        Some('G') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    match num.trim().parse::<u64>().ok().map(|n| n.checked_mul(mult)) {
        Some(Some(n)) if (1..=MAX_RATE).contains(&n) => Ok(n),
        Some(_) => Err(format!(
            "not a rate: {s:?} (from 1 byte to 1024G per second)"
        )),
        None => Err(format!("not a rate: {s:?} (try 500K, 2M)")),
    }
}

/// What every download of one invocation shares.
pub(crate) struct Opts {
    pub(crate) to: Timeouts,
    pub(crate) resume: bool,
    pub(crate) parallel: usize,
    pub(crate) force: bool,
    pub(crate) size: Option<u64>,
    pub(crate) limit: Option<u64>,
    pub(crate) compressed: bool,
    pub(crate) trust: tls::Trust,
    pub(crate) allow_downgrade: bool,
}

/// `-k`'s warning, once per process (an https:// URL, or the first redirect to one).
pub(crate) fn warn_insecure() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "iocomp: WARNING: --insecure: the server's certificate is NOT checked; \
             anyone on the path can read and change this download"
        );
    }
}

/// Runs `iocomp get`; returns the exit code.
pub fn run(args: GetArgs) -> u8 {
    let jobs = match plan(&args) {
        Err(e) => {
            eprintln!("iocomp: {e}");
            return e.code();
        }
        Ok(jobs) => jobs,
    };
    let opts = Opts {
        to: Timeouts {
            connect: args.connect_timeout,
            stall: args.timeout,
        },
        resume: args.resume,
        parallel: args.parallel,
        force: args.force,
        size: args.size,
        limit: args.limit_rate,
        compressed: args.compressed,
        trust: tls::Trust {
            cacert: args.cacert.clone(),
            insecure: args.insecure,
        },
        allow_downgrade: args.allow_downgrade,
    };
    // -k matters only to https://: a URL, or later a redirect (driver).
    if args.insecure && jobs.iter().any(|(t, _)| t.https) {
        warn_insecure();
    }
    let mode = Mode::detect(args.quiet);
    let multi = MultiProgress::new();
    let jobs: Vec<Job> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, (t, out))| {
            let p = Progress::new(mode, &multi, &t.file_name());
            Job::new(i, t, out, &opts, p)
        })
        .collect();
    let targets: Vec<Target> = jobs.iter().map(|j| j.target.clone()).collect();
    let results = match Driver::new(&opts, jobs) {
        Ok(d) => d.run(),
        Err(e) => {
            eprintln!("iocomp: {e}");
            return e.code();
        }
    };
    let mut code = 0;
    for (t, r) in targets.iter().zip(results) {
        if let Err(e) = r {
            eprintln!("iocomp: {t}: {e}");
            if code == 0 {
                code = e.code();
            }
        }
    }
    code
}

/// Parses every URL and picks every output before anything starts.
fn plan(args: &GetArgs) -> Result<Vec<(Target, PathBuf)>, Fail> {
    if args.output.is_some() && args.urls.len() > 1 {
        return Err(Fail::Usage("-o takes one URL; use -O for several".into()));
    }
    if args.parallel == 0 || args.parallel > 64 {
        return Err(Fail::Usage("-j must be between 1 and 64".into()));
    }
    if args.raw && (args.resume || args.parallel > 1) {
        return Err(Fail::Usage(
            "-c and -j need HTTP ranges; the line protocol (--raw) has none".into(),
        ));
    }
    let mut jobs = Vec::new();
    for u in &args.urls {
        let t = Target::parse(u, args.raw)?;
        let out = match &args.output {
            Some(o) => o.clone(),
            None => PathBuf::from(t.file_name()),
        };
        if jobs.iter().any(|(_, o)| o == &out) {
            return Err(Fail::Usage(format!(
                "two URLs would write {}",
                out.display()
            )));
        }
        jobs.push((t, out));
    }
    Ok(jobs)
}

/// `NAME.part` and `NAME.part.meta` next to the output.
pub(crate) fn side(out: &Path, ext: &str) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(ext);
    PathBuf::from(s)
}

pub(crate) fn local(what: &Path, e: std::io::Error) -> Fail {
    Fail::Local(format!("{}: {e}", what.display()))
}

/// A body's content coding (`Content-Encoding`, lower case), `None` for
/// identity; an error if the server compressed a body iocomp did not ask to
/// be compressed, or used a coding it cannot decode.
fn content_coding(head: &Head, opts: &Opts) -> Result<Option<Coding>, Fail> {
    let Some(v) = head.get("content-encoding") else {
        return Ok(None);
    };
    let v = v.trim().to_ascii_lowercase();
    let coding = match v.as_str() {
        "" | "identity" => return Ok(None),
        "gzip" | "x-gzip" => Coding::Gzip,
        "deflate" => Coding::Deflate,
        _ => {
            return Err(Fail::Network(format!(
                "the server sent a body with Content-Encoding: {v}, which iocomp cannot decode"
            )))
        }
    };
    if !opts.compressed {
        return Err(Fail::Network(format!(
            "the server sent a {v}-compressed body though none was asked for (use --compressed to decode it)"
        )));
    }
    Ok(Some(coding))
}

/// What `NAME.part.meta` says about `NAME.part`: which version of the file
/// it is a prefix of, so that `-c` never joins two versions.
///
/// The text format, one `key: value` per line after a first line naming it:
///
/// ```text
/// iocomp-part 1
/// validator: "etag-or-last-modified"
/// weak: W/"weak-etag"
/// total: 123456
/// ```
///
/// `parallel: true` marks a `-j` download's `.part` (it has holes and is
/// never resumed). A `.meta` of the older format (the validator alone, or
/// `#iocomp-parallel`) is still understood.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    /// For `If-Range`, compared with every 206: a strong ETag, else Last-Modified.
    pub(crate) validator: Option<String>,
    /// A weak ETag: never sent in `If-Range`, but every 206 (and a 416 that
    /// carries one) must repeat it byte for byte.
    pub(crate) weak: Option<String>,
    /// The file's size on the server, compared with every 206's total.
    pub(crate) total: Option<u64>,
    /// A parallel download's `.part`.
    pub(crate) parallel: bool,
}

/// The first line of a `.meta` file.
const META_MAGIC: &str = "iocomp-part 1";
/// An older `.meta` of a parallel download.
const OLD_PARALLEL_META: &str = "#iocomp-parallel";

impl Meta {
    /// Parses a `.meta` file's text (never fails: what is not understood is left out).
    pub(crate) fn parse(text: &str) -> Meta {
        let mut m = Meta::default();
        let Some(rest) = text.strip_prefix(META_MAGIC) else {
            let t = text.trim();
            if t == OLD_PARALLEL_META {
                m.parallel = true;
            } else if !t.is_empty() && !t.contains('\n') {
                m.validator = Some(t.to_string());
            }
            return m;
        };
        for line in rest.lines() {
            match line.split_once(": ") {
                Some(("validator", v)) if !v.is_empty() => m.validator = Some(v.to_string()),
                Some(("weak", v)) if !v.is_empty() => m.weak = Some(v.to_string()),
                Some(("total", v)) => m.total = v.parse().ok(),
                Some(("parallel", "true")) => m.parallel = true,
                _ => {}
            }
        }
        m
    }

    /// The text of a `.meta` file.
    pub(crate) fn render(&self) -> String {
        let mut s = format!("{META_MAGIC}\n");
        if let Some(v) = &self.validator {
            // A header value cannot hold a line break; be sure.
            s.push_str(&format!("validator: {}\n", v.replace(['\r', '\n'], "")));
        }
        if let Some(w) = &self.weak {
            s.push_str(&format!("weak: {}\n", w.replace(['\r', '\n'], "")));
        }
        if let Some(t) = self.total {
            s.push_str(&format!("total: {t}\n"));
        }
        if self.parallel {
            s.push_str("parallel: true\n");
        }
        s
    }

    /// Reads `path` (never through a symbolic link, at most 4 KiB); an
    /// absent or unreadable file says nothing.
    pub(crate) fn read(path: &Path) -> Meta {
        let mut text = String::new();
        match open_existing(path, false) {
            Ok(f) => match f.take(4096).read_to_string(&mut text) {
                Ok(_) => Meta::parse(&text),
                Err(_) => Meta::default(),
            },
            Err(_) => Meta::default(),
        }
    }
}

/// `path` names a symbolic link, which `get` never follows.
fn symlink_refused(path: &Path) -> Fail {
    Fail::Local(format!(
        "{}: is a symbolic link; iocomp get does not write through one (remove it)",
        path.display()
    ))
}

/// The error of an open or create of `path`, with a symbolic link named as such.
pub(crate) fn open_error(path: &Path, e: io::Error) -> Fail {
    if e.raw_os_error() == Some(libc::ELOOP) {
        symlink_refused(path)
    } else {
        local(path, e)
    }
}

/// Opens the existing regular file `path` (for writing, else reading)
/// without following a symbolic link at it (`O_NOFOLLOW`; `O_NONBLOCK` so a
/// FIFO put there cannot block the open).
pub(crate) fn open_existing(path: &Path, write: bool) -> Result<File, Fail> {
    let f = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let m = f.metadata().map_err(|e| local(path, e))?;
    if !m.is_file() {
        return Err(Fail::Local(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// Creates `path` empty for writing: a new file with `O_EXCL`, or an existing
/// regular file truncated; never through a symbolic link.
fn create_empty(path: &Path) -> Result<File, Fail> {
    let new = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match new {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let f = open_existing(path, true)?;
            f.set_len(0).map_err(|e| local(path, e))?;
            Ok(f)
        }
        Err(e) => Err(open_error(path, e)),
    }
}

/// Creates (truncates) `NAME.part` and records what it is for a later `-c`.
pub(crate) fn start_part(part: &Path, meta: &Path, m: &Meta) -> Result<File, Fail> {
    let f = create_empty(part)?;
    if *m == Meta::default() {
        let _ = fs::remove_file(meta);
    } else {
        let mut w = create_empty(meta)?;
        w.write_all(m.render().as_bytes())
            .map_err(|e| local(meta, e))?;
    }
    Ok(f)
}

/// Renames `NAME.part` to `NAME` (never replacing a `NAME` that appeared
/// meanwhile, unless `force`) and drops the `.meta`.
pub(crate) fn finish(part: &Path, meta: &Path, out: &Path, force: bool) -> Result<(), Fail> {
    let r = if force {
        fs::rename(part, out)
    } else {
        crate::sys::rename_noreplace(part, out)
    };
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Fail::Local(format!(
                "{} appeared during the download; not replacing it (the download is in {}; use --force to overwrite)",
                out.display(),
                part.display()
            )))
        }
        Err(e) => return Err(local(out, e)),
    }
    let _ = fs::remove_file(meta);
    Ok(())
}

/// `--limit-rate`: how long to pause so that the average stays under the rate.
pub(crate) struct Limiter {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Limiter {
    pub(crate) fn new(rate: Option<u64>) -> Limiter {
        Limiter {
            rate,
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// `n` more bytes arrived: the pause before the next receive.
    pub(crate) fn delay(&mut self, n: u64) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        due.saturating_sub(self.start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::Meta;

    #[test]
    fn meta_round_trips_and_reads_the_older_format() {
        let m = Meta {
            validator: Some("\"abc\"".into()),
            weak: Some("W/\"w\"".into()),
            total: Some(123),
            parallel: false,
        };
        assert_eq!(Meta::parse(&m.render()), m);
        // Written by an older iocomp: the validator alone, or the parallel mark.
        assert_eq!(Meta::parse("\"abc\"").validator.as_deref(), Some("\"abc\""));
        assert_eq!(Meta::parse("\"abc\"").total, None);
        assert!(Meta::parse("#iocomp-parallel").parallel);
        // A validator cannot smuggle another line in.
        let evil = Meta {
            validator: Some("\"x\"\ntotal: 5".into()),
            ..Meta::default()
        };
        assert_eq!(Meta::parse(&evil.render()).total, None);
    }
}
