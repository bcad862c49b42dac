//! **iocomp-server** — the file-download server of the seed `iocomp.cpp`, on the
//! [`iocomp`] completion port.
//!
//! A few worker threads serve many clients. A client connects, sends a file
//! name ending in a newline — as `nc` does — and receives the file's bytes; it
//! may then ask for another on the same connection. Each connection is a small
//! state machine driven by completion packets (receive a line → transmit a file
//! or an error line → receive the next line), and never holds a thread while it
//! waits.
//!
//! ```
//! use std::io::{Read, Write};
//! use iocomp_server::{Config, Server};
//!
//! # fn main() -> std::io::Result<()> {
//! let dir = std::env::temp_dir().join(format!("iocomp-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("hello.txt"), "hello, world\n")?;
//!
//! let mut config = Config::new(&dir);
//! config.binds = vec!["127.0.0.1:0".parse().unwrap()];
//! config.threads = 2;
//! let server = Server::start(config)?;
//!
//! let mut client = std::net::TcpStream::connect(server.local_addrs()[0])?;
//! client.write_all(b"hello.txt\nmissing.txt\n")?;
//! client.shutdown(std::net::Shutdown::Write)?;   // like `nc -q`
//! let mut reply = String::new();
//! client.read_to_string(&mut reply)?;
//! assert_eq!(reply, "hello, world\nFile transmit error: not found\r\n");
//!
//! server.shutdown(std::time::Duration::from_secs(5));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! # The line protocol
//!
//! - A line ends with LF; one CR before it is stripped; at most 4096 bytes.
//! - The name is raw bytes, relative to the served directory: no
//!   percent-decoding; a leading `/` means the root; `..` is refused as a path
//!   component (`a..b` is an ordinary name); NUL is refused; dotfiles are
//!   refused unless enabled, also where a symlink leads; symlinks are followed
//!   only while they stay inside; a name ending in `/` or `/.` must be a
//!   directory (`file.txt/` is not found).
//! - On failure the server sends one line, `File transmit error: <reason>\r\n`,
//!   and keeps the connection. Reasons never disclose paths: `not found`,
//!   `forbidden`, `not a regular file`, `bad name`, `line too long`, `busy`,
//!   `I/O error`.
//! - After the client half-closes, the lines already received are answered and
//!   then the connection is closed.
//!
//! An error line cannot be told from file content: that is the protocol's
//! limit, and why HTTP shares the port.
//!
//! # Inside
//!
//! The crate's layers — `sys` (every `unsafe`), `http` (pure parsing), `fs`
//! (path policy), `obs` (logs, metrics), `config`, `proto` (the protocol
//! handlers and their seam with the driver), `conn` (the connection driver),
//! `server` — and the rules between them are described in the repository's
//! `docs/ARCHITECTURE.md`.

#![deny(unsafe_code)]

mod config;
mod conn;
mod fs;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod listener;
mod obs;
mod proto;
mod server;
mod sys;

pub use config::{
    CertFiles, CertPem, Config, KtlsMode, NotsentLowat, AUTO_MIN_MTU, AUTO_NOTSENT_LOWAT,
};
pub use fs::{Normalized, OpenError, Opened, PathOptions, Root, CACHED_SIBLINGS};
pub use obs::{AccessLogFormat, LogFile};
pub use proto::line::ERROR_PREFIX;
pub use server::Server;

/// Whether the kernel offers kernel TLS now: it lists the `tls` TCP
/// upper-layer protocol (no module is loaded) and takes keys both ways for
/// at least one TLS 1.3 cipher, tried on a loopback TCP pair with dummy
/// keys. [`Server::ktls_available`] reports the same probe, made at start.
pub fn probe_ktls() -> bool {
    conn::ktls::Support::probe().0.any()
}
