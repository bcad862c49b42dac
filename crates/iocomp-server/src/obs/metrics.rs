//! Counters for `/metrics`, in the Prometheus text exposition format (version
//! 0.0.4), written by hand. Every counter is an atomic updated with `Relaxed`
//! ordering once per request (or per error): no lock on the request path, and
//! nothing at all when the metrics listener is off (the server then has no
//! [`Metrics`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The statuses counted by name; anything else is counted as `other`.
const STATUSES: [u16; 14] = [
    200, 206, 301, 304, 400, 403, 404, 405, 412, 414, 416, 500, 503, 505,
];
/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];
const PROTOCOLS: [&str; 2] = ["line", "http"];

/// What can go wrong, counted in `iocomp_errors_total{kind}`.
#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum ErrorKind {
    /// A header, idle or send timeout closed a connection.
    Timeout = 0,
    /// A connection's receive or send failed (reset, broken pipe, ...).
    Io = 1,
    /// `accept` failed (out of descriptors and the like).
    Accept = 2,
    /// A connection was refused by `--max-conns-per-ip`.
    PerIpLimit = 3,
}
const ERROR_KINDS: [&str; 4] = ["timeout", "io", "accept", "per_ip_limit"];

/// The server's counters.
pub(crate) struct Metrics {
    start: SystemTime,
    requests: [[AtomicU64; STATUSES.len() + 1]; 2],
    bytes: [AtomicU64; 2],
    latency: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
    /// TLS handshakes completed, failed.
    handshakes: [AtomicU64; 2],
    /// TLS connections after their handshake: kernel TLS, user space, and
    /// hand-offs the kernel refused (closed).
    tls_paths: [AtomicU64; 3],
    /// Kernel TLS events, by `conn::ktls::Event`.
    ktls_events: [AtomicU64; 4],
}

