//! `get https://`: rustls (the ring provider the server uses) between the
//! engine's socket operations and the HTTP client. The driver owns the
//! socket; a [`ClientConnection`] only turns ciphertext into plaintext and
//! back: what the engine's `Recv` brought goes in with [`feed`], what the
//! engine's `Send` must carry comes out with [`pending`].
//!
//! Trust: the certificates of `--cacert FILE` (PEM) if given, else the
//! system's CA bundle: the file `SSL_CERT_FILE` names, else the first of the
//! usual places (Debian's `/etc/ssl/certs/ca-certificates.crt`, Red Hat's
//! `/etc/pki/tls/certs/ca-bundle.crt`, ...), parsed as PEM (no extra crate).
//! `-k` / `--insecure` checks nothing about the certificate (the handshake
//! signatures still are) and says so on stderr. SNI names the URL's host (an
//! IP address is sent as none, RFC 6066 §3); ALPN offers `http/1.1`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};

use crate::client::Fail;

/// Where the system keeps its CA bundle, most common first (as Go's
/// `crypto/x509` looks for it).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// What the user said about trust.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trust {
    /// `--cacert FILE`: trust these CAs instead of the system's.
    pub(crate) cacert: Option<PathBuf>,
    /// `-k` / `--insecure`: check no certificate.
    pub(crate) insecure: bool,
}

/// The provider of every client connection: ring, as the server's.
fn provider() -> Arc<CryptoProvider> {
    // Deprecated in rustls 0.23.48 only for lacking post-quantum key
    // exchange; X25519, P-256 and P-384 remain (aws-lc-rs needs cmake and a
    // long C build).
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration for `trust` (read once per `iocomp get`).
pub(crate) fn config(trust: &Trust) -> Result<Arc<ClientConfig>, Fail> {
    build(trust, provider())
}

fn build(trust: &Trust, provider: Arc<CryptoProvider>) -> Result<Arc<ClientConfig>, Fail> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Fail::Tls(format!("TLS setup: {e}")))?;
    let mut cfg = if trust.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(trust.cacert.as_deref())?)
            .with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// [`config`] offering only the cipher suites named in `suites` (rustls'
/// names, e.g. `TLS13_AES_128_GCM_SHA256`), for `bench --tls-suite`.
pub(crate) fn config_with_suites(
    trust: &Trust,
    suites: &[String],
) -> Result<Arc<ClientConfig>, Fail> {
    let base = provider();
    let mut chosen = Vec::new();
    for name in suites {
        let Some(s) = base
            .cipher_suites
            .iter()
            .find(|s| format!("{:?}", s.suite()).eq_ignore_ascii_case(name))
        else {
            let known: Vec<String> = base
                .cipher_suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect();
            return Err(Fail::Usage(format!(
                "--tls-suite {name}: not a cipher suite here (known: {})",
                known.join(", ")
            )));
        };
        chosen.push(*s);
    }
    let provider = Arc::new(CryptoProvider {
        cipher_suites: chosen,
        ..(*base).clone()
    });
    build(trust, provider)
}

/// The CAs of `cacert`, else of the system's bundle.
fn roots(cacert: Option<&Path>) -> Result<RootCertStore, Fail> {
    let (path, what) = match cacert {
        Some(p) => (p.to_path_buf(), "--cacert"),
        None => match std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
            Some(p) => (PathBuf::from(p), "SSL_CERT_FILE"),
            None => match SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
                Some(p) => (p.to_path_buf(), "the system's CA bundle"),
                None => {
                    return Err(Fail::Tls(format!(
                        "no system CA bundle found (looked for {}); give --cacert FILE",
                        SYSTEM_BUNDLES.join(", ")
                    )))
                }
            },
        },
    };
    let bad = |why: String| Fail::Tls(format!("{what} {}: {why}", path.display()));
    let pem = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| bad(format!("not PEM: {e}")))?;
        // A bundle may hold a certificate webpki cannot use; the others still count.
        let _ = store.add(c);
    }
    if store.is_empty() {
        return Err(bad("no usable CA certificate in it".into()));
    }
    Ok(store)
}

/// A new client connection to `host` (SNI for a name, none for an address).
pub(crate) fn connect(cfg: &Arc<ClientConfig>, host: &str) -> Result<ClientConnection, Fail> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| Fail::Usage(format!("{host}: not a name TLS can check: {e}")))?;
    ClientConnection::new(cfg.clone(), name).map_err(|e| error(&e))
}

