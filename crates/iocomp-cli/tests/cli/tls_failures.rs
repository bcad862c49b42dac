//! Failures of `iocomp get https://` in the TLS session itself, as curl
//! and RFC 8446 have them: a server that does not speak TLS, or never
//! answers; a proxy that refuses the tunnel; a close-delimited body needs
//! `close_notify`; an https:// to http:// redirect is a downgrade, refused
//! unless `--allow-downgrade`; the handshake has one deadline that trickled
//! bytes do not reset; the client says `close_notify` when done and alerts
//! on a TLS error.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use crate::harness::{
    code, get_with, pseudo_random, redirect, stderr, tls_server, Ca, HttpsSite, Scripted, TlsEnd,
    EXIT_TLS,
};

/// A TLS server for `localhost` signed by `ca`: answers each request with
/// `reply`, then closes with or without `close_notify`.
fn tls_site(ca: &Ca, reply: &'static [u8], close_notify: bool) -> SocketAddr {
    let end = if close_notify {
        TlsEnd::CloseNotify
    } else {
        TlsEnd::Abrupt
    };
    tls_server(ca, reply, end).0
}

#[test]
fn tls_failures_are_clear_errors_and_redirects_reach_https() {
    let body = pseudo_random(13, 10_000);
    let s = HttpsSite::new(&[("r.bin", body.clone())]);
    let cacert = s.cacert();
    // https:// to the plain HTTP port: the handshake fails (exit 6), nothing is written.
    let url = format!("https://localhost:{}/r.bin", s.server.addr().port());
    let o = get_with(&s.dl, &["--cacert", &cacert, "-o", "plain.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));
    assert!(!s.dl.join("plain.bin").exists() && !s.dl.join("plain.bin.part").exists());
    // A server that answers the ClientHello with plain text.
    let junk = Scripted::canned(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(),
        Duration::ZERO,
    );
    let url = format!("https://localhost:{}/x", junk.addr().port());
    let o = get_with(&s.dl, &["--cacert", &cacert, "-o", "junk.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    // A server that never answers the ClientHello: --timeout cuts it (exit 3).
    let mute = Scripted::canned(Vec::new(), Duration::from_secs(20));
    let url = format!("https://localhost:{}/x", mute.addr().port());
    let o = get_with(
        &s.dl,
        &[
            "--cacert",
            &cacert,
            "--timeout",
            "1s",
            "-o",
            "mute.bin",
            &url,
        ],
        &[],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    // A proxy that refuses the tunnel: its status, exit 4.
    let refuse = Scripted::canned(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
        Duration::ZERO,
    );
    let o = get_with(
        &s.dl,
        &["--cacert", &cacert, "-o", "ref.bin", &s.url("r.bin")],
        &[("https_proxy", &format!("http://{}", refuse.addr()))],
    );
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    // An http:// redirect to https:// is followed.
    let hop = Scripted::canned(
        format!(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
            s.url("r.bin")
        )
        .into_bytes(),
        Duration::ZERO,
    );
    let url = hop.url("old.bin");
    let o = get_with(&s.dl, &["--cacert", &cacert, "-o", "red.bin", &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("red.bin")).unwrap(), body);
    s.server.signal(libc::SIGTERM);
}

#[test]
fn a_close_delimited_body_needs_close_notify() {
    let s = HttpsSite::new(&[]);
    let reply: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello, until the close";
    // With close_notify the close ends the body; without, it may be a cut:
    // an error, and nothing renamed into place.
    let clean = tls_site(&s.ca, reply, true);
    let url = format!("https://localhost:{}/c.txt", clean.port());
    let o = get_with(&s.dl, &["--cacert", &s.cacert(), &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        fs::read(s.dl.join("c.txt")).unwrap(),
        b"hello, until the close"
    );
    let cut = tls_site(&s.ca, reply, false);
    let url = format!("https://localhost:{}/cut.txt", cut.port());
    let o = get_with(&s.dl, &["--cacert", &s.cacert(), &url], &[]);
    // A TLS failure (the peer broke the protocol's close), as documented.
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(stderr(&o).contains("close_notify"), "{}", stderr(&o));
    assert!(!s.dl.join("cut.txt").exists());
    // A Content-Length body is whole without close_notify.
    let framed = tls_site(
        &s.ca,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        false,
    );
    let url = format!("https://localhost:{}/f.txt", framed.port());
    let o = get_with(&s.dl, &["--cacert", &s.cacert(), &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("f.txt")).unwrap(), b"hello");
    // A close-delimited 206 whose authenticated Content-Range end was
    // reached is whole without close_notify: nothing can be missing.
    let ranged = tls_site(
        &s.ca,
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-9/10\r\n\
          Connection: close\r\n\r\nworld",
        false,
    );
    fs::write(s.dl.join("r.txt"), b"hello").unwrap();
    let url = format!("https://localhost:{}/r.txt", ranged.port());
    let o = get_with(&s.dl, &["-c", "--cacert", &s.cacert(), &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("r.txt")).unwrap(), b"helloworld");
    s.server.signal(libc::SIGTERM);
}

#[test]
fn an_https_redirect_to_http_is_refused_unless_allowed() {
    // apt refuses it: a TLS-authenticated download must not go on in plain
    // text; curl follows it, which --allow-downgrade asks for (with a warning).
    let body = pseudo_random(23, 5_000);
    let s = HttpsSite::new(&[("p.bin", body.clone())]);
    let plain = format!("http://127.0.0.1:{}/p.bin", s.server.addr().port());
    let reply: &'static [u8] = Box::leak(redirect(&plain).into_boxed_slice());
    let tls = tls_site(&s.ca, reply, true);
    let url = format!("https://localhost:{}/p.bin", tls.port());
    let o = get_with(&s.dl, &["--cacert", &s.cacert(), "-o", "d.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains(&url) && e.contains(&plain) && e.contains("--allow-downgrade"),
        "{e}"
    );
    assert!(!s.dl.join("d.bin").exists() && !s.dl.join("d.bin.part").exists());
    let o = get_with(
        &s.dl,
        &[
            "--allow-downgrade",
            "--cacert",
            &s.cacert(),
            "-o",
            "d.bin",
            &url,
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("WARNING"), "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("d.bin")).unwrap(), body);
    s.server.signal(libc::SIGTERM);
}

#[test]
fn the_tls_handshake_has_one_deadline_that_trickled_bytes_do_not_reset() {
    // curl's --connect-timeout covers the TLS handshake: a server that
    // answers the ClientHello one byte at a time (each well within
    // --timeout) is cut at --connect-timeout, as a TLS failure.
    let s = HttpsSite::new(&[]);
    // A handshake record header announcing 16 KiB, then a byte every 200 ms
    // for at most 12 s.
    let trickle = Scripted::serve(|c, _, _| {
        let mut bytes = vec![0x16u8, 0x03, 0x03, 0x40, 0x00];
        bytes.resize(5 + 60, 0x02);
        for x in bytes {
            if c.write_all(&[x]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let addr = trickle.addr();
    let url = format!("https://localhost:{}/h.bin", addr.port());
    let o = get_with(
        &s.dl,
        &[
            "--cacert",
            &s.cacert(),
            "--connect-timeout",
            "1s",
            "--timeout",
            "5s",
            "-o",
            "h.bin",
            &url,
        ],
        &[],
    );
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("TLS handshake timed out"),
        "{}",
        stderr(&o)
    );
    assert!(!s.dl.join("h.bin").exists());
    s.server.signal(libc::SIGTERM);
}

#[test]
fn the_client_says_close_notify_when_done_and_alerts_on_a_tls_error() {
    // RFC 8446 §6.1: each party MUST send close_notify before closing its
    // write side; §6.2: a fatal error is told with an alert.
    let s = HttpsSite::new(&[]);
    let (addr, seen) = tls_server(
        &s.ca,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        TlsEnd::Witness,
    );
    let url = format!("https://localhost:{}/n.txt", addr.port());
    let o = get_with(&s.dl, &["--cacert", &s.cacert(), &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("n.txt")).unwrap(), b"hello");
    let how = seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(how, "close_notify");
    // Another CA trusted: the issuer is unknown, and the client says so
    // with an alert.
    let other = Ca::new(&s.dl, "other");
    let (addr, seen) = tls_server(
        &s.ca,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        TlsEnd::Witness,
    );
    let url = format!("https://localhost:{}/a.txt", addr.port());
    let o = get_with(&s.dl, &["--cacert", other.pem.to_str().unwrap(), &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    let how = seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(how.contains("alert"), "{how}");
    s.server.signal(libc::SIGTERM);
}
