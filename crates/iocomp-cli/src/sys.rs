//! Every call into libc, and so every `unsafe` block of the crate: the user
//! and group look-ups and id changes of `serve --user`, the blocked signal set
//! `serve` waits on, the checks on sockets passed by systemd, `bench`'s
//! non-blocking `send(2)` and `get`'s `renameat2(RENAME_NOREPLACE)`. Each
//! function is a safe wrapper that reports failure as an [`io::Error`]; the
//! rest of the crate is safe code (the crate roots deny `unsafe_code`, this
//! module alone allows it).
//!
//! Calls that return `-1` and set `errno` go through one helper, `syscall!`,
//! as in mio's `src/sys/unix/mod.rs`; those that return an error number
//! (`getpwnam_r`, `pthread_sigmask`, `sigwait`) are written out. Every use
//! carries its own `SAFETY` argument: what the call reads and writes of our
//! memory, and why that memory is valid for the whole call.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Calls the libc function `$fn` with the given arguments inside `unsafe`, and
/// turns a negative return into `Err(errno)`. The caller states, in a `SAFETY`
/// comment on the invocation, why the call is sound.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)? ) ) => {{
        // SAFETY: the invocation's own SAFETY comment argues for this call.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`), in one
/// step: a file that appears at `to` meanwhile is never replaced. On a file
/// system without `RENAME_NOREPLACE` (`EINVAL`), a hard link and an unlink
/// give the same guarantee (`link` never replaces either).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (c_path(from)?, c_path(to)?);
    // SAFETY: both pointers are to NUL-terminated strings that live across
    // the call; renameat2 reads them and keeps nothing; AT_FDCWD is valid.
    let renamed = syscall!(renameat2(
        libc::AT_FDCWD,
        f.as_ptr(),
        libc::AT_FDCWD,
        t.as_ptr(),
        libc::RENAME_NOREPLACE,
    ));
    match renamed {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// The effective user id.
pub(crate) fn geteuid() -> libc::uid_t {
    // SAFETY: geteuid has no preconditions, touches no memory of ours and
    // cannot fail.
    unsafe { libc::geteuid() }
}

/// The first buffer for `getpwnam_r`/`getgrnam_r`, and the most we grow it to.
const FIRST_BUF: usize = 4096;
const MAX_BUF: usize = 1 << 20;

/// `(uid, primary gid)` of the user `name`, `None` when there is no such user.
pub(crate) fn passwd_ids(name: &CStr) -> io::Result<Option<(libc::uid_t, libc::gid_t)>> {
    let mut size = FIRST_BUF;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: all-zero bytes are a valid `passwd` (null pointers, zeros).
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; `pw`, `buf` (of the length
        // passed) and `found` are live and writable for the call; the strings
        // it stores point into `buf`, which we do not read.
        let rc =
            unsafe { libc::getpwnam_r(name.as_ptr(), &mut pw, buf.as_mut_ptr(), size, &mut found) };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some((pw.pw_uid, pw.pw_gid))),
            libc::ERANGE if size < MAX_BUF => size *= 2,
            // Some NSS modules report "no such user" as an error number.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// The id of the group `name`, `None` when there is no such group.
pub(crate) fn group_id(name: &CStr) -> io::Result<Option<libc::gid_t>> {
    let mut size = FIRST_BUF;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: all-zero bytes are a valid `group` (null pointers, zeros).
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `passwd_ids`: NUL-terminated name, live writable
        // outputs, `buf` of the length passed.
        let rc =
            unsafe { libc::getgrnam_r(name.as_ptr(), &mut gr, buf.as_mut_ptr(), size, &mut found) };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(gr.gr_gid)),
            libc::ERANGE if size < MAX_BUF => size *= 2,
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// `initgroups(name, gid)`: this process's supplementary groups become those
/// of the user `name`, plus `gid`.
pub(crate) fn initgroups(name: &CStr, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; initgroups reads
    // it and the group database and keeps no pointer.
    syscall!(initgroups(name.as_ptr(), gid)).map(drop)
}

/// `setgid(gid)`: every group id of the process (it runs as root).
pub(crate) fn setgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: a plain integer argument; no memory of ours is touched.
    syscall!(setgid(gid)).map(drop)
}

/// `setuid(uid)`: the real, effective and saved user ids when run as root.
pub(crate) fn setuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: a plain integer argument; no memory of ours is touched.
    syscall!(setuid(uid)).map(drop)
}

