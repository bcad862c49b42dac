//! The access log: one line per file (or error) served, in Common Log Format,
//! Combined or JSON, buffered per worker thread and flushed by size and on a
//! timer, so logging never costs a system call per request.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Flush a worker's buffer once it holds this much.
const FLUSH_AT: usize = 32 * 1024;

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AccessLogFormat {
    /// No access log.
    #[default]
    Off,
    /// Common Log Format: `host - - [date] "request" status bytes`.
    Clf,
    /// CLF plus `"referer" "user-agent"` (always `"-"` for the line protocol).
    Combined,
    /// One JSON object per line.
    Json,
}

impl FromStr for AccessLogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(AccessLogFormat::Off),
            "clf" | "common" => Ok(AccessLogFormat::Clf),
            "combined" => Ok(AccessLogFormat::Combined),
            "json" => Ok(AccessLogFormat::Json),
            _ => Err(format!(
                "unknown access log format {s:?} (off, clf, combined, json)"
            )),
        }
    }
}

/// One request, as logged.
pub(crate) struct Entry<'a> {
    pub(crate) peer: Option<SocketAddr>,
    /// The name (line protocol) or the request line (HTTP).
    pub(crate) request: &'a [u8],
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) duration: Duration,
    /// HTTP (else the line protocol).
    pub(crate) http: bool,
    pub(crate) referer: Option<&'a [u8]>,
    pub(crate) agent: Option<&'a [u8]>,
}

/// An access-log file, opened for appending (`O_APPEND | O_CLOEXEC`, created
/// with mode 0640 if missing). Open it before dropping privileges; the server
/// reopens it by name on [`Server::reopen_access_log`](crate::Server::reopen_access_log).
///
/// A symlink at the name is refused (`O_NOFOLLOW`: `ELOOP`), so a link
/// planted where the log goes cannot make root append to another file; so is
/// anything but a regular file (opened `O_NONBLOCK`, so a FIFO fails at once
/// with `ENXIO` instead of blocking, then checked with `fstat`), and a file
/// with another name too (`st_nlink` above 1: a hard link planted at the name
/// to a file root should not append to).
#[derive(Debug, Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<File>,
}

impl LogFile {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<LogFile> {
        let path = path.into();
        // std opens every file with O_CLOEXEC.
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        if std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} has other names (a hard link): refusing to append to it",
                    path.display()
                ),
            ));
        }
        // Back to blocking writes; O_APPEND stays.
        crate::sys::set_status_flags(std::os::fd::AsFd::as_fd(&file), libc::O_APPEND)?;
        Ok(LogFile {
            path,
            file: Arc::new(file),
        })
    }

    /// The name it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

type Buf = Arc<Mutex<Vec<u8>>>;

/// The log: a format, where it goes and every worker's buffer.
///
/// Locks are taken buffer first, then `sink`, everywhere.
pub(crate) struct AccessLog {
    format: AccessLogFormat,
    bufs: Mutex<Vec<Buf>>,
    /// The file, or `None` for standard output.
    sink: Mutex<Option<LogFile>>,
}

thread_local! {
    static MINE: RefCell<Option<(usize, Buf)>> = const { RefCell::new(None) };
}

impl AccessLog {
    pub(crate) fn new(format: AccessLogFormat, file: Option<LogFile>) -> AccessLog {
        AccessLog {
            format,
            bufs: Mutex::new(Vec::new()),
            sink: Mutex::new(file),
        }
    }

