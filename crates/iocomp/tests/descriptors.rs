//! What the engine does to descriptors it is given, on both backends:
//! `Handle::close` retires a descriptor even when the process has no
//! descriptor left (run in a child under `ulimit -n`), and a descriptor the
//! engine switched to non-blocking mode is switched back when its handle is
//! dropped, so other holders of the same open file (a pipe shared with
//! another process) find it as they left it.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use iocomp::{Op, Recv, Send};

mod support;
use support::{backends, port_on, T};

/// A pipe through `cat`: we write into its stdin (the write end) and read
/// its stdout (the read end); `cat` exits at EOF.
fn cat() -> (Child, ChildStdout, ChildStdin) {
    let mut c = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (r, w) = (c.stdout.take().unwrap(), c.stdin.take().unwrap());
    (c, r, w)
}

const CHILD: &str = "IOCOMP_TEST_DESCRIPTORS_CHILD";

/// Runs test `name` again in a child whose descriptor limit is `limit`
/// (`ulimit -n`); true in the parent (which checked that the child passed),
/// false in the child, which then runs the body.
fn in_limited_child(name: &str, limit: u32) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
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

/// Reads `r` to its end on another thread; the bytes, or `None` if no EOF
/// came within a generous bound.
fn read_to_eof(mut r: impl Read + std::marker::Send + 'static) -> Option<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = r.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx.recv_timeout(Duration::from_secs(20)).ok()
}

/// `Handle::close` with every descriptor of the process in use (EMFILE):
/// the pipe's write end is still retired — `cat` sees EOF and exits, and so
/// our reader sees EOF, although a clone of the handle keeps the descriptor
/// number reserved.
#[test]
fn close_retires_the_descriptor_when_none_is_left() {
    if in_limited_child("close_retires_the_descriptor_when_none_is_left", 128) {
        return;
    }
    for b in backends() {
        let port = port_on(b);
        let (mut child, r, w) = cat();
        let h = port.associate(OwnedFd::from(w), 1);
        let keep = h.clone();
        // Use up every descriptor.
        let null = File::open("/dev/null").unwrap();
        let mut hog = Vec::new();
        loop {
            match null.try_clone() {
                Ok(f) => hog.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{b}: {e}");
                    break;
                }
            }
        }
        h.close();
        let got = read_to_eof(r);
        drop(hog);
        assert_eq!(
            got,
            Some(Vec::new()),
            "{b}: the reader saw no EOF: the pipe was not retired"
        );
        drop(keep);
        child.wait().unwrap();
    }
}

/// The `flags:` line of `/proc/self/fdinfo/FD`, in octal.
fn fd_flags(fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let line = info.lines().find(|l| l.starts_with("flags:")).unwrap();
    u32::from_str_radix(line["flags:".len()..].trim(), 8).unwrap()
}

const O_NONBLOCK: u32 = libc::O_NONBLOCK as u32;

/// A blocking pipe given to the port: the engine may make it non-blocking
/// while it works on it (the epoll backend must), and leaves it so, as
/// tokio and mio do: dropping or closing the handle does not switch the
/// open file back (another handle on it may still rely on it), so another
/// descriptor of the same pipe finds it as the engine left it. The pipe runs
/// through `cat`, which echoes what we send.
#[test]
fn non_blocking_mode_stays_as_the_engine_left_it_after_the_handle_is_dropped() {
    for b in backends() {
        let port = port_on(b);
        let (mut child, r, w) = cat();
        let (r, w) = (OwnedFd::from(r), OwnedFd::from(w));
        let (r2, w2) = (r.try_clone().unwrap(), w.try_clone().unwrap());
        assert_eq!(fd_flags(w2.as_raw_fd()) & O_NONBLOCK, 0);
        let hw = port.associate(w, 1);
        let hr = port.associate(r, 2);
        port.submit(Send::new(&hw, b"through the pipe".to_vec()))
            .map_err(|(e, _)| e)
            .unwrap();
        port.submit(Recv::new(&hr, Vec::with_capacity(64)))
            .map_err(|(e, _)| e)
            .unwrap();
        for _ in 0..2 {
            let p = port.get(T).unwrap();
            assert!(p.status.is_ok(), "{b}: {:?}", p.status);
            if let Op::Recv(rv) = p.op {
                assert_eq!(rv.buf, b"through the pipe");
            }
        }
        let (wf, rf) = (fd_flags(w2.as_raw_fd()), fd_flags(r2.as_raw_fd()));
        // One handle dropped, the other closed: neither undoes the flag.
        drop(hw);
        hr.close();
        assert_eq!(fd_flags(w2.as_raw_fd()), wf, "{b}: the write end changed");
        assert_eq!(fd_flags(r2.as_raw_fd()), rf, "{b}: the read end changed");
        drop((w2, r2));
        child.wait().unwrap();
    }
}