/// The real, effective and saved user ids.
pub(crate) fn getresuid() -> io::Result<[libc::uid_t; 3]> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the three pointers are to live integers of ours that the call
    // only writes.
    syscall!(getresuid(&mut r, &mut e, &mut s))?;
    Ok([r, e, s])
}

/// The real, effective and saved group ids.
pub(crate) fn getresgid() -> io::Result<[libc::gid_t; 3]> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: as in `getresuid`: three live integers, only written.
    syscall!(getresgid(&mut r, &mut e, &mut s))?;
    Ok([r, e, s])
}

/// A set of signals blocked in the thread that made it (and so in every
/// thread it starts afterwards), taken synchronously with [`SigSet::wait`].
pub(crate) struct SigSet {
    set: libc::sigset_t,
}

impl SigSet {
    /// Blocks `signals` in the calling thread.
    pub(crate) fn block(signals: &[libc::c_int]) -> io::Result<SigSet> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live sigset_t of ours, which the call only writes.
        syscall!(sigemptyset(&mut set))?;
        for &sig in signals {
            // SAFETY: as above; an invalid signal number is an EINVAL error.
            syscall!(sigaddset(&mut set, sig))?;
        }
        // SAFETY: `set` is initialised and only read; the old mask is not
        // asked for (null); the call changes this thread's mask only.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(SigSet { set })
    }

    /// Waits for a signal of the set to be delivered; its number.
    pub(crate) fn wait(&self) -> io::Result<libc::c_int> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` is an initialised sigset_t, only read; `sig` is
        // a live integer of ours, only written.
        let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(sig)
    }
}

/// The file type bits (`st_mode & S_IFMT`) of descriptor `fd`; `EBADF` when
/// it is not open.
pub(crate) fn file_type(fd: RawFd) -> io::Result<libc::mode_t> {
    // SAFETY: all-zero bytes are a valid `stat`; fstat only writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live, writable stat buffer of ours; fstat on a number
    // that is no open descriptor fails with EBADF and touches nothing.
    syscall!(fstat(fd, &mut st))?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// `getsockopt(fd, SOL_SOCKET, name)` for an integer option.
pub(crate) fn socket_option(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a live c_int and its exact size; the kernel writes at most
    // `len` bytes into it, and `len` itself.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        name,
        (&mut v as *mut libc::c_int).cast(),
        &mut len,
    ))?;
    Ok(v)
}

/// Marks `fd` close-on-exec.
pub(crate) fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD takes an integer argument and touches no memory of
    // ours; on a number that is no open descriptor it fails with EBADF.
    syscall!(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC)).map(drop)
}

/// Takes ownership of the listening socket `fd` that the service manager
/// passed to this process.
///
/// The caller (`systemd::listen_fds`, once, at start-up, before anything else
/// opens descriptors) passes only descriptors from 3 on that were inherited
/// and that it checked to be open listening TCP sockets; descriptors below 3
/// (the standard streams, owned by std) are refused here.
pub(crate) fn take_passed_listener(fd: RawFd) -> io::Result<TcpListener> {
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // Open (EBADF otherwise).
    file_type(fd)?;
    // SAFETY: the descriptor is open (fstat above), and nothing else in the
    // process refers to it: it was inherited from the service manager for
    // this process to own, it is not a standard stream, and the one caller
    // claims each passed descriptor once, before the process opens any other.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

/// A non-blocking `send(2)` of `buf` on the socket `fd`: the bytes sent (0
/// when the socket's buffer is full). Never raises SIGPIPE.
pub(crate) fn send_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `fd` is open for the borrow, and `buf` is a valid slice of
        // `buf.len()` bytes for the call's duration; send(2) only reads it.
        let sent = syscall!(send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        ));
        match sent {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// `SO_LINGER` on, 0 s, on the socket `fd`: its close resets the
/// connection at once instead of leaving it in TIME_WAIT (`bench
/// --new-connection` closes thousands a second from one address).
pub(crate) fn set_linger_zero(fd: BorrowedFd<'_>) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a pointer to a live `linger` and its exact size; the
    // kernel only reads it; `fd` is open for the borrow.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        (&l as *const libc::linger).cast(),
        std::mem::size_of::<libc::linger>() as libc::socklen_t,
    ))?;
    Ok(())
}

/// Takes `flock(LOCK_EX | LOCK_NB)` on `f`: `Ok(false)` when another open
/// file description holds a lock on the file. The lock goes with the last
/// descriptor of this open file description.
pub(crate) fn try_lock_exclusive(f: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a descriptor and flags and touches no memory; `f`
    // is borrowed for the call, so its descriptor is open and valid.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}
