//! systemd without libsystemd: socket activation (`LISTEN_PID`, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`: listening sockets passed from descriptor 3 on) and
//! `sd_notify` (`READY=1`, `STOPPING=1` as datagrams to `NOTIFY_SOCKET`, a
//! path or an abstract `@name`).
//!
//! Both read their variables once at start-up, before any thread exists, and
//! remove them, so nothing the server might start inherits them.

use std::net::TcpListener;
use std::os::fd::RawFd;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::sys;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;
/// More than any unit would pass; a bigger count is a broken environment.
const MAX_FDS: usize = 4096;

/// A socket passed by systemd, and its name from `LISTEN_FDNAMES`.
pub(crate) struct Passed {
    pub(crate) listener: TcpListener,
    pub(crate) name: String,
    pub(crate) fd: RawFd,
}

/// Takes the sockets systemd passed to this process: none when `LISTEN_PID`
/// or `LISTEN_FDS` is unset or `LISTEN_PID` is another process's. Each must
/// be a listening TCP socket (IPv4 or IPv6); anything else is an error that
/// says which descriptor and why.
pub(crate) fn listen_fds() -> Result<Vec<Passed>, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new()); // meant for another process (our parent)
    }
    let count: usize = count
        .trim()
        .parse()
        .ok()
        .filter(|&n| n <= MAX_FDS)
        .ok_or_else(|| format!("socket activation: LISTEN_FDS={count:?} is not a count"))?;
    let names: Vec<&str> = names
        .as_deref()
        .map_or(Vec::new(), |n| n.split(':').collect());
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let fd = FIRST_FD + i as RawFd;
        let name = names.get(i).copied().unwrap_or("unknown").to_owned();
        let listener = claim(fd)
            .map_err(|why| format!("socket activation: descriptor {fd} ({name}) {why}"))?;
        out.push(Passed { listener, name, fd });
    }
    Ok(out)
}

/// Checks that `fd` is a listening TCP socket, marks it close-on-exec and
/// takes ownership of it.
fn claim(fd: RawFd) -> Result<TcpListener, String> {
    match sys::file_type(fd) {
        Err(e) => return Err(format!("is not open: {e}")),
        Ok(t) if t != libc::S_IFSOCK => return Err("is not a socket".into()),
        Ok(_) => {}
    }
    let opt = |name, what: &str| sys::socket_option(fd, name).map_err(|e| format!("{what}: {e}"));
    if opt(libc::SO_TYPE, "SO_TYPE")? != libc::SOCK_STREAM {
        return Err("is not a stream socket (ListenStream= is needed)".into());
    }
    let domain = opt(libc::SO_DOMAIN, "SO_DOMAIN")?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err("is not a TCP socket (a unix socket?)".into());
    }
    if opt(libc::SO_ACCEPTCONN, "SO_ACCEPTCONN")? != 1 {
        return Err("is not listening".into());
    }
    sys::set_cloexec(fd).map_err(|e| format!("F_SETFD: {e}"))?;
    // Passed to this process for it to own, claimed once, here, at start-up.
    sys::take_passed_listener(fd).map_err(|e| format!("cannot be taken: {e}"))
}

/// `sd_notify` to the service manager, if `NOTIFY_SOCKET` named one.
pub(crate) struct Notifier {
    addr: Option<SocketAddr>,
}

impl Notifier {
    /// Reads (and removes) `NOTIFY_SOCKET`: a path, or `@name` for an abstract
    /// socket.
    pub(crate) fn from_env() -> Result<Notifier, String> {
        let Some(v) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(Notifier { addr: None });
        };
        std::env::remove_var("NOTIFY_SOCKET");
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str());
        let addr = match bytes.split_first() {
            Some((b'@', name)) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)
            }
            Some((b'/', _)) => SocketAddr::from_pathname(&v),
            _ => {
                return Err(format!(
                    "NOTIFY_SOCKET={v:?}: neither a path nor an @abstract name"
                ))
            }
        }
        .map_err(|e| format!("NOTIFY_SOCKET={v:?}: {e}"))?;
        Ok(Notifier { addr: Some(addr) })
    }

    /// Sends `state` (e.g. `READY=1`); a failure is only a warning.
    pub(crate) fn notify(&self, state: &str) {
        let Some(addr) = &self.addr else { return };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), addr));
        if let Err(e) = sent {
            tracing::warn!("sd_notify {state:?}: {e}");
        }
    }
}
