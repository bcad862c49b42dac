//! The server in-process, through its public API ([`iocomp_server::Server`]),
//! one file per topic, one harness ([`harness`]). Every test runs on the
//! backend `IOCOMP_BACKEND` names (`epoll` or `uring`; `auto` when unset), so
//! CI runs this binary twice.

mod harness;

mod access_log;
mod cache;
mod conditionals;
mod descriptors;
mod faults;
mod fuzz_corpus;
mod headers;
mod hidden;
mod hostile;
mod hot_path;
mod idle;
mod inline;
mod interop;
mod keepalive;
mod large_files;
mod limits;
mod line_protocol;
mod listings;
mod load;
mod metrics;
mod paths;
mod proptests;
mod ranges;
mod rate_limit;
mod refused;
mod reuse;
mod shutdown;
mod soak;
mod timeouts;
mod tls_certs;
mod tls_handshake;
mod tls_https;
