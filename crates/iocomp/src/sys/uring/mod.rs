//! The io_uring backend: one ring per consumer thread.
//!
//! Each thread that waits on a port owns one ring (`SINGLE_ISSUER`,
//! `COOP_TASKRUN`: only that thread submits, and completion work runs when it
//! enters the kernel). It parks inside its ring, so its own completions and a
//! wake-up from another thread (an eventfd with a read always pending in the
//! ring) end the same wait. Operations live in boxed slots of a slab until their
//! final completion, so every pointer given to the kernel stays valid; the slab
//! sits behind a mutex that only the owner takes on the hot path (uncontended),
//! and that other threads take to cancel or to hand over an operation.

use rustc_hash::FxHashMap;
use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring, Probe};

use crate::op::Op;
use crate::packet::{OpId, Packet};

mod bufring;
mod ops;

use super::common::{errno, park_pooled, EventFd};
use super::queue::{Behind, OpQueue, QueueKey};
use super::shared::RingOps;
use bufring::BufRing;
use ops::{
    advance, finish, first_entry, next_entry, parkable_buf, prepare, progress, stream_fd,
    unpark_buf, Advance, OpState,
};

type Slab = super::slab::Slab<OpState>;

/// user_data of the pending eventfd read.
const WAKE_TAG: u64 = u64::MAX;
/// user_data of our own cancel requests (their completions carry nothing).
const CANCEL_TAG: u64 = u64::MAX - 1;
/// user_data of a drain's cancel-everything request (`EINVAL` from it means
/// the kernel lacks `IORING_ASYNC_CANCEL_ANY`).
const CANCEL_ANY_TAG: u64 = u64::MAX - 2;

/// Keeps the first ring of a port open so later rings can share its kernel
/// worker pool (`IORING_SETUP_ATTACH_WQ`). It never submits anything.
pub(crate) struct WqAnchor {
    ring: IoUring,
}

impl WqAnchor {
    /// Creates the anchor ring and checks that the kernel knows every opcode
    /// this backend uses; failing here means io_uring is unusable. The error
    /// comes with the step that failed (`io_uring_setup`, the probe, or the
    /// missing opcode).
    pub(crate) fn probe() -> Result<WqAnchor, (io::Error, &'static str)> {
        let ring = IoUring::builder()
            .build(8)
            .map_err(|e| (e, "io_uring_setup"))?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| (e, "io_uring_register(PROBE)"))?;
        let needed = [
            ("Accept", opcode::Accept::CODE),
            ("Recv", opcode::Recv::CODE),
            ("Send", opcode::Send::CODE),
            ("Read", opcode::Read::CODE),
            ("Write", opcode::Write::CODE),
            ("Fsync", opcode::Fsync::CODE),
            ("Timeout", opcode::Timeout::CODE),
            ("PollAdd", opcode::PollAdd::CODE),
            ("AsyncCancel", opcode::AsyncCancel::CODE),
            ("Nop", opcode::Nop::CODE),
            ("Connect", opcode::Connect::CODE),
        ];
        for (name, code) in needed {
            if !probe.is_supported(code) {
                let e = io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel lacks the {name} opcode"),
                );
                return Err((e, "io_uring probe"));
            }
        }
        Ok(WqAnchor { ring })
    }
}

/// The environment variable that forces older-kernel paths of the io_uring
/// backend on a kernel that has the newer ones, so tests can run them: a
/// comma-separated list of
/// - `no-cancel-any`: draining a ring cancels each operation by its
///   user_data, as on kernels before 5.19 (no `IORING_ASYNC_CANCEL_ANY`);
/// - `small-cq`: rings of 4 submission and 8 completion entries, so that the
///   completion queue overflows and the kernel answers `EBUSY`;
/// - `no-msg-ring`: accepted for symmetry; the backend never uses
///   `IORING_OP_MSG_RING` (wake-ups are eventfd reads);
/// - `fake-ebusy`: every [`FAKE_EBUSY_EVERY`]th push into the submission
///   queue acts as if the kernel had answered `EBUSY` (the completion queue
///   overflowing, as on kernels that refuse submissions then): the
///   completions there are moved aside for the next reap, as that path does;
/// - `fail-control-push`: every other push of a wake-up read or a cancel
///   request fails as if the kernel had no memory for it (`EAGAIN`), so tests
///   run the retries of those.
///
/// An unknown word panics at the first port built, so a misspelt setting can
/// never quietly test the normal path instead.
pub(crate) const COMPAT_ENV: &str = "IOCOMP_URING_COMPAT";

