//! TLS handshakes: what is not a handshake (plain HTTP on the TLS port, a
//! ClientHello on the plain one, garbage, a handshake cut at every byte) is
//! answered or cut without disturbing anyone; refused handshakes get their
//! alert; the header timeout spans the handshake; bad certificate files are
//! named.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iocomp_server::{CertFiles, Config};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::harness::tls::*;
use crate::harness::Tree;

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
    site.running.assert_all_closed("after the handshakes");
}

#[test]
fn garbage_and_stalled_handshakes_are_cut_without_disturbing_others() {
    let tree = Tree::new("tls-bad");
    let data = crate::harness::pseudo_random(9, 500_000);
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

    assert!(
        crate::harness::client::closed_within(&mut garbage, Duration::from_secs(30)).0,
        "garbage ClientHello is cut"
    );
    assert!(
        crate::harness::client::closed_within(&mut stalled, Duration::from_secs(30)).0,
        "stalled handshake is cut"
    );
    assert!(
        crate::harness::client::closed_within(&mut silent, Duration::from_secs(30)).0,
        "silent client is cut"
    );
    drop((garbage, stalled, silent, good));
    running.assert_all_closed("after the handshakes");
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
            crate::harness::client::closed_within(&mut s, Duration::from_secs(30)).0,
            "cut after {n} bytes: the server closes"
        );
    }
    // Cut after the whole ClientHello, with the server's flight unread.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&hello).unwrap();
    drop(s);
    running.assert_all_closed("after the handshakes");
    // And the server still serves.
    let (body, _) = curl(&pki, addr, &[&url(addr, "/x")]);
    assert_eq!(body, b"x");
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
    let _timed = crate::harness::timed();
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
    let out = crate::harness::run::run_bounded(
        Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(addr.to_string())
            .args(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]),
        None,
        Duration::from_secs(20),
    );
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

/// The header timeout of a new connection counts from its start, across the
/// handshake: the server's own handshake-end messages (session tickets) do not
/// restart it. A ClientHello sent slowly (2.4 s of a 3 s header timeout), then
/// no request: cut about 3 s after the start, not 3 s after the handshake.
#[test]
fn the_header_timeout_spans_the_handshake() {
    let _timed = crate::harness::timed();
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
