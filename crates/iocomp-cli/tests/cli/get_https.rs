//! `iocomp get https://`: against `iocomp serve --tls-bind`, with a CA and
//! certificates made at test time. What curl and wget do is the reference:
//! the download is byte-exact (also with `-c` and `-j`); a certificate that
//! does not chain to a trusted CA, has expired or names another host is an
//! error (exit 6, nothing written) unless `-k`, which warns; `--cacert` and
//! `SSL_CERT_FILE` choose the CAs; SNI names the host; `https_proxy` is used
//! through a `CONNECT` tunnel, so the proxy never sees the request in plain
//! text, and `no_proxy` bypasses it. Failures of the TLS session itself are
//! in `tls_failures`.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::harness::{
    assert_bytes_eq, code, get_with, kill_when, pseudo_random, redirect, serve_tls, stderr, Ca,
    HttpsSite, Scripted, TempTree, EXIT_TLS,
};

#[test]
fn downloads_are_byte_exact_over_tls() {
    let big = pseudo_random(19, 5 * 1024 * 1024 + 333);
    let s = HttpsSite::new(&[
        ("empty.bin", Vec::new()),
        ("k.bin", pseudo_random(1, 1024)),
        ("big.bin", big.clone()),
    ]);
    for (name, want) in [
        ("empty.bin", Vec::new()),
        ("k.bin", pseudo_random(1, 1024)),
        ("big.bin", big),
    ] {
        let o = get_with(&s.dl, &["--cacert", &s.cacert(), &s.url(name)], &[]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        let got = fs::read(s.dl.join(name)).unwrap();
        assert_bytes_eq(&got, &want, name);
        assert!(!s.dl.join(format!("{name}.part")).exists());
    }
    // The same through 127.0.0.1 (the certificate names the address too; no SNI is sent).
    let url = format!("https://127.0.0.1:{}/k.bin", s.tls.port());
    let o = get_with(&s.dl, &["--cacert", &s.cacert(), "-o", "ip.bin", &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        fs::read(s.dl.join("ip.bin")).unwrap(),
        pseudo_random(1, 1024)
    );
    let _ = &s.tree;
    s.server.signal(libc::SIGTERM);
}

#[test]
fn resume_and_parallel_ranges_are_byte_exact_over_tls() {
    let big = pseudo_random(7, 3 * 1024 * 1024 + 17);
    let s = HttpsSite::new(&[("big.bin", big.clone())]);
    // -c continues a prefix in place with a Range request: a prefix whose
    // bytes differ from the server's stays as it is, so the result proves
    // that only the rest was fetched.
    let prefix = vec![0xA5u8; 1024 * 1024 + 5];
    fs::write(s.dl.join("big.bin"), &prefix).unwrap();
    let o = get_with(
        &s.dl,
        &["-c", "--cacert", &s.cacert(), &s.url("big.bin")],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut want = prefix.clone();
    want.extend_from_slice(&big[prefix.len()..]);
    assert_bytes_eq(&fs::read(s.dl.join("big.bin")).unwrap(), &want, "-c");

    // -j 4: four ranges on four TLS connections.
    let o = get_with(
        &s.dl,
        &[
            "-j",
            "4",
            "--cacert",
            &s.cacert(),
            "-o",
            "par.bin",
            &s.url("big.bin"),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_bytes_eq(&fs::read(s.dl.join("par.bin")).unwrap(), &big, "-j 4");
    s.server.signal(libc::SIGTERM);
}

#[test]
fn an_unknown_ca_is_an_error_unless_trusted_or_insecure() {
    let body = pseudo_random(3, 4096);
    let s = HttpsSite::new(&[("f.bin", body.clone())]);
    let other = Ca::new(&s.tree.dir("other"), "other");
    let other_pem = other.pem.display().to_string();
    // The system's CAs (here: SSL_CERT_FILE, another CA) do not vouch for it.
    let o = get_with(&s.dl, &[&s.url("f.bin")], &[("SSL_CERT_FILE", &other_pem)]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not signed by a trusted CA") && stderr(&o).contains("--cacert"),
        "{}",
        stderr(&o)
    );
    assert!(!s.dl.join("f.bin").exists() && !s.dl.join("f.bin.part").exists());
    // Nor does --cacert of another CA.
    let o = get_with(&s.dl, &["--cacert", &other_pem, &s.url("f.bin")], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(!s.dl.join("f.bin").exists());
    // The right CA by SSL_CERT_FILE (the system bundle's place) works.
    let o = get_with(
        &s.dl,
        &["-o", "sys.bin", &s.url("f.bin")],
        &[("SSL_CERT_FILE", &s.cacert())],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("sys.bin")).unwrap(), body);
    // -k downloads, and warns loudly.
    let o = get_with(
        &s.dl,
        &["-k", &s.url("f.bin")],
        &[("SSL_CERT_FILE", &other_pem)],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("WARNING"), "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("f.bin")).unwrap(), body);
    // A --cacert that is no certificate is a TLS error naming the file.
    let junk = s.tree.file("junk.pem", b"not a certificate\n");
    let o = get_with(
        &s.dl,
        &[
            "--cacert",
            &junk.display().to_string(),
            "-o",
            "j.bin",
            &s.url("f.bin"),
        ],
        &[],
    );
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(stderr(&o).contains("junk.pem"), "{}", stderr(&o));
    s.server.signal(libc::SIGTERM);
}

#[test]
fn a_name_mismatch_or_an_expired_certificate_is_an_error_and_sni_picks_the_certificate() {
    let tree = TempTree::new();
    let root = tree.dir("www");
    tree.file("www/f.bin", &pseudo_random(5, 2048));
    let pki = tree.dir("pki");
    let dl = tree.dir("dl");
    let ca = Ca::new(&pki, "ca");
    let cacert = ca.pem.display().to_string();
    // The default certificate names another host; the second names localhost.
    let other = ca.leaf(&pki, "other", &["other.example"], false);
    let local = ca.leaf(&pki, "local", &["localhost"], false);
    let (server, tls) = serve_tls(&root, &[other.clone(), local]);
    // SNI "localhost" picks the second certificate: it verifies.
    let url = format!("https://localhost:{}/f.bin", tls.port());
    let o = get_with(&dl, &["--cacert", &cacert, &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(dl.join("f.bin")).unwrap(), pseudo_random(5, 2048));
    // An address sends no SNI: the default certificate, for another name.
    let url = format!("https://127.0.0.1:{}/f.bin", tls.port());
    let o = get_with(&dl, &["--cacert", &cacert, "-o", "ip.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(stderr(&o).contains("not valid for name"), "{}", stderr(&o));
    // Trusting a CA would not help: no --cacert hint (that is for an unknown issuer).
    assert!(!stderr(&o).contains("--cacert"), "{}", stderr(&o));
    assert!(!dl.join("ip.bin").exists());
    server.signal(libc::SIGTERM);

    // An expired certificate.
    let expired = ca.leaf(&pki, "expired", &["localhost"], true);
    let (server, tls) = serve_tls(&root, &[expired]);
    let url = format!("https://localhost:{}/f.bin", tls.port());
    let o = get_with(&dl, &["--cacert", &cacert, "-o", "exp.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(
        stderr(&o).to_lowercase().contains("expired"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("--cacert"), "{}", stderr(&o));
    assert!(!dl.join("exp.bin").exists());
    // -k takes it.
    let o = get_with(&dl, &["-k", "-o", "exp.bin", &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    server.signal(libc::SIGTERM);
}

/// A CONNECT-only proxy (any other method gets a 405): every request head
/// it gets is in its [`Scripted::requests`]; every byte the client sent
/// through a tunnel is in the second value.
fn connect_proxy() -> (Scripted, Arc<Mutex<Vec<u8>>>) {
    let tunnelled = Arc::new(Mutex::new(Vec::new()));
    let seen = tunnelled.clone();
    let proxy = Scripted::serve(move |c, _, req| {
        let parts: Vec<&str> = req.first_line().split(' ').collect();
        if parts.first() != Some(&"CONNECT") {
            let _ = c.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        let Ok(mut up) = TcpStream::connect(parts[1]) else {
            let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
            return;
        };
        c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .unwrap();
        let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
        let down = thread::spawn(move || {
            let _ = std::io::copy(&mut up2, &mut c2);
            let _ = c2.shutdown(Shutdown::Write);
        });
        let mut buf = [0u8; 16 * 1024];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = up.shutdown(Shutdown::Write);
        let _ = down.join();
    });
    (proxy, tunnelled)
}

#[test]
fn https_proxy_is_used_through_connect_never_in_plain_text() {
    let body = pseudo_random(11, 300_000);
    let s = HttpsSite::new(&[("p.bin", body.clone())]);
    let (proxy, tunnelled) = connect_proxy();
    let proxy_url = format!("http://{}", proxy.addr());
    let heads = || -> Vec<String> {
        proxy
            .requests()
            .iter()
            .map(|r| r.first_line().to_string())
            .collect()
    };
    let o = get_with(
        &s.dl,
        &["--cacert", &s.cacert(), &s.url("p.bin")],
        &[("https_proxy", &proxy_url)],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("p.bin")).unwrap(), body);
    assert_eq!(
        heads(),
        vec![format!("CONNECT localhost:{} HTTP/1.1", s.tls.port())]
    );
    {
        let after = tunnelled.lock().unwrap();
        // Inside the tunnel: a TLS handshake record first, and no request in plain text.
        assert_eq!(after.first(), Some(&0x16), "a TLS record first");
        assert!(
            !after.windows(4).any(|w| w == b"GET "),
            "the request crossed the proxy in plain text"
        );
    }
    // HTTPS_PROXY too; -j 2 opens two tunnels.
    let o = get_with(
        &s.dl,
        &[
            "-j",
            "2",
            "--cacert",
            &s.cacert(),
            "-o",
            "p2.bin",
            &s.url("p.bin"),
        ],
        &[("HTTPS_PROXY", &proxy_url)],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("p2.bin")).unwrap(), body);
    assert!(heads().len() >= 3);
    // no_proxy bypasses it; http_proxy is not for https:// URLs.
    let before = heads().len();
    for env in [
        [
            ("https_proxy", proxy_url.as_str()),
            ("no_proxy", "localhost"),
        ],
        [("http_proxy", proxy_url.as_str()), ("no_proxy", "")],
    ] {
        let _ = fs::remove_file(s.dl.join("p3.bin"));
        let o = get_with(
            &s.dl,
            &["--cacert", &s.cacert(), "-o", "p3.bin", &s.url("p.bin")],
            &env,
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(fs::read(s.dl.join("p3.bin")).unwrap(), body);
    }
    assert_eq!(heads().len(), before, "the proxy was bypassed");
    s.server.signal(libc::SIGTERM);
}

#[test]
fn an_interrupted_https_download_resumes_from_its_part_file() {
    let big = pseudo_random(17, 8 * 1024 * 1024);
    let s = HttpsSite::new(&[("big.bin", big.clone())]);
    let part = s.dl.join("big.bin.part");
    kill_when(
        &s.dl,
        &[
            "get",
            "-q",
            "--limit-rate",
            "2M",
            "--cacert",
            &s.cacert(),
            &s.url("big.bin"),
        ],
        || fs::metadata(&part).map_or(0, |m| m.len()) >= 512 * 1024,
    );
    // The .part (its .meta names the version) is continued, not fetched
    // again: bytes put in it meanwhile stay, so the result shows the Range.
    let have = fs::metadata(&part).unwrap().len() as usize;
    assert!(have < big.len(), "killed before the end");
    fs::write(&part, vec![0x5Au8; have]).unwrap();
    let o = get_with(
        &s.dl,
        &["-c", "--cacert", &s.cacert(), &s.url("big.bin")],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut want = vec![0x5Au8; have];
    want.extend_from_slice(&big[have..]);
    assert_bytes_eq(
        &fs::read(s.dl.join("big.bin")).unwrap(),
        &want,
        "-c of .part",
    );
    assert!(!part.exists());
    s.server.signal(libc::SIGTERM);
}

#[test]
fn the_insecure_warning_is_shown_only_when_tls_is_used() {
    let body = pseudo_random(29, 3_000);
    let s = HttpsSite::new(&[("w.bin", body.clone())]);
    // Every URL http://: -k changes nothing, so no warning.
    let plain = format!("http://127.0.0.1:{}/w.bin", s.server.addr().port());
    let o = get_with(&s.dl, &["-k", "-o", "p.bin", &plain], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains("WARNING"), "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("p.bin")).unwrap(), body);
    // An https:// URL: the warning.
    let o = get_with(&s.dl, &["-k", "-o", "s.bin", &s.url("w.bin")], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("WARNING"), "{}", stderr(&o));
    // An http:// URL redirected to https://: the warning too.
    let hop = Scripted::canned(redirect(&s.url("w.bin")), Duration::ZERO);
    let url = hop.url("old.bin");
    let o = get_with(&s.dl, &["-k", "-o", "r.bin", &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("WARNING").count(), 1, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("r.bin")).unwrap(), body);
    s.server.signal(libc::SIGTERM);
}

#[test]
fn a_non_ascii_host_is_refused_before_any_lookup_or_connect() {
    // An internationalized name needs IDNA (its xn-- form) for DNS, SNI and
    // the certificate check; it is refused up front, never sent to a proxy.
    let body = pseudo_random(31, 1_000);
    let s = HttpsSite::new(&[("i.bin", body)]);
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let proxy = format!("http://{}", trap.local_addr().unwrap());
    let o = get_with(
        &s.dl,
        &[
            "--cacert",
            &s.cacert(),
            "-o",
            "i.bin",
            "https://bücher.example/i.bin",
        ],
        &[("https_proxy", &proxy)],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("non-ASCII"), "{}", stderr(&o));
    assert!(trap.accept().is_err(), "the name went to the proxy");
    // A Location to such a host: a network failure of that download (exit
    // 3), not a usage error.
    let hop = Scripted::canned(
        &b"HTTP/1.1 302 Found\r\nLocation: https://b\xc3\xbccher.example/i.bin\r\nContent-Length: 0\r\n\r\n"[..],
        Duration::ZERO,
    );
    let url = hop.url("i.bin");
    let o = get_with(&s.dl, &["-o", "r.bin", &url], &[("https_proxy", &proxy)]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("non-ASCII"), "{}", stderr(&o));
    assert!(trap.accept().is_err(), "the name went to the proxy");
    s.server.signal(libc::SIGTERM);
}