/// Which older-kernel paths are forced ([`COMPAT_ENV`]).
#[derive(Clone, Copy, Default, Debug)]
struct Compat {
    no_cancel_any: bool,
    small_cq: bool,
    fake_ebusy: bool,
    fail_control_push: bool,
}

/// File reads and writes (`ReadAt`, `WriteAt`) go to the kernel in groups
/// of at most this many: when this many are queued on the ring (pushed since
/// the queue was last handed to the kernel), the queue is submitted at once;
/// a partial group goes with the thread's next wait on the port (`get`,
/// `blocking`, `submit_inline`), like every other op on this backend. Ops
/// handed over by other threads are grouped the same way when this thread
/// starts them. A batch of QD cold reads handed over in one `io_uring_enter`
/// is issued under one block plug: the disk sees nothing until the last
/// entry is prepared, then all of them at once, and they complete, are
/// reaped and are reissued together again. On an idle machine that convoy
/// kept every read about 0.6 ms at the disk against 0.35 ms for fio's
/// stream of single submissions (cold 4 KiB random reads at QD 32: 0.70x
/// fio's IOPS). Groups of 8 keep the disk busy while the rest are prepared,
/// at four `io_uring_enter` per 32 cached reads instead of one.
const FILE_CHUNK: usize = 8;

/// How long `park` sleeps at most while a push the kernel refused waits to be
/// tried again.
const RETRY: Duration = Duration::from_millis(1);

/// How often `fake-ebusy` ([`COMPAT_ENV`]) takes the `EBUSY` path (and
/// `fail-control-push` fails a push).
const FAKE_EBUSY_EVERY: u32 = 2;

impl Compat {
    fn from_env() -> Compat {
        let mut c = Compat::default();
        if let Ok(v) = std::env::var(COMPAT_ENV) {
            for w in v.split(',').map(str::trim) {
                match w {
                    "no-cancel-any" => c.no_cancel_any = true,
                    "small-cq" => c.small_cq = true,
                    "fake-ebusy" => c.fake_ebusy = true,
                    "fail-control-push" => c.fail_control_push = true,
                    "no-msg-ring" | "" => {}
                    // A misspelt word would silently test the normal path.
                    other => panic!(
                        "{COMPAT_ENV}: unknown word {other:?} (known: no-cancel-any, small-cq, \
                         no-msg-ring, fake-ebusy, fail-control-push)"
                    ),
                }
            }
        }
        c
    }
}

fn build_ring(anchor: &WqAnchor, compat: Compat) -> io::Result<IoUring> {
    if compat.small_cq {
        return IoUring::builder()
            .setup_single_issuer()
            .setup_attach_wq(anchor.ring.as_raw_fd())
            .setup_cqsize(8)
            .build(4);
    }
    let tuned = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_attach_wq(anchor.ring.as_raw_fd())
        .setup_cqsize(4096)
        .build(256);
    match tuned {
        Ok(r) => Ok(r),
        // Older kernels lack some setup flags: fall back to a plain ring.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            IoUring::builder().setup_cqsize(4096).build(256)
        }
        Err(e) => Err(e),
    }
}

/// The part of a ring other threads may touch: its wake-up eventfd and its
/// slab (written once for both backends).
pub(crate) type RingShared = super::shared::Shared<OpState>;

