//! The fuzz target of the server's TLS front, [`tls_front`]: arbitrary bytes
//! as what a client sends to a TLS listener, through the connection's
//! [`Tls`] wrapper exactly as the driver calls it (`absorb`, `output`,
//! `close_notify`).
//!
//! Deterministic: a fixed ECDSA P-256 test certificate and key (below; valid
//! until 2126, for `localhost`, used nowhere else) and a crypto provider whose
//! random numbers come from a fixed seed, reset for every input.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::crypto::{CryptoProvider, GetRandomFailed, SecureRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

use super::{server_config_with, Absorbed, Certs, Refused, Tls, HANDSHAKE};
use crate::config::{CertFiles, CertPem};
use crate::http::detect::{detect, Proto as Detected};

/// A self-signed `localhost` certificate (ECDSA P-256, CA:FALSE), for fuzzing only.
const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBkzCCATigAwIBAgIUS2KuJh9qi73ovxEUywLJgLBvFB0wCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNjIxMTI1MFoYDzIxMjYxMTEy
MjExMjUwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAS+FahFmdie1VGKBrb51UV+vu/foZr5lGzUOvDDOgNcARcmEy/rAfq2
t3hQaEci6528+N4EpMMVYj2K7n0kDdwro2YwZDAdBgNVHQ4EFgQUTopxWHqmjUsv
a0xlng1bKgxzMQ8wHwYDVR0jBBgwFoAUTopxWHqmjUsva0xlng1bKgxzMQ8wFAYD
VR0RBA0wC4IJbG9jYWxob3N0MAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0EAwIDSQAw
RgIhANaCMt3Y8GXMQ/QM/sZW68OflgGOg6pkBCZb7gvYHgjfAiEAk8tfhDkmFVmJ
GeFvDHOJ+A0RqQSALIgEHtOIgV5mD0k=
-----END CERTIFICATE-----
";

/// Its private key (PKCS#8), for fuzzing only.
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdXuR/CR+UmqissPS
bwR2VYg2x60ajPNKfT7VTK0aXxShRANCAAS+FahFmdie1VGKBrb51UV+vu/foZr5
lGzUOvDDOgNcARcmEy/rAfq2t3hQaEci6528+N4EpMMVYj2K7n0kDdwr
-----END PRIVATE KEY-----
";

/// The provider's random numbers: splitmix64 from a fixed seed.
#[derive(Debug)]
struct FixedRandom(AtomicU64);

const SEED: u64 = 0x1f0c_0de5_eed0_0019;

static RANDOM: FixedRandom = FixedRandom(AtomicU64::new(SEED));

impl SecureRandom for FixedRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        for chunk in buf.chunks_mut(8) {
            let mut z = self
                .0
                .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                .wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    let ring = rustls::crypto::ring::default_provider();
    Arc::new(CryptoProvider {
        secure_random: &RANDOM,
        ..ring
    })
}

struct Fixture {
    server: Arc<ServerConfig>,
    tls12: Arc<ClientConfig>,
    tls13: Arc<ClientConfig>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pem = CertPem {
            files: CertFiles {
                cert: "fuzz-cert.pem".into(),
                key: "fuzz-key.pem".into(),
            },
            cert: CERT.as_bytes().to_vec(),
            key: KEY.as_bytes().to_vec(),
        };
        let certs = Arc::new(Certs::from_pem(&[pem]).expect("the fuzz certificate loads"));
        // Tickets on: their post-handshake messages go through the pump too.
        let server = server_config_with(certs, false, provider()).expect("a server config");
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(CERT.as_bytes()) {
            roots.add(c.expect("PEM")).expect("a usable root");
        }
        let client = |v: &'static rustls::SupportedProtocolVersion| {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[v])
                .expect("a protocol version")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        };
        Fixture {
            server,
            tls12: client(&rustls::version::TLS12),
            tls13: client(&rustls::version::TLS13),
        }
    })
}

/// A cheap, deterministic hash (FNV-1a).
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How feeding a byte stream ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Verdict {
    /// Still open (more may come), or the client closed (`close_notify`).
    Open { closed: bool },
    /// Plain HTTP: nginx's 400.
    PlainHttp,
    /// Refused: the connection closes.
    Bad,
}

