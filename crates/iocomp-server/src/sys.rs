//! Every call into libc, and so every `unsafe` block of the crate: `openat2`,
//! `fstatat`, `fcntl`, `preadv2`, the listening-socket calls and the
//! descriptor limit. Each function is a safe wrapper that owns what it opens as
//! an [`OwnedFd`] and reports failure as an [`io::Error`]; the rest of the
//! crate is safe code (the crate root denies `unsafe_code`, this module alone
//! allows it).
//!
//! The calls go through one helper, `syscall!`, as in mio's
//! `src/sys/unix/mod.rs`: a `-1` return becomes the thread's `errno`. Every use
//! carries its own `SAFETY` argument: what the call reads and writes of our
//! memory, and why that memory is valid for the whole call.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Calls the libc function `$fn` with the given arguments inside `unsafe`, and
/// turns a negative return into `Err(errno)`. The caller states, in a `SAFETY`
/// comment on the invocation, why the call is sound.
///
/// Each argument is evaluated first, in order, into a local of its own
/// (outside the `unsafe` block: an argument expression can never hide an
/// unsafe operation of its own); only the call itself is `unsafe`. Macro
/// hygiene keeps the locals, all spelled `arg`, apart.
///
/// Because each argument is bound to a local by `let arg = …;`, a temporary
/// made inside an argument expression is dropped at the end of that `let`,
/// *before* the call: `syscall!(open(CString::new(p)?.as_ptr(), …))` would
/// pass a dangling pointer. Bind such values (a `CString`, a buffer) to a
/// named local of the caller first, and pass a pointer into it.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)? ) ) => {
        syscall!(@bind $fn [] $($arg,)*)
    };
    (@bind $fn: ident [$($bound: ident)*] $head: expr, $($rest: expr,)*) => {{
        let arg = $head;
        syscall!(@bind $fn [$($bound)* arg] $($rest,)*)
    }};
    (@bind $fn: ident [$($bound: ident)*]) => {{
        // SAFETY: the invocation's own SAFETY comment argues for this call.
        let res = unsafe { libc::$fn($($bound),*) };
        if res < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Milliseconds on the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`:
/// the kernel's time at its last tick, a few milliseconds of resolution, read
/// without a hardware timer and with no 128-bit arithmetic): for the
/// millisecond stamps of timeouts and the open-file cache, taken several
/// times a request. `CLOCK_MONOTONIC` where the coarse clock is refused.
pub(crate) fn coarse_millis() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec` to the pointer, which
    // points to `ts`, a local that lives for the whole call.
    if syscall!(clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts)).is_err() {
        // SAFETY: as above.
        let _ = syscall!(clock_gettime(libc::CLOCK_MONOTONIC, &mut ts));
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1000)
        .wrapping_add(ts.tv_nsec as u64 / 1_000_000)
}

/// Wraps a descriptor that a successful call just returned.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let raw = libc::c_int::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: `raw` was just returned by a successful call that creates a
    // descriptor, and nothing else owns it; the `OwnedFd` takes it over.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The first version of the kernel's `struct open_how` (`OPEN_HOW_SIZE_VER0`).
///
/// `libc::open_how` is `#[non_exhaustive]` and has no `Default`; this plain
/// copy of the ABI can be built field by field.
#[repr(C)]
pub(crate) struct OpenHow {
    /// `O_*` flags.
    pub(crate) flags: u64,
    /// Creation mode (unused: we never create).
    pub(crate) mode: u64,
    /// `RESOLVE_*` flags.
    pub(crate) resolve: u64,
}

const _: () = assert!(std::mem::size_of::<OpenHow>() == 24);

/// `openat2(dir, path, how)`, once (the caller retries `EAGAIN`/`EINTR`).
pub(crate) fn openat2(dir: BorrowedFd<'_>, path: &CStr, how: &OpenHow) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is open for the borrow; `path` is NUL-terminated and `how`
    // a properly laid out `open_how` whose size is passed alongside; both
    // outlive the call, which only reads them.
    let fd = syscall!(syscall(
        libc::SYS_openat2,
        dir.as_raw_fd(),
        path.as_ptr(),
        how as *const OpenHow,
        std::mem::size_of::<OpenHow>(),
    ))?;
    owned(fd)
}

/// `openat(dir, path, flags)`, once: where `openat2` is refused (before
/// Linux 5.6, under seccomp filters, under valgrind), the path policy walks
/// one component at a time with this.
pub(crate) fn openat(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is open for the borrow and `path` NUL-terminated for the
    // call; no mode is passed, and the flags the callers use never create.
    let fd = syscall!(openat(dir.as_raw_fd(), path.as_ptr(), flags))?;
    owned(libc::c_long::from(fd))
}

/// `fcntl(fd, F_SETFL, flags)`: sets the file status flags.
pub(crate) fn set_status_flags(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is open for the borrow; `F_SETFL` takes an integer argument
    // and touches no memory of ours.
    syscall!(fcntl(fd.as_raw_fd(), libc::F_SETFL, flags))?;
    Ok(())
}

