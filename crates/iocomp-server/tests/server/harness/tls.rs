//! TLS for the tests: a CA and a leaf certificate made at test time
//! (rcgen), a server with a plain and a TLS listener, rustls clients, and
//! curl with the test CA.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iocomp_server::{CertFiles, Config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{Running, Tree};

/// A test CA and a leaf certificate it signed for `localhost` and
/// `127.0.0.1`, written as PEM files beside the served root.
pub struct Pki {
    pub ca_pem: PathBuf,
    pub ca_der: CertificateDer<'static>,
    pub leaf_der: CertificateDer<'static>,
    pub files: CertFiles,
}

pub fn pki(tree: &Tree) -> Pki {
    pki_for(tree, "pki", &["localhost", "127.0.0.1"])
}

/// A CA of its own and a leaf for `names`, in directory `tag`.
pub fn pki_for(tree: &Tree, tag: &str, names: &[&str]) -> Pki {
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
pub fn serve_tls(tree: &Tree, pki: &Pki, tune: impl FnOnce(&mut Config)) -> (Running, SocketAddr) {
    serve_certs(tree, vec![pki.files.clone()], tune)
}

/// The tree served on a plain and a TLS listener with `certs` (the first is
/// the default); returns the TLS address.
pub fn serve_certs(
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

/// curl with the test CA, resolving `localhost` to the TLS listener; fails
/// loudly when curl is missing.
pub fn curl(pki: &Pki, addr: SocketAddr, args: &[&str]) -> (Vec<u8>, String) {
    let ca = pki.ca_pem.to_str().unwrap();
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let out = super::run::curl(&[&["--cacert", ca, "--resolve", &resolve][..], args].concat());
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

/// A tree with one file, `x`, served on a plain and a TLS listener (with the
/// certificates of [`pki`]). Fields drop in order: the server first.
pub struct Site {
    pub running: Running,
    /// The TLS listener.
    pub addr: SocketAddr,
    pub pki: Pki,
    /// Kept so that the served directory lives as long as the server.
    pub _tree: Tree,
}

/// A [`Site`] in a tree named `tag` whose file `x` holds `x`; `tune` adjusts
/// the configuration.
pub fn site(tag: &str, x: &[u8], tune: impl FnOnce(&mut Config)) -> Site {
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
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The test CA as the only root.
pub fn roots(pki: &Pki) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    roots
}

pub fn client_config(pki: &Pki) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(pki))
            .with_no_client_auth(),
    )
}

/// A TCP connection to `addr` whose reads and writes give up after 30 s.
pub fn tcp_to(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    tcp
}

/// A rustls session with `config` to `addr`, sending `name` (an IP address:
/// no SNI); the handshake runs on first use.
pub fn tls_with(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    StreamOwned::new(conn, tcp_to(addr))
}

pub fn tls_connect(pki: &Pki, addr: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    tls_with(client_config(pki), addr, "localhost")
}

/// The first flight (the ClientHello) of a rustls client of the test CA.
pub fn client_hello(pki: &Pki) -> Vec<u8> {
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
pub fn garbage_hello(addr: SocketAddr, seed: u64) -> TcpStream {
    let mut garbage = TcpStream::connect(addr).unwrap();
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    junk.extend(super::pseudo_random(seed, 0x40));
    garbage.write_all(&junk).unwrap();
    garbage
}

/// Sends `GET /x` with `Connection: close` and reads the reply up to the
/// server's `close_notify`.
pub fn get_x_to_close(s: &mut StreamOwned<ClientConnection, TcpStream>) -> Vec<u8> {
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_to_close(s)
}

/// Reads until the server's `close_notify` (a cut without one is an error).
pub fn read_to_close(s: &mut StreamOwned<ClientConnection, TcpStream>) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the server ends the session with close_notify");
    out
}

/// A session to `site` (whose `x` holds `xyz`) that asked for `/x` on a
/// keep-alive connection and read the whole reply.
pub fn kept_alive_after_x(site: &Site) -> StreamOwned<ClientConnection, TcpStream> {
    let mut s = tls_connect(&site.pki, site.addr);
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    read_until(&mut s, b"xyz");
    s
}

/// Reads one response ending in `end` from a TLS stream.
pub fn read_until(s: &mut StreamOwned<ClientConnection, TcpStream>, end: &[u8]) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(end) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the reply");
        got.extend_from_slice(&buf[..n]);
    }
}
