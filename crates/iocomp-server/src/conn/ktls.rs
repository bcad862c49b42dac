//! Kernel TLS: after the handshake, a TLS connection's record layer is handed
//! to the kernel when it can take it, so that replies go out as on a plain
//! connection (`Send` of plaintext, file bodies through `TransmitFile`, that
//! is `sendfile`), the kernel encrypting and decrypting. Chosen per
//! connection, never required:
//!
//! 1. `--ktls` is not `off`, and the probe at start found the kernel taking
//!    keys for this cipher both ways (see [`Support::probe`]: on a loopback
//!    TCP pair, `TCP_ULP "tls"` then `TLS_TX` and `TLS_RX` with dummy keys,
//!    for each TLS 1.3 cipher);
//! 2. the session is TLS 1.3 with AES-128-GCM, AES-256-GCM or
//!    CHACHA20-POLY1305. TLS 1.2 stays in user space, every suite: for TLS
//!    1.2 AES-GCM the kernel sends the `iv` field of `crypto_info` as the
//!    explicit nonce of its first record (and adds one per record), while
//!    rustls' extracted nonce base is the explicit nonce it already put on
//!    the server's `Finished` under the same key: the kernel's first record
//!    would reuse that nonce (fatal for GCM). A correct TLS 1.2 construction
//!    (an `iv` past every nonce rustls used) could not be proved here, on a
//!    kernel without kernel TLS, so none is attempted;
//! 3. no hand-off has failed yet in this process (after the first failure,
//!    the breaker turns kernel TLS off, logged once and counted);
//! 4. nothing is half-way: no TLS record of ours is waiting to be sent and
//!    the client's bytes received so far end on a record boundary (a record
//!    cut in two would be half decrypted by each side);
//! 5. `setsockopt(TCP_ULP, "tls")` on the connection succeeds.
//!
//! Until then nothing is lost: any "no" leaves the rustls session in charge
//! (user-space encryption, as on a kernel without kernel TLS). Only then are
//! the traffic secrets taken out of rustls (which consumes the session) and
//! given to the kernel for both directions (`TLS_TX`, `TLS_RX`): if the
//! kernel refuses either, the connection cannot go on in user space any more
//! and is closed, counted as a failure, never served wrong. Each connection
//! is counted once, kernel or user space, in `/metrics`.
//!
//! On the kernel path: a reply that ends the connection sends our
//! `close_notify` before the socket is shut down or closed (as the last
//! record of the user-space path carries it); the kernel never refreshes
//! keys, so a connection closes after the response during which its
//! [`Budget`] (a conservative estimate of the records sent) passes half of
//! the AES-GCM confidentiality limit. A record from the client that is not
//! data (its `close_notify`, an alert, a TLS 1.3 `KeyUpdate`) makes the
//! receive fail with `EIO` (the kernel reports such records out of band, to
//! `recvmsg` with a control buffer, which the engine's `Recv` does not
//! pass): the connection closes, counted as an error.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::{CipherSuite, ConnectionTrafficSecrets, ProtocolVersion};
use tracing::{debug, warn};

use super::Io;
use crate::sys;

/// `TLS_1_2_VERSION` of `linux/tls.h` (never handed off; see above).
#[cfg(test)]
pub(crate) const TLS_1_2_VERSION: u16 = 0x0303;
/// `TLS_1_3_VERSION` of `linux/tls.h`.
pub(crate) const TLS_1_3_VERSION: u16 = 0x0304;

/// One `tls12_crypto_info_*` structure of `linux/tls.h`: its cipher number
/// and the sizes of its arrays. The structure is `struct tls_crypto_info`
/// (two `__u16`: version, cipher type) followed by `iv`, `key`, `salt` and
/// `rec_seq`, all `unsigned char` arrays, so it has no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// `TLS_CIPHER_*`.
    pub(crate) cipher_type: u16,
    /// `TLS_CIPHER_*_IV_SIZE`: the explicit part of the nonce.
    pub(crate) iv: usize,
    /// `TLS_CIPHER_*_KEY_SIZE`.
    pub(crate) key: usize,
    /// `TLS_CIPHER_*_SALT_SIZE`: the implicit part of the nonce.
    pub(crate) salt: usize,
    /// `TLS_CIPHER_*_REC_SEQ_SIZE`.
    pub(crate) rec_seq: usize,
}

impl Layout {
    /// `TLS_CIPHER_AES_GCM_128`.
    pub(crate) const AES_GCM_128: Layout = Layout {
        cipher_type: 51,
        iv: 8,
        key: 16,
        salt: 4,
        rec_seq: 8,
    };
    /// `TLS_CIPHER_AES_GCM_256`.
    pub(crate) const AES_GCM_256: Layout = Layout {
        cipher_type: 52,
        iv: 8,
        key: 32,
        salt: 4,
        rec_seq: 8,
    };
    /// `TLS_CIPHER_CHACHA20_POLY1305`.
    pub(crate) const CHACHA20_POLY1305: Layout = Layout {
        cipher_type: 54,
        iv: 12,
        key: 32,
        salt: 0,
        rec_seq: 8,
    };

    /// Byte offsets of `iv`, `key`, `salt`, `rec_seq`, and the size.
    pub(crate) const fn offsets(&self) -> [usize; 5] {
        let iv = 4;
        let key = iv + self.iv;
        let salt = key + self.key;
        let rec_seq = salt + self.salt;
        [iv, key, salt, rec_seq, rec_seq + self.rec_seq]
    }
}

/// The TLS 1.3 suites the kernel may take, with their structure, in the
/// order of [`Support`]'s bits.
pub(crate) const SUITES: [(CipherSuite, Layout, &str); 3] = [
    (
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        Layout::AES_GCM_128,
        "AES-128-GCM",
    ),
    (
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        Layout::AES_GCM_256,
        "AES-256-GCM",
    ),
    (
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        Layout::CHACHA20_POLY1305,
        "CHACHA20-POLY1305",
    ),
];

