//! The server in-process, through its public API ([`iocomp_server::Server`]),
//! one file per topic, one harness ([`harness`]). Every test runs on the
//! backend `IOCOMP_BACKEND` names (`epoll` or `uring`; `auto` when unset), so
//! CI runs this binary twice.

mod harness;

mod access_log;
mod admin;
mod cache;
mod conditionals;
mod fuzz_corpus;
mod headers;
mod hidden;
mod hostile;
mod interop;
mod keepalive;
mod limits;
mod line_protocol;
mod listings;
mod paths;
mod proptests;
mod ranges;
mod timeouts;
mod tls_certs;
mod tls_handshake;
mod tls_https;
