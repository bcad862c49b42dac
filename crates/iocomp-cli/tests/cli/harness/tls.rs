//! A test PKI made at run time ([`Ca`], with rcgen) and a scripted TLS
//! server ([`tls_server`], with rustls) for the client's side of TLS.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use super::{Server, TempTree};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::PrivateKeyDer;

/// A CA (and its PEM file) that signs leaf certificates.
pub struct Ca {
    /// The CA certificate's PEM file (for `--cacert`, `SSL_CERT_FILE`, curl).
    pub pem: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// A new CA named after `tag`, its PEM file written in `dir`.
    pub fn new(dir: &Path, tag: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("iocomp test CA {tag}"));
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let pem = dir.join(format!("{tag}-ca.pem"));
        fs::write(&pem, cert.pem()).unwrap();
        Ca { pem, cert, key }
    }

    /// The PEM file's path, as a command-line argument.
    pub fn pem_arg(&self) -> String {
        self.pem.display().to_string()
    }

    /// A leaf for `names` signed by this CA, valid now, or (`expired`) only
    /// in 2020: its certificate and key files, written in `dir`.
    pub fn leaf(&self, dir: &Path, tag: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let (cert, key) = self.sign(names, expired);
        let (c, k) = (
            dir.join(format!("{tag}-cert.pem")),
            dir.join(format!("{tag}-key.pem")),
        );
        fs::write(&c, cert.pem()).unwrap();
        fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn sign(&self, names: &[&str], expired: bool) -> (rcgen::Certificate, KeyPair) {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }

    /// A rustls server configuration with a leaf for `localhost`.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.sign(&["localhost"], false);
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap(),
        )
    }
}

/// The `serve` flags of a TLS listener on a free loopback port with each
/// (certificate, key) pair given (the first is the default).
pub fn tls_flags(pairs: &[(PathBuf, PathBuf)]) -> Vec<String> {
    let mut args: Vec<String> = vec!["--tls-bind".into(), "127.0.0.1:0".into()];
    for (c, k) in pairs {
        args.push("--tls-cert".into());
        args.push(c.display().to_string());
        args.push("--tls-key".into());
        args.push(k.display().to_string());
    }
    args
}

/// How a [`tls_server`] ends each connection once it has answered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TlsEnd {
    /// Sends `close_notify`, then closes.
    CloseNotify,
    /// Closes the TCP connection without `close_notify` (a truncation, or a
    /// body framed otherwise).
    Abrupt,
    /// Waits for the client to end it and reports how: "close_notify",
    /// "abrupt", or the TLS error (an alert the client sent shows there).
    Witness,
}

/// A TLS server on a thread (a leaf for `localhost` signed by `ca`): for
/// every connection, reads a request, answers `reply`, then ends as `end`
/// says. What each connection came to ("answered", or the handshake's
/// error, or with [`TlsEnd::Witness`] how the client ended it) is sent on
/// the channel.
pub fn tls_server(
    ca: &Ca,
    reply: &'static [u8],
    end: TlsEnd,
) -> (SocketAddr, mpsc::Receiver<String>) {
    let cfg = ca.server_config();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut sock) = c else { return };
            let (cfg, tx) = (cfg.clone(), tx.clone());
            thread::spawn(move || {
                sock.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut conn = rustls::ServerConnection::new(cfg).unwrap();
                let outcome = match answer(&mut conn, &mut sock, reply) {
                    Err(e) => e,
                    Ok(()) => finish(&mut conn, &mut sock, end),
                };
                let _ = tx.send(outcome);
            });
        }
    });
    (addr, rx)
}

/// Completes the handshake, reads a request head and writes `reply`.
fn answer(
    conn: &mut rustls::ServerConnection,
    sock: &mut TcpStream,
    reply: &[u8],
) -> Result<(), String> {
    let mut req = Vec::new();
    let mut b = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.complete_io(sock) {
            Err(e) => return Err(format!("error: {e}")),
            Ok((0, 0)) if !conn.is_handshaking() && !conn.wants_read() => {
                return Err("eof before the request".to_string());
            }
            Ok(_) => {}
        }
        if let Ok(n) = conn.reader().read(&mut b) {
            req.extend_from_slice(&b[..n]);
        }
    }
    conn.writer().write_all(reply).unwrap();
    Ok(())
}

/// Ends an answered connection as `end` says; returns what happened.
fn finish(conn: &mut rustls::ServerConnection, sock: &mut TcpStream, end: TlsEnd) -> String {
    if end == TlsEnd::CloseNotify {
        conn.send_close_notify();
    }
    while conn.wants_write() {
        if conn.write_tls(sock).is_err() {
            return "write failed".to_string();
        }
    }
    if end != TlsEnd::Witness {
        let _ = sock.shutdown(Shutdown::Both);
        return "answered".to_string();
    }
    // Now the client ends the connection: how?
    let mut b = [0u8; 4096];
    loop {
        if let Err(e) = conn.read_tls(sock) {
            return format!("error: {e}");
        }
        if let Err(e) = conn.process_new_packets() {
            return format!("error: {e}");
        }
        match conn.reader().read(&mut b) {
            Ok(0) => return "close_notify".to_string(),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return "abrupt".to_string(),
        }
    }
}

/// `iocomp serve ROOT` with a TLS listener for each (certificate, key) pair
/// given (the first is the default): the server and its TLS address.
pub fn serve_tls(root: &Path, pairs: &[(PathBuf, PathBuf)]) -> (Server, SocketAddr) {
    let args = tls_flags(pairs);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(root, &refs);
    let tls = server.tls_addr();
    (server, tls)
}

/// A served tree over HTTPS: files under `root/www`, downloads to `root/dl`
/// (outside what is served), a CA and a certificate for `localhost` and
/// 127.0.0.1, and the server with its TLS address.
pub struct HttpsSite {
    /// The temporary tree everything is in.
    pub tree: TempTree,
    /// Where downloads go.
    pub dl: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca: Ca,
    /// The server (plain and TLS listeners).
    pub server: Server,
    /// The TLS listener's address.
    pub tls: SocketAddr,
}

impl HttpsSite {
    /// Serves `files` (name, content) over HTTPS.
    pub fn new(files: &[(&str, Vec<u8>)]) -> HttpsSite {
        let tree = TempTree::new();
        let root = tree.dir("www");
        for (name, body) in files {
            tree.file(&format!("www/{name}"), body);
        }
        let pki = tree.dir("pki");
        let dl = tree.dir("dl");
        let ca = Ca::new(&pki, "good");
        let pair = ca.leaf(&pki, "good", &["localhost", "127.0.0.1"], false);
        let (server, tls) = serve_tls(&root, &[pair]);
        HttpsSite {
            tree,
            dl,
            ca,
            server,
            tls,
        }
    }

    /// `https://localhost:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("https://localhost:{}/{name}", self.tls.port())
    }

    /// The CA's PEM file, for `--cacert`.
    pub fn cacert(&self) -> String {
        self.ca.pem_arg()
    }
}
