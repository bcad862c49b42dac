//! TLS in the driver, between the socket and the protocol handlers: a rustls
//! `ServerConnection` per connection on a TLS listener. Ciphertext that a
//! `Recv` brings is fed to rustls and the plaintext appended to the
//! connection's input, so the handlers see exactly what a plain connection
//! would; a reply's pieces are encrypted in user space (file bodies read into a
//! per-worker buffer, at most [`CHUNK`] at a time: from the page cache without
//! waiting, cold pages inside [`Port::blocking`](iocomp::Port::blocking)) and the
//! ciphertext goes out with `Send`. No `sendfile` here: that needs kernel TLS,
//! to which `conn::ktls` hands the session after the handshake where the
//! kernel and the cipher allow (the connection then leaves this module).
//!
//! The session is TLS 1.2 and 1.3 only (rustls never renegotiates), ALPN
//! `http/1.1`, crypto from `ring`.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use iocomp::Port;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

use crate::config::{CertFiles, CertPem};
use crate::http::detect::{detect, Proto as Detected};
use crate::proto::Piece;
use crate::sys;

#[cfg(feature = "fuzz")]
pub(crate) mod fuzz;

/// The most file bytes encrypted per `Send`.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The first byte of a TLS handshake record (a ClientHello starts with it).
pub(crate) const HANDSHAKE: u8 = 0x16;

/// A certificate or key that cannot be used: names the file.
#[derive(Debug)]
pub(crate) struct CertError {
    /// The file at fault.
    pub(crate) file: PathBuf,
    /// What is wrong with it.
    pub(crate) reason: String,
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.as_os_str().is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.file.display(), self.reason)
        }
    }
}

impl std::error::Error for CertError {}

impl From<CertError> for io::Error {
    fn from(e: CertError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
    }
}

/// The certificates of the TLS listeners, chosen by SNI (no SNI, or a name
/// none of them has, gets the first, as nginx's default server does), and
/// replaced as a whole on reload; a session already started keeps its own.
#[derive(Debug)]
pub(crate) struct Certs {
    files: Vec<CertFiles>,
    current: RwLock<Arc<Keys>>,
}

/// One generation of loaded certificates.
#[derive(Debug)]
struct Keys {
    default: Arc<CertifiedKey>,
    /// DNS names (lower case; wildcards as `*.example.com`) to certificates;
    /// the first certificate naming a name wins.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl Certs {
    /// Reads `files` (the first is the default).
    pub(crate) fn load(files: &[CertFiles]) -> Result<Certs, CertError> {
        Certs::from_pem(&read_all(files)?)
    }

    /// Loads certificates and keys already read (the first is the default).
    pub(crate) fn from_pem(pem: &[CertPem]) -> Result<Certs, CertError> {
        Ok(Certs {
            files: pem.iter().map(|p| p.files.clone()).collect(),
            current: RwLock::new(Arc::new(Keys::load(pem)?)),
        })
    }

    /// Reads the files again (as the user the server runs as); on an error
    /// the certificates in use stay.
    pub(crate) fn reload(&self) -> Result<(), CertError> {
        let keys = Arc::new(Keys::load(&read_all(&self.files)?)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }

    fn keys(&self) -> Arc<Keys> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Reads every pair of files; an error names the file.
fn read_all(files: &[CertFiles]) -> Result<Vec<CertPem>, CertError> {
    files
        .iter()
        .map(|f| {
            CertPem::read(f).map_err(|e| CertError {
                file: PathBuf::new(),
                reason: e.to_string(),
            })
        })
        .collect()
}

impl Keys {
    fn load(pems: &[CertPem]) -> Result<Keys, CertError> {
        let Some(first) = pems.first().map(|p| &p.files) else {
            return Err(CertError {
                file: PathBuf::new(),
                reason: "TLS listeners need a certificate and a key".into(),
            });
        };
        let mut by_name = HashMap::new();
        let mut default = None;
        for pem in pems {
            let f = &pem.files;
            let chain = load_chain(&f.cert, &pem.cert)?;
            let key = load_key(&f.key, &pem.key)?;
            let signing =
                rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| CertError {
                    file: f.key.clone(),
                    reason: format!("unusable private key: {e}"),
                })?;
            let names: Vec<String> = webpki::EndEntityCert::try_from(&chain[0])
                .map_err(|e| CertError {
                    file: f.cert.clone(),
                    reason: format!("unusable certificate: {e:?}"),
                })?
                .valid_dns_names()
                .map(str::to_ascii_lowercase)
                .collect();
            let certified = Arc::new(CertifiedKey::new(chain, signing));
            certified.keys_match().map_err(|e| CertError {
                file: f.key.clone(),
                reason: format!("does not match {}: {e}", f.cert.display()),
            })?;
            for name in names {
                by_name.entry(name).or_insert_with(|| certified.clone());
            }
            default.get_or_insert(certified);
        }
        let default = default.ok_or_else(|| CertError {
            file: first.cert.clone(),
            reason: "no certificate".into(),
        })?;
        Ok(Keys { default, by_name })
    }

    fn resolve(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        self.by_name
            .get(&name)
            .or_else(|| wildcard.and_then(|w| self.by_name.get(&w)))
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.keys().resolve(hello.server_name()))
    }
}