/// The `tls12_crypto_info_*` structure (as bytes, in the kernel's layout)
/// for one direction of a session of `version` whose traffic secrets are
/// `secrets` and whose next record has the sequence number `seq`; `None` for
/// a version or cipher the kernel is not given: anything but TLS 1.3 (see
/// the module documentation for TLS 1.2).
///
/// rustls gives the 12-byte nonce base ("IV") whole. For AES-GCM the kernel
/// takes its first 4 bytes as `salt` and the other 8 as `iv` (in TLS 1.3 the
/// kernel puts them back together and XORs the record sequence number in, RFC
/// 8446 §5.3); for CHACHA20-POLY1305 all 12 are `iv`. The sequence number is
/// big-endian, as on the wire.
pub(crate) fn crypto_info(
    version: ProtocolVersion,
    secrets: &ConnectionTrafficSecrets,
    seq: u64,
) -> Option<Vec<u8>> {
    if version != ProtocolVersion::TLSv1_3 {
        return None;
    }
    let (layout, key, nonce) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Layout::AES_GCM_128, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Layout::AES_GCM_256, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Layout::CHACHA20_POLY1305, key, iv)
        }
        _ => return None,
    };
    crypto_info_raw(layout, key.as_ref(), nonce.as_ref(), seq)
}

/// [`crypto_info`] for TLS 1.3 from raw bytes: `key`, the 12-byte `nonce`
/// base; `None` when their sizes are not `layout`'s.
pub(crate) fn crypto_info_raw(
    layout: Layout,
    key: &[u8],
    nonce: &[u8],
    seq: u64,
) -> Option<Vec<u8>> {
    if key.len() != layout.key || nonce.len() != layout.salt + layout.iv {
        return None;
    }
    let mut out = Vec::with_capacity(layout.offsets()[4]);
    out.extend_from_slice(&TLS_1_3_VERSION.to_ne_bytes());
    out.extend_from_slice(&layout.cipher_type.to_ne_bytes());
    out.extend_from_slice(&nonce[layout.salt..]);
    out.extend_from_slice(key);
    out.extend_from_slice(&nonce[..layout.salt]);
    out.extend_from_slice(&seq.to_be_bytes());
    Some(out)
}

/// Which (TLS 1.3 cipher, direction) pairs the kernel took at the probe:
/// one bit per pair, in the order of [`SUITES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Support(u8);

impl Support {
    /// Nothing: kernel TLS is off or unavailable.
    pub(crate) const NONE: Support = Support(0);

    fn bit(i: usize, tx: bool) -> u8 {
        1 << (2 * i + usize::from(tx))
    }

    /// This table with `suite`'s direction (`tx`: what we send) working.
    pub(crate) fn with(self, suite: CipherSuite, tx: bool) -> Support {
        match SUITES.iter().position(|s| s.0 == suite) {
            Some(i) => Support(self.0 | Support::bit(i, tx)),
            None => self,
        }
    }

    /// Whether the kernel took `suite`'s keys in direction `tx`.
    pub(crate) fn allows(self, suite: CipherSuite, tx: bool) -> bool {
        SUITES
            .iter()
            .position(|s| s.0 == suite)
            .is_some_and(|i| self.0 & Support::bit(i, tx) != 0)
    }

    /// Whether some cipher works both ways (a hand-off is possible at all).
    pub(crate) fn any(self) -> bool {
        SUITES
            .iter()
            .any(|s| self.allows(s.0, true) && self.allows(s.0, false))
    }

    /// Probes the kernel once: for each of [`SUITES`], on a fresh loopback
    /// TCP pair, `setsockopt(TCP_ULP, "tls")`, then `TLS_TX` and `TLS_RX`
    /// with dummy keys; the pairs that worked, and a line per one that did
    /// not. Where `/proc/sys/net/ipv4/tcp_available_ulp` does not list `tls`
    /// nothing is tried (nothing is loaded: `modprobe tls` may be needed).
    pub(crate) fn probe() -> (Support, Vec<String>) {
        if !sys::probe_ktls() {
            return (
                Support::NONE,
                vec!["the kernel lists no `tls` upper-layer protocol in \
                      /proc/sys/net/ipv4/tcp_available_ulp (CONFIG_TLS; `modprobe tls` may be needed)"
                    .into()],
            );
        }
        let mut support = Support::NONE;
        let mut why = Vec::new();
        for (suite, layout, name) in SUITES {
            match probe_suite(layout) {
                Err(e) => why.push(format!("{name}: {e}")),
                Ok([tx, rx]) => {
                    for (ok, dir) in [(tx, true), (rx, false)] {
                        match ok {
                            Ok(()) => support = support.with(suite, dir),
                            Err(e) => why.push(format!(
                                "{name}: setsockopt({}): {e}",
                                if dir { "TLS_TX" } else { "TLS_RX" }
                            )),
                        }
                    }
                }
            }
        }
        (support, why)
    }
}

/// One suite of the probe: a loopback pair, the upper-layer protocol on the
/// connecting end, then dummy keys each way; the outcome of each direction.
fn probe_suite(layout: Layout) -> std::io::Result<[std::io::Result<()>; 2]> {
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let sock = TcpStream::connect(listener.local_addr()?)?;
    let (_peer, _) = listener.accept()?;
    sys::set_ulp_tls(sock.as_fd())
        .map_err(|e| std::io::Error::new(e.kind(), format!("setsockopt(TCP_ULP, \"tls\"): {e}")))?;
    let key = vec![0x5a; layout.key];
    let nonce = [0xa5; 12];
    let info = crypto_info_raw(layout, &key, &nonce[..layout.salt + layout.iv], 0)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    Ok([
        sys::set_tls_crypto(sock.as_fd(), true, &info),
        sys::set_tls_crypto(sock.as_fd(), false, &info),
    ])
}

