//! `iocomp get`: a downloader. HTTP/1.1 GET (or the line protocol with
//! `--raw`), written to `NAME.part` and renamed on success, so an interrupted
//! download never looks complete; `-c` resumes with `Range` + `If-Range`
//! (the validator of the first response is kept in `NAME.part.meta`), and a
//! file that changed meanwhile is downloaded afresh; `-j N` fetches N ranges
//! on N connections. Redirects are followed (at most 10).
//! `http_proxy` / `no_proxy` are honoured (see [`crate::proxy`]); `--compressed`
//! asks for gzip or deflate and decodes it, and a body compressed unasked is
//! refused.
//!
//! Built on blocking std sockets, one thread per connection: a download is a
//! handful of connections, and the engine's value is in `bench` and `serve`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::MultiProgress;

use crate::client::{self, net, Fail, Response, Timeouts};
use crate::progress::{Mode, Progress};
use crate::target::Target;

mod parallel;
mod raw;

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES: &str = "Exit codes:
  0  every download complete
  2  usage: bad arguments or URL, https:// (not supported yet)
  3  network: cannot resolve or connect, timed out, connection broken, short or malformed response,
     a compressed body not asked for (see --compressed) or not decodable
  4  HTTP status (404, 416, ...) or a line-protocol error line
  5  local I/O: cannot write the output, or it exists (use --force)
With several URLs, the code of the first that failed.";

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;
/// Bytes read per step.
const CHUNK: usize = 256 * 1024;

/// `iocomp get` arguments.
#[derive(clap::Args)]
pub struct GetArgs {
    /// `http://host[:port]/path`, or `host:port/name` with --raw; several download concurrently.
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Write to FILE (one URL only) instead of the remote file name in the current directory.
    #[arg(short = 'o', long, value_name = "FILE", conflicts_with = "remote_name")]
    output: Option<PathBuf>,
    /// Write to the remote file name in the current directory (the default).
    #[arg(short = 'O', long)]
    remote_name: bool,
    /// Resume NAME.part with a Range request; a file changed on the server is downloaded afresh.
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
    /// Longest wait for the next bytes (a stalled server), e.g. 30s.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// Longest wait for a connection.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::parse_duration)]
    connect_timeout: Duration,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
    /// Ask for a compressed body (Accept-Encoding: gzip, deflate) and decode it. Without it, a
    /// server that compresses anyway is refused.
    #[arg(long, conflicts_with_all = ["resume", "parallel", "raw"])]
    compressed: bool,
    /// Receive at most this many bytes per second per download (e.g. 500K, 2M).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,
}

/// `500K`, `2M`, `1G` or plain bytes.
fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1024),
        Some('M') => (&s[..s.len() - 1], 1024 * 1024),
        Some('G') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    match num.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => Err(format!("not a rate: {s:?} (try 500K, 2M)")),
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
}

