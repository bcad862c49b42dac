//! HTTPS and the line protocol inside TLS (issue 19): a CA and a leaf
//! certificate for `localhost` are made at test time (rcgen); curl (`--cacert`)
//! and a rustls client talk to a TLS listener beside a plain one. What the
//! clients get must be what a plain connection gets, byte for byte.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iocomp_server::{CertFiles, Config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, RootCertStore,
    SignatureScheme, StreamOwned,
};

use crate::harness::{Running, Tree};

/// A test CA and a leaf certificate it signed for `localhost` and
/// `127.0.0.1`, written as PEM files beside the served root.
pub(crate) struct Pki {
    ca_pem: PathBuf,
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    files: CertFiles,
}

pub(crate) fn pki(tree: &Tree) -> Pki {
    pki_for(tree, "pki", &["localhost", "127.0.0.1"])
}

/// A CA of its own and a leaf for `names`, in directory `tag`.
fn pki_for(tree: &Tree, tag: &str, names: &[&str]) -> Pki {
    let dir = tree.root.parent().unwrap().join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "iocomp test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let (ca_pem, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    Pki {
        ca_pem,
        ca_der: ca.der().clone(),
        leaf_der: leaf.der().clone(),
        files: CertFiles { cert, key },
    }
}

/// The tree served on a plain and a TLS listener; returns the TLS address.
pub(crate) fn serve_tls(
    tree: &Tree,
    pki: &Pki,
    tune: impl FnOnce(&mut Config),
) -> (Running, SocketAddr) {
    serve_certs(tree, vec![pki.files.clone()], tune)
}

/// The tree served on a plain and a TLS listener with `certs` (the first is
/// the default); returns the TLS address.
fn serve_certs(
    tree: &Tree,
    certs: Vec<CertFiles>,
    tune: impl FnOnce(&mut Config),
) -> (Running, SocketAddr) {
    let running = tree.serve(|c| {
        c.tls_binds = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls_certs = certs;
        tune(c);
    });
    // The TLS listeners come after the plain ones.
    let addrs = running.local_addrs();
    assert_eq!(addrs.len(), 2, "one plain and one TLS listener: {addrs:?}");
    let tls = addrs[1];
    (running, tls)
}

/// Deterministic, incompressible-looking bytes.
pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// curl with the test CA, resolving `localhost` to the TLS listener; fails
/// loudly when curl is missing.
fn curl(pki: &Pki, addr: SocketAddr, args: &[&str]) -> (Vec<u8>, String) {
    let out = Command::new("curl")
        .arg("--silent")
        .arg("--show-error")
        .arg("--max-time")
        .arg("60")
        .arg("--cacert")
        .arg(&pki.ca_pem)
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", addr.port()))
        .args(args)
        .output()
        .expect("curl must be installed to run the HTTPS tests");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

/// A tree with one file, `x`, served on a plain and a TLS listener (with the
/// certificates of [`pki`]). Fields drop in order: the server first.
struct Site {
    running: Running,
    /// The TLS listener.
    addr: SocketAddr,
    pki: Pki,
    /// Kept so that the served directory lives as long as the server.
    _tree: Tree,
}

/// A [`Site`] in a tree named `tag` whose file `x` holds `x`; `tune` adjusts
/// the configuration.
fn site(tag: &str, x: &[u8], tune: impl FnOnce(&mut Config)) -> Site {
    let tree = Tree::new(tag);
    tree.file("x", x);
    let pki = pki(&tree);
    let (running, addr) = serve_tls(&tree, &pki, tune);
    Site {
        running,
        addr,
        pki,
        _tree: tree,
    }
}

/// The crypto provider of the test clients.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The test CA as the only root.
fn roots(pki: &Pki) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    roots
}

pub(crate) fn client_config(pki: &Pki) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(pki))
            .with_no_client_auth(),
    )
}

/// A TCP connection to `addr` whose reads and writes give up after 30 s.
fn tcp_to(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    tcp
}