/// How the peer's side of a TLS connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// More may come.
    No,
    /// The peer said `close_notify`: what came is all there is.
    Cleanly,
    /// The socket closed without `close_notify`: what came may be cut short
    /// (a close-delimited body cannot be trusted, RFC 8446 §6.1).
    Abruptly,
}

/// Ciphertext `cipher` from the socket (empty: the peer closed): appends the
/// plaintext it carried to `plain`; whether the peer closed.
pub(crate) fn feed(
    tls: &mut ClientConnection,
    mut cipher: &[u8],
    plain: &mut Vec<u8>,
) -> Result<Closed, Fail> {
    if cipher.is_empty() {
        // The socket's EOF: rustls tells a close_notify before it from none.
        tls.read_tls(&mut cipher)
            .map_err(|e| Fail::Network(format!("TLS: {e}")))?;
        tls.process_new_packets().map_err(|e| error(&e))?;
        return Ok(drain(tls, plain)?.unwrap_or(Closed::Abruptly));
    }
    loop {
        // read_tls takes at most what rustls buffers at once; loop until all is in.
        tls.read_tls(&mut cipher)
            .map_err(|e| Fail::Network(format!("TLS: {e}")))?;
        tls.process_new_packets().map_err(|e| error(&e))?;
        if let Some(closed) = drain(tls, plain)? {
            return Ok(closed);
        }
        if cipher.is_empty() {
            return Ok(Closed::No);
        }
    }
}

/// Reads every plaintext byte rustls holds: how the peer closed, or `None`
/// when more may come. A socket closed during the handshake is an error.
fn drain(tls: &mut ClientConnection, plain: &mut Vec<u8>) -> Result<Option<Closed>, Fail> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tls.reader().read(&mut chunk) {
            Ok(0) => return Ok(Some(Closed::Cleanly)),
            Ok(n) => plain.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            // The socket closed without close_notify: the body's framing decides.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                if tls.is_handshaking() {
                    return Err(Fail::Tls(
                        "TLS: the server closed the connection during the handshake \
                         (is that port HTTPS?)"
                            .into(),
                    ));
                }
                return Ok(Some(Closed::Abruptly));
            }
            Err(e) => return Err(Fail::Network(format!("TLS: {e}"))),
        }
    }
}

/// The ciphertext the connection wants sent (handshake messages, the
/// request once the handshake is done), if any.
pub(crate) fn pending(tls: &mut ClientConnection) -> Result<Option<Vec<u8>>, Fail> {
    let mut out = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut out)
            .map_err(|e| Fail::Network(format!("TLS: {e}")))?;
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Queues plaintext (sent once the handshake is done).
pub(crate) fn write(tls: &mut ClientConnection, plain: &[u8]) -> Result<(), Fail> {
    tls.writer()
        .write_all(plain)
        .map_err(|e| Fail::Network(format!("TLS: {e}")))
}

/// The proxy's answer to `CONNECT` so far (`buf`: every byte received):
/// `Ok(false)` while its head is incomplete, `Ok(true)` when a 2xx opened the
/// tunnel. Anything after the head is refused: the origin's TLS starts only
/// once we send our ClientHello, so a proxy that sends more is not a tunnel.
pub(crate) fn connect_answer(buf: &[u8]) -> Result<bool, Fail> {
    let (head, used) = match crate::client::parse_head(buf)? {
        Some(h) => h,
        None => return Ok(false),
    };
    if !(200..300).contains(&head.status) {
        return Err(Fail::Http(format!(
            "the proxy refused the tunnel (CONNECT): {} {}",
            head.status, head.reason
        )));
    }
    if used != buf.len() {
        return Err(Fail::Network(
            "the proxy sent bytes before the TLS handshake".into(),
        ));
    }
    Ok(true)
}

