//! Integration tests of iocomp-sync, one binary (faster to build than one per file):
//!
//! - `ntsync_port`: the Linux ntsync kernel selftests, assertion by assertion, with the mapping table;
//! - `win32`: Win32 behaviours and bad input, one test each;
//! - `threads`, `apc`: waitable threads, suspension, exit codes, APCs and alertable waits;
//! - `regressions`: bugs of other implementations (pevents), named after their issues;
//! - `process`, `change`, `stdin`, `priority`: the kernel-backed objects (pidfd, inotify, standard input) and thread
//!   priorities; `stdin` and `priority` re-execute this binary for a child process (its `#[ignore]`d child halves);
//! - `stress`: 8 threads of mixed wait-any/wait-all on random subsets, checking that no permit is created or lost.
//!
//! No test sleeps to order threads: a test that needs a thread to be blocked first waits until the object's
//! (test-only) waiter count shows it queued. Every wait that must end has a timeout.

mod apc;
mod change;
mod fast_paths;
mod named;
mod named_review;
mod ntsync_port;
mod priority;
mod process;
mod regressions;
mod signal_and_wait;
mod stdin;
mod stress;
mod threads;
mod util;
mod win32;
