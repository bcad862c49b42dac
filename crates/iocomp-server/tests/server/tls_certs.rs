//! TLS certificates and sessions: SNI chooses the certificate, a reload
//! swaps them (a bad file keeps the old), sessions resume unless tickets are
//! off, and the metrics count handshakes and report kernel TLS.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use iocomp_server::Config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};

use crate::harness::tls::*;
use crate::harness::{Running, Tree};

/// Accepts any certificate and records the leaf the server sent, so that a
/// test can tell which of several certificates the server chose.
#[derive(Debug)]
struct Recorder {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The leaf certificate the server presents to a client that sends `name`
/// (an IP address: no SNI at all), after a full handshake and one request.
fn leaf_for(pki: &Pki, addr: SocketAddr, name: &str) -> Vec<u8> {
    let provider = provider();
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(pki)),
        provider.clone(),
    )
    .build()
    .unwrap();
    let recorder = Arc::new(Recorder {
        inner,
        seen: Mutex::new(None),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let mut s = tls_with(Arc::new(config), addr, name);
    let got = get_x_to_close(&mut s);
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let seen = recorder.seen.lock().unwrap().take();
    seen.expect("a certificate was presented")
}

#[test]
fn sni_chooses_the_certificate_and_the_first_is_the_default() {
    let tree = Tree::new("tls-sni");
    tree.file("x", b"x");
    let first = pki_for(&tree, "first", &["localhost", "127.0.0.1"]);
    let other = pki_for(&tree, "other", &["other.test", "*.wild.test"]);
    let (_running, addr) = serve_certs(
        &tree,
        vec![first.files.clone(), other.files.clone()],
        |_| {},
    );
    let (a, b) = (first.leaf_der.to_vec(), other.leaf_der.to_vec());
    assert_ne!(a, b);
    assert!(leaf_for(&first, addr, "localhost") == a, "SNI localhost");
    assert!(leaf_for(&first, addr, "other.test") == b, "SNI other.test");
    assert!(
        leaf_for(&first, addr, "OTHER.test") == b,
        "SNI is case-blind"
    );
    assert!(
        leaf_for(&first, addr, "a.wild.test") == b,
        "a wildcard name"
    );
    assert!(
        leaf_for(&first, addr, "unknown.test") == a,
        "an unknown name gets the first"
    );
    assert!(
        leaf_for(&first, addr, "127.0.0.1") == a,
        "no SNI gets the first"
    );
}

#[test]
fn reload_swaps_certificates_and_a_bad_file_keeps_the_old() {
    let tree = Tree::new("tls-reload");
    tree.file("x", b"x");
    let old = pki_for(&tree, "old", &["localhost"]);
    let new = pki_for(&tree, "new", &["localhost"]);
    let (running, addr) = serve_tls(&tree, &old, |_| {});
    assert!(leaf_for(&old, addr, "localhost") == old.leaf_der.to_vec());

    // A connection open across the reload keeps working.
    let mut open = tls_connect(&old, addr);
    open.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    open.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    std::fs::copy(&new.files.cert, &old.files.cert).unwrap();
    std::fs::copy(&new.files.key, &old.files.key).unwrap();
    running.server().reload_tls().expect("reload");
    assert!(
        leaf_for(&old, addr, "localhost") == new.leaf_der.to_vec(),
        "new cert after reload"
    );

    std::fs::write(&old.files.key, "garbage\n").unwrap();
    let err = running
        .server()
        .reload_tls()
        .expect_err("a bad key fails the reload");
    assert!(
        err.to_string()
            .contains(&old.files.key.display().to_string()),
        "the error names the key file: {err}"
    );
    assert!(
        leaf_for(&old, addr, "localhost") == new.leaf_der.to_vec(),
        "the last good cert stays"
    );

    let rest = get_x_to_close(&mut open);
    assert_eq!(
        String::from_utf8_lossy(&rest)
            .matches("HTTP/1.1 200 OK")
            .count(),
        1,
        "the second response on the old connection"
    );
}

#[test]
fn sessions_resume_on_tls13_and_tls12() {
    resumption(false);
}

/// With `tls_no_tickets` (`--tls-no-tickets`), no session resumes: every
/// handshake is a full one.
#[test]
fn no_tickets_means_every_handshake_is_full() {
    resumption(true);
}

fn resumption(no_tickets: bool) {
    let site = site("tls-resume", b"x", |c| c.tls_no_tickets = no_tickets);
    let second = if no_tickets {
        HandshakeKind::Full
    } else {
        HandshakeKind::Resumed
    };
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots(&site.pki))
                .with_no_client_auth(),
        );
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut s = tls_with(config.clone(), site.addr, "localhost");
            let got = get_x_to_close(&mut s);
            assert!(got.ends_with(b"\r\n\r\nx"));
            kinds.push(s.conn.handshake_kind());
        }
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(second)],
            "{version:?}"
        );
    }
}

