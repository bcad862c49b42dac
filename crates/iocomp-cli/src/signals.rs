//! SIGINT/SIGTERM (and SIGUSR1, reopen the access log; SIGHUP, reload the TLS certificates) as values: blocked in every thread and taken synchronously
//! with `sigwait`, the counterpart of the seed's console control handler —
//! without running shutdown inside a signal handler, and without sleep loops.

use std::io;

use crate::sys::SigSet;

/// The blocked set; `wait` returns the next one delivered.
pub struct Signals {
    set: SigSet,
}

impl Signals {
    /// Blocks SIGINT, SIGTERM, SIGUSR1 and SIGHUP in the calling thread (and so in every thread
    /// it starts afterwards).
    pub fn block() -> io::Result<Signals> {
        let set = SigSet::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGHUP])?;
        Ok(Signals { set })
    }

    /// Waits for one of the signals; returns its name.
    pub fn wait(&self) -> &'static str {
        loop {
            // sigwait fails only for an invalid set, which `block` never makes;
            // wait again rather than end the server.
            if let Ok(sig) = self.set.wait() {
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