/// A rustls error as a failure: a certificate that cannot be verified says
/// what to do about it.
fn error(e: &rustls::Error) -> Fail {
    match e {
        rustls::Error::InvalidCertificate(c) => {
            use rustls::CertificateError as C;
            let (why, hint) = match c {
                // Only here can trusting a CA help.
                C::UnknownIssuer => (
                    "it is not signed by a trusted CA".to_string(),
                    "trust its CA with --cacert FILE, or skip the check with -k",
                ),
                C::NotValidForName | C::NotValidForNameContext { .. } => (
                    c.to_string(),
                    "use a name the certificate lists, or skip the check with -k",
                ),
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => (
                    c.to_string(),
                    "the server must renew it (or this machine's clock is wrong); \
                     -k skips the check",
                ),
                // webpki refuses a certificate with CA:TRUE as the server's
                // own (as a self-signed one from `openssl req -x509` has by
                // default); say so plainly. rustls passes webpki's error on
                // as `Other`, which only its text identifies without a direct
                // dependency on webpki.
                C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => (
                    "it is a CA certificate (CA:TRUE) used as the server's own; \
                     a self-signed server certificate needs basicConstraints CA:FALSE"
                        .to_string(),
                    "-k skips the check",
                ),
                c => (c.to_string(), "-k skips the check"),
            };
            Fail::Tls(format!(
                "TLS: the server's certificate cannot be verified: {why} ({hint})"
            ))
        }
        e => Fail::Tls(format!("TLS: {e}")),
    }
}

/// `-k`: any certificate is accepted; the handshake's signatures are still
/// checked (the server holds the key of the certificate it sent).
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection};

    /// A self-signed leaf for `localhost` and 127.0.0.1 (its PEM in a file), and a server config
    /// for it offering ALPN `http/1.1`.
    fn server(dir: &Path) -> (PathBuf, Arc<ServerConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = dir.join("leaf.pem");
        std::fs::write(&pem, cert.pem()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        (pem, Arc::new(cfg))
    }

    /// Runs the handshake in memory, through [`pending`] and [`feed`] as the driver does.
    fn handshake(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), Fail> {
        let mut plain = Vec::new();
        for _ in 0..10 {
            if let Some(out) = pending(c)? {
                s.read_tls(&mut out.as_slice()).unwrap();
                s.process_new_packets().unwrap();
            }
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut back).unwrap();
            }
            feed(c, &back, &mut plain)?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("iocomp-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sends_sni_for_a_name_none_for_an_address_and_offers_alpn_http11() {
        let dir = temp_dir("sni");
        let (pem, scfg) = server(&dir);
        let cfg = config(&Trust {
            cacert: Some(pem),
            insecure: false,
        })
        .unwrap();
        let mut c = connect(&cfg, "localhost").unwrap();
        let mut s = ServerConnection::new(scfg.clone()).unwrap();
        handshake(&mut c, &mut s).unwrap();
        assert_eq!(s.server_name(), Some("localhost"));
        assert_eq!(s.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(c.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut c = connect(&cfg, "127.0.0.1").unwrap();
        let mut s = ServerConnection::new(scfg).unwrap();
        handshake(&mut c, &mut s).unwrap();
        assert_eq!(s.server_name(), None, "RFC 6066: no SNI for an address");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn garbage_from_the_server_is_a_tls_error_whole_or_byte_by_byte() {
        let dir = temp_dir("garbage");
        let (pem, _) = server(&dir);
        let cfg = config(&Trust {
            cacert: Some(pem),
            insecure: false,
        })
        .unwrap();
        let inputs: [&[u8]; 4] = [
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            &[0x16, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5],
            &[0x15, 0x03, 0x03, 0x00, 0x02, 2, 40],
            &[0xff; 64],
        ];
        for input in inputs {
            let mut c = connect(&cfg, "localhost").unwrap();
            pending(&mut c).unwrap();
            let mut plain = Vec::new();
            let r = feed(&mut c, input, &mut plain);
            assert!(matches!(r, Err(Fail::Tls(_))), "{input:?}: {r:?}");
            let mut c = connect(&cfg, "localhost").unwrap();
            pending(&mut c).unwrap();
            let r = input
                .chunks(1)
                .try_for_each(|b| feed(&mut c, b, &mut plain).map(|_| ()));
            assert!(
                matches!(r, Err(Fail::Tls(_))),
                "{input:?} byte by byte: {r:?}"
            );
            assert!(plain.is_empty());
        }
        // The socket closing during the handshake is a TLS error too.
        let mut c = connect(&cfg, "localhost").unwrap();
        pending(&mut c).unwrap();
        assert!(matches!(
            feed(&mut c, &[], &mut Vec::new()),
            Err(Fail::Tls(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