/// Runs `iocomp get`; returns the exit code.
pub fn run(args: GetArgs) -> u8 {
    match plan(&args) {
        Err(e) => {
            eprintln!("iocomp: {e}");
            e.code()
        }
        Ok(jobs) => {
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
            };
            let mode = Mode::detect(args.quiet);
            let multi = MultiProgress::new();
            let results: Vec<Result<(), Fail>> = std::thread::scope(|s| {
                let handles: Vec<_> = jobs
                    .into_iter()
                    .map(|(t, out)| {
                        let (opts, multi) = (&opts, &multi);
                        s.spawn(move || {
                            let p = Progress::new(mode, multi, &t.file_name());
                            let r = download(t.clone(), &out, opts, &p);
                            p.finish(r.is_ok());
                            r.map_err(|e| (t, e))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| match h.join() {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err((t, e))) => {
                            eprintln!("iocomp: {t}: {e}");
                            Err(e)
                        }
                        Err(_) => Err(Fail::Local("a download thread panicked".into())),
                    })
                    .collect()
            });
            results
                .iter()
                .find_map(|r| r.as_ref().err().map(Fail::code))
                .unwrap_or(0)
        }
    }
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

/// Downloads one URL to `out`.
fn download(t: Target, out: &Path, opts: &Opts, p: &Progress) -> Result<(), Fail> {
    if out.exists() && !opts.force {
        return Err(Fail::Local(format!(
            "{} exists; use --force to overwrite it",
            out.display()
        )));
    }
    if t.raw {
        return raw::download(&t, out, opts, p);
    }
    if opts.parallel > 1 && !opts.resume {
        return parallel::download(t, out, opts, p);
    }
    sequential(t, out, opts, p)
}

/// GET, following redirects; the final response (any other status).
pub(crate) fn get(
    mut t: Target,
    extra: &[(&str, String)],
    opts: &Opts,
) -> Result<(Target, Response), Fail> {
    for _ in 0..=MAX_REDIRECTS {
        let r = client::request(&t, "GET", extra, opts.to)?;
        if matches!(r.head.status, 301 | 302 | 303 | 307 | 308) {
            if let Some(loc) = r.head.get("location") {
                t = t
                    .join(loc.trim())
                    .map_err(|e| Fail::Network(format!("redirect: {e}")))?;
                continue;
            }
        }
        if (200..300).contains(&r.head.status) {
            content_coding(&r, opts)?;
        }
        return Ok((t, r));
    }
    Err(Fail::Network(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// A body's content coding (`Content-Encoding`, lower case), `None` for
/// identity; an error if the server compressed a body iocomp did not ask to
/// be compressed, or used a coding it cannot decode.
fn content_coding(r: &Response, opts: &Opts) -> Result<Option<Coding>, Fail> {
    let Some(v) = r.head.get("content-encoding") else {
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

/// A content coding `get --compressed` decodes.
#[derive(Clone, Copy)]
enum Coding {
    Gzip,
    /// HTTP's `deflate`: a zlib stream (RFC 9110 §8.4.1.2).
    Deflate,
}

fn http_error(r: &Response) -> Fail {
    Fail::Http(format!("{} {}", r.head.status, r.head.reason))
}

/// One connection: resume from `NAME.part` if asked and possible.
fn sequential(t: Target, out: &Path, opts: &Opts, p: &Progress) -> Result<(), Fail> {
    let part = side(out, ".part");
    let meta = side(out, ".part.meta");
    let mut offset = 0;
    let mut validator = None;
    if opts.resume {
        if let Ok(m) = fs::metadata(&part) {
            offset = m.len();
            validator = fs::read_to_string(&meta).ok().filter(|v| !v.is_empty());
        }
    }
    let mut extra = Vec::new();
    if opts.compressed {
        extra.push(("Accept-Encoding", "gzip, deflate".to_string()));
    }
    if offset > 0 {
        extra.push(("Range", format!("bytes={offset}-")));
        match &validator {
            Some(v) => extra.push(("If-Range", v.clone())),
            None => p.note("no validator saved with the partial file: resuming unchecked"),
        }
    }
    let (_, mut r) = get(t, &extra, opts)?;
    let file = match r.head.status {
        200 => {
            if offset > 0 {
                p.note("the file changed on the server (or it ignores ranges): downloading afresh");
                offset = 0;
            }
            start_part(&part, &meta, r.head.validator())?
        }
        206 if offset > 0 => {
            match r.head.content_range() {
                Some((a, _, _)) if a == offset => {}
                _ => {
                    return Err(Fail::Network(format!(
                        "the server resumed at another offset than {offset}"
                    )))
                }
            }
            p.note(&format!(
                "resuming at {}",
                crate::progress::human(offset as f64)
            ));
            OpenOptions::new()
                .append(true)
                .open(&part)
                .map_err(|e| local(&part, e))?
        }
        416 if offset > 0 && r.head.unsatisfied_total() == Some(offset) => {
            // The partial file is already whole.
            return finish(&part, &meta, out);
        }
        _ => return Err(http_error(&r)),
    };
    match content_coding(&r, opts)? {
        None => {
            let total = r.body.len_hint().map(|n| n + offset);
            p.start(total, offset);
            copy(&mut r.body, file, &part, opts, p)?;
        }
        Some(coding) => {
            // The length on the wire is not the file's: no total.
            p.start(None, 0);
            let mut body: Box<dyn Read + '_> = match coding {
                Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut r.body)),
                Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(&mut r.body)),
            };
            copy(&mut body, file, &part, opts, p)?;
        }
    }
    finish(&part, &meta, out)
}

/// Creates (truncates) `NAME.part` and records the validator for a later `-c`.
pub(crate) fn start_part(
    part: &Path,
    meta: &Path,
    validator: Option<String>,
) -> Result<File, Fail> {
    let f = File::create(part).map_err(|e| local(part, e))?;
    match validator {
        Some(v) => fs::write(meta, v).map_err(|e| local(meta, e))?,
        None => {
            let _ = fs::remove_file(meta);
        }
    }
    Ok(f)
}

/// Renames `NAME.part` to `NAME` and drops the validator.
pub(crate) fn finish(part: &Path, meta: &Path, out: &Path) -> Result<(), Fail> {
    fs::rename(part, out).map_err(|e| local(out, e))?;
    let _ = fs::remove_file(meta);
    Ok(())
}

/// Copies a body into `file`, with progress and the rate limit.
pub(crate) fn copy(
    body: &mut impl Read,
    mut file: File,
    part: &Path,
    opts: &Opts,
    p: &Progress,
) -> Result<u64, Fail> {
    let chunk = opts
        .limit
        .map_or(CHUNK, |l| (l as usize / 10).clamp(1024, CHUNK));
    let mut buf = vec![0u8; chunk];
    let mut limiter = Limiter::new(opts.limit);
    let mut n_total = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(net("receiving the body", e)),
        };
        file.write_all(&buf[..n]).map_err(|e| local(part, e))?;
        n_total += n as u64;
        p.add(n as u64);
        limiter.wait(n as u64);
    }
    file.flush().map_err(|e| local(part, e))?;
    Ok(n_total)
}

/// `--limit-rate`: sleeps so that the average stays under the rate.
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

    pub(crate) fn wait(&mut self, n: u64) {
        let Some(rate) = self.rate else { return };
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}
