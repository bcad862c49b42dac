//! HTTPS and the line protocol inside TLS (issue 19): curl (`--cacert`) and
//! a rustls client talk to a TLS listener beside a plain one; what they get
//! is what a plain connection gets, byte for byte. HSTS and the redirect to
//! HTTPS; sessions end with `close_notify`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::tls::*;
use crate::harness::Tree;

#[test]
fn curl_gets_exact_bodies_of_every_size() {
    let tree = Tree::new("tls-sizes");
    let big = crate::harness::pseudo_random(7, 3 * 1024 * 1024 + 17);
    let kib = crate::harness::pseudo_random(3, 1024);
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
    let data = crate::harness::pseudo_random(11, 10_000);
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
    let data = crate::harness::pseudo_random(5, 200_000);
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
fn hsts_is_sent_over_tls_only() {
    let tree = Tree::new("tls-hsts");
    tree.file("x", b"x")
        .file("big", &crate::harness::pseudo_random(4, 100_000));
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
    assert_eq!(
        body,
        &crate::harness::pseudo_random(4, 100_000)[10..20],
        "the body is untouched"
    );
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

/// A file whose pages are not cached is served whole over TLS (the cold
/// pages are read off the page-cache path), and as often as asked.
#[test]
fn a_file_out_of_the_page_cache_is_served_whole() {
    let tree = Tree::new("tls-cold");
    let big = crate::harness::pseudo_random(11, 2 * 1024 * 1024 + 5);
    tree.file("cold.bin", &big);
    let pki = pki(&tree);
    let (_running, addr) = serve_tls(&tree, &pki, |_| {});
    for _ in 0..2 {
        crate::harness::evict(&tree.path("cold.bin"));
        let (body, _) = curl(&pki, addr, &[&url(addr, "/cold.bin")]);
        assert!(body == big, "the cold body differs ({} bytes)", body.len());
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