/// Feeds `data` in pieces of `chunk` bytes to a fresh session, as receives
/// would; stops at the first refusal, as the driver does.
fn feed(data: &[u8], chunk: usize) -> (Verdict, Vec<u8>, Tls) {
    let mut tls = Tls::new(&fixture().server).expect("a session");
    let mut plain = Vec::new();
    let mut closed = false;
    for piece in data.chunks(chunk.max(1)) {
        match tls.absorb(piece, &mut plain) {
            Ok(Absorbed {
                closed: c,
                handshake_done,
            }) => {
                assert!(!handshake_done, "a handshake finished with no client key");
                closed |= c;
            }
            Err(Refused::PlainHttp) => return (Verdict::PlainHttp, plain, tls),
            Err(Refused::Bad(why)) => {
                assert!(!why.is_empty(), "a refusal without a reason");
                return (Verdict::Bad, plain, tls);
            }
        }
    }
    (Verdict::Open { closed }, plain, tls)
}

/// Checks that `out` is a sequence of whole TLS records (what the server
/// sends: handshake, alerts, application data), each at most 2^14 + 256
/// bytes of payload.
fn check_records(out: &[u8]) {
    let mut rest = out;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a cut record header: {rest:?}");
        let (kind, major, len) = (
            rest[0],
            rest[1],
            usize::from(u16::from_be_bytes([rest[3], rest[4]])),
        );
        assert!(
            matches!(kind, 0x14..=0x17),
            "record type {kind:#x} in the output"
        );
        assert_eq!(major, 3, "record version {major}.{}", rest[2]);
        assert!(len <= (1 << 14) + 256, "a record of {len} bytes");
        assert!(rest.len() >= 5 + len, "a cut record");
        rest = &rest[5 + len..];
    }
}

/// The server's TLS front.
///
/// The whole input is what a client sends to a TLS listener. Checks, fed
/// whole, in pieces whose size comes from the input, and (up to 4 KiB) byte
/// by byte: the same verdict each time (open, plain HTTP, refused); no
/// plaintext and no finished handshake (arbitrary bytes cannot complete one);
/// plain HTTP is told only for input that does not start with a handshake
/// record and that [`detect`] calls HTTP; what the session then wants sent
/// (the server's flight, an alert) is whole TLS records; our `close_notify`
/// is never queued during a handshake.
///
/// For a quarter of the inputs (first byte ≡ 0 mod 4), also the record pump
/// after a real handshake: a rustls client (TLS 1.2 or 1.3 by a bit of the
/// first byte) completes a handshake with the session through `absorb` and
/// `output`, writes the rest of the input as plaintext, perhaps closes with
/// `close_notify`, and its ciphertext is fed in pieces whose size comes from
/// the input: the server's plaintext equals the input byte for byte and the
/// close is seen. With another bit set, one ciphertext byte (at a place from
/// the input) is flipped: the session must refuse, and the plaintext that
/// came before is a prefix of what was sent — never a wrong byte (except a
/// flip in a TLS 1.3 record's legacy version, which must change nothing).
pub fn tls_front(data: &[u8]) {
    RANDOM.0.store(SEED, Ordering::Relaxed);
    let h = fnv(data);
    let (whole, plain, mut tls) = feed(data, data.len());
    assert!(plain.is_empty(), "plaintext from arbitrary bytes");
    let chunk = (h % 97) as usize + 1;
    let (split, plain2, _) = feed(data, chunk);
    assert_eq!(whole, split, "whole vs pieces of {chunk}");
    assert!(plain2.is_empty());
    if data.len() <= 4096 {
        let (single, _, _) = feed(data, 1);
        assert_eq!(whole, single, "whole vs byte by byte");
    }
    if whole == Verdict::PlainHttp {
        assert_ne!(data.first(), Some(&HANDSHAKE));
        assert_eq!(tls.sniffed(), data, "the sniffed bytes are the input");
        assert_eq!(detect(data), Detected::Http);
    }
    if data.first() == Some(&HANDSHAKE) {
        assert!(
            tls.sniffed().is_empty(),
            "a handshake record sniffed as HTTP"
        );
    }
    if tls.handshaking() {
        assert!(!tls.close_notify(), "close_notify during a handshake");
    }
    let out = tls.output();
    check_records(&out);
    if data.first() != Some(&HANDSHAKE) {
        assert!(out.is_empty(), "TLS output for input that is not TLS");
    }

    if data.first().is_some_and(|b| b % 4 == 0) {
        session(data, h);
    }
}

/// Whether byte `at` of `wire` (whole TLS records) is one of the two
/// version bytes of a record header.
fn record_version_byte(wire: &[u8], at: usize) -> bool {
    let mut start = 0;
    while start + 5 <= wire.len() {
        if at == start + 1 || at == start + 2 {
            return true;
        }
        start += 5 + usize::from(u16::from_be_bytes([wire[start + 3], wire[start + 4]]));
    }
    false
}

