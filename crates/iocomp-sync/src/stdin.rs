//! Console input as a waitable: `GetStdHandle(STD_INPUT_HANDLE)` in a wait.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

use crate::error::FdObjectError;
use crate::object::Object;
use crate::reactor::{self, Registration, Source};
use crate::sync::{lock, Arc};
use crate::sys;
use crate::wait::{sealed::Sealed, Waitable};

/// Standard input as a waitable object: signalled while a read of standard input would not block — data is there, or
/// the end of input (a closed pipe, Ctrl-D on a terminal) — like the console input handle of Win32. Waiting consumes
/// nothing: read the data with `std::io::stdin()` afterwards.
///
/// The state follows the descriptor: each wait first polls it (`poll(fd, 0)`), so a wait never misses data already
/// there, and a reader that has drained it makes the object unsignalled at the next wait. Readiness is a snapshot,
/// as on Win32: if another thread reads the data between the wake-up and your read, the read blocks. Beware of
/// buffers: `std::io::stdin()` reads ahead (up to 8 KiB) into its own buffer, which this object cannot see, so data
/// left in that buffer does not signal it. When standard input is a regular file, it is always signalled.
///
/// The object holds its own duplicate of descriptor 0, taken at [`Stdin::new`]: redirecting descriptor 0 afterwards
/// does not affect it.
#[derive(Clone)]
pub struct Stdin {
    inner: Arc<Inner>,
}

struct Inner {
    obj: Arc<Object>,
    fd: OwnedFd,
    /// `None` when epoll refuses the descriptor (a regular file: always readable).
    reg: OnceLock<Registration>,
    /// Serialises poll-and-update, so that a reset cannot overtake a later set.
    update: Mutex<()>,
}

impl Source for Inner {
    fn ready(&self) {
        let _g = lock(&self.update);
        reactor::set_flag(&self.obj);
    }
}

impl Inner {
    /// Polls the descriptor and sets or resets the object to match; when not readable, re-arms the reactor so that
    /// data arriving later sets it.
    fn update(&self) -> bool {
        let _g = lock(&self.update);
        let readable = sys::poll_readable(self.fd.as_fd()).unwrap_or(true);
        if readable {
            reactor::set_flag(&self.obj);
        } else {
            reactor::reset_flag(&self.obj);
            if let Some(reg) = self.reg.get() {
                reg.rearm(self.fd.as_fd());
            }
        }
        readable
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reg) = self.reg.get() {
            reg.deregister(self.fd.as_fd());
        }
    }
}

impl Stdin {
    /// A waitable object for standard input (descriptor 0).
    ///
    /// # Errors
    /// [`FdObjectError::NotOpen`] if descriptor 0 is closed; [`FdObjectError::LimitReached`] if no descriptor is left
    /// for the duplicate; [`FdObjectError::Os`] otherwise.
    pub fn new() -> Result<Stdin, FdObjectError> {
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| FdObjectError::from_io(&e))?;
        let inner = Arc::new(Inner {
            obj: reactor::new_flag(),
            fd,
            reg: OnceLock::new(),
            update: Mutex::new(()),
        });
        let weak = Arc::downgrade(&inner) as std::sync::Weak<dyn Source>;
        match Registration::register(inner.fd.as_fd(), weak) {
            Ok(reg) => {
                let _ = inner.reg.set(reg);
            }
            // A regular file (or /dev/null): epoll refuses it, and it is always readable.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(FdObjectError::from_io(&e)),
        }
        inner.update();
        Ok(Stdin { inner })
    }

    /// Whether a read of standard input would not block right now (the same as a poll on the object).
    pub fn has_input(&self) -> bool {
        self.inner.update()
    }
}

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stdin")
            .field("signaled", &reactor::flag_is_set(&self.inner.obj))
            .finish()
    }
}

impl Sealed for Stdin {
    fn object(&self) -> &Arc<Object> {
        &self.inner.obj
    }

    fn refresh(&self) {
        self.inner.update();
    }
}

impl Waitable for Stdin {}
