//! `iocomp bench`: its request count agrees with the server's access log
//! on both protocols, a wrong expected size is caught, and over TLS every
//! response is checked, each connection keeps its session (or, with
//! `--new-connection`, every request has a handshake of its own), and
//! `--tls-suite` restricts the offer.

use crate::harness::{
    bench, code, json_number, pseudo_random, stderr, Ca, HttpsSite, Server, TempTree,
};

#[test]
fn bench_counts_what_the_access_log_counts_on_both_protocols() {
    let tree = TempTree::new();
    tree.file("b.bin", &pseudo_random(5, 100_000));
    let server = Server::start(tree.root(), &[]);
    let conns = 4;
    let o = bench(&[
        &server.url("b.bin"),
        "-c",
        "4",
        "-d",
        "1s",
        "-t",
        "1",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let n = json_number(&o.stdout, "requests");
    assert!(n > 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"errors\":{}"));
    let logged = server.settled_log(|log| log.len() as u64 >= n).len() as u64;
    assert!(
        logged >= n && logged <= n + conns,
        "bench {n}, log {logged}"
    );

    let o = bench(&[
        "--raw",
        &format!("{}/b.bin", server.addr()),
        "-c",
        "4",
        "-d",
        "1s",
        "-t",
        "1",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let m = json_number(&o.stdout, "requests");
    assert!(m > 0);
    // One HEAD learned the size, then the line-protocol requests.
    let raw_logged = server
        .settled_log(|log| log.len() as u64 >= logged + 1 + m)
        .len() as u64
        - logged
        - 1;
    assert!(
        raw_logged >= m && raw_logged <= m + conns,
        "bench {m}, log {raw_logged}"
    );

    // A wrong expected size is caught, not counted as fast.
    let o = bench(&[
        "--raw",
        "--size",
        "99999",
        &format!("{}/b.bin", server.addr()),
        "-c",
        "1",
        "-d",
        "300ms",
        "--json",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("more bytes than the file"), "{out}");
}

#[test]
fn bench_measures_an_https_server() {
    let s = HttpsSite::new(&[("k.bin", pseudo_random(2, 1024))]);
    let url = s.url("k.bin");
    let o = bench(&[
        &url,
        "-c",
        "2",
        "-t",
        "1",
        "-d",
        "1s",
        "--json",
        "--cacert",
        &s.cacert(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let requests = json_number(&o.stdout, "requests");
    assert!(requests >= 2, "{out}");
    // Every response was checked (exactly its Content-Length, status 200),
    // the bodies add up, and each connection kept its TLS session.
    assert!(out.contains("\"errors\":{}"), "{out}");
    assert_eq!(
        json_number(&o.stdout, "body_bytes"),
        requests * 1024,
        "{out}"
    );
    assert_eq!(json_number(&o.stdout, "connects"), 2, "{out}");
    // An unknown CA: no request succeeds, and the error says why.
    let other = Ca::new(&s.tree.dir("other"), "other");
    let o = bench(&[
        &url,
        "-c",
        "1",
        "-d",
        "300ms",
        "--json",
        "--cacert",
        &other.pem.display().to_string(),
    ]);
    assert_ne!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    s.server.signal(libc::SIGTERM);
}

/// `bench --new-connection`: every request on a connection of its own (a
/// full TLS handshake each: connects ≥ requests, and every response still
/// checked), and `--tls-suite` restricts what the client offers (an unknown
/// name is a usage error naming the known ones).
#[test]
fn bench_new_connection_per_request_and_one_cipher_suite() {
    let s = HttpsSite::new(&[("k.bin", pseudo_random(3, 1024))]);
    let url = s.url("k.bin");
    let o = bench(&[
        &url,
        "-c",
        "2",
        "-t",
        "1",
        "-d",
        "1s",
        "--json",
        "--new-connection",
        "--tls-suite",
        "TLS13_AES_128_GCM_SHA256",
        "--cacert",
        &s.cacert(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let requests = json_number(&o.stdout, "requests");
    assert!(requests >= 4, "{out}");
    assert!(out.contains("\"errors\":{}"), "{out}");
    assert_eq!(
        json_number(&o.stdout, "body_bytes"),
        requests * 1024,
        "{out}"
    );
    let connects = json_number(&o.stdout, "connects");
    assert!(
        connects >= requests,
        "{connects} connections for {requests} requests: {out}"
    );
    let o = bench(&[&url, "-d", "100ms", "--tls-suite", "TLS_RC4_128", "-k"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("TLS13_AES_128_GCM_SHA256"),
        "{}",
        stderr(&o)
    );
    s.server.signal(libc::SIGTERM);
}
