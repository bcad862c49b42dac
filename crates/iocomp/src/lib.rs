//! **iocomp** — a Windows-style I/O completion port for Linux, on io_uring (or
//! epoll where io_uring is not allowed).
//!
//! A completion port is a queue of *completion packets* that a few worker
//! threads wait on. You start overlapped operations (accept, receive, send,
//! transmit a file, a timer); the kernel does the work; when an operation
//! finishes, its packet is queued, and one waiting thread takes it, handles it,
//! perhaps starts the next operation, and comes back for more. A handful of
//! threads serve thousands of connections this way — the model of the seed
//! program `iocomp.cpp` and of IIS.
//!
//! ```no_run
//! use iocomp::{Port, Recv, Op};
//! use std::net::TcpStream;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::new()?;                       // CreateIoCompletionPort
//! let sock = TcpStream::connect("127.0.0.1:8182")?;
//! let handle = port.associate(sock, 7);          // key 7 for this socket
//! port.attach()?;                                // this thread will call get()
//! port.submit(Recv::new(&handle, Vec::with_capacity(4096))).map_err(|(e, _)| e)?;
//! let packet = port.get(None).unwrap();          // GetQueuedCompletionStatus
//! assert_eq!(packet.key, 7);
//! if let Op::Recv(r) = packet.op {
//!     println!("{} bytes: {:?}", packet.bytes, r.buf);  // the buffer came back
//! }
//! # Ok(()) }
//! ```
//!
//! # The rules, as Windows has them
//!
//! - **One packet per operation** ([`Port::submit`]): accepted operations always
//!   yield exactly one [`Packet`] — success, failure or cancellation; a refused
//!   submission hands the operation back and yields none.
//! - **Buffers travel with the operation**: the packet returns the [`Op`] by value,
//!   so a buffer cannot be touched while the kernel may write it.
//! - **Completion keys**: each [`Handle`] carries the key given to
//!   [`Port::associate`]; posted packets carry any key ([`Port::post`]).
//! - **LIFO wake-up, FIFO packets**: the thread that waited last is woken first,
//!   and gets the oldest packet — its caches are warm, idle threads stay asleep.
//! - **Concurrency limit**: at most [`Port::concurrency`] threads run between two
//!   `get` calls; a thread that calls `get` with a packet ready takes it without
//!   sleeping.
//! - **Cancel** ([`Port::cancel`]) answers at once; the operation's own packet
//!   then says `ECANCELED` (or its real result, if it finished first).
//! - **Close** ([`Port::close`]) wakes every waiter with [`GetError::Abandoned`].
//!
//! # The four ways to learn of a completion
//!
//! Win32 overlapped I/O reports a completion in one of four ways, chosen per
//! operation by the call that submits it (see [`Completion`]):
//!
//! 1. **Wait on the operation** (`GetOverlappedResult`, with or without
//!    waiting): [`Port::submit_waitable`] returns an [`Overlapped`] that holds
//!    the packet.
//! 2. **Signal an event** (`OVERLAPPED.hEvent`): [`Port::submit_with_event`]
//!    sets an [`iocomp_sync::Event`], which mixes with other kernel objects in
//!    [`iocomp_sync::wait_any`]; the packet waits in the [`Overlapped`].
//! 3. **Completion routine** (`ReadFileEx`/`WriteFileEx`): [`Port::submit_ex`]
//!    runs a closure with the packet as an APC on the issuing thread during its
//!    next alertable wait ([`iocomp_sync::sleep_alertable`] and friends, or
//!    an alertable port wait, [`Port::get_alertable`]).
//! 4. **Post to the port** (the default, [`Port::submit`]): the packet is queued
//!    for [`Port::get`].
//!
//! Each accepted operation yields exactly one packet, by exactly one of these
//! ways, cancelled or not. The first three run the operation on one of the
//! port's *other* threads (a [`Pool`], say), so the issuing thread may block.
//!
//! ```no_run
//! use iocomp::{Pool, Port, Timeout};
//! use iocomp_sync::{sleep_alertable, wait_any, Event, WaitResult};
//! use std::time::Duration;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::new()?;
//! let _workers = Pool::new(&port, 1, |_, _| {})?;  // they drive the I/O
//! // 1. GetOverlappedResult(.., TRUE)
//! let ov = port.submit_waitable(Timeout::new(Duration::from_millis(5), 1)).map_err(|(e, _)| e)?;
//! assert!(ov.result(true).unwrap().status.is_ok());
//! // 2. hEvent + WaitForMultipleObjects
//! let ev = Event::new(true, false);
//! let ov = port.submit_with_event(Timeout::new(Duration::from_millis(5), 2), &ev).map_err(|(e, _)| e)?;
//! assert_eq!(wait_any(&[&ev], None), Ok(WaitResult::Signaled(0)));
//! assert_eq!(ov.result(false).unwrap().key, 2);
//! // 3. ReadFileEx + SleepEx(INFINITE, TRUE)
//! port.submit_ex(Timeout::new(Duration::from_millis(5), 3), |p| assert_eq!(p.key, 3))
//!     .map_err(|(e, _)| e)?;
//! sleep_alertable(Duration::from_secs(10));
//! # Ok(()) }
//! ```
//!
//! # How it is fast
//!
//! Each thread that waits on the port owns one io_uring and parks inside it.
//! Operations issued on a worker go to that worker's ring and, by default, its
//! completions come back to it first — no locks, no cross-thread hand-off. The
//! shared part (the queue, the stack of waiters, the running count) is touched
//! only when threads park, wake or post. [`PortBuilder::strict`] routes every
//! completion through the shared queue for Windows' ordering of the queue (a
//! busy thread's own completions join it when that thread next enters the
//! port: see there).
//!
//! # Backends
//!
//! A port runs on io_uring when the kernel allows it and knows every opcode
//! used, and on **epoll** otherwise — Docker's default seccomp profile denies
//! io_uring, some hosts set `kernel.io_uring_disabled`, old kernels lack it.
//! With epoll each waiting thread owns one epoll instance instead of a ring:
//! operations are tried at once with non-blocking system calls and wait for
//! readiness otherwise; the port's rules above hold unchanged. Choose with
//! [`PortBuilder::backend`] ([`Backend::Auto`] by default) or the environment
//! variable [`BACKEND_ENV`] (`IOCOMP_BACKEND=auto|uring|epoll`, which overrides
//! `Auto` only); [`Port::backend`] says which one runs and
//! [`Port::fallback_reason`] why io_uring was not used.
//!
//! # Porting from Win32
//!
//! | Win32 (seed)                                   | iocomp                                  |
//! |------------------------------------------------|-----------------------------------------|
//! | `CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, n)` | `Port::builder().concurrency(n).build()` |
//! | `CreateIoCompletionPort(sock, port, key, 0)`   | `port.associate(sock, key)` → [`Handle`] |
//! | `GetQueuedCompletionStatus(port, &n, &key, &ov, ms)` | `port.get(Some(Duration))` → [`Packet`] |
//! | `GetQueuedCompletionStatusEx`                  | [`Port::get_many`]                       |
//! | `GetQueuedCompletionStatusEx(.., TRUE)` (alertable) | [`Port::get_alertable`] / [`Port::get_many_alertable`] → [`GetError::Alerted`] |
//! | `PostQueuedCompletionStatus(port, n, key, ov)` | `port.post(key, n, token)`               |
//! | `AcceptEx` / `WSARecv` / `WSASend`             | [`Accept`] / [`Recv`] / [`Send`] + [`Port::submit`] |
//! | `WSASend` with several `WSABUF`s               | [`SendVectored`]                         |
//! | `WSARecvFrom` / `WSASendTo`                    | [`RecvFrom`] / [`SendTo`]                |
//! | `ReadFile` / `WriteFile` at `OVERLAPPED.Offset` | [`ReadAt`] / [`WriteAt`]                |
//! | `ReadFile` / `WriteFile` on a pipe             | [`Recv`] / [`Send`]                      |
//! | `FlushFileBuffers`                             | [`Fsync`]                                |
//! | `TransmitFile`                                 | [`TransmitFile`]                         |
//! | `ConnectEx`                                    | [`Connect`] (+ [`Connect::stream_socket`]) |
//! | `ReadFile` + `GetOverlappedResult(.., bWait)`   | [`Port::submit_waitable`] → [`Overlapped::result`] / [`Overlapped::wait`] |
//! | `OVERLAPPED.hEvent` + `WaitForMultipleObjects` | [`Port::submit_with_event`] + [`iocomp_sync::wait_any`] |
//! | `ReadFileEx` / `WriteFileEx` + `SleepEx(.., TRUE)` | [`Port::submit_ex`] + [`iocomp_sync::sleep_alertable`] |
//! | `CancelIoEx(h, ov)`                            | `port.cancel(op_id)`, [`Overlapped::cancel`] |
//! | `CancelIoEx(h, NULL)`                          | [`Port::cancel_handle`]                  |
//! | `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`         | [`Port::submit_inline`] → [`Inline`]     |
//! | `closesocket` / `CloseHandle(h)` with I/O pending | [`Handle::close`]                     |
//! | `CloseHandle(port)`                            | [`Port::close`]                          |
//! | `QueueUserWorkItem` + worker loop              | [`Pool::new`], [`Pool::queue`]           |
//! | `ERROR_OPERATION_ABORTED`                      | [`Packet::is_aborted`] (`ECANCELED`)     |
//! | `WAIT_TIMEOUT` / `ERROR_ABANDONED_WAIT_0` / `WAIT_IO_COMPLETION` | [`GetError::TimedOut`] / [`GetError::Abandoned`] / [`GetError::Alerted`] |
//!
//! # Names: `iocomp::Send` and `std::marker::Send`
//!
//! Every operation is exported at the crate root under its Win32 verb,
//! [`Send`] (`WSASend`) among them, and `Send` is also the name of the marker
//! trait `std::marker::Send` in every module's prelude. A glob import
//! (`use iocomp::*;`) brings the operation in under that name and hides the
//! marker trait in the importing module: a bound `T: Send` there names a
//! struct, not a trait, and does not compile. So the crate has no prelude,
//! and its own code, docs, examples and tests never glob-import it. Import
//! operations by name (`use iocomp::{Port, Recv, Send};`, writing the trait as
//! `std::marker::Send` in a module that needs both), or name them by path
//! (`iocomp::Send::new(..)`).
//!
//! ```compile_fail,E0404
//! use iocomp::*;
//! // `Send` is iocomp's operation here, not the marker trait: no bound.
//! fn spawnable<T: Send>(_: T) {}
//! ```
//!
//! ```
//! use iocomp::{Handle, Port, Send};
//! // Named imports: the operation as `Send`, the marker trait by its path.
//! fn spawnable<T: std::marker::Send>(_: T) {}
//! spawnable(Port::new);
//! # fn _send(p: &Port, h: &Handle) { let _ = p.submit(Send::new(h, vec![1])); }
//! ```
//!
//! # Differences from Windows
//!
//! - Operations issued by a thread live in that thread's ring (or epoll
//!   instance), which ties them to it: when a thread detaches or exits, its
//!   operations are cancelled (each still yields its packet) instead of
//!   surviving (Windows C25).
//! - Running-count accounting cannot see a thread block in an arbitrary system
//!   call (Windows' kernel can); blocking sections will be declared explicitly.
//! - An operation submitted from a thread that never waits on the port is handed
//!   to a thread that does; with none attached yet, `submit` fails with
//!   `NotConnected`.

#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!("iocomp runs on Linux only: it is built on io_uring.");

mod completion;
mod connect;
#[cfg(not(loom))]
mod control;
/// The control plane, exposed for the loom models only (`--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub mod control;
mod defer;
mod handle;
#[cfg(not(loom))]
mod handoff;
/// The thread hand-offs, exposed for the loom models only (`--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub mod handoff;
#[cfg(not(loom))]
mod lane;
/// Per-socket lanes, exposed for the loom models only (`--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub mod lane;
mod op;
mod packet;
mod pool;
mod port;
mod sys;

pub use completion::{Completion, Overlapped};
pub use connect::Connect;
pub use handle::Handle;
pub use op::{
    Accept, Context, Fsync, Op, ReadAt, Recv, RecvFrom, Send, SendTo, SendVectored, Timeout,
    TransmitFile, Work, WriteAt,
};
pub use packet::{GetError, OpId, Packet};
pub use pool::{Pool, MAX_THREADS};
pub use port::{default_threads, Backend, Inline, Port, PortBuilder, BACKEND_ENV};
