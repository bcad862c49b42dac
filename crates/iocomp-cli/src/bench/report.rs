//! `iocomp bench`'s results, as text (like wrk's) or one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use super::Stats;

/// What the run was.
pub(crate) struct Info {
    pub(crate) target: String,
    pub(crate) raw: bool,
    pub(crate) conns: usize,
    pub(crate) threads: usize,
    pub(crate) backend: &'static str,
    /// Until the stop.
    pub(crate) duration: Duration,
    /// Until the last connection finished (or the grace period ended).
    pub(crate) elapsed: Duration,
    /// Connections still waiting for a response when the results were taken.
    pub(crate) in_flight: usize,
}

const PCTS: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn ms(us: u64) -> String {
    format!("{:.3}ms", us as f64 / 1000.0)
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", UNITS[i])
}

/// Human-readable results.
pub(crate) fn text(i: &Info, s: &Stats) -> String {
    let mut o = String::new();
    let proto = if i.raw { "line protocol" } else { "HTTP/1.1" };
    let _ = writeln!(
        o,
        "{} ({proto}): {} connections, {} threads ({}), {:.2}s",
        i.target,
        i.conns,
        i.threads,
        i.backend,
        i.duration.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "  requests   {} ({:.1}/s)",
        s.requests,
        rate(s.requests, i.elapsed)
    );
    let _ = writeln!(
        o,
        "  received   {} ({}/s), bodies {}",
        bytes(s.bytes as f64),
        bytes(rate(s.bytes, i.elapsed)),
        bytes(s.body as f64)
    );
    let h = &s.latency;
    let mut lat = String::new();
    for (name, q) in PCTS {
        let _ = write!(lat, "{name} {}  ", ms(h.value_at_percentile(q)));
    }
    let _ = writeln!(lat, "max {}", ms(h.max()));
    let _ = write!(o, "  latency    {lat}");
    let _ = writeln!(o, "  connects   {}", s.connects);
    if s.errors.is_empty() {
        let _ = writeln!(o, "  errors     none");
    } else {
        for (k, v) in &s.errors {
            let _ = writeln!(o, "  error      {k}: {v}");
        }
    }
    if i.in_flight > 0 {
        let _ = writeln!(o, "  unfinished {} responses cut at the end", i.in_flight);
    }
    o
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// One JSON object (latencies in microseconds).
pub(crate) fn json(i: &Info, s: &Stats) -> String {
    let h = &s.latency;
    let mut lat = String::new();
    for (name, q) in PCTS {
        let _ = write!(lat, "{}:{},", esc(name), h.value_at_percentile(q));
    }
    let _ = write!(lat, "\"max\":{},\"mean\":{:.1}", h.max(), h.mean());
    let errors: Vec<String> = s
        .errors
        .iter()
        .map(|(k, v)| format!("{}:{v}", esc(k)))
        .collect();
    format!(
        "{{\"target\":{},\"protocol\":{},\"connections\":{},\"threads\":{},\"backend\":{},\
\"duration_s\":{:.3},\"elapsed_s\":{:.3},\"requests\":{},\"requests_per_s\":{:.1},\
\"bytes\":{},\"bytes_per_s\":{:.0},\"body_bytes\":{},\"connects\":{},\"in_flight_at_end\":{},\
\"errors\":{{{}}},\"latency_us\":{{{lat}}}}}",
        esc(&i.target),
        esc(if i.raw { "line" } else { "http" }),
        i.conns,
        i.threads,
        esc(i.backend),
        i.duration.as_secs_f64(),
        i.elapsed.as_secs_f64(),
        s.requests,
        rate(s.requests, i.elapsed),
        s.bytes,
        rate(s.bytes, i.elapsed),
        s.body,
        s.connects,
        i.in_flight,
        errors.join(","),
    )
}
