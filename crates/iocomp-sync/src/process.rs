//! Waitable processes: `OpenProcess(SYNCHRONIZE)`, `GetExitCodeProcess`, on pidfds.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, OnceLock};

use crate::error::ProcessError;
use crate::object::Object;
use crate::reactor::{self, Registration, Source};
use crate::sync::{lock, Arc};
use crate::sys;
use crate::wait::{sealed::Sealed, Waitable};

/// A handle to a process, signalled once the process has exited (`OpenProcess(SYNCHRONIZE, ..)`), on a Linux pidfd
/// (`pidfd_open`, Linux 5.3; readable once the process exits).
///
/// Any process can be opened by pid; the handle refers to that process even if its pid is later reused. The exit
/// status is available only for **children of this process** ([`Process::exit_status`]): it is read with
/// `waitid(P_PIDFD, .., WEXITED | WNOWAIT)`, which does **not** reap the child, so `std::process::Child::wait` still
/// works (and is still needed to reap it). For any other process the handle is signalled on exit just the same, but
/// the exit status is `None` (Linux gives it to the parent only).
///
/// Waiting changes nothing (like a thread handle): once exited, the process stays signalled. Cloning makes another
/// handle to the same process object.
///
/// ```
/// use iocomp_sync::{Process, WaitResult, Waitable};
/// use std::time::Duration;
///
/// let mut child = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
/// let process = Process::from_child(&child).unwrap();
/// assert_eq!(process.wait(Some(Duration::from_secs(20))), Ok(WaitResult::Signaled(0)));
/// assert_eq!(process.exit_code(), Some(3));
/// assert_eq!(child.wait().unwrap().code(), Some(3)); // not reaped by us: std still gets it
/// ```
#[derive(Clone)]
pub struct Process {
    inner: Arc<Inner>,
}

struct Inner {
    obj: Arc<Object>,
    pid: u32,
    fd: OwnedFd,
    reg: OnceLock<Registration>,
    /// The child's status, once read (kept: after `Child::wait` reaps it, `waitid` can no longer tell).
    status: Mutex<Option<ExitStatus>>,
}

impl Source for Inner {
    fn ready(&self) {
        self.read_status();
        reactor::set_flag(&self.obj);
    }
}

impl Inner {
    /// Reads the exit status of an exited child into the cache; nothing for a running process or a non-child.
    fn read_status(&self) -> Option<ExitStatus> {
        let mut status = lock(&self.status);
        if status.is_none() {
            if let Ok(Some(raw)) = sys::waitid_pidfd_nowait(self.fd.as_fd()) {
                *status = Some(ExitStatus::from_raw(raw));
            }
        }
        *status
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reg) = self.reg.get() {
            reg.deregister(self.fd.as_fd());
        }
    }
}

impl Process {
    /// Opens the process `pid` (any process the caller may see).
    ///
    /// # Errors
    /// [`ProcessError::NoSuchProcess`] if there is no such process (or `pid` names a thread that is not a process's
    /// main thread); [`ProcessError::Unsupported`] on kernels without pidfds; [`ProcessError::Os`] otherwise.
    pub fn open(pid: u32) -> Result<Process, ProcessError> {
        let raw = libc::pid_t::try_from(pid)
            .ok()
            .filter(|&p| p > 0)
            .ok_or(ProcessError::NoSuchProcess { pid })?;
        let fd = sys::pidfd_open(raw).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) | Some(libc::EINVAL) => ProcessError::NoSuchProcess { pid },
            Some(libc::ENOSYS) => ProcessError::Unsupported,
            errno => ProcessError::Os {
                errno: errno.unwrap_or(libc::EIO),
            },
        })?;
        let inner = Arc::new(Inner {
            obj: reactor::new_flag(),
            pid,
            fd,
            reg: OnceLock::new(),
            status: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner) as std::sync::Weak<dyn Source>;
        let reg = Registration::register(inner.fd.as_fd(), weak).map_err(|e| ProcessError::Os {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })?;
        let _ = inner.reg.set(reg);
        let process = Process { inner };
        process.refresh();
        Ok(process)
    }

    /// Opens a child made by `std::process::Command`. Call it before `child.wait()`/`try_wait()` has reaped the
    /// child: after that its pid may belong to another process.
    ///
    /// # Errors
    /// [`ProcessError::NotAChild`] if the pid no longer refers to an unreaped child of this process (it was reaped
    /// already); otherwise as [`Process::open`].
    pub fn from_child(child: &Child) -> Result<Process, ProcessError> {
        let pid = child.id();
        let process = Process::open(pid).map_err(|e| match e {
            ProcessError::NoSuchProcess { pid } => ProcessError::NotAChild { pid },
            e => e,
        })?;
        match sys::waitid_pidfd_nowait(process.inner.fd.as_fd()) {
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                Err(ProcessError::NotAChild { pid })
            }
            _ => Ok(process),
        }
    }

    /// The process id it was opened with.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Whether the process has exited (a snapshot; the same as a poll on the handle).
    pub fn has_exited(&self) -> bool {
        self.refresh();
        reactor::flag_is_set(&self.inner.obj)
    }

    /// The exit status of a child that has exited (`GetExitCodeProcess`), read without reaping it. `None` while it
    /// runs, and **always `None` for a process that is not a child of this one**. Once read, the status is kept, so it
    /// stays available after `Child::wait` has reaped the child; a child reaped before this handle ever saw it exit
    /// reports `None`.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.inner.read_status()
    }

    /// The exit code of a child that exited normally: [`Process::exit_status`]'s
    /// [`code`](ExitStatus::code). `None` while it runs, for a non-child, and for a child killed by a signal (see
    /// [`ExitStatusExt::signal`] on [`Process::exit_status`]).
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_status().and_then(|s| s.code())
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.inner.pid)
            .field("exited", &reactor::flag_is_set(&self.inner.obj))
            .finish()
    }
}

impl PartialEq for Process {
    /// Two handles are equal when they are clones of one another.
    fn eq(&self, other: &Process) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Process {}

impl Sealed for Process {
    fn object(&self) -> &Arc<Object> {
        &self.inner.obj
    }

    fn refresh(&self) {
        if !reactor::flag_is_set(&self.inner.obj)
            && sys::poll_readable(self.inner.fd.as_fd()).unwrap_or(false)
        {
            self.inner.ready();
        }
    }
}

impl Waitable for Process {}