/// The rustls server configuration over `certs`: TLS 1.3 and 1.2, ALPN
/// `http/1.1`, session resumption by tickets only (keys rotated every 6
/// hours; no server-side session cache, so nothing grows per client); with
/// `no_tickets`, no resumption at all (every handshake is a full one).
///
/// With `ktls` (the kernel has kernel TLS), rustls lets the traffic secrets
/// be taken out after the handshake, for the hand-off to the kernel.
pub(crate) fn server_config(
    certs: Arc<Certs>,
    no_tickets: bool,
    ktls: bool,
) -> Result<Arc<ServerConfig>, CertError> {
    // ring: the lean provider (aws-lc-rs needs cmake and a long C build). It
    // was deprecated in rustls 0.23.48 only for lacking post-quantum key
    // exchange; X25519, P-256 and P-384 remain.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = server_config_with(certs, no_tickets, provider)?;
    if ktls {
        enable_secret_extraction(&mut config);
    }
    Ok(config)
}

/// Lets rustls give the traffic secrets out (for kernel TLS); true when it
/// does now. Where the configuration is shared already it cannot be changed:
/// logged, false, and the caller turns kernel TLS off (connections are never
/// closed for it).
pub(crate) fn enable_secret_extraction(config: &mut Arc<ServerConfig>) -> bool {
    match Arc::get_mut(config) {
        Some(c) => {
            c.enable_secret_extraction = true;
            true
        }
        None => {
            tracing::warn!(
                "kernel TLS: the rustls configuration is shared, secret extraction cannot be \
                 turned on: kernel TLS is off"
            );
            false
        }
    }
}

/// [`server_config`] with another crypto provider (the fuzz target's has a
/// fixed seed).
pub(crate) fn server_config_with(
    certs: Arc<Certs>,
    no_tickets: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<ServerConfig>, CertError> {
    let internal = |e: rustls::Error| CertError {
        file: PathBuf::new(),
        reason: format!("TLS configuration: {e}"),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(internal)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if no_tickets {
        config.send_tls13_tickets = 0;
    } else {
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(internal)?;
    }
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

fn load_chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bad = |reason: String| CertError {
        file: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_reason(e)))?;
    if chain.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(chain)
}

fn load_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| CertError {
        file: path.to_path_buf(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in it".into(),
            e => pem_reason(e),
        },
    })
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        e => format!("not valid PEM: {e:?}"),
    }
}

/// Fills `buf` from `file` at `offset`. What the page cache holds is copied
/// at once (`preadv2(RWF_NOWAIT)`, which never waits for the disk), as the
/// plain path's probe does; the rest (cold pages, or a filesystem without
/// `RWF_NOWAIT`) is read inside [`Port::blocking`], so the worker gives its
/// running slot up while it waits and another thread serves the other
/// connections meanwhile.
fn read_chunk(port: &Port, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset + done as u64;
        let Ok(at_signed) = i64::try_from(at) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        match sys::pread_nowait(file.as_fd(), &mut buf[done..], at_signed) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file is shorter than when it was opened",
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EAGAIN (not cached), EOPNOTSUPP: read the rest the blocking way.
            Err(_) => break,
        }
    }
    if done < buf.len() {
        let rest = &mut buf[done..];
        port.blocking(|| file.read_exact_at(rest, offset + done as u64))?;
    }
    Ok(())
}

/// Why received bytes ended the session.
pub(crate) enum Refused {
    /// Plain HTTP on the TLS port: answer nginx's 400 in plain text.
    PlainHttp,
    /// Anything else: close (the reason, for the debug log).
    Bad(String),
}

