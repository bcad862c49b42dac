//! Test helpers shared by the integration tests of `iocomp`, `iocomp-server`
//! and `iocomp-cli`: one copy of each, used by their harnesses as a path
//! dev-dependency. Never published.

use std::fs;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// A short, printable rendering of bytes for failure messages (the first
/// 160 bytes, escaped, and the length when there are more).
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 160;
    let shown: String = bytes[..bytes.len().min(MAX)].escape_ascii().to_string();
    if bytes.len() > MAX {
        format!("b\"{shown}\"... ({} bytes)", bytes.len())
    } else {
        format!("b\"{shown}\"")
    }
}

/// The last `max` bytes (or a little less, at a character boundary) of
/// `bytes` as text, for a failure message about a child's output.
pub fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let from = s.len().saturating_sub(max);
    let from = (from..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[from..].to_string()
}

/// Reads `r` to its end on a thread of its own (a child's stdout or stderr,
/// so that a chatty child never blocks on a full pipe); the thread returns
/// the bytes.
pub fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// The last `max` bytes of what a [`drain`] thread read, as for [`tail`];
/// waits at most `within` for the pipe to end (a grandchild of a killed
/// child may still hold it open), and says so if it does not.
pub fn drained_tail(h: thread::JoinHandle<Vec<u8>>, within: Duration, max: usize) -> String {
    let deadline = Instant::now() + within;
    while !h.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    if !h.is_finished() {
        return format!("(the pipe was still open {within:?} after the kill)");
    }
    tail(&h.join().unwrap_or_default(), max)
}

/// The descriptors listed in `fd_dir` (`/proc/self/fd`, `/proc/PID/fd`) and
/// what they point at, one per line, for failure messages.
pub fn fd_listing(fd_dir: &str) -> String {
    let Ok(entries) = fs::read_dir(fd_dir) else {
        return format!("(cannot read {fd_dir})");
    };
    let mut lines: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let target = fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_else(|err| format!("? ({err})"));
            format!("  {} -> {target}", e.file_name().to_string_lossy())
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// Reads exactly `expected.len()` bytes from `stream` and checks they are
/// `expected`, within `timeout`. Fails as soon as the bytes diverge (after
/// briefly collecting the rest of the line for the message), so a wrong
/// error line fails fast instead of waiting for bytes that never come.
pub fn expect_bytes(stream: &mut TcpStream, expected: &[u8], what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut got: Vec<u8> = Vec::with_capacity(expected.len());
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < expected.len() {
        let want = (expected.len() - got.len()).min(buf.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => panic!(
                "{what}: EOF after {} of {} bytes; got {}, want {}",
                got.len(),
                expected.len(),
                show(&got),
                show(expected)
            ),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "{what}: read failed after {} of {} bytes: {e}; got {}, want {}",
                got.len(),
                expected.len(),
                show(&got),
                show(expected)
            ),
        }
        if got[..] != expected[..got.len()] {
            collect_rest_of_line(stream, &mut got);
            let at = got.iter().zip(expected).take_while(|(a, b)| a == b).count();
            panic!(
                "{what}: got {} bytes, want {}, first difference at {at}\n  got:  {}\n  want: {}",
                got.len(),
                expected.len(),
                show(&got[at.min(got.len())..]),
                show(&expected[at.min(expected.len())..])
            );
        }
        assert!(
            got.len() == expected.len() || Instant::now() < deadline,
            "{what}: reply took longer than {timeout:?} ({} of {} bytes)",
            got.len(),
            expected.len()
        );
    }
}

/// Reads exactly `n` bytes from `stream` within `total`; fails (showing
/// what arrived) on EOF, an error or the time running out.
pub fn read_exact_timeout(stream: &mut TcpStream, n: usize, total: Duration) -> Vec<u8> {
    let deadline = Instant::now() + total;
    let mut out = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match stream.read(&mut out[filled..]) {
            Ok(0) => panic!(
                "EOF after {filled} of {n} bytes; got: {}",
                show(&out[..filled])
            ),
            Ok(k) => filled += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "read failed after {filled} of {n} bytes: {e}; got: {}",
                show(&out[..filled])
            ),
        }
        assert!(
            filled == n || Instant::now() < deadline,
            "reading {n} bytes took longer than {total:?} ({filled} so far)"
        );
    }
    out
}

/// Reads what is left of the current line (up to 256 bytes, 300 ms) so a
/// failure message shows the whole wrong line.
fn collect_rest_of_line(stream: &mut TcpStream, got: &mut Vec<u8>) {
    let old = stream.read_timeout().ok().flatten();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") && got.len() < 256 {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    let _ = stream.set_read_timeout(old);
}

/// Runs `target` on every file under `fuzz/corpus/<name>/` of the
/// repository, catching panics; fails if the directory is missing or empty
/// (so it cannot pass vacuously) or if any input panicked. Returns how many
/// inputs it replayed.
pub fn replay(name: &str, target: fn(&[u8])) -> usize {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "fuzz",
        "corpus",
        name,
    ]
    .iter()
    .collect();
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} missing: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("read corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "corpus directory {} is empty",
        dir.display()
    );
    let mut failed = Vec::new();
    for path in &paths {
        let data = fs::read(path).expect("read corpus file");
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", path.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} input(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    println!("{name}: replayed {} inputs", paths.len());
    paths.len()
}

/// Makes `command`'s process deny `io_uring_setup`, `io_uring_enter` and
/// `io_uring_register` with EPERM (a seccomp filter installed between fork and
/// exec, after `PR_SET_NO_NEW_PRIVS`), as Docker's default seccomp profile does,
/// and removes `IOCOMP_BACKEND` from its environment. Only this child is
/// affected; nothing global (such as `kernel.io_uring_disabled`) is touched.
/// The system call numbers and the architecture check are x86_64's.
#[cfg(target_arch = "x86_64")]
pub fn deny_io_uring(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000; // EM_X86_64 | 64BIT | LE
    const ARCH: u32 = 4; // offsetof(struct seccomp_data, arch)
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let filter = vec![
        stmt(load, ARCH),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, NR),
        jeq(425, 3, 0), // io_uring_setup
        jeq(426, 2, 0), // io_uring_enter
        jeq(427, 1, 0), // io_uring_register
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ];
    command.env_remove("IOCOMP_BACKEND");
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // two prctl system calls (async-signal-safe) on memory prepared before the
    // fork: the filter moved in and a program header on the stack.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let prog = libc::sock_fprog {
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            let rc = libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            );
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
