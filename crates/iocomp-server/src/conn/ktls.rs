//! Kernel TLS: after the handshake, a TLS connection's record layer is handed
//! to the kernel when it can take it, so that replies go out as on a plain
//! connection (`Send` of plaintext, file bodies through `TransmitFile`, that
//! is `sendfile`), the kernel encrypting and decrypting. Chosen per
//! connection, never required:
//!
//! 1. the probe at start says the kernel has the `tls` upper-layer protocol;
//! 2. the session is TLS 1.3 or 1.2 with AES-128-GCM, AES-256-GCM or
//!    CHACHA20-POLY1305 (what `linux/tls.h` has and rustls offers);
//! 3. nothing is half-way: no TLS record of ours is waiting to be sent and
//!    the client's bytes received so far end on a record boundary (a record
//!    cut in two would be half decrypted by each side);
//! 4. `setsockopt(TCP_ULP, "tls")` on the connection succeeds.
//!
//! Until then nothing is lost: any "no" leaves the rustls session in charge
//! (user-space encryption, as on a kernel without kernel TLS). Only then are
//! the traffic secrets taken out of rustls (which consumes the session) and
//! given to the kernel for both directions (`TLS_TX`, `TLS_RX`): if the
//! kernel refuses either, the connection cannot go on in user space any more
//! and is closed, counted as a failure, never served wrong. Each connection
//! is counted once, kernel or user space, in `/metrics`.
//!
//! What the kernel path does not carry: a record from the client that is not
//! data (its `close_notify`, a TLS 1.3 `KeyUpdate`) makes the receive fail
//! with `EIO` (the kernel reports such records out of band, to `recvmsg`
//! with a control buffer, which the engine's `Recv` does not pass), which
//! closes the connection: right for `close_notify` (not counted as an
//! error), abrupt for a `KeyUpdate`, which clients do not send on short
//! HTTP connections.

use std::os::fd::AsFd;

use rustls::{CipherSuite, ConnectionTrafficSecrets, ProtocolVersion};
use tracing::debug;

use super::Io;
use crate::sys;

/// `TLS_1_2_VERSION` of `linux/tls.h`.
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

/// The `tls12_crypto_info_*` structure (as bytes, in the kernel's layout)
/// for one direction of a session of `version` whose traffic secrets are
/// `secrets` and whose next record has the sequence number `seq`; `None` for
/// a version or cipher the kernel has no structure for.
///
/// rustls gives the 12-byte nonce base ("IV") whole. For AES-GCM the kernel
/// takes its first 4 bytes as `salt` and the other 8 as `iv` (in TLS 1.2 the
/// salt is the implicit nonce and `iv` the first explicit one; in TLS 1.3 the
/// kernel puts them back together); for CHACHA20-POLY1305 all 12 are `iv`.
/// The sequence number is big-endian, as on the wire.
pub(crate) fn crypto_info(
    version: ProtocolVersion,
    secrets: &ConnectionTrafficSecrets,
    seq: u64,
) -> Option<Vec<u8>> {
    let version = match version {
        ProtocolVersion::TLSv1_2 => TLS_1_2_VERSION,
        ProtocolVersion::TLSv1_3 => TLS_1_3_VERSION,
        _ => return None,
    };
    let (layout, key, nonce) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Layout::AES_GCM_128, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Layout::AES_GCM_256, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Layout::CHACHA20_POLY1305, key, iv)
        }
        _ => return None,
    };
    let (key, nonce) = (key.as_ref(), nonce.as_ref());
    if key.len() != layout.key || nonce.len() != layout.salt + layout.iv {
        return None;
    }
    let mut out = Vec::with_capacity(layout.offsets()[4]);
    out.extend_from_slice(&version.to_ne_bytes());
    out.extend_from_slice(&layout.cipher_type.to_ne_bytes());
    out.extend_from_slice(&nonce[layout.salt..]);
    out.extend_from_slice(key);
    out.extend_from_slice(&nonce[..layout.salt]);
    out.extend_from_slice(&seq.to_be_bytes());
    Some(out)
}

/// Whether a session may go to the kernel, before anything is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Try: probe the upper-layer protocol on the socket, then hand off.
    Kernel,
    /// Stay in user space, for this reason.
    User(&'static str),
}

