//! The server in-process, through its public API ([`iocomp_server::Server`]),
//! one file per topic. Every test runs on the backend `IOCOMP_BACKEND` names
//! (`epoll` or `uring`; `auto` when unset), so CI runs this binary twice.

mod access_log;
mod admin;
mod harness;
mod headers;
mod hidden;
mod limits;
mod listings;
mod paths;
mod timeouts;
mod tls;
mod validators;