/// `fcntl(fd, F_GETFL)`: the file status flags.
#[cfg(test)]
pub(crate) fn status_flags(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: `fd` is open for the borrow; `F_GETFL` touches no memory of ours.
    syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))
}

/// `fstatat(dir, path, flags)`.
pub(crate) fn fstatat(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
) -> io::Result<libc::stat> {
    // SAFETY: `libc::stat` is plain data for which all-zero bytes are valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open for the borrow, `path` is NUL-terminated, and `st`
    // is a live, writable stat buffer; all outlive the call.
    syscall!(fstatat(dir.as_raw_fd(), path.as_ptr(), &mut st, flags))?;
    Ok(st)
}

/// `preadv2(fd, buf, offset, RWF_NOWAIT)`: reads only what is in the page
/// cache, never waiting for the disk.
pub(crate) fn pread_nowait(fd: BorrowedFd<'_>, buf: &mut [u8], offset: i64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which is live, writable and exactly
    // `iov_len` bytes long for the whole call; `fd` is open for the borrow.
    let n = syscall!(preadv2(fd.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT))?;
    Ok(n as usize)
}

/// `readlinkat(fd, "")`: the target of the symlink `fd` (opened with
/// `O_PATH | O_NOFOLLOW`). A target as long as the buffer (`PATH_MAX`) may be
/// cut, so it is an error (`ENAMETOOLONG`).
pub(crate) fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `fd` is open for the borrow; the empty path is NUL-terminated;
    // `buf` is live and writable for `buf.len()` bytes, which is what we pass.
    let n = syscall!(readlinkat(
        fd.as_raw_fd(),
        c"".as_ptr(),
        buf.as_mut_ptr().cast(),
        buf.len(),
    ))? as usize;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

/// `getdents64(fd, buf)`: fills `buf` with `linux_dirent64` records of the
/// directory `fd` (opened for reading) from its current offset; returns the
/// bytes filled, 0 at the end. The records are parsed by the caller, in safe
/// code, from the bytes.
pub(crate) fn getdents(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `fd` is open for the borrow; `buf` is live and writable for
    // `buf.len()` bytes, which is what we pass; the kernel writes at most that.
    let n = syscall!(syscall(
        libc::SYS_getdents64,
        fd.as_raw_fd(),
        buf.as_mut_ptr(),
        buf.len(),
    ))?;
    Ok(n as usize)
}

/// `setsockopt(fd, level, name, &value)` for an integer option.
pub(crate) fn set_int_opt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size; the kernel
    // only reads it; `fd` is open for the borrow.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&value as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))?;
    Ok(())
}

/// The path MTU TCP uses for a connection (`tcpi_pmtu` of `TCP_INFO`):
/// 65,535 on IPv4 loopback, 65,536 on IPv6 loopback, 1,500 on Ethernet.
pub(crate) fn path_mtu(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is open for the borrow; a live tcp_info and its size; the
    // kernel writes at most `len` bytes into it (fewer on an older kernel,
    // leaving zeroes) and updates `len`, a live socklen_t.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        (&mut info as *mut libc::tcp_info).cast(),
        &mut len,
    ))?;
    Ok(info.tcpi_pmtu)
}

/// `getsockopt(fd, level, name)` for an integer option.
#[cfg(test)]
pub(crate) fn int_opt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a live c_int and its size; the kernel writes at most that many
    // bytes, and `len` is a live socklen_t it may update.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&mut v as *mut libc::c_int).cast(),
        &mut len,
    ))?;
    Ok(v)
}

/// Whether the kernel has kernel TLS now, loading nothing: the `tls`
/// upper-layer protocol is listed in `/proc/sys/net/ipv4/tcp_available_ulp`
/// once its module is loaded (or built in), and asking for it on a socket
/// would make the kernel load the module, as root, as a side effect. So the
/// list decides when it can be read; only without `/proc` (a chroot) does
/// `setsockopt(TCP_ULP, "tls")` on a fresh, unconnected TCP socket decide: it
/// fails with `ENOTCONN` when the protocol exists (it needs an established
/// connection) and with `ENOENT` when it does not. The answer does not depend
/// on privileges where the list can be read.
pub(crate) fn probe_ktls() -> bool {
    if let Ok(list) = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp") {
        return list.split_whitespace().any(|u| u == "tls");
    }
    let Ok(fd) = stream_socket(libc::AF_INET) else {
        return false;
    };
    let name = b"tls";
    // SAFETY: passes a pointer to a live 3-byte array and its exact length; the
    // kernel only reads it; `fd` is open (owned here) for the call.
    let r = syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_TCP,
        libc::TCP_ULP,
        name.as_ptr().cast(),
        name.len() as libc::socklen_t,
    ));
    match r {
        Ok(_) => true,
        Err(e) => e.raw_os_error() == Some(libc::ENOTCONN),
    }
}

/// `socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0)`.
pub(crate) fn stream_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with integer arguments touches no memory of ours.
    let fd = syscall!(socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0))?;
    owned(fd.into())
}