/// The breaker: set by the first hand-off the kernel refused after the
/// secrets were taken; kernel TLS is then off for the rest of the process.
static TRIPPED: AtomicBool = AtomicBool::new(false);

/// Whether a session may go to the kernel, before anything is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Try: probe the upper-layer protocol on the socket, then hand off.
    Kernel,
    /// Stay in user space, for this reason.
    User(&'static str),
}

/// The per-connection decision from what is known without a system call:
/// `support` (the probe at start), whether the breaker has `tripped`, the
/// negotiated `version` and `suite`, and whether the session is between
/// records both ways (`quiet`). The secrets are never taken unless the
/// kernel took the suite's keys both ways at the probe.
pub(crate) fn decide(
    support: Support,
    tripped: bool,
    version: Option<ProtocolVersion>,
    suite: Option<CipherSuite>,
    quiet: bool,
) -> Decision {
    if !support.any() {
        return Decision::User("kernel TLS is off or unavailable");
    }
    if tripped {
        return Decision::User("kernel TLS turned off after a failed hand-off");
    }
    match version {
        Some(ProtocolVersion::TLSv1_3) => {}
        Some(ProtocolVersion::TLSv1_2) => {
            return Decision::User("TLS 1.2 stays in user space (its explicit nonces)")
        }
        _ => return Decision::User("not TLS 1.3"),
    }
    let Some(suite) = suite else {
        return Decision::User("no cipher suite");
    };
    if !support.allows(suite, true) || !support.allows(suite, false) {
        return Decision::User("a cipher suite the kernel did not take at the probe");
    }
    if !quiet {
        return Decision::User("a TLS record half-way");
    }
    Decision::Kernel
}

/// What the hand-off did.
#[derive(Debug)]
pub(crate) enum Handoff {
    /// The kernel has the session.
    Kernel,
    /// The session stays in user space (rustls still has it), for this reason.
    User(String),
    /// The secrets were taken but the kernel refused them: the connection
    /// must close.
    Failed(String),
}

/// Tries to give `io`'s finished TLS session to the kernel (see the module
/// documentation), once per connection; counts the outcome. Returns false
/// when the connection must close.
pub(super) fn hand_off(io: &mut Io) -> bool {
    let outcome = attempt(io);
    let metrics = io.shared.obs.metrics.as_ref();
    match &outcome {
        Handoff::Kernel => {
            debug!(conn = io.handle.key(), "TLS: kernel TLS");
            io.ktls = true;
            // The connection is a plain one now: keep-alive waits are idle.
            io.cipher_only = false;
        }
        Handoff::User(why) => debug!(conn = io.handle.key(), "TLS: user space: {why}"),
        Handoff::Failed(why) => {
            debug!(
                conn = io.handle.key(),
                "TLS: kernel TLS refused the keys ({why}): closing"
            );
            if !TRIPPED.swap(true, Ordering::Relaxed) {
                warn!(
                    "kernel TLS refused a session's keys ({why}) although the probe at start \
                     took them: kernel TLS is off for the rest of the process"
                );
                if let Some(m) = metrics {
                    m.ktls_event(Event::Breaker);
                }
            }
        }
    }
    if let Some(m) = metrics {
        m.tls_path(&outcome);
    }
    !matches!(outcome, Handoff::Failed(_))
}

fn attempt(io: &mut Io) -> Handoff {
    let Some(tls) = io.tls.as_mut() else {
        return Handoff::User("not TLS".into());
    };
    tls.kernel_tried = true;
    let decision = decide(
        io.shared.settings.ktls,
        TRIPPED.load(Ordering::Relaxed),
        tls.session.protocol_version(),
        tls.session.negotiated_cipher_suite().map(|s| s.suite()),
        !tls.session.wants_write() && tls.rx_boundary(),
    );
    if let Decision::User(why) = decision {
        return Handoff::User(why.into());
    }
    let fd = io.handle.as_fd();
    if let Err(e) = sys::set_ulp_tls(fd) {
        return Handoff::User(format!("setsockopt(TCP_ULP, \"tls\"): {e}"));
    }
    // From here on the session is the kernel's or nobody's.
    let Some(tls) = io.tls.take() else {
        return Handoff::Failed("no session".into());
    };
    let version = tls.session.protocol_version();
    let secrets = match tls.into_session().dangerous_extract_secrets() {
        Ok(s) => s,
        Err(e) => return Handoff::Failed(format!("extracting the secrets: {e}")),
    };
    for (tx, (seq, s)) in [(true, &secrets.tx), (false, &secrets.rx)] {
        let Some(info) = version.and_then(|v| crypto_info(v, s, *seq)) else {
            return Handoff::Failed("no crypto_info for the suite".into());
        };
        let dir = if tx { "TLS_TX" } else { "TLS_RX" };
        if let Err(e) = sys::set_tls_crypto(fd, tx, &info) {
            return Handoff::Failed(format!("setsockopt({dir}): {e}"));
        }
    }
    Handoff::Kernel
}

/// Something on the kernel path worth counting (`/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The breaker tripped (once per process).
    Breaker,
    /// A receive failed with `EIO`: the client sent a record that is not
    /// data (an alert, its `close_notify`, a `KeyUpdate`).
    RecvEio,
    /// Our `close_notify` found the socket buffer full (`EAGAIN`) and was
    /// dropped.
    CloseNotifyDropped,
    /// A connection closed because its [`Budget`] was spent.
    Budget,
}