#[test]
fn metrics_count_handshakes_and_report_ktls() {
    let Site {
        running,
        addr,
        pki,
        _tree,
    } = site("tls-metrics", b"x", |c| {
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    });
    let (body, _) = curl(&pki, addr, &[&url(addr, "/x")]);
    assert_eq!(body, b"x");
    let mut garbage = garbage_hello(addr, 2);
    assert!(
        crate::harness::client::closed_within(&mut garbage, std::time::Duration::from_secs(30)).0
    );
    let m = Running::at(running.metrics_addr()).get("/metrics", &[]);
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("iocomp_tls_handshakes_total{result=\"ok\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("iocomp_tls_handshakes_total{result=\"failed\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("iocomp_tls_connections_total{mode=\"user\"} 1\n"),
        "{text}"
    );
    let ktls = u8::from(running.server().ktls_available());
    assert!(
        text.contains(&format!("iocomp_ktls_available {ktls}\n")),
        "{text}"
    );
}

/// Kernel TLS by mode. `Off`: never used, whatever the kernel has:
/// `ktls_available` is false, both connections are served byte-exact in user
/// space and counted there. `On`: the server starts only where the probe
/// found a cipher the kernel takes both ways; on a kernel without kernel TLS
/// the start fails with an error naming the probe and `modprobe tls`. `Auto`
/// serves byte-exact either way, counted kernel or user as the probe found.
#[test]
fn ktls_off_stays_in_user_space_and_on_needs_the_probe() {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let list = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap();
    let listed = list.split_whitespace().any(|u| u == "tls");
    for mode in [iocomp_server::KtlsMode::Off, iocomp_server::KtlsMode::Auto] {
        let Site {
            running,
            addr,
            pki,
            _tree,
        } = site("tls-ktls", &body, |c| {
            c.metrics = Some("127.0.0.1:0".parse().unwrap());
            c.ktls = mode;
        });
        let kernel_here = running.server().ktls_available();
        if mode == iocomp_server::KtlsMode::Off || !listed {
            assert!(!kernel_here, "{mode:?}");
        }
        let (got, _) = curl(&pki, addr, &[&url(addr, "/x"), &url(addr, "/x")]);
        assert_eq!(got.len(), 2 * body.len());
        assert!(got == [body.clone(), body.clone()].concat(), "bytes differ");
        let m = Running::at(running.metrics_addr()).get("/metrics", &[]);
        let text = String::from_utf8_lossy(&m.body);
        let (kernel, user) = if kernel_here { (1, 0) } else { (0, 1) };
        assert!(
            text.contains(&format!(
                "iocomp_tls_connections_total{{mode=\"kernel\"}} {kernel}\n"
            )),
            "{mode:?}: {text}"
        );
        assert!(
            text.contains(&format!(
                "iocomp_tls_connections_total{{mode=\"user\"}} {user}\n"
            )),
            "{mode:?}: {text}"
        );
        assert!(
            text.contains(&format!(
                "iocomp_ktls_available {}\n",
                u8::from(kernel_here)
            )),
            "{text}"
        );
        assert!(text.contains("iocomp_ktls_failures_total 0\n"), "{text}");
        assert!(
            text.contains("iocomp_ktls_events_total{event=\"breaker\"} 0\n"),
            "{text}"
        );
    }
    let tree = Tree::new("tls-ktls-on");
    tree.file("x", b"x");
    let pki = pki(&tree);
    let mut c = Config::new(&tree.root);
    c.binds = vec!["127.0.0.1:0".parse().unwrap()];
    c.tls_binds = vec!["127.0.0.1:0".parse().unwrap()];
    c.tls_certs = vec![pki.files.clone()];
    c.ktls = iocomp_server::KtlsMode::On;
    match iocomp_server::Server::start(c) {
        Err(e) => {
            let e = e.to_string();
            assert!(
                !listed,
                "the kernel lists tls ({list:?}) but --ktls on failed: {e}"
            );
            assert!(
                e.contains("kernel TLS probe") && e.contains("modprobe tls"),
                "{e}"
            );
        }
        Ok(server) => {
            assert!(listed, "--ktls on started without kernel TLS: {list:?}");
            assert!(server.ktls_available());
            eprintln!("kernel TLS: --ktls on started (the kernel took a cipher both ways)");
        }
    }
}