/// The per-connection decision from what is known without a system call:
/// `available` (the probe at start), the negotiated `version` and `suite`,
/// and whether the session is between records both ways (`quiet`).
pub(crate) fn decide(
    available: bool,
    version: Option<ProtocolVersion>,
    suite: Option<CipherSuite>,
    quiet: bool,
) -> Decision {
    use CipherSuite as S;
    if !available {
        return Decision::User("the kernel has no kernel TLS");
    }
    if !matches!(
        version,
        Some(ProtocolVersion::TLSv1_2 | ProtocolVersion::TLSv1_3)
    ) {
        return Decision::User("not TLS 1.2 or 1.3");
    }
    let supported = matches!(
        suite,
        Some(
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS13_AES_256_GCM_SHA384
                | S::TLS13_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    );
    if !supported {
        return Decision::User("a cipher suite kernel TLS does not have");
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
        }
        Handoff::User(why) => debug!(conn = io.handle.key(), "TLS: user space: {why}"),
        Handoff::Failed(why) => debug!(
            conn = io.handle.key(),
            "TLS: kernel TLS refused the keys ({why}): closing"
        ),
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

/// On a kernel TLS connection, our `close_notify` (a warning alert, RFC 8446
/// §6.1), so that the client can tell the end from a cut; best effort.
pub(super) fn close_notify(io: &Io) {
    if io.ktls {
        if let Err(e) = sys::ktls_send_alert(io.handle.as_fd(), 1, 0) {
            debug!(conn = io.handle.key(), "kernel TLS close_notify: {e}");
        }
    }
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

    /// For each suite the kernel has, both versions: the structure has the
    /// size `linux/tls.h` gives, names the version and cipher, and the
    /// server's sending keys are exactly the client's receiving keys (and
    /// the other way round), each in the field the kernel reads them from.
    #[test]
    fn crypto_info_puts_the_real_session_keys_where_the_kernel_reads_them() {
        use rustls::crypto::ring::cipher_suite as cs;
        use rustls::version::{TLS12, TLS13};
        let cases = [
            (cs::TLS13_AES_128_GCM_SHA256, &TLS13, Layout::AES_GCM_128),
            (cs::TLS13_AES_256_GCM_SHA384, &TLS13, Layout::AES_GCM_256),
            (
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                &TLS13,
                Layout::CHACHA20_POLY1305,
            ),
            (
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                &TLS12,
                Layout::AES_GCM_128,
            ),
            (
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                &TLS12,
                Layout::AES_GCM_256,
            ),
            (
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                &TLS12,
                Layout::CHACHA20_POLY1305,
            ),
        ];
        for (suite, version, layout) in cases {
            let (server, client, v) = sessions(suite, version);
            let want_version = if v == ProtocolVersion::TLSv1_3 {
                0x0304
            } else {
                0x0303
            };
            let tx = crypto_info(v, &server.tx.1, server.tx.0).unwrap();
            let rx = crypto_info(v, &server.rx.1, server.rx.0).unwrap();
            let peer_rx = crypto_info(v, &client.rx.1, client.rx.0).unwrap();
            let peer_tx = crypto_info(v, &client.tx.1, client.tx.0).unwrap();
            let [iv, key, salt, seq, size] = layout.offsets();
            for b in [&tx, &rx] {
                assert_eq!(b.len(), size, "{suite:?}");
                assert_eq!(u16::from_ne_bytes([b[0], b[1]]), want_version);
                assert_eq!(u16::from_ne_bytes([b[2], b[3]]), layout.cipher_type);
                assert!(b[key..salt].iter().any(|&x| x != 0), "{suite:?}: no key");
            }
            assert_eq!(tx, peer_rx, "{suite:?}: our TX is not the client's RX");
            assert_eq!(rx, peer_tx, "{suite:?}: our RX is not the client's TX");
            assert_ne!(tx[key..salt], rx[key..salt], "{suite:?}: one key both ways");
            // The key and nonce come from rustls' secrets, split as the kernel wants.
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

    #[test]
    fn the_sequence_number_goes_big_endian_into_rec_seq() {
        use rustls::crypto::ring::cipher_suite as cs;
        let (server, _, v) = sessions(cs::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13);
        let b = crypto_info(v, &server.tx.1, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(&b[32..40], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(crypto_info(ProtocolVersion::TLSv1_1, &server.tx.1, 0), None);
    }

    #[test]
    fn the_decision_falls_back_to_user_space_for_every_missing_condition() {
        use CipherSuite as S;
        let v13 = Some(ProtocolVersion::TLSv1_3);
        let v12 = Some(ProtocolVersion::TLSv1_2);
        let aes = Some(S::TLS13_AES_128_GCM_SHA256);
        assert_eq!(decide(true, v13, aes, true), Decision::Kernel);
        assert_eq!(
            decide(
                true,
                v12,
                Some(S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
                true
            ),
            Decision::Kernel
        );
        assert!(matches!(decide(false, v13, aes, true), Decision::User(_)));
        assert!(matches!(decide(true, v13, aes, false), Decision::User(_)));
        assert!(matches!(
            decide(true, Some(ProtocolVersion::TLSv1_1), aes, true),
            Decision::User(_)
        ));
        assert!(matches!(decide(true, None, aes, true), Decision::User(_)));
        assert!(matches!(
            decide(true, v12, Some(S::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA), true),
            Decision::User(_)
        ));
        assert!(matches!(decide(true, v13, None, true), Decision::User(_)));
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
                let v = server.protocol_version().unwrap();
                let secrets = server.dangerous_extract_secrets().unwrap();
                for (tx, (seq, s)) in [(true, &secrets.tx), (false, &secrets.rx)] {
                    let info = crypto_info(v, s, *seq).expect("a crypto_info");
                    sys::set_tls_crypto(sock.as_fd(), tx, &info)
                        .unwrap_or_else(|e| panic!("TLS_{}: {e}", if tx { "TX" } else { "RX" }));
                }
                eprintln!("kernel TLS: the kernel path ran (TLS_TX and TLS_RX set)");
                // The kernel decrypts what the client sent …
                let mut ping = [0u8; 4];
                sock.read_exact(&mut ping).unwrap();
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