/// Records the AES-GCM confidentiality limit allows under one key in TLS 1.3
/// (2^24, rustls' `confidentiality_limit`), halved: the kernel never sends
/// `KeyUpdate`, so a connection closes once its estimate passes this.
pub(crate) const RECORD_BUDGET: u64 = 1 << 23;

/// A kernel TLS connection's state: an estimate of the records sent (every
/// send call counts its bytes / 16384, the largest record, plus 2 for the
/// partial records at both ends, rounding up generously), and whether our
/// `close_notify` has gone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// The records (low 31 bits, saturating: the budget is 2^23) and, in the
    /// top bit, whether our `close_notify` has gone: 4 bytes of every
    /// connection's state (issue 18).
    bits: u32,
}

/// [`Budget`]'s `close_notify` bit.
const NOTIFIED: u32 = 1 << 31;

impl Budget {
    /// A send call of `bytes` plaintext completed.
    pub(crate) fn sent(&mut self, bytes: u64) {
        let add = u32::try_from(bytes / 16384 + 2).unwrap_or(u32::MAX);
        let records = (self.bits & !NOTIFIED).saturating_add(add).min(!NOTIFIED);
        self.bits = (self.bits & NOTIFIED) | records;
    }

    /// The estimate has passed [`RECORD_BUDGET`]: finish the response, then
    /// close.
    pub(crate) fn spent(&self) -> bool {
        self.records() > RECORD_BUDGET
    }

    /// Our `close_notify` has gone (or was tried): the connection is ending.
    pub(crate) fn notified(&self) -> bool {
        self.bits & NOTIFIED != 0
    }

    fn set_notified(&mut self) {
        self.bits |= NOTIFIED;
    }

    /// The estimate so far.
    pub(crate) fn records(&self) -> u64 {
        u64::from(self.bits & !NOTIFIED)
    }
}

/// What a kernel TLS connection does when a reply's last piece has gone (or
/// another operation completed with no reply in flight), before the driver
/// shuts the socket down or closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyEnd {
    /// The connection ends after this reply.
    pub(crate) close: bool,
    /// It ends because the budget is spent (counted once).
    pub(crate) budget: bool,
    /// Our `close_notify` goes now, before any shutdown or close.
    pub(crate) notify: bool,
}

/// [`ReplyEnd`] from the connection's `budget` and whether the reply asked
/// to close (`close_after`): a spent budget closes (once: not again after our
/// `close_notify`, e.g. on a lingering receive); whatever closes sends
/// `close_notify` first, once.
pub(crate) fn reply_end(budget: &Budget, close_after: bool) -> ReplyEnd {
    let by_budget = budget.spent() && !close_after && !budget.notified();
    let close = close_after || by_budget;
    ReplyEnd {
        close,
        budget: by_budget,
        notify: close && !budget.notified(),
    }
}

/// Logged once per process: a `close_notify` dropped for a full buffer.
static EAGAIN_LOGGED: AtomicBool = AtomicBool::new(false);

/// On a kernel TLS connection, our `close_notify` (a warning alert, RFC 8446
/// §6.1), so that the client can tell the end from a cut; once. Best effort:
/// sent without waiting (the connection closes right after); when the socket
/// buffer is full (`EAGAIN`) it is dropped, counted and logged (at debug,
/// once per process), the client then seeing a bare end as after a cut.
pub(super) fn close_notify(io: &mut Io) {
    if !io.ktls || io.kbudget.notified() {
        return;
    }
    io.kbudget.set_notified();
    if let Err(e) = sys::ktls_send_alert(io.handle.as_fd(), 1, 0) {
        if e.raw_os_error() == Some(libc::EAGAIN) {
            if let Some(m) = &io.shared.obs.metrics {
                m.ktls_event(Event::CloseNotifyDropped);
            }
            if !EAGAIN_LOGGED.swap(true, Ordering::Relaxed) {
                debug!(
                    conn = io.handle.key(),
                    "kernel TLS close_notify dropped: the socket buffer is full (counted in \
                     /metrics; logged once)"
                );
            }
        } else {
            debug!(conn = io.handle.key(), "kernel TLS close_notify: {e}");
        }
    }
}