/// Gauges read at scrape time.
pub(crate) struct Gauges<'a> {
    pub(crate) backend: &'a str,
    pub(crate) connections: u64,
    pub(crate) metrics_connections: u64,
    pub(crate) transfers: u64,
    pub(crate) rate_limit: u64,
    /// The kernel has kernel TLS (probed at start; reported only).
    pub(crate) ktls: bool,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            start: SystemTime::now(),
            requests: Default::default(),
            bytes: Default::default(),
            latency: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            errors: Default::default(),
            handshakes: Default::default(),
            tls_paths: Default::default(),
            ktls_events: Default::default(),
        }
    }

    /// A request answered: its protocol, status, bytes sent (head included)
    /// and time from its arrival to its last byte handed to the kernel.
    pub(crate) fn request(&self, http: bool, status: u16, bytes: u64, took: Duration) {
        let p = usize::from(http);
        let s = STATUSES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(STATUSES.len());
        self.requests[p][s].fetch_add(1, Ordering::Relaxed);
        self.bytes[p].fetch_add(bytes, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|&le| secs <= le) {
            self.latency[b].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Something went wrong.
    pub(crate) fn error(&self, kind: ErrorKind, n: u64) {
        self.errors[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Where a TLS connection went after its handshake (once per connection).
    pub(crate) fn tls_path(&self, outcome: &crate::conn::ktls::Handoff) {
        use crate::conn::ktls::Handoff;
        let i = match outcome {
            Handoff::Kernel => 0,
            Handoff::User(_) => 1,
            Handoff::Failed(_) => 2,
        };
        self.tls_paths[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Something on the kernel TLS path (see `conn::ktls::Event`).
    pub(crate) fn ktls_event(&self, event: crate::conn::ktls::Event) {
        self.ktls_events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake completed (`ok`) or failed.
    pub(crate) fn handshake(&self, ok: bool) {
        self.handshakes[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// The whole exposition.
    pub(crate) fn render(&self, g: &Gauges<'_>) -> String {
        let mut o = String::with_capacity(4096);
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        o.push_str("# HELP iocomp_requests_total Requests answered, by protocol and status.\n");
        o.push_str("# TYPE iocomp_requests_total counter\n");
        for (p, proto) in PROTOCOLS.iter().enumerate() {
            for (s, c) in self.requests[p].iter().enumerate() {
                let n = ld(c);
                if n == 0 {
                    continue;
                }
                let status = STATUSES.get(s).map_or("other".to_string(), u16::to_string);
                let _ = writeln!(
                    o,
                    "iocomp_requests_total{{protocol=\"{proto}\",status=\"{status}\"}} {n}"
                );
            }
        }
        o.push_str("# HELP iocomp_sent_bytes_total Bytes sent in replies (HTTP heads included), by protocol.\n");
        o.push_str("# TYPE iocomp_sent_bytes_total counter\n");
        for (p, proto) in PROTOCOLS.iter().enumerate() {
            let _ = writeln!(
                o,
                "iocomp_sent_bytes_total{{protocol=\"{proto}\"}} {}",
                ld(&self.bytes[p])
            );
        }
        o.push_str("# HELP iocomp_request_duration_seconds Time from a request to its reply's last byte.\n");
        o.push_str("# TYPE iocomp_request_duration_seconds histogram\n");
        let mut cum = 0;
        for (b, le) in BUCKETS.iter().enumerate() {
            cum += ld(&self.latency[b]);
            let _ = writeln!(
                o,
                "iocomp_request_duration_seconds_bucket{{le=\"{le}\"}} {cum}"
            );
        }
        let count = ld(&self.latency_count);
        let _ = writeln!(
            o,
            "iocomp_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "iocomp_request_duration_seconds_sum {}",
            ld(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(o, "iocomp_request_duration_seconds_count {count}");
        o.push_str("# HELP iocomp_errors_total Errors, by kind.\n");
        o.push_str("# TYPE iocomp_errors_total counter\n");
        for (k, kind) in ERROR_KINDS.iter().enumerate() {
            let _ = writeln!(
                o,
                "iocomp_errors_total{{kind=\"{kind}\"}} {}",
                ld(&self.errors[k])
            );
        }
        let gauges = [
            (
                "iocomp_connections_active",
                "Client connections open now (the metrics listener's are not counted).",
                g.connections,
            ),
            (
                "iocomp_metrics_connections_active",
                "Connections to the metrics listener open now.",
                g.metrics_connections,
            ),
            (
                "iocomp_transfers_active",
                "File transfers in progress now.",
                g.transfers,
            ),
            (
                "iocomp_rate_limit_bytes_per_second",
                "The per-connection rate limit (0: none).",
                g.rate_limit,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        o.push_str("# HELP iocomp_tls_handshakes_total TLS handshakes, by result.\n");
        o.push_str("# TYPE iocomp_tls_handshakes_total counter\n");
        for (i, result) in ["ok", "failed"].iter().enumerate() {
            let _ = writeln!(
                o,
                "iocomp_tls_handshakes_total{{result=\"{result}\"}} {}",
                self.handshakes[i].load(Ordering::Relaxed)
            );
        }
        o.push_str("# HELP iocomp_tls_connections_total TLS connections after their handshake, by where their records are encrypted: kernel (kernel TLS) or user (rustls).\n");
        o.push_str("# TYPE iocomp_tls_connections_total counter\n");
        for (i, mode) in ["kernel", "user"].iter().enumerate() {
            let _ = writeln!(
                o,
                "iocomp_tls_connections_total{{mode=\"{mode}\"}} {}",
                self.tls_paths[i].load(Ordering::Relaxed)
            );
        }
        o.push_str("# HELP iocomp_ktls_failures_total Hand-offs to kernel TLS that the kernel refused after the secrets were taken (the connection was closed).\n");
        o.push_str("# TYPE iocomp_ktls_failures_total counter\n");
        let _ = writeln!(
            o,
            "iocomp_ktls_failures_total {}",
            self.tls_paths[2].load(Ordering::Relaxed)
        );
        o.push_str("# HELP iocomp_ktls_events_total Kernel TLS events: breaker (the first refused hand-off turned kernel TLS off for the process), recv_eio (the client sent a record that is not data: the connection closed), close_notify_dropped (the socket buffer was full), budget (closed near the record limit of its key).\n");
        o.push_str("# TYPE iocomp_ktls_events_total counter\n");
        for (i, event) in ["breaker", "recv_eio", "close_notify_dropped", "budget"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                o,
                "iocomp_ktls_events_total{{event=\"{event}\"}} {}",
                self.ktls_events[i].load(Ordering::Relaxed)
            );
        }
        o.push_str("# HELP iocomp_ktls_available Whether TLS 1.3 connections may use kernel TLS (not --ktls off, and the probe at start found a cipher the kernel takes both ways).\n");
        o.push_str("# TYPE iocomp_ktls_available gauge\n");
        let _ = writeln!(o, "iocomp_ktls_available {}", u8::from(g.ktls));
        o.push_str("# HELP iocomp_backend_info The engine backend in use.\n");
        o.push_str("# TYPE iocomp_backend_info gauge\n");
        let _ = writeln!(o, "iocomp_backend_info{{backend=\"{}\"}} 1", g.backend);
        o.push_str("# HELP process_start_time_seconds Start time of the process since the Unix epoch in seconds.\n");
        o.push_str("# TYPE process_start_time_seconds gauge\n");
        let start = self
            .start
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let _ = writeln!(o, "process_start_time_seconds {start:.3}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_what_happened() {
        let m = Metrics::new();
        m.request(true, 200, 1000, Duration::from_millis(3));
        m.request(true, 404, 100, Duration::from_millis(40));
        m.request(false, 200, 7, Duration::from_secs(100));
        m.error(ErrorKind::Timeout, 2);
        let text = m.render(&Gauges {
            backend: "epoll",
            connections: 3,
            metrics_connections: 1,
            transfers: 0,
            rate_limit: 0,
            ktls: false,
        });
        for want in [
            "iocomp_requests_total{protocol=\"http\",status=\"200\"} 1\n",
            "iocomp_requests_total{protocol=\"http\",status=\"404\"} 1\n",
            "iocomp_requests_total{protocol=\"line\",status=\"200\"} 1\n",
            "iocomp_sent_bytes_total{protocol=\"http\"} 1100\n",
            "iocomp_request_duration_seconds_bucket{le=\"0.005\"} 1\n",
            "iocomp_request_duration_seconds_bucket{le=\"0.05\"} 2\n",
            "iocomp_request_duration_seconds_bucket{le=\"30\"} 2\n",
            "iocomp_request_duration_seconds_bucket{le=\"+Inf\"} 3\n",
            "iocomp_request_duration_seconds_count 3\n",
            "iocomp_errors_total{kind=\"timeout\"} 2\n",
            "iocomp_connections_active 3\n",
            "iocomp_backend_info{backend=\"epoll\"} 1\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
