//! Observability: what the server tells about itself while it runs — the
//! access log ([`access`]), the Prometheus counters ([`metrics`]) and the
//! transfers in progress shown on the status page ([`transfers`]).
//!
//! Everything here is live state that handlers and the driver write to and the
//! admin handler reads; none of it imports the connection driver or a
//! protocol handler (a transfer reads its connection's progress through the
//! [`transfers::Sending`] trait the driver implements).

pub(crate) mod access;
pub(crate) mod metrics;
pub(crate) mod transfers;

pub use access::{AccessLogFormat, LogFile};

use access::AccessLog;
use metrics::Metrics;
use transfers::Transfers;

/// The server's observability state, shared by every connection.
pub(crate) struct Obs {
    /// The access log (possibly off).
    pub(crate) access: AccessLog,
    /// Counters: only with a metrics listener.
    pub(crate) metrics: Option<Metrics>,
    /// Transfers in progress: only with a metrics listener.
    pub(crate) transfers: Option<Transfers>,
}
