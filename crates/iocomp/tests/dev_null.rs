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
    // In a child of its own: this closes descriptors of the whole process.
    if in_child("close_retires_with_dev_null_after_its_descriptor_was_closed_and_reused") {
        return;
    }
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

const CHILD: &str = "IOCOMP_TEST_DEV_NULL_CHILD";

/// Runs test `name` again in a child process of its own (where the crate
/// has not opened `/dev/null` yet, and where closing descriptors disturbs no
/// other test) with a descriptor limit of 64; true in the parent (which
/// checked that the child passed), false in the child.
fn in_child(name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(exe)
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed: {}\n{text}", out.status);
    assert!(
        text.contains("1 passed"),
        "the child did not run the test:\n{text}"
    );
    true
}

/// A port is built even when `/dev/null` cannot be opened (here: no
/// descriptor left, EMFILE); a later close opens it when it can, and
/// retires with it as usual.
#[test]
fn a_port_is_built_without_dev_null_and_a_close_opens_it_later() {
    if in_child("a_port_is_built_without_dev_null_and_a_close_opens_it_later") {
        return;
    }
    // The descriptors of /dev/null the process had (inherited ones).
    let before = dev_nulls();
    let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
    let mut hog = Vec::new();
    loop {
        match exe.try_clone() {
            Ok(f) => hog.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    // Free descriptors one by one until a port can be built: the first one
    // built had none to spare for /dev/null.
    let port = loop {
        match iocomp::Port::builder()
            .backend(iocomp::Backend::Epoll)
            .build()
        {
            Ok(p) => break p,
            Err(e) => {
                assert!(
                    hog.pop().is_some(),
                    "no port even with descriptors free: {e}"
                );
            }
        }
    };
    // (Reading /proc/self/fd takes a descriptor.)
    drop(hog);
    assert_eq!(dev_nulls(), before, "the build opened /dev/null");
    port.attach().unwrap();
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors nobody else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let h = port.associate(w, 1);
    let n = h.as_raw_fd();
    let keep = h.clone();
    h.close();
    assert_eq!(target(n), "/dev/null", "the retired descriptor");
    let mut buf = [0u8; 1];
    // SAFETY: reads into a live one-byte buffer (no writer is left: EOF).
    let got = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
    assert_eq!(got, 0, "the pipe's write end is still open");
    drop((keep, r));
}