/// Whether the client's kernel TLS connection ended with a receive `error`
/// that is a non-data record (`EIO`): counted, and the connection closes.
pub(super) fn recv_eio(io: &Io, error: &std::io::Error) -> bool {
    let eio = io.ktls && error.raw_os_error() == Some(libc::EIO);
    if eio {
        if let Some(m) = &io.shared.obs.metrics {
            m.ktls_event(Event::RecvEio);
        }
    }
    eio
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Sizes and offsets as `linux/tls.h` lays the structures out (and as
    /// the libc crate, an independent transcription of it, declares them).
    #[test]
    fn layouts_match_linux_tls_h() {
        // struct tls12_crypto_info_aes_gcm_128: 4 + 8 + 16 + 4 + 8.
        assert_eq!(Layout::AES_GCM_128.offsets(), [4, 12, 28, 32, 40]);
        assert_eq!(Layout::AES_GCM_256.offsets(), [4, 12, 44, 48, 56]);
        assert_eq!(Layout::CHACHA20_POLY1305.offsets(), [4, 16, 48, 48, 56]);
        type A128 = libc::tls12_crypto_info_aes_gcm_128;
        type A256 = libc::tls12_crypto_info_aes_gcm_256;
        type C20 = libc::tls12_crypto_info_chacha20_poly1305;
        let libc_offsets = [
            [
                offset_of!(A128, iv),
                offset_of!(A128, key),
                offset_of!(A128, salt),
                offset_of!(A128, rec_seq),
                size_of::<A128>(),
            ],
            [
                offset_of!(A256, iv),
                offset_of!(A256, key),
                offset_of!(A256, salt),
                offset_of!(A256, rec_seq),
                size_of::<A256>(),
            ],
            [
                offset_of!(C20, iv),
                offset_of!(C20, key),
                offset_of!(C20, salt),
                offset_of!(C20, rec_seq),
                size_of::<C20>(),
            ],
        ];
        let ours = [
            Layout::AES_GCM_128,
            Layout::AES_GCM_256,
            Layout::CHACHA20_POLY1305,
        ];
        for (l, o) in ours.iter().zip(libc_offsets) {
            assert_eq!(l.offsets(), o, "{l:?}");
        }
        assert_eq!(
            [
                Layout::AES_GCM_128.cipher_type,
                Layout::AES_GCM_256.cipher_type,
                Layout::CHACHA20_POLY1305.cipher_type
            ],
            [
                libc::TLS_CIPHER_AES_GCM_128,
                libc::TLS_CIPHER_AES_GCM_256,
                libc::TLS_CIPHER_CHACHA20_POLY1305
            ]
        );
        assert_eq!(TLS_1_2_VERSION, libc::TLS_1_2_VERSION);
        assert_eq!(TLS_1_3_VERSION, libc::TLS_1_3_VERSION);
    }

    /// An in-memory handshake between a rustls client and server limited to
    /// `suite`, both allowing secret extraction; the extracted secrets
    /// (server's, client's) and the version.
    fn sessions(
        suite: rustls::SupportedCipherSuite,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (
        rustls::ExtractedSecrets,
        rustls::ExtractedSecrets,
        ProtocolVersion,
    ) {
        use rustls::pki_types::PrivateKeyDer;
        use std::sync::Arc;
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..rustls::crypto::ring::default_provider()
        });
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut scfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        scfg.enable_secret_extraction = true;
        scfg.send_tls13_tickets = 0;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let mut ccfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        ccfg.enable_secret_extraction = true;
        let mut c =
            rustls::ClientConnection::new(Arc::new(ccfg), "localhost".try_into().unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            s.read_tls(&mut wire.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut back).unwrap();
            }
            c.read_tls(&mut back.as_slice()).unwrap();
            c.process_new_packets().unwrap();
            if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() {
                break;
            }
        }
        assert!(!s.is_handshaking() && !c.is_handshaking());
        let v = s.protocol_version().unwrap();
        let got = s.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(got, suite.suite());
        (
            s.dangerous_extract_secrets().unwrap(),
            c.dangerous_extract_secrets().unwrap(),
            v,
        )
    }

    /// For each TLS 1.3 suite the kernel has: the structure has the size
    /// `linux/tls.h` gives, names the version and cipher, and the server's
    /// sending keys are exactly the client's receiving keys (and the other
    /// way round), each in the field the kernel reads them from.
    #[test]
    fn crypto_info_puts_the_real_session_keys_where_the_kernel_reads_them() {
        use rustls::crypto::ring::cipher_suite as cs;
        use rustls::version::TLS13;
        let cases = [
            (cs::TLS13_AES_128_GCM_SHA256, Layout::AES_GCM_128),
            (cs::TLS13_AES_256_GCM_SHA384, Layout::AES_GCM_256),
            (
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                Layout::CHACHA20_POLY1305,
            ),
        ];
        for (suite, layout) in cases {
            let (server, client, v) = sessions(suite, &TLS13);
            assert_eq!(v, ProtocolVersion::TLSv1_3);
            let tx = crypto_info(v, &server.tx.1, server.tx.0).unwrap();
            let rx = crypto_info(v, &server.rx.1, server.rx.0).unwrap();
            let peer_rx = crypto_info(v, &client.rx.1, client.rx.0).unwrap();
            let peer_tx = crypto_info(v, &client.tx.1, client.tx.0).unwrap();
            let [iv, key, salt, seq, size] = layout.offsets();
            for b in [&tx, &rx] {
                assert_eq!(b.len(), size, "{suite:?}");
                assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 0x0304);
                assert_eq!(u16::from_ne_bytes([b[2], b[3]]), layout.cipher_type);
                assert!(b[key..salt].iter().any(|&x| x != 0), "{suite:?}: no key");
            }
            assert_eq!(tx, peer_rx, "{suite:?}: our TX is not the client's RX");
            assert_eq!(rx, peer_tx, "{suite:?}: our RX is not the client's TX");
            assert_ne!(tx[key..salt], rx[key..salt], "{suite:?}: one key both ways");
            // The key and nonce come from rustls' secrets, split as the kernel wants
            // (TLS 1.3: the kernel joins salt and iv again and XORs rec_seq in).
            let (k, n) = match &server.tx.1 {
                ConnectionTrafficSecrets::Aes128Gcm { key, iv }
                | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
                | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                    (key.as_ref().to_vec(), iv.as_ref().to_vec())
                }
                _ => unreachable!(),
            };
            assert_eq!(&tx[key..salt], &k[..]);
            assert_eq!(&tx[salt..seq], &n[..layout.salt], "{suite:?}: salt");
            assert_eq!(&tx[iv..key], &n[layout.salt..], "{suite:?}: iv");
            assert_eq!(&tx[seq..], &server.tx.0.to_be_bytes(), "{suite:?}: rec_seq");
        }
    }

    /// TLS 1.2 is never given to the kernel: no structure for any suite.
    #[test]
    fn crypto_info_builds_nothing_for_tls12() {
        use rustls::crypto::ring::cipher_suite as cs;
        for suite in [
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ] {
            let (server, _, v) = sessions(suite, &rustls::version::TLS12);
            assert_eq!(v, ProtocolVersion::TLSv1_2);
            assert_eq!(crypto_info(v, &server.tx.1, server.tx.0), None, "{suite:?}");
            assert_eq!(crypto_info(v, &server.rx.1, server.rx.0), None, "{suite:?}");
        }
    }

    /// Records of a byte stream: (type, payload).
    fn records(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while b.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
            v.push((b[0], b[5..5 + len].to_vec()));
            b = &b[5 + len..];
        }
        v
    }

    /// Why TLS 1.2 stays in user space: for AES-GCM in TLS 1.2 the kernel
    /// sends the `iv` field as its first record's explicit nonce (linux
    /// `tls_fill_prepend`, plus one per record, never XORed with the
    /// sequence number), and the second half of rustls' extracted nonce base,
    /// what that field would hold, is the explicit nonce rustls already put
    /// on the server's `Finished` under the same key and salt: handing it
    /// over as is would reuse a GCM nonce.
    #[test]
    fn tls12_gcm_extracted_iv_is_the_finished_explicit_nonce_so_it_is_refused() {
        use rustls::crypto::ring::cipher_suite as cs;
        use rustls::pki_types::PrivateKeyDer;
        use std::sync::Arc;
        for suite in [
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ] {
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::CryptoProvider {
                cipher_suites: vec![suite],
                ..rustls::crypto::ring::default_provider()
            });
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let mut scfg = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap();
            scfg.enable_secret_extraction = true;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert.der().clone()).unwrap();
            let ccfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let mut c =
                rustls::ClientConnection::new(Arc::new(ccfg), "localhost".try_into().unwrap())
                    .unwrap();
            let mut s = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
            let mut server_wire = Vec::new();
            for _ in 0..10 {
                let mut wire = Vec::new();
                while c.wants_write() {
                    c.write_tls(&mut wire).unwrap();
                }
                s.read_tls(&mut wire.as_slice()).unwrap();
                s.process_new_packets().unwrap();
                let mut back = Vec::new();
                while s.wants_write() {
                    s.write_tls(&mut back).unwrap();
                }
                server_wire.extend_from_slice(&back);
                c.read_tls(&mut back.as_slice()).unwrap();
                c.process_new_packets().unwrap();
                if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() {
                    break;
                }
            }
            let recs = records(&server_wire);
            let ccs = recs.iter().position(|(t, _)| *t == 0x14).unwrap();
            let (t, fin) = &recs[ccs + 1];
            assert_eq!(*t, 0x16, "the encrypted Finished follows ChangeCipherSpec");
            let finished_explicit = fin[..8].to_vec();
            let v = s.protocol_version().unwrap();
            let suite_id = s.negotiated_cipher_suite().unwrap().suite();
            let secrets = s.dangerous_extract_secrets().unwrap();
            let (seq, iv) = match &secrets.tx.1 {
                ConnectionTrafficSecrets::Aes128Gcm { iv, .. }
                | ConnectionTrafficSecrets::Aes256Gcm { iv, .. } => (secrets.tx.0, iv.as_ref()),
                _ => unreachable!(),
            };
            assert_eq!(seq, 1, "the Finished went at sequence number 0");
            assert_eq!(
                &iv[4..],
                &finished_explicit[..],
                "{suite:?}: the extracted explicit part is the Finished's nonce"
            );
            // Hence: refused, whatever the kernel takes.
            let all = SUITES
                .iter()
                .fold(Support::NONE, |t, s| t.with(s.0, true).with(s.0, false));
            assert!(matches!(
                decide(all, false, Some(v), Some(suite_id), true),
                Decision::User(_)
            ));
            assert_eq!(crypto_info(v, &secrets.tx.1, seq), None);
        }
    }

    #[test]
    fn the_sequence_number_goes_big_endian_into_rec_seq() {
        use rustls::crypto::ring::cipher_suite as cs;
        let (server, _, v) = sessions(cs::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13);
        let b = crypto_info(v, &server.tx.1, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(&b[32..40], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(crypto_info(ProtocolVersion::TLSv1_1, &server.tx.1, 0), None);
        assert_eq!(crypto_info(ProtocolVersion::TLSv1_2, &server.tx.1, 0), None);
    }

    /// Every (suite, direction) bit is its own; `any` needs both directions
    /// of one suite; suites the kernel is never given have no bit.
    #[test]
    fn the_support_table_keeps_each_cipher_and_direction_apart() {
        use CipherSuite as S;
        assert!(!Support::NONE.any());
        for (i, (suite, _, _)) in SUITES.iter().enumerate() {
            for tx in [true, false] {
                let t = Support::NONE.with(*suite, tx);
                assert!(t.allows(*suite, tx));
                assert!(!t.allows(*suite, !tx), "{suite:?} {tx}");
                assert!(!t.any(), "one direction is not enough");
                for (j, (other, _, _)) in SUITES.iter().enumerate() {
                    if i != j {
                        assert!(!t.allows(*other, tx) && !t.allows(*other, !tx));
                    }
                }
            }
            assert!(Support::NONE.with(*suite, true).with(*suite, false).any());
        }
        let t = Support::NONE.with(S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, true);
        assert_eq!(t, Support::NONE);
        assert!(!t.allows(S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, true));
    }

    /// The decision against probe tables: the kernel only for TLS 1.3 with
    /// a suite the probe saw working both ways, no breaker, quiet; every TLS
    /// 1.2 suite in user space even where the table has everything.
    #[test]
    fn the_decision_follows_the_probe_table_and_keeps_tls12_in_user_space() {
        use CipherSuite as S;
        let v13 = Some(ProtocolVersion::TLSv1_3);
        let v12 = Some(ProtocolVersion::TLSv1_2);
        let both = |s| Support::NONE.with(s, true).with(s, false);
        let all = SUITES
            .iter()
            .fold(Support::NONE, |t, s| t.with(s.0, true).with(s.0, false));
        for (suite, _, _) in SUITES {
            let s = Some(suite);
            assert_eq!(decide(all, false, v13, s, true), Decision::Kernel);
            assert_eq!(decide(both(suite), false, v13, s, true), Decision::Kernel);
            // Only one direction worked at the probe: the secrets stay.
            let tx_only = Support::NONE.with(suite, true);
            let rx_only = Support::NONE.with(suite, false);
            for t in [tx_only, rx_only] {
                assert!(matches!(decide(t, false, v13, s, true), Decision::User(_)));
            }
            // Another suite works, not this one.
            for (other, _, _) in SUITES {
                if other != suite {
                    assert!(matches!(
                        decide(both(other), false, v13, s, true),
                        Decision::User(_)
                    ));
                }
            }
            // The breaker, a record half-way, no table.
            assert!(matches!(decide(all, true, v13, s, true), Decision::User(_)));
            assert!(matches!(
                decide(all, false, v13, s, false),
                Decision::User(_)
            ));
            assert!(matches!(
                decide(Support::NONE, false, v13, s, true),
                Decision::User(_)
            ));
        }
        for suite in [
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            S::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
        ] {
            assert!(
                matches!(
                    decide(all, false, v12, Some(suite), true),
                    Decision::User(_)
                ),
                "{suite:?}"
            );
        }
        let aes = Some(S::TLS13_AES_128_GCM_SHA256);
        assert!(matches!(
            decide(all, false, Some(ProtocolVersion::TLSv1_1), aes, true),
            Decision::User(_)
        ));
        assert!(matches!(
            decide(all, false, None, aes, true),
            Decision::User(_)
        ));
        assert!(matches!(
            decide(all, false, v13, None, true),
            Decision::User(_)
        ));
    }

    /// The record estimate: bytes / 16384 + 2 per send call; spent only
    /// past 2^23 (half the AES-GCM limit of 2^24 records).
    #[test]
    fn the_record_budget_counts_conservatively_and_is_spent_past_half_the_limit() {
        let mut b = Budget::default();
        assert!(!b.spent());
        b.sent(0);
        assert_eq!(b.records(), 2);
        b.sent(16383);
        assert_eq!(b.records(), 4);
        b.sent(16384 * 3 + 1);
        assert_eq!(b.records(), 9);
        // Full 16 KiB records, one send each: 3 records each in the estimate.
        let mut b = Budget::default();
        for _ in 0..(RECORD_BUDGET / 3) {
            b.sent(16384);
        }
        assert_eq!(b.records(), RECORD_BUDGET / 3 * 3);
        assert!(!b.spent(), "at {} of {RECORD_BUDGET}", b.records());
        b.sent(16384);
        assert!(b.spent());
        assert_eq!(RECORD_BUDGET, 8_388_608, "half of 2^24");
        // One huge sendfile: counted by its bytes.
        let mut b = Budget::default();
        b.sent(RECORD_BUDGET * 16384);
        assert!(b.spent());
        b.sent(u64::MAX);
        assert!(b.spent(), "saturates");
    }

    /// Secret extraction is turned on only on a configuration nobody else
    /// holds; on a shared one the answer is false (the server then turns
    /// kernel TLS off) and the configuration is left as it was.
    #[test]
    fn secret_extraction_is_reported_when_it_cannot_be_turned_on() {
        use rustls::pki_types::PrivateKeyDer;
        use std::sync::Arc;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap(),
        );
        let other = cfg.clone();
        assert!(!super::super::tls::enable_secret_extraction(&mut cfg));
        assert!(!cfg.enable_secret_extraction);
        drop(other);
        assert!(super::super::tls::enable_secret_extraction(&mut cfg));
        assert!(cfg.enable_secret_extraction);
    }

    /// The end of a reply on kernel TLS: a closing reply sends close_notify
    /// (before the driver's shutdown/close); a spent budget turns a
    /// keep-alive reply into the last one, counted once; after our
    /// close_notify nothing is sent or counted again.
    #[test]
    fn a_reply_that_ends_the_connection_sends_close_notify_once() {
        let fresh = Budget::default();
        let keep = reply_end(&fresh, false);
        assert_eq!(
            keep,
            ReplyEnd {
                close: false,
                budget: false,
                notify: false
            }
        );
        let last = reply_end(&fresh, true);
        assert_eq!(
            last,
            ReplyEnd {
                close: true,
                budget: false,
                notify: true
            }
        );
        let mut spent = Budget::default();
        spent.sent(RECORD_BUDGET * 16384);
        assert_eq!(
            reply_end(&spent, false),
            ReplyEnd {
                close: true,
                budget: true,
                notify: true
            }
        );
        assert_eq!(
            reply_end(&spent, true),
            ReplyEnd {
                close: true,
                budget: false,
                notify: true
            }
        );
        // After our close_notify (a lingering connection's receive).
        spent.set_notified();
        assert_eq!(
            reply_end(&spent, false),
            ReplyEnd {
                close: false,
                budget: false,
                notify: false
            }
        );
        let mut closed = Budget::default();
        closed.set_notified();
        assert!(!reply_end(&closed, true).notify, "close_notify twice");
        assert!(reply_end(&closed, true).close);
    }

    /// The probe at start: where the kernel lists no `tls` upper-layer
    /// protocol it finds nothing and says why (naming `modprobe tls`), having
    /// loaded nothing; where it lists it, every (cipher, direction) either
    /// worked or has a line saying why not.
    #[test]
    fn the_probe_reports_each_cipher_and_direction_or_why_not() {
        let path = "/proc/sys/net/ipv4/tcp_available_ulp";
        let before = std::fs::read_to_string(path).expect("/proc is mounted for the tests");
        let listed = before.split_whitespace().any(|u| u == "tls");
        let (t, why) = Support::probe();
        if !listed {
            assert_eq!(t, Support::NONE);
            assert_eq!(why.len(), 1, "{why:?}");
            assert!(why[0].contains("modprobe tls"), "{why:?}");
            assert_eq!(
                std::fs::read_to_string(path).unwrap(),
                before,
                "loaded a module"
            );
            eprintln!(
                "\n*** KERNEL TLS UNAVAILABLE on this kernel: the probe tried no cipher \
                 ({}). ***\n",
                why[0]
            );
        } else {
            for (suite, _, name) in SUITES {
                for (tx, dir) in [(true, "TLS_TX"), (false, "TLS_RX")] {
                    assert!(
                        t.allows(suite, tx)
                            || why.iter().any(|w| w.starts_with(name)
                                && (w.contains(dir) || w.contains("TCP_ULP"))),
                        "{name} {dir}: neither working nor explained: {why:?}"
                    );
                }
            }
            eprintln!("kernel TLS probe: {t:?}; not working: {why:?}");
        }
    }

    /// The kernel path on a real loopback connection: after a rustls
    /// handshake, `setsockopt(TCP_ULP, "tls")` must succeed exactly when the
    /// kernel lists `tls` in `/proc/sys/net/ipv4/tcp_available_ulp` (read
    /// after the attempt, which may load the module); where it does, the
    /// keys go to the kernel both ways and plaintext written to and read from
    /// the socket is what the rustls client reads and wrote, and our
    /// `close_notify` alert reaches it. Where it does not, the test says so
    /// loudly (and checks that the refusal is `ENOENT`, the "no such
    /// protocol" that the fallback relies on).
    #[test]
    fn the_kernel_path_runs_where_the_kernel_has_tls_and_is_refused_cleanly_where_not() {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsFd;
        use std::sync::Arc;

        use rustls::pki_types::PrivateKeyDer;

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut scfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        scfg.enable_secret_extraction = true;
        scfg.send_tls13_tickets = 0;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let ccfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let sock = TcpStream::connect(addr).unwrap();
            sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            let conn =
                rustls::ClientConnection::new(Arc::new(ccfg), "localhost".try_into().unwrap())
                    .unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            tls.write_all(b"ping").unwrap();
            tls.flush().unwrap();
            let mut got = Vec::new();
            // Until the server's close_notify (or an error, reported).
            let r = tls.read_to_end(&mut got);
            (got, r.map_err(|e| e.to_string()))
        });
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
        while server.is_handshaking() {
            server.complete_io(&mut sock).unwrap();
        }
        while server.wants_write() {
            server.write_tls(&mut sock).unwrap();
        }
        let ulp = sys::set_ulp_tls(sock.as_fd());
        let list = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
            .expect("/proc is mounted for the tests");
        let listed = list.split_whitespace().any(|u| u == "tls");
        match ulp {
            Err(e) => {
                assert!(!listed, "tls is listed ({list:?}) but TCP_ULP failed: {e}");
                assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
                eprintln!(
                    "\n*** KERNEL TLS UNAVAILABLE on this kernel (tcp_available_ulp: {:?}): \
                     setsockopt(TCP_ULP, \"tls\") = {e}; the hand-off falls back to user \
                     space here, and the kernel path itself was NOT exercised. ***\n",
                    list.trim()
                );
                // The session is still rustls': finish it in user space.
                server.writer().write_all(b"pong").unwrap();
                server.send_close_notify();
                while server.wants_write() {
                    server.write_tls(&mut sock).unwrap();
                }
                let mut buf = [0u8; 64];
                let mut plain = Vec::new();
                while plain.len() < 4 {
                    let n = sock.read(&mut buf).unwrap();
                    assert!(n > 0, "the client closed early");
                    server.read_tls(&mut &buf[..n]).unwrap();
                    server.process_new_packets().unwrap();
                    let _ = server.reader().read_to_end(&mut plain);
                }
                assert_eq!(plain, b"ping");
                drop(sock);
                let (got, r) = client.join().unwrap();
                assert_eq!(got, b"pong");
                assert!(r.is_ok(), "{r:?}");
            }
            Ok(()) => {
                assert!(listed, "TCP_ULP tls worked but tls is not listed: {list:?}");
                // Plaintext rustls decrypted already (the handshake's last
                // read may have brought "ping" too): extraction would drop it.
                let mut early = Vec::new();
                let _ = server.reader().read_to_end(&mut early);
                eprintln!("kernel TLS test: {} byte(s) read by rustls", early.len());
                let v = server.protocol_version().unwrap();
                let secrets = server.dangerous_extract_secrets().unwrap();
                for (tx, (seq, s)) in [(true, &secrets.tx), (false, &secrets.rx)] {
                    let info = crypto_info(v, s, *seq).expect("a crypto_info");
                    sys::set_tls_crypto(sock.as_fd(), tx, &info)
                        .unwrap_or_else(|e| panic!("TLS_{}: {e}", if tx { "TX" } else { "RX" }));
                }
                eprintln!("kernel TLS: the kernel path ran (TLS_TX and TLS_RX set)");
                // The kernel decrypts what the client sent …
                let mut ping = early;
                let mut rest = vec![0u8; 4 - ping.len().min(4)];
                sock.read_exact(&mut rest).unwrap();
                ping.extend_from_slice(&rest);
                assert_eq!(&ping, b"ping");
                // … and encrypts what we write; then our close_notify.
                sock.write_all(b"pong").unwrap();
                sys::ktls_send_alert(sock.as_fd(), 1, 0).unwrap();
                let (got, r) = client.join().unwrap();
                assert_eq!(got, b"pong");
                assert!(r.is_ok(), "no clean close_notify: {r:?}");
            }
        }
    }
}