    /// Opens the file again by its name (after logrotate moved it): what is
    /// buffered goes to the old file, later lines to the new one. On failure
    /// the old file stays in use. `Ok(None)` when logging to standard output.
    pub(crate) fn reopen(&self) -> io::Result<Option<PathBuf>> {
        let path = match &*self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(f) => f.path.clone(),
            None => return Ok(None),
        };
        let new = LogFile::open(&path)?;
        self.flush();
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(new);
        Ok(Some(path))
    }

    pub(crate) fn enabled(&self) -> bool {
        self.format != AccessLogFormat::Off
    }

    /// Appends one line to this thread's buffer.
    pub(crate) fn log(&self, e: &Entry<'_>) {
        if !self.enabled() {
            return;
        }
        let me = self as *const AccessLog as usize;
        let buf = MINE.with(|m| {
            let mut m = m.borrow_mut();
            match &*m {
                Some((owner, b)) if *owner == me => b.clone(),
                _ => {
                    let b: Buf = Arc::new(Mutex::new(Vec::with_capacity(FLUSH_AT * 2)));
                    self.bufs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(b.clone());
                    *m = Some((me, b.clone()));
                    b
                }
            }
        });
        let mut line = String::with_capacity(160);
        format_entry(self.format, e, SystemTime::now(), &mut line);
        let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
        b.extend_from_slice(line.as_bytes());
        if b.len() >= FLUSH_AT {
            self.write_out(&mut b);
        }
    }

    /// Writes every buffer out (the timer ticks, and shutdown).
    pub(crate) fn flush(&self) {
        let bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for b in bufs {
            self.write_out(&mut b.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// Writes one locked buffer to the sink and empties it.
    fn write_out(&self, b: &mut Vec<u8>) {
        if b.is_empty() {
            return;
        }
        match &*self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            // One write per buffer; O_APPEND keeps it whole at the end.
            Some(f) => {
                let _ = (&*f.file).write_all(b);
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(b);
                let _ = out.flush();
            }
        }
        b.clear();
    }
}

/// Formats one line (with its newline) into `out`.
pub(crate) fn format_entry(
    format: AccessLogFormat,
    e: &Entry<'_>,
    now: SystemTime,
    out: &mut String,
) {
    let host = e
        .peer
        .map(|p| p.ip().to_string())
        .unwrap_or_else(|| "-".into());
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match format {
        AccessLogFormat::Off => {}
        AccessLogFormat::Clf | AccessLogFormat::Combined => {
            let _ = write!(out, "{host} - - [{}] \"", clf_date(secs));
            escape(e.request, false, out);
            let _ = write!(out, "\" {} {}", e.status, e.bytes);
            if format == AccessLogFormat::Combined {
                for field in [e.referer, e.agent] {
                    out.push_str(" \"");
                    match field {
                        Some(v) => escape(v, false, out),
                        None => out.push('-'),
                    }
                    out.push('"');
                }
            }
            out.push('\n');
        }
        AccessLogFormat::Json => {
            let proto = if e.http { "http" } else { "line" };
            let field = if e.http { "request" } else { "name" };
            let _ = write!(
                out,
                "{{\"time\":{secs},\"client\":\"{host}\",\"proto\":\"{proto}\",\"{field}\":\""
            );
            escape(e.request, true, out);
            let _ = write!(
                out,
                "\",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3}",
                e.status,
                e.bytes,
                e.duration.as_secs_f64() * 1000.0
            );
            for (k, v) in [("referer", e.referer), ("user_agent", e.agent)] {
                if let Some(v) = v {
                    let _ = write!(out, ",\"{k}\":\"");
                    escape(v, true, out);
                    out.push('"');
                }
            }
            out.push_str("}\n");
        }
    }
}

/// Escapes a raw name so that a log line stays one line and one field:
/// printable ASCII other than `"` and `\` is kept, every other byte becomes
/// `\xHH` (as nginx writes it) or, in JSON, `\u00HH` (valid JSON; the byte
/// value is kept, so non-UTF-8 names stay distinguishable).
fn escape(name: &[u8], json: bool, out: &mut String) {
    for &b in name {
        match b {
            b'"' | b'\\' => escape_byte(b, json, out),
            0x20..=0x7e => out.push(b as char),
            _ => escape_byte(b, json, out),
        }
    }
}

fn escape_byte(b: u8, json: bool, out: &mut String) {
    let _ = if json {
        write!(out, "\\u{b:04x}")
    } else {
        write!(out, "\\x{b:02x}")
    };
}

/// `10/Oct/2000:13:55:36 +0000` for a Unix time (UTC).
fn clf_date(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = crate::http::date::civil(i64::try_from(secs).unwrap_or(i64::MAX));
    let month = MONTHS
        .get(usize::from(c.month).saturating_sub(1))
        .unwrap_or(&"Jan");
    format!(
        "{:02}/{month}/{}:{:02}:{:02}:{:02} +0000",
        c.day, c.year, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8]) -> Entry<'_> {
        Entry {
            peer: Some("127.0.0.1:5000".parse().unwrap()),
            request: name,
            status: 200,
            bytes: 1234,
            duration: Duration::from_millis(5),
            http: false,
            referer: None,
            agent: None,
        }
    }

    #[test]
    fn clf_line_has_the_fields_in_order() {
        let mut s = String::new();
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136); // 2000-10-10 13:55:36 UTC
        format_entry(AccessLogFormat::Clf, &entry(b"a.txt"), t, &mut s);
        assert_eq!(
            s,
            "127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"a.txt\" 200 1234\n"
        );
        s.clear();
        format_entry(AccessLogFormat::Combined, &entry(b"a.txt"), t, &mut s);
        assert!(s.ends_with("200 1234 \"-\" \"-\"\n"), "{s}");
    }

    #[test]
    fn control_characters_quotes_and_non_utf8_are_escaped() {
        let mut s = String::new();
        format_entry(
            AccessLogFormat::Clf,
            &entry(b"a\nb\"c\\d\xff\x1b"),
            UNIX_EPOCH,
            &mut s,
        );
        assert_eq!(s.matches('\n').count(), 1, "one line: {s:?}");
        assert!(s.contains(r#""a\x0ab\x22c\x5cd\xff\x1b""#), "{s}");
    }

    #[test]
    fn combined_and_json_carry_referer_and_user_agent_for_http() {
        let mut e = entry(b"GET /a HTTP/1.1");
        e.http = true;
        e.referer = Some(b"http://x/\"q\"");
        e.agent = Some(b"curl/8");
        let mut s = String::new();
        format_entry(AccessLogFormat::Combined, &e, UNIX_EPOCH, &mut s);
        assert!(
            s.ends_with(
                r#"200 1234 "http://x/\x22q\x22" "curl/8"
"#
            ),
            "{s}"
        );
        s.clear();
        format_entry(AccessLogFormat::Json, &e, UNIX_EPOCH, &mut s);
        assert!(
            s.contains(r#""proto":"http","request":"GET /a HTTP/1.1""#),
            "{s}"
        );
        assert!(
            s.ends_with(
                r#","referer":"http://x/\u0022q\u0022","user_agent":"curl/8"}
"#
            ),
            "{s}"
        );
    }

    #[test]
    fn json_line_is_one_object() {
        let mut s = String::new();
        format_entry(
            AccessLogFormat::Json,
            &entry(b"x\"y"),
            UNIX_EPOCH + Duration::from_secs(7),
            &mut s,
        );
        assert!(
            s.starts_with(r#"{"time":7,"client":"127.0.0.1","proto":"line","name":"x\u0022y""#),
            "{s}"
        );
        assert!(
            s.ends_with("\"status\":200,\"bytes\":1234,\"duration_ms\":5.000}\n"),
            "{s}"
        );
    }

    #[test]
    fn dates_across_leap_years() {
        assert_eq!(clf_date(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf_date(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(clf_date(4_107_542_399), "28/Feb/2100:23:59:59 +0000");
        assert_eq!(
            clf_date(4_107_542_400),
            "01/Mar/2100:00:00:00 +0000",
            "2100 is no leap year"
        );
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<AccessLogFormat>(), Ok(AccessLogFormat::Json));
        assert!("xml".parse::<AccessLogFormat>().is_err());
    }
}
