//! The server in-process, through its public API ([`iocomp_server::Server`]),
//! one file per topic, one harness ([`harness`]). Every test runs on the
//! backend `IOCOMP_BACKEND` names (`epoll` or `uring`; `auto` when unset), so
//! CI runs this binary twice.

mod harness;

mod access_log;
mod admin;
mod fuzz_corpus;
mod headers;
mod hidden;
mod limits;
mod listings;
mod paths;
mod proptests;
mod timeouts;
mod tls_certs;
mod tls_handshake;
mod tls_https;
mod validators;
