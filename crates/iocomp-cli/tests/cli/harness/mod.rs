//! The one harness of the CLI tests: a self-deleting temporary tree
//! ([`TempTree`]), a spawned `iocomp serve` waited for by its banner
//! ([`Server`]), bounded clients ([`connect`], [`fetch`], [`expect_bytes`]),
//! a bounded child runner for the other subcommands ([`output_within`],
//! [`get`], [`bench`]), the one seeded generator of test data
//! ([`pseudo_random`]), scripted loopback HTTP and TLS servers ([`Scripted`],
//! [`tls_server`]) and a test PKI made at run time ([`Ca`]).
//!
//! Everything here is bounded in time: sockets carry read/write timeouts and
//! every wait is a polling loop with a deadline, so a broken program makes a
//! test fail instead of hang. Nothing here changes process-wide state (the
//! environment, signal dispositions, the working directory) of the test
//! binary itself, so the topics run in parallel threads of one binary: what a
//! child needs is set on its `Command`.

mod json;
mod net;
mod run;
mod scripted;
mod server;
mod tls;
mod tree;

use std::thread;
use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
pub use iocomp_testkit::deny_io_uring;
pub use json::{json_string, Json};
pub use net::{
    assert_read_sees_close, connect, connect_with_rcvbuf, expect_bytes, fetch, read_exact_timeout,
    read_to_end_timeout, send,
};
pub use run::{
    bench, code, curl_https, exit_of, get, get_with, iocomp_command, json_number, kill_when,
    one_line, output_within, output_within_group, run_env, run_in, same_file, serve_command,
    stderr,
};
pub use scripted::{chunked, gzip, ok_with, redirect, Req, Scripted, Version};
pub use server::{activated, Server, StartOptions};
pub use tls::{serve_tls, tls_flags, tls_server, Ca, HttpsSite, TlsEnd};
pub use tree::TempTree;

/// Default bound for a single socket read or write, and for server start-up.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The exit code of `iocomp get` for a TLS failure, as `iocomp get --help`
/// documents it.
pub const EXIT_TLS: i32 = 6;

/// Bound for a file, a log line or a descriptor count to get where a test
/// waits for it.
pub const WAIT: Duration = Duration::from_secs(10);

/// The test data generator, seeded: `len` pseudo-random bytes derived from
/// `seed` (xorshift64*), with no short repeating pattern, so an offset or
/// duplication bug in a transfer shows up as a mismatch.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x2545_F491_4F6C_DD1D)
        | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The error line the server sends over the line protocol for `reason`.
pub fn error_line(reason: &str) -> Vec<u8> {
    format!("File transmit error: {reason}\r\n").into_bytes()
}

/// Serialises the heavy tests of the binary (a thousand clients against a
/// descriptor limit, a 64 MiB drain), which would starve each other's
/// timing bounds if they ran at once. Hold the guard for the whole test.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compares two byte buffers and, on mismatch, panics with the lengths and the
/// first differing offset instead of dumping megabytes of bytes.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first_diff = got
        .iter()
        .zip(want.iter())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {} bytes, first difference at offset {first_diff}\n  got:  {}\n  want: {}",
        got.len(),
        want.len(),
        show(&got[first_diff.min(got.len())..]),
        show(&want[first_diff.min(want.len())..]),
    );
}

pub use iocomp_testkit::show;

/// Polls `probe` every 20 ms until it gives a value, for at most `timeout`;
/// past that, fails the test with `what()` (called then, so it can show the
/// latest state).
pub fn poll<T>(
    timeout: Duration,
    what: impl Fn() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{} (after {timeout:?})", what());
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls the file `path` (bounded by [`WAIT`]) until its text satisfies
/// `pred`; returns the text.
pub fn wait_file(path: &std::path::Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    poll(
        WAIT,
        || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            format!(
                "{what}: {} never got there; it holds {text:?}",
                path.display()
            )
        },
        || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            pred(&text).then_some(text)
        },
    )
}

/// Whether `program arg` (`--version`, say) runs and succeeds.
pub fn runs(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
