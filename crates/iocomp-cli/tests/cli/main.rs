//! Integration tests of the `iocomp` command, one binary (faster to build
//! and to run than one per file), one module per topic of the command's
//! surface; the server's own behaviour is tested in `iocomp-server`.
//!
//! - `config`: `serve` flags and `--config` files, `--print-config`, usage
//!   errors of `serve` and `bench` flags, the TLS listener's flags;
//! - `backend`: the engine backend, chosen, forced or fallen back to;
//! - `signals`: SIGINT and SIGTERM shut down cleanly (a drain timeout,
//!   `--quiet`), SIGHUP reloads;
//! - `limits`: a descriptor limit on the server process, many clients;
//! - `access_log`: the access log in a file, reopened on SIGUSR1 (logrotate);
//! - `systemd`: socket activation and `sd_notify`;
//! - `privdrop`: `--user`, giving root up after binding and opening; an
//!   unprivileged server and unreadable files;
//! - `get_http`: `iocomp get` over HTTP and the line protocol, proxies,
//!   redirects, content codings, the progress bar;
//! - `get_resume`: `-c` (resume) and `-j` (parallel ranges);
//! - `get_versions`: validators, so that resumed and parallel parts never
//!   splice two versions of a file;
//! - `get_fs`: what `get` does to the local file system;
//! - `get_failures`: bad input and broken servers, exit codes;
//! - `get_https`, `tls_failures`: `get https://` and its failures;
//! - `bench`: `iocomp bench` over HTTP, the line protocol and TLS;
//! - `browser`: a real browser over the listing and the status page;
//! - `fuzz_corpus`: the fuzz corpora replayed through the fuzz targets.
//!
//! `harness` holds everything the topics share: the temporary tree, the
//! spawned server, clients, the bounded child runner, the seeded generator,
//! scripted HTTP/TLS servers and the test PKI. Nothing in a test changes
//! process-wide state, so the topics run in parallel threads.

mod harness;

mod access_log;
mod backend;
mod bench;
mod browser;
mod config;
mod fuzz_corpus;
mod get_failures;
mod get_fs;
mod get_http;
mod get_https;
mod get_resume;
mod get_versions;
mod limits;
mod privdrop;
mod signals;
mod systemd;
mod tls_failures;
