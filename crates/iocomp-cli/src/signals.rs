//! SIGINT/SIGTERM (and SIGUSR1, reopen the access log; SIGHUP, reload the TLS certificates) as values: blocked in every thread and taken synchronously
//! with `sigwait`, the counterpart of the seed's console control handler —
//! without running shutdown inside a signal handler, and without sleep loops.

use std::io;

/// The blocked set; `wait` returns the next one delivered.
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGINT, SIGTERM, SIGUSR1 and SIGHUP in the calling thread (and so in every thread
    /// it starts afterwards).
    pub fn block() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t that we own; the calls only write it
        // or read it, and pthread_sigmask changes only this thread's mask.
        let rc = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Signals { set })
    }

    /// Waits for one of the signals; returns its name.
    pub fn wait(&self) -> &'static str {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `self.set` is an initialised sigset_t and `sig` a live int.
            let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
            if rc == 0 {
                return match sig {
                    libc::SIGINT => "SIGINT",
                    libc::SIGTERM => "SIGTERM",
                    libc::SIGUSR1 => "SIGUSR1",
                    libc::SIGHUP => "SIGHUP",
                    _ => "signal",
                };
            }
        }
    }
}

// SAFETY: sigset_t is plain data; sharing it between threads is harmless.
unsafe impl Send for Signals {}