/// The owner's side of a ring.
pub(crate) struct Ring {
    uring: IoUring,
    shared: Arc<RingShared>,
    /// Where the pending eventfd read lands. Boxed: the kernel holds its address.
    /// An `UnsafeCell`: the kernel writes it while we hold the box, and we
    /// never read it (no Rust reference to it is ever made).
    wake_buf: Box<UnsafeCell<u64>>,
    wake_armed: bool,
    /// Operations given to the kernel and not yet completed.
    inflight: usize,
    /// Receive buffers the kernel picks from when data arrives (`None` on
    /// kernels without provided-buffer rings: pooled receives then use their
    /// own buffers).
    bufs: Option<BufRing>,
    /// Completions copied out of the queue, reused by every `reap`.
    cqes: Vec<(u64, i32, u32)>,
    /// Sends and transmits by socket (`false`), and receives by socket
    /// (`true`), oldest first: the front one is in the kernel, the others
    /// wait for it to complete, so that one socket's writes go out in the
    /// order they were issued (a short send's rest never goes behind the next
    /// send) and its receives take the bytes in the order they were issued
    /// (the kernel may complete two pending receives in either order).
    /// One entry per socket, both directions (`[false as usize]`: writes),
    /// each an [`OpQueue`] (its front; the ops behind it in `behind`): an
    /// idle connection's entry is 24 bytes and no allocation (issue 18).
    /// Hashed with FxHash, not SipHash: it is looked up on every stream op,
    /// and its keys (descriptors) are chosen by the engine, never by a remote
    /// peer, so there is no HashDoS to defend against.
    streams: FxHashMap<RawFd, [OpQueue; 2]>,
    /// The ops waiting behind the fronts of `streams`' queues.
    behind: Behind,
    /// Completions taken off the queue to make room when the kernel answered
    /// `EBUSY` (a full completion queue), handled by the next reap.
    backlog: Vec<(u64, i32, u32)>,
    /// Packets made while submitting (see `submit_local`), for the next reap.
    ready: VecDeque<Packet>,
    /// Whether draining may cancel everything at once (`CANCEL_ANY`, 5.19);
    /// cleared when the kernel refuses it, or by [`COMPAT_ENV`].
    cancel_any: bool,
    /// The kernel never let go of this ring's memory: none of it is freed.
    leaked: bool,
    /// Pushes left until `fake-ebusy` ([`COMPAT_ENV`]) next takes the
    /// `EBUSY` path; `None` when it is off.
    fake_ebusy: Option<u32>,
    /// Likewise for `fail-control-push`.
    fail_control_push: Option<u32>,
    /// Cancels asked for by other threads whose request the kernel did not
    /// take (the push failed): asked again by the next reap.
    cancel_retry: Vec<OpId>,
    /// File reads and writes pushed since the queue was last handed to the
    /// kernel: the [`FILE_CHUNK`]th submits it at once.
    file_ops: usize,
}

impl Ring {
    pub(crate) fn new(anchor: &WqAnchor, index: u16, gens: Vec<u32>) -> io::Result<Ring> {
        let compat = Compat::from_env();
        let uring = build_ring(anchor, compat)?;
        let shared = Arc::new(RingShared::new(index, EventFd::new()?, gens));
        let bufs = BufRing::new(&uring, bufring::ENTRIES, bufring::SIZE).ok();
        let mut ring = Ring {
            uring,
            shared,
            wake_buf: Box::new(UnsafeCell::new(0)),
            wake_armed: false,
            inflight: 0,
            bufs,
            cqes: Vec::with_capacity(64),
            streams: FxHashMap::default(),
            behind: Behind::default(),
            backlog: Vec::new(),
            ready: VecDeque::new(),
            cancel_any: !compat.no_cancel_any,
            leaked: false,
            fake_ebusy: compat.fake_ebusy.then_some(FAKE_EBUSY_EVERY),
            fail_control_push: compat.fail_control_push.then_some(FAKE_EBUSY_EVERY),
            cancel_retry: Vec::new(),
            file_ops: 0,
        };
        ring.arm_wake()?;
        Ok(ring)
    }

    pub(crate) fn shared(&self) -> &Arc<RingShared> {
        &self.shared
    }

    /// The queue of a socket's receives (`(fd, true)`) or writes (empty if
    /// the socket has no entry).
    fn stream(&self, (fd, recv): QueueKey) -> OpQueue {
        self.streams
            .get(&fd)
            .map_or_else(OpQueue::default, |e| e[usize::from(recv)])
    }

    /// Queues `id` on a socket's queue, making the socket's entry (kept,
    /// empty, after its ops complete: no work per op).
    fn stream_push(&mut self, k: QueueKey, id: OpId) {
        let q = &mut self.streams.entry(k.0).or_default()[usize::from(k.1)];
        q.push_back(&mut self.behind, k, id);
    }