/// What received bytes did.
pub(crate) struct Absorbed {
    /// The client closed its side (`close_notify`).
    pub(crate) closed: bool,
    /// The handshake completed with them.
    pub(crate) handshake_done: bool,
}

/// One connection's TLS session.
pub(crate) struct Tls {
    pub(super) session: ServerConnection,
    /// The hand-off to kernel TLS was decided (see `conn::ktls`).
    pub(super) kernel_tried: bool,
    /// Where the client's record stream stands (the hand-off waits for a
    /// record boundary).
    rx: Records,
    /// No byte has arrived yet (the first is checked for plain HTTP).
    fresh: bool,
    /// The first bytes, when they are not a handshake record, kept until
    /// `detect` tells plain HTTP (answered `400`) from anything else (closed);
    /// `detect` decides within a few dozen bytes.
    sniff: Vec<u8>,
    /// Our `close_notify` is queued or sent.
    closing: bool,
    /// Plaintext bytes in the `Send` in flight (the access log and the status
    /// page count plaintext, as on a plain connection).
    plain_in_flight: u64,
    /// A ciphertext buffer handed back by the last `Send`, reused.
    spare: Vec<u8>,
}

thread_local! {
    /// Each worker's buffer for file bytes on their way to encryption.
    static FILE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Tls {
    /// A session under `config`.
    pub(crate) fn new(config: &Arc<ServerConfig>) -> Result<Tls, rustls::Error> {
        let mut session = ServerConnection::new(config.clone())?;
        // The driver bounds what it encrypts at once (a piece, or CHUNK file
        // bytes); rustls must take all of it.
        session.set_buffer_limit(None);
        Ok(Tls {
            session,
            kernel_tried: false,
            rx: Records::default(),
            fresh: true,
            sniff: Vec::new(),
            closing: false,
            plain_in_flight: 0,
            spare: Vec::new(),
        })
    }

    /// The handshake is done and the hand-off to kernel TLS not yet decided.
    pub(crate) fn kernel_candidate(&self) -> bool {
        !self.kernel_tried && !self.session.is_handshaking()
    }

    /// The client's bytes received so far end on a TLS record boundary.
    pub(crate) fn rx_boundary(&self) -> bool {
        self.rx.at_boundary()
    }

    /// The rustls session (for the hand-off to the kernel).
    pub(super) fn into_session(self) -> ServerConnection {
        self.session
    }

    /// Still handshaking.
    pub(crate) fn handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// The first bytes received, when they were not TLS (plain HTTP).
    pub(crate) fn sniffed(&self) -> &[u8] {
        &self.sniff
    }

    /// TLS records are waiting to be sent (handshake, tickets, alerts).
    pub(crate) fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    /// Feeds received ciphertext to the session and appends the plaintext it
    /// yields to `plain`.
    pub(crate) fn absorb(
        &mut self,
        mut cipher: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Absorbed, Refused> {
        let was_handshaking = self.session.is_handshaking();
        if self.fresh && !cipher.is_empty() {
            if self.sniff.is_empty() && cipher[0] == HANDSHAKE {
                self.fresh = false;
            } else {
                // Not TLS: plain HTTP, perhaps split across segments.
                self.sniff.extend_from_slice(cipher);
                return match detect(&self.sniff) {
                    Detected::Http => Err(Refused::PlainHttp),
                    Detected::NeedMore => Ok(Absorbed {
                        closed: false,
                        handshake_done: false,
                    }),
                    Detected::Line => Err(Refused::Bad("not a TLS handshake record".into())),
                };
            }
        }
        self.rx.advance(cipher);
        let mut closed = false;
        while !cipher.is_empty() {
            let took = self
                .session
                .read_tls(&mut cipher)
                .map_err(|e| Refused::Bad(e.to_string()))?;
            if took == 0 {
                // Cannot happen with input left (rustls errs when full); never
                // spin on it.
                return Err(Refused::Bad("TLS input not taken".into()));
            }
            let state = self
                .session
                .process_new_packets()
                .map_err(|e| Refused::Bad(e.to_string()))?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = plain.len();
                plain.resize(at + n, 0);
                self.session
                    .reader()
                    .read_exact(&mut plain[at..])
                    .map_err(|e| Refused::Bad(e.to_string()))?;
            }
            if state.peer_has_closed() {
                closed = true;
            }
        }
        Ok(Absorbed {
            closed,
            handshake_done: was_handshaking && !self.session.is_handshaking(),
        })
    }

    /// The TLS records waiting to be sent (handshake messages, alerts).
    pub(crate) fn output(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.spare);
        out.clear();
        while self.session.wants_write() {
            if self.session.write_tls(&mut out).is_err() {
                break;
            }
        }
        self.plain_in_flight = 0;
        out
    }

    /// Encrypts the next piece of `pending` (a file piece at most [`CHUNK`]
    /// file bytes at a time; the rest goes back to the front), reading file
    /// bytes from `file`; with `last`, a `close_notify` follows the reply's end.
    /// Returns the ciphertext to send.
    pub(crate) fn encrypt_next(
        &mut self,
        port: &Port,
        pending: &mut VecDeque<Piece>,
        file: Option<&File>,
        last: bool,
    ) -> io::Result<Vec<u8>> {
        let mut plain = 0u64;
        match pending.pop_front() {
            None => {}
            Some(Piece::Bytes(b)) => {
                self.session.writer().write_all(&b)?;
                plain += b.len() as u64;
            }
            Some(Piece::File {
                head,
                offset,
                len,
                tail,
            }) => {
                self.session.writer().write_all(&head)?;
                plain += head.len() as u64;
                let n = len.min(CHUNK as u64) as usize;
                if n > 0 {
                    let Some(file) = file else {
                        return Err(io::Error::other("a file piece without a file"));
                    };
                    FILE_BUF.with(|buf| -> io::Result<()> {
                        let mut buf = buf.borrow_mut();
                        buf.resize(CHUNK, 0);
                        read_chunk(port, file, &mut buf[..n], offset)?;
                        self.session.writer().write_all(&buf[..n])
                    })?;
                    plain += n as u64;
                }
                if len > n as u64 {
                    pending.push_front(Piece::File {
                        head: Vec::new(),
                        offset: offset + n as u64,
                        len: len - n as u64,
                        tail,
                    });
                } else {
                    self.session.writer().write_all(&tail)?;
                    plain += tail.len() as u64;
                }
            }
        }
        if last && pending.is_empty() {
            self.close_notify();
        }
        let out = self.output();
        self.plain_in_flight = plain;
        Ok(out)
    }

    /// Queues our `close_notify` (the end of what we send) unless it is
    /// queued already; false when it was, or the handshake never finished.
    pub(crate) fn close_notify(&mut self) -> bool {
        if self.closing || self.session.is_handshaking() {
            return false;
        }
        self.closing = true;
        self.session.send_close_notify();
        true
    }

    /// The plaintext bytes of the `Send` just completed, and its buffer back.
    pub(crate) fn sent(&mut self, buf: Vec<u8>) -> u64 {
        if buf.capacity() <= 2 * CHUNK + 4096 {
            self.spare = buf;
        }
        std::mem::take(&mut self.plain_in_flight)
    }
}