/// A rustls session with `config` to `addr`, sending `name` (an IP address:
/// no SNI); the handshake runs on first use.
fn tls_with(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    StreamOwned::new(conn, tcp_to(addr))
}

pub(crate) fn tls_connect(pki: &Pki, addr: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    tls_with(client_config(pki), addr, "localhost")
}

/// The first flight (the ClientHello) of a rustls client of the test CA.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let mut conn = ClientConnection::new(
        client_config(pki),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// A connection to `addr` that sent a handshake record of 0x40 bytes of
/// nonsense (pattern `seed`).
fn garbage_hello(addr: SocketAddr, seed: u64) -> TcpStream {
    let mut garbage = TcpStream::connect(addr).unwrap();
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    junk.extend(bytes(0x40, seed));
    garbage.write_all(&junk).unwrap();
    garbage
}

/// Sends `GET /x` with `Connection: close` and reads the reply up to the
/// server's `close_notify`.
fn get_x_to_close(s: &mut StreamOwned<ClientConnection, TcpStream>) -> Vec<u8> {
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_to_close(s)
}

/// Reads until the server's `close_notify` (a cut without one is an error).
fn read_to_close(s: &mut StreamOwned<ClientConnection, TcpStream>) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the server ends the session with close_notify");
    out
}

/// Waits (generously) until the server has no open connection.
fn wait_no_connections(running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connection(s) still open",
            running.connections()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads until the peer closes or resets; true when it did within 30 s.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn curl_gets_exact_bodies_of_every_size() {
    let tree = Tree::new("tls-sizes");
    let big = bytes(3 * 1024 * 1024 + 17, 7);
    let kib = bytes(1024, 3);
    tree.file("empty", b"")
        .file("kib", &kib)
        .file("big.bin", &big);
    let pki = pki(&tree);
    let (_running, addr) = serve_tls(&tree, &pki, |_| {});
    let (body, _) = curl(&pki, addr, &[&url(addr, "/empty")]);
    assert!(body.is_empty());
    let (body, _) = curl(&pki, addr, &[&url(addr, "/kib")]);
    assert_eq!(body, kib);
    let (body, _) = curl(&pki, addr, &[&url(addr, "/big.bin")]);
    assert!(
        body == big,
        "the multi-MiB body differs ({} bytes)",
        body.len()
    );
}

#[test]
fn curl_head_range_and_keep_alive() {
    let tree = Tree::new("tls-head");
    let data = bytes(10_000, 11);
    tree.file("a.bin", &data).file("b.txt", b"second file\n");
    let pki = pki(&tree);
    let (_running, addr) = serve_tls(&tree, &pki, |_| {});

    let (head, _) = curl(&pki, addr, &["--head", &url(addr, "/a.bin")]);
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 10000\r\n"), "{head}");

    let (part, _) = curl(
        &pki,
        addr,
        &[
            "--range",
            "100-199",
            "--write-out",
            "%{http_code}",
            &url(addr, "/a.bin"),
        ],
    );
    assert_eq!(&part[..100], &data[100..200]);
    assert_eq!(&part[100..], b"206");

    // Two requests on one connection: curl reports one connect, then none.
    let (out, _) = curl(
        &pki,
        addr,
        &[
            "--write-out",
            "[%{http_code} %{num_connects}]",
            &url(addr, "/b.txt"),
            &url(addr, "/b.txt"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "second file\n[200 1]second file\n[200 0]"
    );
}

#[test]
fn line_protocol_inside_tls_matches_plain() {
    let tree = Tree::new("tls-line");
    let data = bytes(200_000, 5);
    tree.file("one", &data).file("two", b"2\n");
    let pki = pki(&tree);
    let (running, addr) = serve_tls(&tree, &pki, |_| {});
    let names: [&[u8]; 3] = [b"one", b"missing", b"two"];
    let plain = running.lines(&names);
    assert!(
        plain.windows(data.len()).any(|w| w == data),
        "the plain reply carries the file"
    );

    let mut s = tls_connect(&pki, addr);
    s.write_all(b"one\nmissing\ntwo\n").unwrap();
    s.flush().unwrap();
    // The client's end of input: close_notify, then the TCP half-close.
    s.conn.send_close_notify();
    while s.conn.wants_write() {
        s.conn.write_tls(&mut s.sock).unwrap();
    }
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let got = read_to_close(&mut s);
    assert!(
        got == plain,
        "TLS reply ({} B) != plain reply ({} B)",
        got.len(),
        plain.len()
    );
    assert_eq!(s.conn.alpn_protocol(), None, "no ALPN offered, none chosen");
}

#[test]
fn alpn_http11_and_keep_alive_with_rustls() {
    let site = site("tls-alpn", b"xyz", |_| {});
    let mut config = (*client_config(&site.pki)).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut s = tls_with(Arc::new(config), site.addr, "localhost");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = read_to_close(&mut s);
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert!(text.ends_with("\r\n\r\nxyz"), "{text}");
}

#[test]
fn plain_http_to_tls_port_gets_nginx_400() {
    let site = site("tls-plain", b"x", |_| {});
    let mut s = tcp_to(site.addr);
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(
        text.contains("The plain HTTP request was sent to HTTPS port"),
        "{text}"
    );
}

#[test]
fn client_hello_on_plain_port_is_closed() {
    let site = site("tls-on-plain", b"x", |_| {});
    // A real ClientHello from rustls to the plain listener: closed with
    // nothing sent back (not answered as a line-protocol name).
    let hello = client_hello(&site.pki);
    assert_eq!(hello[0], 0x16, "a handshake record");
    let mut s = tcp_to(site.running.addr);
    s.write_all(&hello).unwrap();
    let mut back = Vec::new();
    match s.read_to_end(&mut back) {
        Ok(_) => assert!(back.is_empty(), "nothing is sent back: {back:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "closed: {e}"),
    }
    drop(s);
    wait_no_connections(&site.running);
}

#[test]
fn garbage_and_stalled_handshakes_are_cut_without_disturbing_others() {
    let tree = Tree::new("tls-bad");
    let data = bytes(500_000, 9);
    tree.file("f", &data);
    let pki = pki(&tree);
    let (running, addr) = serve_tls(&tree, &pki, |c| {
        c.header_timeout = Duration::from_secs(2);
    });

    // A client that starts a handshake record and stalls in it.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // One that connects and never says anything.
    let mut silent = TcpStream::connect(addr).unwrap();
    // A garbage ClientHello: a handshake record whose body is nonsense.
    let mut garbage = garbage_hello(addr, 1);

    // Meanwhile a good client is served in full.
    let mut good = tls_connect(&pki, addr);
    good.write_all(b"GET /f HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = read_to_close(&mut good);
    assert!(got.ends_with(&data), "the good client gets the whole file");

    assert!(closed_by_server(&mut garbage), "garbage ClientHello is cut");
    assert!(closed_by_server(&mut stalled), "stalled handshake is cut");
    assert!(closed_by_server(&mut silent), "silent client is cut");
    drop((garbage, stalled, silent, good));
    wait_no_connections(&running);
}

#[test]
fn bad_certificate_or_key_file_is_named() {
    let tree = Tree::new("tls-badcert");
    let pki = pki(&tree);
    let bogus = tree.root.parent().unwrap().join("bogus.pem");
    std::fs::write(&bogus, "not PEM at all\n").unwrap();
    let missing = tree.root.parent().unwrap().join("missing.pem");
    let cases: [(&Path, &Path, &Path); 3] = [
        (&bogus, &pki.files.key, &bogus),
        (&pki.files.cert, &bogus, &bogus),
        (&missing, &pki.files.key, &missing),
    ];
    for (cert, key, named) in cases {
        let mut config = Config::new(&tree.root);
        config.binds = vec![];
        config.tls_binds = vec!["127.0.0.1:0".parse().unwrap()];
        config.tls_certs = vec![CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }];
        let err = match iocomp_server::Server::start(config) {
            Ok(_) => panic!("a server with {cert:?}/{key:?} must not start"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&named.display().to_string()),
            "the error names {named:?}: {err}"
        );
    }
}

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
    assert!(closed_by_server(&mut garbage));
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

#[test]
fn a_handshake_cut_at_every_byte_leaves_nothing_behind() {
    let Site {
        running,
        addr,
        pki,
        _tree,
    } = site("tls-cut", b"x", |_| {});
    let hello = client_hello(&pki);
    // The ClientHello cut after every byte count, then the client closes.
    for n in 0..hello.len() {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&hello[..n]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            closed_by_server(&mut s),
            "cut after {n} bytes: the server closes"
        );
    }
    // Cut after the whole ClientHello, with the server's flight unread.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&hello).unwrap();
    drop(s);
    wait_no_connections(&running);
    // And the server still serves.
    let (body, _) = curl(&pki, addr, &[&url(addr, "/x")]);
    assert_eq!(body, b"x");
}

#[test]
fn hsts_is_sent_over_tls_only() {
    let tree = Tree::new("tls-hsts");
    tree.file("x", b"x").file("big", &bytes(100_000, 4));
    let pki = pki(&tree);
    let (running, addr) = serve_tls(&tree, &pki, |c| {
        c.hsts = Some(Duration::from_secs(31_536_000));
    });
    for (path, range) in [("/x", None), ("/big", Some("10-19")), ("/missing", None)] {
        let mut args = vec!["--include"];
        if let Some(r) = range {
            args.extend(["--range", r]);
        }
        let u = url(addr, path);
        args.push(&u);
        let (out, _) = curl(&pki, addr, &args);
        let text = String::from_utf8_lossy(&out);
        let head = &text[..text.find("\r\n\r\n").expect("a head")];
        assert!(
            head.contains("\r\nStrict-Transport-Security: max-age=31536000"),
            "{path}: {head}"
        );
        assert_eq!(
            head.matches("Strict-Transport-Security").count(),
            1,
            "{head}"
        );
    }
    let (body, _) = curl(&pki, addr, &["--range", "10-19", &url(addr, "/big")]);
    assert_eq!(body, &bytes(100_000, 4)[10..20], "the body is untouched");
    // RFC 6797 §7.2: never over plain HTTP.
    let plain = running.get("/x", &[]);
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("strict-transport-security"), None);
}

#[test]
fn plain_http_is_redirected_to_https_when_asked() {
    let tree = Tree::new("tls-redirect");
    tree.file("dir/x y", b"payload");
    let pki = pki(&tree);
    let (running, addr) = serve_tls(&tree, &pki, |c| {
        c.https_redirect = Some(8443);
    });
    let r = running.get("/dir/x%20y?a=1", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://test:8443/dir/x%20y?a=1")
    );
    let r = running.request("HEAD", "/", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://test:8443/"));
    // HTTPS itself is served, never redirected.
    let (body, _) = curl(&pki, addr, &[&url(addr, "/dir/x%20y")]);
    assert_eq!(body, b"payload");
    // The line protocol on the plain port is unaffected.
    let line = running.lines(&[b"dir/x y"]);
    assert!(
        line.ends_with(b"payload"),
        "{:?}",
        String::from_utf8_lossy(&line)
    );

    // Port 443 is left out of the URL; the Host's own port is replaced.
    let tree = Tree::new("tls-redirect-443");
    let running = tree.serve(|c| c.https_redirect = Some(443));
    let r = running.get("/a", &[]);
    assert_eq!(r.header("location"), Some("https://test/a"));
}

#[test]
fn redirect_uses_the_host_without_its_port() {
    let tree = Tree::new("tls-redirect-host");
    let running = tree.serve(|c| c.https_redirect = Some(443));
    // The harness sends `Host: test`; an absolute-form target names its own.
    let r = running.get("http://example.org:8080/p?q", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://example.org/p?q"));
    let r = running.get("http://[::1]:80/p", &[]);
    assert_eq!(r.header("location"), Some("https://[::1]/p"));
}

/// Drops `path`'s pages from the page cache (`POSIX_FADV_DONTNEED` after
/// `fsync`), so that reading it needs the disk.
fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: `f` is open for the call; the advice only affects the cache.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

/// A file whose pages are not cached is served whole over TLS (the cold
/// pages are read off the page-cache path), and as often as asked.
#[test]
fn a_file_out_of_the_page_cache_is_served_whole() {
    let tree = Tree::new("tls-cold");
    let big = bytes(2 * 1024 * 1024 + 5, 11);
    tree.file("cold.bin", &big);
    let pki = pki(&tree);
    let (_running, addr) = serve_tls(&tree, &pki, |_| {});
    for _ in 0..2 {
        evict(&tree.path("cold.bin"));
        let (body, _) = curl(&pki, addr, &[&url(addr, "/cold.bin")]);
        assert!(body == big, "the cold body differs ({} bytes)", body.len());
    }
}

/// Dribbles `bytes` one every 200 ms on `tcp` until the server closes it;
/// returns how long that took, or None if it was still open after `limit`.
fn dribble_until_closed(tcp: &mut TcpStream, bytes: &[u8], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    for b in bytes {
        if start.elapsed() > limit {
            return None;
        }
        if tcp.write_all(std::slice::from_ref(b)).is_err() {
            return Some(start.elapsed());
        }
        // Waits 200 ms for the server to close (anything it sends before,
        // an alert, is read and ignored).
        match tcp.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// The header timeout holds over TLS: a client that, after a request, sends
/// a record one byte at a time (ciphertext that never yields plaintext) is cut
/// by the header timeout from its first byte, as a partial request line is,
/// not kept alive by each byte.
#[test]
fn a_dribbled_partial_record_is_cut_by_the_header_timeout() {
    let site = site("tls-dribble", b"xyz", |c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(2);
    });
    let mut s = kept_alive_after_x(&site);
    // A TLS 1.3 application-data record announcing 16000 bytes.
    let mut record = vec![0x17, 0x03, 0x03, 0x3e, 0x80];
    record.resize(5 + 16000, 0);
    let took = dribble_until_closed(&mut s.sock, &record, Duration::from_secs(20))
        .expect("a dribbling client was kept open for 20 s (the header timeout is 1 s)");
    // The header timeout (1 s) plus the sweep's granularity; generous.
    assert!(took < Duration::from_secs(10), "closed only after {took:?}");
}

/// A handshake the server refuses ends with the fatal alert that says why
/// (RFC 8446 §6.2; RFC 7301 §3.2 for ALPN), not a bare close: a rustls
/// client offering only `h2` gets `no_application_protocol`.
#[test]
fn a_refused_handshake_gets_its_alert() {
    let site = site("tls-alert", b"xyz", |_| {});
    let mut config = (*client_config(&site.pki)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let mut s = tls_with(Arc::new(config), site.addr, "localhost");
    let err = s
        .write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        .and_then(|()| s.flush())
        .and_then(|()| s.read(&mut [0u8; 64]).map(|_| ()))
        .expect_err("a handshake without a common protocol must fail");
    let text = format!("{err:?}");
    assert!(
        text.contains("NoApplicationProtocol"),
        "no no_application_protocol alert: {text}"
    );
}

/// The same for a client offering only TLS 1.1 (`openssl s_client`, which
/// must be installed): a fatal alert (rustls sends `handshake_failure`), not
/// a bare close.
#[test]
fn a_tls11_client_gets_an_alert() {
    let tree = Tree::new("tls-alert11");
    let pki = pki(&tree);
    let (_running, addr) = serve_tls(&tree, &pki, |_| {});
    let out = Command::new("timeout")
        .arg("20")
        .arg("openssl")
        .args(["s_client", "-connect"])
        .arg(addr.to_string())
        .args(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the openssl command must be installed for this test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("SSL alert number"),
        "no alert received: {text}"
    );
}

/// Plain HTTP on the TLS port split across segments (a first segment too
/// short to tell) still gets nginx's `400`.
#[test]
fn plain_http_split_across_segments_gets_400() {
    let site = site("tls-plain-split", b"x", |_| {});
    let mut s = tcp_to(site.addr);
    s.set_nodelay(true).unwrap();
    s.write_all(b"GE").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Still waiting (not closed) for the rest; then the rest comes.
    let _ = s.write_all(b"T /x HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text:?}");
    assert!(
        text.contains("The plain HTTP request was sent to HTTPS port"),
        "{text}"
    );
}

/// A session to `site` (whose `x` holds `xyz`) that asked for `/x` on a
/// keep-alive connection and read the whole reply.
fn kept_alive_after_x(site: &Site) -> StreamOwned<ClientConnection, TcpStream> {
    let mut s = tls_connect(&site.pki, site.addr);
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    read_until(&mut s, b"xyz");
    s
}

/// Reads one response ending in `end` from a TLS stream.
fn read_until(s: &mut StreamOwned<ClientConnection, TcpStream>, end: &[u8]) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(end) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the reply");
        got.extend_from_slice(&buf[..n]);
    }
}

/// A keep-alive connection closed by the idle timeout ends its session with
/// `close_notify` (as nginx's does), so that the client can tell it from a cut.
#[test]
fn an_idle_session_is_closed_with_close_notify() {
    let site = site("tls-idle-notify", b"xyz", |c| {
        c.idle_timeout = Duration::from_secs(1);
    });
    let mut s = kept_alive_after_x(&site);
    let rest = read_to_close(&mut s);
    assert!(rest.is_empty(), "{rest:?}");
}

/// A client that ends its side (`close_notify`, then FIN) after its last
/// reply gets the server's `close_notify` back before the close.
#[test]
fn a_session_ended_by_the_client_gets_close_notify_back() {
    let site = site("tls-eof-notify", b"xyz", |c| {
        c.idle_timeout = Duration::from_secs(60);
    });
    let mut s = kept_alive_after_x(&site);
    s.conn.send_close_notify();
    s.flush().unwrap();
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let rest = read_to_close(&mut s);
    assert!(rest.is_empty(), "{rest:?}");
}

/// The same when the client only half-closes TCP (no `close_notify`) after
/// pipelining its requests: every reply, then the server's `close_notify`.
#[test]
fn a_client_fin_after_pipelined_requests_gets_close_notify() {
    let site = site("tls-fin-notify", b"xyz", |c| {
        c.idle_timeout = Duration::from_secs(60);
    });
    let mut s = tls_connect(&site.pki, site.addr);
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    s.flush().unwrap();
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let got = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
}

/// The header timeout of a new connection counts from its start, across the
/// handshake: the server's own handshake-end messages (session tickets) do not
/// restart it. A ClientHello sent slowly (2.4 s of a 3 s header timeout), then
/// no request: cut about 3 s after the start, not 3 s after the handshake.
#[test]
fn the_header_timeout_spans_the_handshake() {
    let site = site("tls-hs-timeout", b"xyz", |c| {
        c.header_timeout = Duration::from_secs(3);
        c.idle_timeout = Duration::from_secs(60);
    });
    let mut tcp = tcp_to(site.addr);
    tcp.set_nodelay(true).unwrap();
    let start = Instant::now();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(client_config(&site.pki), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    for chunk in hello.chunks(hello.len().div_ceil(8)) {
        tcp.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .expect("the handshake completes within the header timeout");
    }
    let handshake = start.elapsed();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let closed = start.elapsed();
    eprintln!("handshake done after {handshake:?}, closed after {closed:?}");
    // 3 s from the start plus the sweep's tick (0.75 s): well under 3 s after
    // the handshake, which is where a restarted clock would cut it.
    assert!(
        closed < handshake + Duration::from_millis(2500),
        "handshake done after {handshake:?}, closed only after {closed:?}"
    );
}