/// A real handshake, then `data[1..]` as plaintext (see [`tls_front`]).
fn session(data: &[u8], h: u64) {
    let flags = data[0];
    let body = &data[1..];
    let f = fixture();
    let cfg = if flags & 4 != 0 { &f.tls12 } else { &f.tls13 };
    let name = "localhost".try_into().expect("a name");
    let mut client = ClientConnection::new(cfg.clone(), name).expect("a client");
    let mut tls = Tls::new(&f.server).expect("a session");
    let mut plain = Vec::new();
    let pump = |client: &mut ClientConnection, tls: &mut Tls, plain: &mut Vec<u8>| {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("client write");
        }
        let r = tls.absorb(&wire, plain);
        let out = tls.output();
        check_records(&out);
        client.read_tls(&mut out.as_slice()).expect("client read");
        client
            .process_new_packets()
            .expect("the client accepts the server");
        r
    };
    for _ in 0..6 {
        if !client.is_handshaking() && !tls.handshaking() {
            break;
        }
        assert!(
            pump(&mut client, &mut tls, &mut plain).is_ok(),
            "handshake refused"
        );
    }
    assert!(
        !tls.handshaking() && !client.is_handshaking(),
        "no handshake"
    );
    assert!(plain.is_empty());
    // Tickets (TLS 1.3) and the like, then the data.
    let _ = pump(&mut client, &mut tls, &mut plain);
    std::io::Write::write_all(&mut client.writer(), body).expect("client plaintext");
    let close = flags & 8 != 0;
    if close {
        client.send_close_notify();
    }
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).expect("client write");
    }
    let mut corrupt = flags & 16 != 0 && !wire.is_empty();
    let mut version_flip = false;
    if corrupt {
        let at = (h as usize >> 8) % wire.len();
        // TLS 1.3 ignores a record's legacy_record_version "for all
        // purposes" (RFC 8446 §5.1; rustls builds the AAD from constants,
        // and refuses only a version that is not 3.x): a flip there is
        // either refused or changes nothing.
        version_flip = flags & 4 == 0 && record_version_byte(&wire, at);
        wire[at] ^= 0x80 | (h as u8 & 0x7f);
        corrupt = !version_flip;
    }
    // The handshake's flights went whole: on a record boundary.
    assert!(
        tls.rx_boundary(),
        "not at a record boundary after whole records"
    );
    // Where the client's records end (their headers are intact unless
    // corrupted): the boundary is seen exactly there, never inside a record.
    let ends = (!corrupt).then(|| {
        let mut ends = vec![0];
        let mut at = 0;
        while at + 5 <= wire.len() {
            at += 5 + usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
            ends.push(at);
        }
        ends
    });
    let chunk = ((h >> 16) % 4099) as usize + 1;
    let mut pieces: VecDeque<&[u8]> = wire.chunks(chunk).collect();
    let mut closed = false;
    let mut refused = false;
    let mut fed = 0;
    while let Some(p) = pieces.pop_front() {
        fed += p.len();
        match tls.absorb(p, &mut plain) {
            Ok(a) => {
                assert!(!a.handshake_done);
                closed |= a.closed;
                if let Some(ends) = &ends {
                    assert_eq!(
                        tls.rx_boundary(),
                        ends.contains(&fed),
                        "rx_boundary() after {fed} of {} bytes (record ends {ends:?})",
                        wire.len()
                    );
                }
            }
            Err(Refused::PlainHttp) => panic!("plain HTTP after a handshake"),
            Err(Refused::Bad(_)) => {
                refused = true;
                break;
            }
        }
    }
    check_records(&tls.output());
    assert!(
        body.starts_with(&plain),
        "plaintext that the client did not send"
    );
    if corrupt {
        // A flipped bit in a record is refused (AEAD); in a header it may
        // just leave a record waiting, or be refused.
        assert!(
            refused || plain.len() < body.len() || (close && !closed),
            "a corrupted record went through"
        );
    } else if version_flip && refused {
        // Refused: allowed (see above); the prefix check above holds.
    } else {
        assert!(!refused, "refused the client's own records");
        assert_eq!(plain, body, "plaintext differs from what was sent");
        assert_eq!(closed, close, "close_notify seen {closed}, sent {close}");
        // Our end: close_notify once, then never again.
        assert!(tls.close_notify());
        assert!(!tls.close_notify());
        let out = tls.output();
        check_records(&out);
        client.read_tls(&mut out.as_slice()).expect("client read");
        let state = client
            .process_new_packets()
            .expect("client accepts close_notify");
        assert!(state.peer_has_closed(), "our close_notify not seen");
    }
}