/// `bind(fd, addr)`.
pub(crate) fn bind(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a valid address of `len` bytes for this family
    // and outlives the call, which only reads it; `fd` is open for the borrow.
    syscall!(bind(
        fd.as_raw_fd(),
        (&storage as *const libc::sockaddr_storage).cast(),
        len as libc::socklen_t,
    ))?;
    Ok(())
}

/// `listen(fd, backlog)`.
pub(crate) fn listen(fd: BorrowedFd<'_>, backlog: libc::c_int) -> io::Result<()> {
    // SAFETY: listen(2) takes integers only; `fd` is open for the borrow.
    syscall!(listen(fd.as_raw_fd(), backlog))?;
    Ok(())
}

/// `getrlimit(RLIMIT_NOFILE)`: `(soft, hard)`.
pub(crate) fn nofile_limit() -> io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit, which `lim` is, live and writable.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// `setrlimit(RLIMIT_NOFILE, soft, hard)`.
pub(crate) fn set_nofile_limit(soft: libc::rlim_t, hard: libc::rlim_t) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit, which `lim` is, live for the call.
    syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim))?;
    Ok(())
}

/// `setsockopt(TCP_ULP, "tls")` on a connected TCP socket: attaches the
/// kernel's TLS upper-layer protocol (no keys yet: the socket still carries
/// plain bytes until [`set_tls_crypto`]). `ENOENT`: the kernel has no kernel
/// TLS; `EEXIST`: an upper-layer protocol is attached already.
pub(crate) fn set_ulp_tls(fd: BorrowedFd<'_>) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: passes a pointer to a live 3-byte array and its exact length;
    // the kernel only reads it; `fd` is open for the borrow.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_TCP,
        libc::TCP_ULP,
        name.as_ptr().cast(),
        name.len() as libc::socklen_t,
    ))?;
    Ok(())
}

/// `setsockopt(SOL_TLS, TLS_TX or TLS_RX, crypto_info)`: gives the kernel the
/// keys of one direction (`tx`: what we send). `info` is one of
/// `linux/tls.h`'s `tls12_crypto_info_*` structures, as bytes (see
/// `conn::ktls::crypto_info`); the kernel checks its length against the
/// cipher it names.
pub(crate) fn set_tls_crypto(fd: BorrowedFd<'_>, tx: bool, info: &[u8]) -> io::Result<()> {
    let dir = if tx { libc::TLS_TX } else { libc::TLS_RX };
    // SAFETY: passes a pointer to `info`'s live bytes and their exact length;
    // the kernel only reads (copies) them; `fd` is open for the borrow.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_TLS,
        dir,
        info.as_ptr().cast(),
        info.len() as libc::socklen_t,
    ))?;
    Ok(())
}

/// Sends one TLS alert (`level`, `description`) on a socket whose sending
/// side kernel TLS encrypts: `sendmsg` with a `TLS_SET_RECORD_TYPE` control
/// message naming the alert content type (21), without waiting (a full
/// socket buffer gives `EAGAIN`; the caller closes anyway).
pub(crate) fn ktls_send_alert(fd: BorrowedFd<'_>, level: u8, description: u8) -> io::Result<()> {
    const ALERT: u8 = 21;
    let mut payload = [level, description];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // Room for one cmsghdr and one byte of data, aligned as cmsghdr is.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    if space > std::mem::size_of_val(&control) {
        return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
    }
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `control`, which is `space` bytes long (checked
    // above) and 8-byte aligned, so CMSG_FIRSTHDR returns a pointer into it
    // (non-null, as the length holds a header), and CMSG_DATA a pointer to the
    // one data byte that CMSG_SPACE(1) left room for; nothing else is written.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        }
        (*cmsg).cmsg_level = libc::SOL_TLS;
        (*cmsg).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = ALERT;
    }
    // SAFETY: `msg` and everything it points at (`iov`, `payload`, `control`)
    // live on this frame for the whole call; the kernel only reads them.
    syscall!(sendmsg(
        fd.as_raw_fd(),
        &msg,
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
    ))?;
    Ok(())
}

/// `mkfifo(path, mode)`: for tests of special files.
#[cfg(test)]
pub(crate) fn mkfifo(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call, which only reads it.
    syscall!(mkfifo(path.as_ptr(), mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ktls_probe_follows_the_list_and_loads_nothing() {
        let path = "/proc/sys/net/ipv4/tcp_available_ulp";
        let before = std::fs::read_to_string(path).expect("/proc is mounted for the tests");
        let got = super::probe_ktls();
        let after = std::fs::read_to_string(path).unwrap();
        assert_eq!(before, after, "the probe loaded an upper-layer protocol");
        assert_eq!(got, before.split_whitespace().any(|u| u == "tls"));
    }

    #[test]
    fn syscall_evaluates_each_argument_once_in_order() {
        let mut order = Vec::new();
        let mut next = |v: libc::c_int| {
            order.push(v);
            v
        };
        // SAFETY: fcntl(F_GETFD) on an invalid descriptor touches no memory.
        let res = syscall!(fcntl(next(-1), next(libc::F_GETFD)));
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert_eq!(order, [-1, libc::F_GETFD]);
    }
}
