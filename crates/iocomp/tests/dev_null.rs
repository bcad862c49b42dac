//! `Handle::close` puts `/dev/null` in the retired descriptor's place, from
//! a `/dev/null` descriptor the crate keeps. If that descriptor is closed
//! behind the crate's back (a daemon's close-all loop, `close_range`) and
//! its number reused by an unrelated file, a close must still retire with
//! `/dev/null`, never with that file. A test binary of its own: it closes
//! descriptors it does not own.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

mod support;
use support::{backends, port_on};

fn target(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// The descriptors above 2 that name `/dev/null`.
fn dev_nulls() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &i32| fd > 2 && target(fd) == "/dev/null")
        .collect()
}

#[test]
fn close_retires_with_dev_null_after_its_descriptor_was_closed_and_reused() {
    for b in backends() {
        let port = port_on(b);
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors nobody else owns.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let h = port.associate(w, 1);
        // A close-all loop, behind the crate's back: the crate's /dev/null.
        let nulls = dev_nulls();
        for &fd in &nulls {
            // SAFETY: simulates a program closing descriptors it does not
            // own; none of them is used by this test afterwards.
            unsafe { libc::close(fd) };
        }
        // The lowest free number goes to the program's next file.
        let log =
            std::env::temp_dir().join(format!("iocomp-dev-null-{}-{b}.log", std::process::id()));
        let f = std::fs::File::create(&log).unwrap();
        let log_name = target(f.as_raw_fd());
        let n = h.as_raw_fd();
        let h2 = h.clone();
        h.close();
        assert_eq!(target(n), "/dev/null", "{b}: the retired descriptor");
        assert_eq!(target(f.as_raw_fd()), log_name, "{b}: the program's file");
        // The pipe's reader sees the end: our reference is gone.
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd in a live local.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 20_000) }, 1, "{b}: no EOF");
        let mut buf = [0u8; 1];
        // SAFETY: reads into a live one-byte buffer.
        let got = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
        assert_eq!(got, 0, "{b}: the pipe's write end is still open");
        drop((h2, r, f));
        let _ = std::fs::remove_file(&log);
    }
}
