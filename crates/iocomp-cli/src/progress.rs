//! Download progress: a bar with bytes, rate and ETA (indicatif) when stdout
//! and stderr are terminals, a plain line per second otherwise, nothing with
//! `-q`. Shared by the connections of one download (`-j`).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A bar per download (on a terminal).
    Bar,
    /// A line per second per download on stderr.
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// The mode for this process: `Quiet` with `-q`, `Bar` when stdout and
    /// stderr are terminals, `Lines` otherwise.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// The progress of one download.
pub struct Progress {
    mode: Mode,
    name: String,
    bar: Option<ProgressBar>,
    total: AtomicU64,
    done: AtomicU64,
    start: Instant,
    last_line: Mutex<Instant>,
}

/// Every second at most one plain line per download.
const LINE_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    /// Progress for `name`, drawn in `multi` when bars are shown.
    pub fn new(mode: Mode, multi: &MultiProgress, name: &str) -> Progress {
        let bar = (mode == Mode::Bar).then(|| {
            let style = ProgressStyle::with_template(
                "{msg:20!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let b = multi.add(ProgressBar::with_draw_target(
                None,
                ProgressDrawTarget::stderr(),
            ));
            b.set_style(style);
            b.set_message(name.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let now = Instant::now();
        Progress {
            mode,
            name: name.to_string(),
            bar,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            start: now,
            last_line: Mutex::new(now),
        }
    }

    /// The total length (when known) and the bytes already there (a resume).
    pub fn start(&self, total: Option<u64>, already: u64) {
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
        self.done.store(already, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.set_position(already);
            b.reset_eta();
        }
    }

    /// A line of information (resumed, restarted, …), above the bars.
    pub fn note(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) => b.println(format!("{}: {msg}", self.name)),
            (None, Mode::Lines) => eprintln!("{}: {msg}", self.name),
            _ => {}
        }
    }

    /// `n` more bytes arrived.
    pub fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.bar {
            b.inc(n);
            return;
        }
        if self.mode != Mode::Lines {
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= LINE_EVERY {
            *last = Instant::now();
            eprintln!("{}: {}", self.name, self.status(done));
        }
    }

    fn status(&self, done: u64) -> String {
        let total = self.total.load(Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = format!("{}/s", human(done as f64 / secs));
        if total > 0 {
            let pct = done as f64 * 100.0 / total as f64;
            format!(
                "{} / {} ({pct:.0}%) {rate}",
                human(done as f64),
                human(total as f64)
            )
        } else {
            format!("{} {rate}", human(done as f64))
        }
    }

    /// The download ended (`ok`: complete and renamed).
    pub fn finish(&self, ok: bool) {
        let done = self.done.load(Ordering::Relaxed);
        match &self.bar {
            Some(b) if ok => b.finish(),
            Some(b) => b.abandon(),
            None if self.mode == Mode::Lines && ok => {
                let secs = self.start.elapsed().as_secs_f64();
                eprintln!(
                    "{}: done, {} in {secs:.2}s ({}/s)",
                    self.name,
                    human(done as f64),
                    human(done as f64 / secs.max(1e-3))
                );
            }
            None => {}
        }
    }
}

/// Bytes in binary units (`12.34 MiB`).
pub fn human(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", UNITS[i])
}
