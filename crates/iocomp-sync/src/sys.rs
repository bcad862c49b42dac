//! Every call into libc, and so every `unsafe` block of the crate: pidfds, `waitid`, `poll`, epoll, inotify and
//! thread nice values. Each function is a safe wrapper that owns its file descriptors as [`OwnedFd`] and reports
//! failures as [`io::Error`]s; the rest of the crate stays safe code.
#![allow(unsafe_code)]
#![cfg_attr(loom, allow(dead_code))]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Turns a `-1` return into the thread's `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a descriptor a successful call just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful call that creates a descriptor, and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `pidfd_open(pid, 0)` (syscall 434): a descriptor that refers to the process, close-on-exec, readable once it exits.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and touches no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    let fd = check(libc::c_int::try_from(ret).unwrap_or(-1))?;
    Ok(owned(fd))
}

/// `waitid(P_PIDFD, fd, WEXITED | WNOWAIT | WNOHANG)`: the raw wait status (as `waitpid` reports it) of an exited
/// child, without reaping it; `Ok(None)` while it runs; `ECHILD` if it is not our child (or was reaped already).
pub(crate) fn waitid_pidfd_nowait(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value (and the "still running" answer of WNOHANG).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let id = libc::id_t::try_from(fd.as_raw_fd()).unwrap_or(libc::id_t::MAX);
    // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call; the descriptor is borrowed and open.
    check(unsafe {
        libc::waitid(
            libc::P_PIDFD,
            id,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
        )
    })?;
    // SAFETY: waitid filled `info` for SIGCHLD (or left it zeroed), for which si_pid and si_status are the fields set.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f, // CLD_KILLED
    }))
}

/// `poll(fd, POLLIN, 0)`: whether a read would not block right now (data, end of file, hang-up or error).
pub(crate) fn poll_readable(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd, and the count says one.
        match check(unsafe { libc::poll(&mut pfd, 1, 0) }) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if pfd.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: takes a flag, touches no memory of ours.
    check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(owned)
}

/// `epoll_ctl(op, fd)` for one-shot readability with `token` as the event's data. `EPOLL_CTL_ADD` registers,
/// `EPOLL_CTL_MOD` re-arms (and reports at once if the descriptor is readable already), `EPOLL_CTL_DEL` removes.
pub(crate) fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: libc::c_int,
    fd: BorrowedFd<'_>,
    token: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        u64: token,
    };
    // SAFETY: both descriptors are borrowed and open; `ev` is a valid epoll_event (ignored for EPOLL_CTL_DEL).
    check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) }).map(drop)
}

/// `epoll_wait(epoll, .., -1)`: blocks until at least one registered descriptor is ready; appends their tokens to
/// `tokens` (cleared first). An interrupted wait returns no tokens.
pub(crate) fn epoll_wait(epoll: BorrowedFd<'_>, tokens: &mut Vec<u64>) -> io::Result<()> {
    const MAX: usize = 64;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
    tokens.clear();
    // SAFETY: `events` has room for MAX entries, the count passed; the descriptor is borrowed and open.
    let n = match check(unsafe {
        libc::epoll_wait(
            epoll.as_raw_fd(),
            events.as_mut_ptr(),
            MAX as libc::c_int,
            -1,
        )
    }) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
        Err(e) => return Err(e),
    };
    let n = usize::try_from(n).unwrap_or(0).min(MAX);
    tokens.extend(events[..n].iter().map(|e| e.u64));
    Ok(())
}

/// `inotify_init1(IN_NONBLOCK | IN_CLOEXEC)`.
pub(crate) fn inotify_init() -> io::Result<OwnedFd> {
    // SAFETY: takes flags, touches no memory of ours.
    check(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) }).map(owned)
}

/// `inotify_add_watch(fd, path, mask)`: the watch descriptor.
pub(crate) fn inotify_add_watch(fd: BorrowedFd<'_>, path: &Path, mask: u32) -> io::Result<i32> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the descriptor is borrowed and open.
    check(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) })
}

/// The calling thread's kernel id (`gettid`).
pub(crate) fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// `setpriority(PRIO_PROCESS, tid, nice)`: on Linux the nice value is per thread, so this changes thread `tid` only.
pub(crate) fn set_thread_nice(tid: libc::pid_t, nice: i32) -> io::Result<()> {
    let who = libc::id_t::try_from(tid).unwrap_or(0);
    // SAFETY: takes integers, touches no memory of ours.
    check(unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) }).map(drop)
}

/// `getpriority(PRIO_PROCESS, tid)`: the nice value of thread `tid` (-1 is a valid answer, so errno tells errors).
pub(crate) fn thread_nice(tid: libc::pid_t) -> io::Result<i32> {
    let who = libc::id_t::try_from(tid).unwrap_or(0);
    // SAFETY: __errno_location returns the calling thread's errno, valid for the thread's lifetime; getpriority takes
    // integers. errno is cleared first because -1 is also a legitimate nice value.
    let (ret, errno) = unsafe {
        *libc::__errno_location() = 0;
        let ret = libc::getpriority(libc::PRIO_PROCESS, who);
        (ret, *libc::__errno_location())
    };
    if ret == -1 && errno != 0 {
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(ret)
}
