//! The engine's integration tests: one test binary, one module per topic,
//! one harness (in the manner of ripgrep's `tests/tests.rs`). Every test uses
//! the public API only (and the `test-hooks` counts), and runs on both
//! backends — in the same process, or through `IOCOMP_BACKEND=uring` and
//! `IOCOMP_BACKEND=epoll` for the ones that take the default backend (CI runs
//! the binary under both). A test that must be alone in its process (a fault
//! switch read once per process, a descriptor limit, a signal action) runs
//! its body again in a child process: see [`harness::child`].
//!
//! `tests/loom.rs` is a binary of its own: it builds under `--cfg loom` only.

mod harness;

mod alertable;
mod backend;
mod cancel_and_close;
mod datagrams;
mod descriptors;
mod differential;
mod epoll_pool;
mod examples;
mod files;
mod inline;
mod modes;
mod pipes;
mod port_queue;
mod queues;
mod readahead;
mod sockets;
mod stress;
mod threads;
mod transmit;
mod uring_faults;
mod vectored;