/// Follows the record framing of a byte stream (5-byte headers, each
/// followed by as many bytes as its length field says) without keeping it.
#[derive(Debug, Default)]
struct Records {
    /// Bytes of the current record's body still to come.
    left: usize,
    /// The current header's bytes so far (0 to 4; at 5 it is read).
    header: [u8; 5],
    have: usize,
}

impl Records {
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.have = 0;
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.left == 0 && self.have == 0
    }
}

/// Adds `line` (a header field and its CRLF) to the response head at the
/// start of `pieces`, before the blank line that ends it; a reply whose first
/// piece holds no complete head is left alone. The transport's headers
/// (HSTS) are the driver's, so that handlers need not know about TLS.
pub(crate) fn add_header(pieces: &mut VecDeque<Piece>, line: &[u8]) {
    let head = match pieces.front_mut() {
        Some(Piece::Bytes(b)) => b,
        Some(Piece::File { head, .. }) => head,
        None => return,
    };
    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
        let at = end + 2;
        head.splice(at..at, line.iter().copied());
    }
}

/// nginx's answer to plain HTTP on an HTTPS port (`400`, closing).
pub(crate) fn plain_http_reply() -> Vec<u8> {
    let body: &[u8] = b"<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n\
<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n\
<center>The plain HTTP request was sent to HTTPS port</center>\r\n<hr><center>iocomp</center>\r\n</body>\r\n</html>\r\n";
    let mut out = format!(
        "HTTP/1.1 400 Bad Request\r\nServer: iocomp\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