    /// Takes `id` out of a socket's queue; where it was (0 = the front).
    fn stream_remove(&mut self, k: QueueKey, id: OpId) -> Option<usize> {
        let q = &mut self.streams.get_mut(&k.0)?[usize::from(k.1)];
        q.remove(&mut self.behind, k, id)
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        if matches!(entry.get_user_data(), WAKE_TAG | CANCEL_TAG) {
            if let Some(n) = self.fail_control_push.as_mut() {
                *n -= 1;
                if *n == 0 {
                    *n = FAKE_EBUSY_EVERY;
                    return Err(errno(libc::EAGAIN));
                }
            }
        }
        if let Some(n) = self.fake_ebusy.as_mut() {
            *n -= 1;
            if *n == 0 {
                *n = FAKE_EBUSY_EVERY;
                // As if the queue were full and the kernel answered EBUSY
                // (after taking what was queued): the completions are moved
                // aside, as below. With operations in flight it first lets
                // the kernel post one (up to 10 ms), so that there is
                // something to move.
                if self.inflight > 0 {
                    let ts = Timespec::new().nsec(10_000_000);
                    let args = SubmitArgs::new().timespec(&ts);
                    let _ = self.uring.submitter().submit_with_args(1, &args);
                }
                self.stash_cqes();
            }
        }
        loop {
            // SAFETY: every entry built in this file points only into memory that
            // outlives its completion: buffers and addresses inside a boxed OpState
            // (an accept's peer address in its own allocation, `ops::PeerAddr`,
            // which no reference covers while the kernel writes it)
            // that stays in the slab until its final CQE is reaped (`complete`
            // removes it then). An op waiting behind another on its socket (a
            // write, or a receive) has no entry in the kernel: only the front
            // of a `streams` queue does, `kick` pushes an op only when it is
            // new with an empty queue or has become the front after the old
            // front's final CQE, and a waiting op is removed (`unqueue` and
            // `drain` skip the front; `kick` removes only an op whose push
            // failed) only while nothing of it is in the kernel. `wake_buf` is
            // freed only after `drain` saw the read's CQE. If the kernel never
            // lets go (`leaked`), the slab, `wake_buf` and the buffer pool are
            // leaked, never freed.
            // Cancel entries carry a user_data, no pointer.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            // Submission queue full: hand what is there to the kernel and retry.
            match self.uring.submit() {
                Ok(_) => self.file_ops = 0,
                // The completion queue is full (overflowing): take completions
                // off it, for the next reap, so the kernel can go on.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.stash_cqes(),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves every completion in the queue to `backlog`.
    fn stash_cqes(&mut self) {
        let before = self.backlog.len();
        self.backlog.extend(
            self.uring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        if self.backlog.len() == before {
            // Nothing to take: the kernel holds overflowed completions; let it
            // flush them (a plain enter with no submissions does).
            let _ = self.uring.submitter().submit_and_wait(0);
        }
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let buf: *mut u64 = self.wake_buf.get();
        let e = opcode::Read::new(Fd(self.shared.handoff.primitive().raw()), buf.cast(), 8)
            .build()
            .user_data(WAKE_TAG);
        self.push(e)?;
        self.wake_armed = true;
        Ok(())
    }

    /// Starts an op that is in the slab (handed over, or next in its socket's
    /// queue): gives its first entry to the kernel, or, if another op of its
    /// direction on its socket is in the kernel, queues it behind that one.
    /// An op that cannot start completes with its error.
    fn start(&mut self, slab: &mut Slab, id: OpId, out: &mut VecDeque<Packet>) {
        let Some(st) = slab.get(id) else { return };
        let stream = stream_fd(st);
        let is_file_op = matches!(st.op, Op::ReadAt(_) | Op::WriteAt(_));
        if let Some(k) = stream.filter(|&k| !self.stream(k).is_empty()) {
            self.stream_push(k, id);
            return;
        }
        if self.kick(slab, id, out) {
            if let Some(k) = stream {
                self.stream_push(k, id);
            }
            if is_file_op {
                // Handed over by other threads: grouped like this thread's.
                self.pushed_file_op();
            }
        }
    }

    /// Counts a file read or write just pushed: the [`FILE_CHUNK`]th since
    /// the queue was last handed to the kernel hands it over now, not at the
    /// next reap.
    fn pushed_file_op(&mut self) {
        self.file_ops += 1;
        if self.file_ops >= FILE_CHUNK {
            // An error (a full completion queue: EBUSY) leaves the entries
            // queued; the next reap submits them and handles that.
            let _ = self.uring.submit();
            self.file_ops = 0;
        }
    }

    /// Gives the first entry of `id` (in the slab, not in the kernel) to the
    /// kernel: `true` if it is there now; otherwise it completed with its
    /// error (or as cancelled, if a cancel came first) into `out`.
    fn kick(&mut self, slab: &mut Slab, id: OpId, out: &mut VecDeque<Packet>) -> bool {
        let Some(st) = slab.get(id) else { return false };
        let entry = if st.cancel {
            Err(errno(libc::ECANCELED))
        } else {
            first_entry(st, self.bufs.is_some())
        };
        match entry.and_then(|e| self.push(e.user_data(id.0))) {
            Ok(()) => {
                self.inflight += 1;
                // In the kernel, on this (the completing) thread's ring: a
                // pooled receive that gets a pool buffer waits without its own.
                if let Some(b) = slab.get(id).and_then(|st| parkable_buf(st)) {
                    park_pooled(b);
                }
                true
            }
            Err(e) => {
                if let Some(st) = slab.remove(id) {
                    out.push_back(finish(id, st, Err(e), 0));
                }
                false
            }
        }
    }

    /// An op the kernel held finished: its packet goes to `out`, and the next
    /// op queued on its socket in its direction, if any, starts.
    fn complete(
        &mut self,
        slab: &mut Slab,
        id: OpId,
        status: io::Result<()>,
        bytes: u64,
        out: &mut VecDeque<Packet>,
    ) {
        self.inflight -= 1;
        let Some(st) = slab.remove(id) else { return };
        let stream = stream_fd(&st);
        out.push_back(finish(id, st, status, bytes));
        let Some(k) = stream else { return };
        if self.stream_remove(k, id).is_none() {
            return;
        }
        // Start the waiting ops in order: the first that reaches the kernel
        // stays at the front; one that fails at once completes and the next
        // is tried.
        loop {
            let Some(next) = self.stream(k).front() else {
                return;
            };
            if self.kick(slab, next, out) {
                return;
            }
            self.stream_remove(k, next);
        }
    }

    /// Takes an op that has not reached the kernel out of its socket's
    /// queue; `false` if `id` is not waiting there.
    fn unqueue(&mut self, slab: &mut Slab, id: OpId) -> bool {
        let Some(k) = slab.get(id).and_then(|st| stream_fd(st)) else {
            return false;
        };
        match self.stream(k).position(&self.behind, k, id) {
            // The front is in the kernel.
            Some(i) if i > 0 => {
                self.stream_remove(k, id);
                true
            }
            _ => false,
        }
    }

    /// Gives the kernel what other threads queued here (ops and cancels).
    fn take_remote(&mut self, out: &mut VecDeque<Packet>) {
        let shared = self.shared.clone();
        let mut slab = shared.lock();
        self.take_remote_locked(&mut slab, out);
    }

    /// [`take_remote`](Ring::take_remote) with the slab locked.
    fn take_remote_locked(&mut self, slab: &mut Slab, out: &mut VecDeque<Packet>) {
        let subs = std::mem::take(&mut slab.remote_submit);
        let cancels = std::mem::take(&mut slab.remote_cancel);
        let ring = self.shared.index;
        for slot in subs {
            let gen = slab.slots[slot as usize].gen;
            let id = OpId::new(ring, gen, slot);
            self.start(slab, id, out);
        }
        for id in cancels {
            if self.unqueue(slab, id) {
                // Waiting behind another op on its socket: it never reached
                // the kernel, and completes as cancelled at once.
                if let Some(st) = slab.remove(id) {
                    out.push_back(finish(id, st, Err(errno(libc::ECANCELED)), 0));
                }
                continue;
            }
            if let Some(st) = slab.get(id) {
                st.cancel = true;
                let e = opcode::AsyncCancel::new(id.0).build().user_data(CANCEL_TAG);
                if self.push(e).is_err() {
                    // Acknowledged to the caller: asked again by the next reap.
                    self.cancel_retry.push(id);
                }
            }
        }
    }

    /// Asks the kernel again for the cancels it did not take.
    fn retry_cancels(&mut self) {
        let shared = self.shared.clone();
        let mut slab = shared.lock();
        for id in std::mem::take(&mut self.cancel_retry) {
            // Still in flight (it may have completed meanwhile).
            if slab.get(id).is_some() {
                let e = opcode::AsyncCancel::new(id.0).build().user_data(CANCEL_TAG);
                if self.push(e).is_err() {
                    self.cancel_retry.push(id);
                }
            }
        }
    }

    /// Submits what is queued and collects every completion there is.
    fn reap_cqes(&mut self, out: &mut VecDeque<Packet>) {
        {
            let mut sq = self.uring.submission();
            sq.sync();
            let needed = !sq.is_empty() || sq.taskrun() || sq.cq_overflow();
            drop(sq);
            // Every queued file op goes with it: the next group starts empty
            // (unless the kernel refused them: they are still queued).
            if !needed || self.uring.submit().is_ok() {
                self.file_ops = 0;
            }
        }
        let shared = self.shared.clone();
        loop {
            // A buffer kept across calls: no allocation per reap.
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.clear();
            cqes.append(&mut self.backlog);
            cqes.extend(
                self.uring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if cqes.is_empty() {
                self.cqes = cqes;
                break;
            }
            let mut slab = shared.lock();
            for &(ud, res, flags) in &cqes {
                match ud {
                    WAKE_TAG => {
                        self.wake_armed = false;
                    }
                    CANCEL_TAG | CANCEL_ANY_TAG => {}
                    _ => {
                        let id = OpId(ud);
                        let Some(st) = slab.get(id) else { continue };
                        match advance(st, res, flags, self.bufs.as_mut()) {
                            Ok(Advance::Again) => match next_entry(st, self.bufs.is_some()) {
                                Ok(e) => {
                                    if self.push(e.user_data(id.0)).is_err() {
                                        let total = progress(st);
                                        let eio = Err(errno(libc::EIO));
                                        self.complete(&mut slab, id, eio, total, out);
                                    }
                                }
                                Err(e) => {
                                    let total = progress(st);
                                    self.complete(&mut slab, id, Err(e), total, out);
                                }
                            },
                            Ok(Advance::Done(status, bytes)) | Err((status, bytes)) => {
                                self.complete(&mut slab, id, status, bytes, out);
                            }
                        }
                    }
                }
            }
            drop(slab);
            self.cqes = cqes;
        }
    }

    /// Asks the kernel to cancel everything this ring has in flight: with one
    /// `CANCEL_ANY` request, or op by op by user_data on older kernels.
    fn cancel_everything(&mut self) {
        if self.cancel_any {
            let e = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(CANCEL_ANY_TAG);
            let _ = self.push(e);
            return;
        }
        let shared = self.shared.clone();
        let slab = shared.lock();
        let ring = shared.index;
        let ids: Vec<u64> = slab
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state.is_some())
            .map(|(i, s)| OpId::new(ring, s.gen, i as u32).0)
            .collect();
        drop(slab);
        for ud in ids.into_iter().chain(self.wake_armed.then_some(WAKE_TAG)) {
            let e = opcode::AsyncCancel::new(ud).build().user_data(CANCEL_TAG);
            let _ = self.push(e);
        }
    }

    /// Reaping during `drain`: nothing is resubmitted.
    fn reap_final(&mut self, out: &mut VecDeque<Packet>) {
        let shared = self.shared.clone();
        let mut cqes = std::mem::take(&mut self.backlog);
        cqes.extend(
            self.uring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut slab = shared.lock();
        for (ud, res, flags) in cqes {
            match ud {
                WAKE_TAG => self.wake_armed = false,
                CANCEL_TAG => {}
                CANCEL_ANY_TAG => {
                    if res == -libc::EINVAL {
                        // A kernel before 5.19: cancel op by op from now on.
                        self.cancel_any = false;
                    }
                }
                _ => {
                    let id = OpId(ud);
                    let Some(st) = slab.get(id) else { continue };
                    let (status, bytes) = match advance(st, res, flags, self.bufs.as_mut()) {
                        Ok(Advance::Done(s, b)) | Err((s, b)) => (s, b),
                        Ok(Advance::Again) => (Err(errno(libc::ECANCELED)), progress(st)),
                    };
                    // Writes queued behind it were cancelled with the rest and
                    // complete at once in `start` (no new kernel work).
                    self.complete(&mut slab, id, status, bytes, out);
                }
            }
        }
    }
}

impl RingOps for Ring {
    /// The generations of this ring's slots, for the next ring at its index.
    fn gens(&self) -> Vec<u32> {
        self.shared.lock().gens_left()
    }

    /// Submits an operation issued on the owning thread.
    ///
    /// Operations other threads handed over earlier start first (they were
    /// issued first: a send handed over, then one of this thread, reach the
    /// socket in that order); checking for them costs nothing, the slab lock
    /// is taken anyway. Packets that this produces (ops that fail to start,
    /// cancels of waiting ones) wait in `ready` for the next reap.
    fn submit_local(&mut self, op: Op) -> Result<OpId, (io::Error, Op)> {
        let mut st = prepare(op)?;
        let shared = self.shared.clone();
        let mut slab = shared.lock();
        if !slab.remote_submit.is_empty() || !slab.remote_cancel.is_empty() {
            let mut out = std::mem::take(&mut self.ready);
            self.take_remote_locked(&mut slab, &mut out);
            self.ready = out;
        }
        let stream = stream_fd(&st);
        let is_file_op = matches!(st.op, Op::ReadAt(_) | Op::WriteAt(_));
        if let Some(k) = stream.filter(|&k| !self.stream(k).is_empty()) {
            // Another op of this direction on this socket is in the
            // kernel: this one waits its turn (WSASend / WSARecv order),
            // and starts when the ones before it complete.
            let id = slab
                .insert(shared.index, st)
                .map_err(|(e, st)| (e, st.op))?;
            self.stream_push(k, id);
            return Ok(id);
        }
        // Build the first entry before inserting: the box's address does not move.
        let entry = match first_entry(&mut st, self.bufs.is_some()) {
            Ok(e) => e,
            Err(e) => return Err((e, st.op)),
        };
        // A pooled receive the kernel gives a pool buffer waits holding no
        // memory: its buffer is parked once the op is accepted, and goes
        // back into the op if it is refused.
        let parked = parkable_buf(&mut st);
        let id = match slab.insert(shared.index, st) {
            Ok(id) => id,
            Err((e, mut st)) => {
                unpark_buf(&mut st.op, parked);
                return Err((e, st.op));
            }
        };
        drop(slab);
        if let Err(e) = self.push(entry.user_data(id.0)) {
            // Never reached the kernel: hand the op back, no packet.
            let st = shared.lock().remove(id);
            let mut op = st.map(|s| s.op).unwrap_or(Op::Posted { token: 0 });
            unpark_buf(&mut op, parked);
            return Err((e, op));
        }
        if let Some(b) = parked {
            park_pooled(b);
        }
        self.inflight += 1;
        if is_file_op {
            self.pushed_file_op();
        }
        if let Some(k) = stream {
            // Kept (empty) after its ops complete: no allocation per op.
            self.stream_push(k, id);
        }
        Ok(id)
    }

    /// The packet of `id` if the kernel completed it while it was submitted
    /// (the queue is submitted now, without waiting); every other
    /// completion this collects waits in `ready` for the next reap, in order.
    fn take_inline(&mut self, id: OpId) -> Option<Packet> {
        let mut got = VecDeque::new();
        self.reap_cqes(&mut got);
        let mine = got
            .iter()
            .position(|p| p.id == id)
            .and_then(|i| got.remove(i));
        self.ready.append(&mut got);
        mine.or_else(|| {
            // Failed to start (a packet made at submit) counts as done too.
            let i = self.ready.iter().position(|p| p.id == id)?;
            self.ready.remove(i)
        })
    }

    /// Collects finished operations into `out` without blocking.
    fn reap(&mut self, out: &mut VecDeque<Packet>) {
        out.append(&mut self.ready);
        if !self.cancel_retry.is_empty() {
            self.retry_cancels();
        }
        // Remote work first if the flag is up already (it starts sooner); the
        // wake read may not have completed yet, so nothing is consumed here.
        if self.shared.handoff.take(false) {
            self.take_remote(out);
        }
        self.reap_cqes(out);
        if !self.wake_armed {
            // The wake read completed: the kernel's read consumed the counter
            // (the CQE says so), so the flag is taken now with no read of our
            // own (crate::handoff: signal consumed, then flag taken). A
            // notifier after that read either is seen here or leaves the
            // counter up for the re-armed read. If the kernel does not take
            // the read, `wake_armed` stays false: the next reap tries again,
            // and `park` sleeps only briefly meanwhile.
            let _ = self.arm_wake();
            if self.shared.handoff.take(false) {
                self.take_remote(out);
            }
        }
    }

    /// Sleeps until a completion, a wake-up, or `timeout`.
    fn park(&mut self, timeout: Option<Duration>) {
        // Packets made while submitting, or completions moved aside when the
        // kernel answered EBUSY: the next reap delivers them, no sleeping on
        // them.
        if !self.ready.is_empty() || !self.backlog.is_empty() {
            return;
        }
        // No wake-up read armed, or cancels to ask again (the kernel refused
        // them): a short sleep, then the next reap tries again.
        let timeout = if !self.wake_armed || !self.cancel_retry.is_empty() {
            Some(timeout.map_or(RETRY, |t| t.min(RETRY)))
        } else {
            timeout
        };
        let res = match timeout {
            None => self.uring.submit_and_wait(1),
            Some(d) => {
                let ts = Timespec::from(d);
                let args = SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(1, &args)
            }
        };
        if let Err(e) = res {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Cancels everything in flight and waits until the kernel is done with it;
    /// returns the packets (every op still yields exactly one).
    fn drain(&mut self) -> VecDeque<Packet> {
        let mut out = std::mem::take(&mut self.ready);
        {
            let mut slab = self.shared.lock();
            // Ops handed over but never submitted complete as aborted right here.
            let subs = std::mem::take(&mut slab.remote_submit);
            for slot in subs {
                let gen = slab.slots[slot as usize].gen;
                let id = OpId::new(self.shared.index, gen, slot);
                if let Some(st) = slab.remove(id) {
                    out.push_back(finish(id, st, Err(errno(libc::ECANCELED)), 0));
                }
            }
            slab.remote_cancel.clear();
            slab.cancel_all();
            slab.closed = true;
            // Ops waiting behind another on their socket never reached the
            // kernel: aborted right here too.
            let behind = &mut self.behind;
            for (&fd, e) in self.streams.iter_mut() {
                for (q, recv) in e.iter_mut().zip([false, true]) {
                    for id in q.take_behind_front(behind, (fd, recv)) {
                        if let Some(st) = slab.remove(id) {
                            out.push_back(finish(id, st, Err(errno(libc::ECANCELED)), 0));
                        }
                    }
                }
            }
        }
        let _ = self.shared.handoff.take(false);
        let mut rounds = 0u32;
        while self.inflight > 0 || self.wake_armed {
            if rounds % 16 == 0 {
                // Ask again now and then: an op may have been between two
                // steps when asked (a transmit's file read cannot be stopped).
                self.cancel_everything();
            }
            // Bounded waits, so the rounds below measure time (at least
            // 10_000 × 10 ms) and not how fast cancel completions come back.
            let ts = Timespec::new().nsec(10_000_000);
            let args = SubmitArgs::new().timespec(&ts);
            if let Err(e) = self.uring.submitter().submit_with_args(1, &args) {
                if e.raw_os_error() == Some(libc::EINVAL) {
                    // No timed waits before 5.11: wait for one completion.
                    let _ = self.uring.submit_and_wait(1);
                }
            }
            self.reap_final(&mut out);
            rounds += 1;
            if rounds > 10_000 {
                // The kernel refuses to let go: leak the ring's memory (the
                // ops, the wake buffer, the buffer pool) rather than free
                // memory it may still write to.
                std::mem::forget(self.shared.clone());
                self.leaked = true;
                break;
            }
        }
        if !self.leaked {
            // Nothing can use the pool any more: let the kernel drop it.
            if let Some(b) = self.bufs.as_mut() {
                b.unregister(&self.uring);
            }
        }
        out
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Whoever drops a ring without draining it loses the packets, but the
        // kernel must still be done with our memory first.
        if !self.leaked && (self.inflight > 0 || self.wake_armed) {
            drop(self.drain());
        }
        if self.leaked {
            // The kernel may still write to these: never free them.
            std::mem::forget(std::mem::replace(
                &mut self.wake_buf,
                Box::new(UnsafeCell::new(0)),
            ));
            std::mem::forget(self.bufs.take());
        }
    }
}
