//! `iocomp get https://` (issue 19, the client): against `iocomp serve
//! --tls-bind`, with a CA and certificates made at test time (rcgen). What
//! curl and wget do is the reference: the download is byte-exact (also with
//! `-c` and `-j`); a certificate that does not chain to a trusted CA, has
//! expired or names another host is an error (exit 6, nothing written)
//! unless `-k`, which warns; `--cacert` and `SSL_CERT_FILE` choose the CAs;
//! SNI names the host; `https_proxy` is used through a `CONNECT` tunnel, so
//! the proxy never sees the request in plain text, and `no_proxy` bypasses it.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{pseudo_random, Server, TempTree};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The exit code of a TLS failure, as `iocomp get --help` documents it.
const EXIT_TLS: i32 = 6;

/// A CA (its PEM file) that signs leaf certificates.
struct Ca {
    pem: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(dir: &Path, tag: &str) -> Ca {
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

/// A leaf for `names` signed by `ca`: its certificate and key files.
fn leaf(ca: &Ca, dir: &Path, tag: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
    let mut p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{tag}-cert.pem")),
        dir.join(format!("{tag}-key.pem")),
    );
    fs::write(&c, cert.pem()).unwrap();
    fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// `iocomp serve ROOT` with a TLS listener for each (cert, key) pair given
/// (the first is the default): the server and its TLS address.
fn serve_tls(root: &Path, pairs: &[(PathBuf, PathBuf)]) -> (Server, SocketAddr) {
    let mut args: Vec<String> = vec!["--tls-bind".into(), "127.0.0.1:0".into()];
    for (c, k) in pairs {
        args.push("--tls-cert".into());
        args.push(c.display().to_string());
        args.push("--tls-key".into());
        args.push(k.display().to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(root, &refs);
    let plain = server.addr();
    let line = server
        .wait_stdout_line(common::IO_TIMEOUT, |l| {
            l.starts_with("listening on ") && !l.ends_with(&plain.to_string())
        })
        .expect("a second `listening on` line (the TLS listener)");
    let tls = line["listening on ".len()..].trim().parse().unwrap();
    (server, tls)
}

/// `iocomp get -q ARGS` in `dir`, with `env` and no proxy but what `env` sets.
fn get(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = common::iocomp_command();
    for k in ["https_proxy", "HTTPS_PROXY", "SSL_CERT_FILE"] {
        c.env_remove(k);
    }
    c.arg("get")
        .arg("-q")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir);
    common::output_within(c, Duration::from_secs(120))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A served tree, a CA and a certificate for `localhost` and 127.0.0.1.
struct Setup {
    tree: TempTree,
    dl: PathBuf,
    ca: Ca,
    server: Server,
    tls: SocketAddr,
}

impl Setup {
    fn new(files: &[(&str, Vec<u8>)]) -> Setup {
        let tree = TempTree::new();
        let root = tree.dir("www");
        for (name, body) in files {
            tree.file(&format!("www/{name}"), body);
        }
        let pki = tree.dir("pki");
        let dl = tree.dir("dl");
        let ca = ca(&pki, "good");
        let pair = leaf(&ca, &pki, "good", &["localhost", "127.0.0.1"], false);
        let (server, tls) = serve_tls(&root, &[pair]);
        Setup {
            tree,
            dl,
            ca,
            server,
            tls,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("https://localhost:{}/{name}", self.tls.port())
    }

    fn cacert(&self) -> String {
        self.ca.pem.display().to_string()
    }
}

#[test]
fn downloads_are_byte_exact_over_tls() {
    let big = pseudo_random(19, 5 * 1024 * 1024 + 333);
    let s = Setup::new(&[
        ("empty.bin", Vec::new()),
        ("k.bin", pseudo_random(1, 1024)),
        ("big.bin", big.clone()),
    ]);
    for (name, want) in [
        ("empty.bin", Vec::new()),
        ("k.bin", pseudo_random(1, 1024)),
        ("big.bin", big),
    ] {
        let o = get(&s.dl, &["--cacert", &s.cacert(), &s.url(name)], &[]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        let got = fs::read(s.dl.join(name)).unwrap();
        common::assert_bytes_eq(&got, &want, name);
        assert!(!s.dl.join(format!("{name}.part")).exists());
    }
    // The same through 127.0.0.1 (the certificate names the address too; no SNI is sent).
    let url = format!("https://127.0.0.1:{}/k.bin", s.tls.port());
    let o = get(&s.dl, &["--cacert", &s.cacert(), "-o", "ip.bin", &url], &[]);
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
    let s = Setup::new(&[("big.bin", big.clone())]);
    // -c continues a prefix in place with a Range request: a prefix whose
    // bytes differ from the server's stays as it is, so the result proves
    // that only the rest was fetched.
    let prefix = vec![0xA5u8; 1024 * 1024 + 5];
    fs::write(s.dl.join("big.bin"), &prefix).unwrap();
    let o = get(
        &s.dl,
        &["-c", "--cacert", &s.cacert(), &s.url("big.bin")],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut want = prefix.clone();
    want.extend_from_slice(&big[prefix.len()..]);
    common::assert_bytes_eq(&fs::read(s.dl.join("big.bin")).unwrap(), &want, "-c");

    // -j 4: four ranges on four TLS connections.
    let o = get(
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
    common::assert_bytes_eq(&fs::read(s.dl.join("par.bin")).unwrap(), &big, "-j 4");
    s.server.signal(libc::SIGTERM);
}

#[test]
fn an_unknown_ca_is_an_error_unless_trusted_or_insecure() {
    let body = pseudo_random(3, 4096);
    let s = Setup::new(&[("f.bin", body.clone())]);
    let other = ca(&s.tree.dir("other"), "other");
    let other_pem = other.pem.display().to_string();
    // The system's CAs (here: SSL_CERT_FILE, another CA) do not vouch for it.
    let o = get(&s.dl, &[&s.url("f.bin")], &[("SSL_CERT_FILE", &other_pem)]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not signed by a trusted CA") && stderr(&o).contains("--cacert"),
        "{}",
        stderr(&o)
    );
    assert!(!s.dl.join("f.bin").exists() && !s.dl.join("f.bin.part").exists());
    // Nor does --cacert of another CA.
    let o = get(&s.dl, &["--cacert", &other_pem, &s.url("f.bin")], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(!s.dl.join("f.bin").exists());
    // The right CA by SSL_CERT_FILE (the system bundle's place) works.
    let o = get(
        &s.dl,
        &["-o", "sys.bin", &s.url("f.bin")],
        &[("SSL_CERT_FILE", &s.cacert())],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("sys.bin")).unwrap(), body);
    // -k downloads, and warns loudly.
    let o = get(
        &s.dl,
        &["-k", &s.url("f.bin")],
        &[("SSL_CERT_FILE", &other_pem)],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("WARNING"), "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("f.bin")).unwrap(), body);
    // A --cacert that is no certificate is a TLS error naming the file.
    let junk = s.tree.file("junk.pem", b"not a certificate\n");
    let o = get(
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
    let ca = ca(&pki, "ca");
    let cacert = ca.pem.display().to_string();
    // The default certificate names another host; the second names localhost.
    let other = leaf(&ca, &pki, "other", &["other.example"], false);
    let local = leaf(&ca, &pki, "local", &["localhost"], false);
    let (server, tls) = serve_tls(&root, &[other.clone(), local]);
    // SNI "localhost" picks the second certificate: it verifies.
    let url = format!("https://localhost:{}/f.bin", tls.port());
    let o = get(&dl, &["--cacert", &cacert, &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(dl.join("f.bin")).unwrap(), pseudo_random(5, 2048));
    // An address sends no SNI: the default certificate, for another name.
    let url = format!("https://127.0.0.1:{}/f.bin", tls.port());
    let o = get(&dl, &["--cacert", &cacert, "-o", "ip.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(stderr(&o).contains("not valid for name"), "{}", stderr(&o));
    // Trusting a CA would not help: no --cacert hint (that is for an unknown issuer).
    assert!(!stderr(&o).contains("--cacert"), "{}", stderr(&o));
    assert!(!dl.join("ip.bin").exists());
    server.signal(libc::SIGTERM);

    // An expired certificate.
    let expired = leaf(&ca, &pki, "expired", &["localhost"], true);
    let (server, tls) = serve_tls(&root, &[expired]);
    let url = format!("https://localhost:{}/f.bin", tls.port());
    let o = get(&dl, &["--cacert", &cacert, "-o", "exp.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(
        stderr(&o).to_lowercase().contains("expired"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("--cacert"), "{}", stderr(&o));
    assert!(!dl.join("exp.bin").exists());
    // -k takes it.
    let o = get(&dl, &["-k", "-o", "exp.bin", &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    server.signal(libc::SIGTERM);
}

/// What the test proxy saw: the first line of each request head, and every
/// byte the client sent after it.
#[derive(Default)]
struct Seen {
    heads: Vec<String>,
    after: Vec<u8>,
}

/// A CONNECT-only proxy on a thread: any other method gets a 405.
fn proxy() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let seen = s2.clone();
            thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let first = text.lines().next().unwrap_or("").to_string();
                seen.lock().unwrap().heads.push(first.clone());
                let parts: Vec<&str> = first.split(' ').collect();
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
                            seen.lock().unwrap().after.extend_from_slice(&buf[..n]);
                            if up.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = up.shutdown(Shutdown::Write);
                let _ = down.join();
            });
        }
    });
    (addr, seen)
}

#[test]
fn https_proxy_is_used_through_connect_never_in_plain_text() {
    let body = pseudo_random(11, 300_000);
    let s = Setup::new(&[("p.bin", body.clone())]);
    let (paddr, seen) = proxy();
    let proxy_url = format!("http://{paddr}");
    let o = get(
        &s.dl,
        &["--cacert", &s.cacert(), &s.url("p.bin")],
        &[("https_proxy", &proxy_url)],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("p.bin")).unwrap(), body);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.heads,
            vec![format!("CONNECT localhost:{} HTTP/1.1", s.tls.port())]
        );
        // Inside the tunnel: a TLS handshake record first, and no request in plain text.
        assert_eq!(seen.after.first(), Some(&0x16), "a TLS record first");
        assert!(
            !seen.after.windows(4).any(|w| w == b"GET "),
            "the request crossed the proxy in plain text"
        );
    }
    // HTTPS_PROXY too; -j 2 opens two tunnels.
    let o = get(
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
    assert!(seen.lock().unwrap().heads.len() >= 3);
    // no_proxy bypasses it; http_proxy is not for https:// URLs.
    let before = seen.lock().unwrap().heads.len();
    for env in [
        [
            ("https_proxy", proxy_url.as_str()),
            ("no_proxy", "localhost"),
        ],
        [("http_proxy", proxy_url.as_str()), ("no_proxy", "")],
    ] {
        let _ = fs::remove_file(s.dl.join("p3.bin"));
        let o = get(
            &s.dl,
            &["--cacert", &s.cacert(), "-o", "p3.bin", &s.url("p.bin")],
            &env,
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(fs::read(s.dl.join("p3.bin")).unwrap(), body);
    }
    assert_eq!(
        seen.lock().unwrap().heads.len(),
        before,
        "the proxy was bypassed"
    );
    s.server.signal(libc::SIGTERM);
}

/// `iocomp bench ARGS` (a short run).
fn bench(args: &[&str]) -> Output {
    let mut c = common::iocomp_command();
    c.env_remove("SSL_CERT_FILE");
    c.arg("bench").args(args);
    common::output_within(c, Duration::from_secs(60))
}

/// A number after `"key":` in bench's JSON.
fn json_number(out: &[u8], key: &str) -> u64 {
    let s = String::from_utf8_lossy(out);
    let pat = format!("\"{key}\":");
    let at = s.find(&pat).unwrap_or_else(|| panic!("{key} in {s}")) + pat.len();
    s[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn bench_measures_an_https_server() {
    let s = Setup::new(&[("k.bin", pseudo_random(2, 1024))]);
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
    let other = ca(&s.tree.dir("other"), "other");
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
    let s = Setup::new(&[("k.bin", pseudo_random(3, 1024))]);
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

/// A one-connection-at-a-time server on a thread: reads a request head (or
/// anything, up to 4 KiB), answers `reply` (nothing: stays silent), holds the
/// connection for `hold`, closes.
fn canned(reply: Vec<u8>, hold: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let reply = reply.clone();
            thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut b = [0u8; 4096];
                let _ = c.read(&mut b);
                let _ = c.write_all(&reply);
                thread::sleep(hold);
            });
        }
    });
    addr
}

#[test]
fn tls_failures_are_clear_errors_and_redirects_reach_https() {
    let body = pseudo_random(13, 10_000);
    let s = Setup::new(&[("r.bin", body.clone())]);
    let cacert = s.cacert();
    // https:// to the plain HTTP port: the handshake fails (exit 6), nothing is written.
    let url = format!("https://localhost:{}/r.bin", s.server.addr().port());
    let o = get(&s.dl, &["--cacert", &cacert, "-o", "plain.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));
    assert!(!s.dl.join("plain.bin").exists() && !s.dl.join("plain.bin.part").exists());
    // A server that answers the ClientHello with plain text.
    let junk = canned(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(),
        Duration::ZERO,
    );
    let url = format!("https://localhost:{}/x", junk.port());
    let o = get(&s.dl, &["--cacert", &cacert, "-o", "junk.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    // A server that never answers the ClientHello: --timeout cuts it (exit 3).
    let mute = canned(Vec::new(), Duration::from_secs(20));
    let url = format!("https://localhost:{}/x", mute.port());
    let o = get(
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
    let refuse = canned(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
        Duration::ZERO,
    );
    let o = get(
        &s.dl,
        &["--cacert", &cacert, "-o", "ref.bin", &s.url("r.bin")],
        &[("https_proxy", &format!("http://{refuse}"))],
    );
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    // An http:// redirect to https:// is followed.
    let redirect = canned(
        format!(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
            s.url("r.bin")
        )
        .into_bytes(),
        Duration::ZERO,
    );
    let url = format!("http://127.0.0.1:{}/old.bin", redirect.port());
    let o = get(&s.dl, &["--cacert", &cacert, "-o", "red.bin", &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("red.bin")).unwrap(), body);
    s.server.signal(libc::SIGTERM);
}

#[test]
fn an_interrupted_https_download_resumes_from_its_part_file() {
    let big = pseudo_random(17, 8 * 1024 * 1024);
    let s = Setup::new(&[("big.bin", big.clone())]);
    let mut child = common::iocomp_command();
    child
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .args(["get", "-q", "--limit-rate", "2M", "--cacert", &s.cacert()])
        .arg(s.url("big.bin"))
        .current_dir(&s.dl)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = child.spawn().unwrap();
    let part = s.dl.join("big.bin.part");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fs::metadata(&part).map_or(0, |m| m.len()) < 512 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the .part did not grow"
        );
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The .part (its .meta names the version) is continued, not fetched
    // again: bytes put in it meanwhile stay, so the result shows the Range.
    let have = fs::metadata(&part).unwrap().len() as usize;
    assert!(have < big.len(), "killed before the end");
    fs::write(&part, vec![0x5Au8; have]).unwrap();
    let o = get(
        &s.dl,
        &["-c", "--cacert", &s.cacert(), &s.url("big.bin")],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut want = vec![0x5Au8; have];
    want.extend_from_slice(&big[have..]);
    common::assert_bytes_eq(
        &fs::read(s.dl.join("big.bin")).unwrap(),
        &want,
        "-c of .part",
    );
    assert!(!part.exists());
    s.server.signal(libc::SIGTERM);
}

/// A TLS server on a thread (a leaf for `localhost` signed by `ca`): reads a
/// request, answers `reply`, then closes with or without `close_notify`.
fn tls_canned(ca: &Ca, reply: &'static [u8], close_notify: bool) -> SocketAddr {
    use rustls::pki_types::PrivateKeyDer;
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut sock) = c else { return };
            let cfg = cfg.clone();
            thread::spawn(move || {
                sock.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    if conn.complete_io(&mut sock).is_err() {
                        return;
                    }
                    if let Ok(n) = conn.reader().read(&mut b) {
                        req.extend_from_slice(&b[..n]);
                    }
                }
                conn.writer().write_all(reply).unwrap();
                if close_notify {
                    conn.send_close_notify();
                }
                while conn.wants_write() {
                    if conn.write_tls(&mut sock).is_err() {
                        return;
                    }
                }
                let _ = sock.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn a_close_delimited_body_needs_close_notify() {
    let s = Setup::new(&[]);
    let reply: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello, until the close";
    // With close_notify the close ends the body; without, it may be a cut:
    // an error, and nothing renamed into place.
    let clean = tls_canned(&s.ca, reply, true);
    let url = format!("https://localhost:{}/c.txt", clean.port());
    let o = get(&s.dl, &["--cacert", &s.cacert(), &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        fs::read(s.dl.join("c.txt")).unwrap(),
        b"hello, until the close"
    );
    let cut = tls_canned(&s.ca, reply, false);
    let url = format!("https://localhost:{}/cut.txt", cut.port());
    let o = get(&s.dl, &["--cacert", &s.cacert(), &url], &[]);
    // A TLS failure (the peer broke the protocol's close), as documented.
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    assert!(stderr(&o).contains("close_notify"), "{}", stderr(&o));
    assert!(!s.dl.join("cut.txt").exists());
    // A Content-Length body is whole without close_notify.
    let framed = tls_canned(
        &s.ca,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        false,
    );
    let url = format!("https://localhost:{}/f.txt", framed.port());
    let o = get(&s.dl, &["--cacert", &s.cacert(), &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("f.txt")).unwrap(), b"hello");
    // A close-delimited 206 whose authenticated Content-Range end was
    // reached is whole without close_notify: nothing can be missing.
    let ranged = tls_canned(
        &s.ca,
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-9/10\r\n\
          Connection: close\r\n\r\nworld",
        false,
    );
    fs::write(s.dl.join("r.txt"), b"hello").unwrap();
    let url = format!("https://localhost:{}/r.txt", ranged.port());
    let o = get(&s.dl, &["-c", "--cacert", &s.cacert(), &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("r.txt")).unwrap(), b"helloworld");
    s.server.signal(libc::SIGTERM);
}

#[test]
fn an_https_redirect_to_http_is_refused_unless_allowed() {
    // apt refuses it: a TLS-authenticated download must not go on in plain
    // text; curl follows it, which --allow-downgrade asks for (with a warning).
    let body = pseudo_random(23, 5_000);
    let s = Setup::new(&[("p.bin", body.clone())]);
    let plain = format!("http://127.0.0.1:{}/p.bin", s.server.addr().port());
    let reply: &'static [u8] = Box::leak(
        format!("HTTP/1.1 302 Found\r\nLocation: {plain}\r\nContent-Length: 0\r\n\r\n")
            .into_bytes()
            .into_boxed_slice(),
    );
    let tls = tls_canned(&s.ca, reply, true);
    let url = format!("https://localhost:{}/p.bin", tls.port());
    let o = get(&s.dl, &["--cacert", &s.cacert(), "-o", "d.bin", &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains(&url) && e.contains(&plain) && e.contains("--allow-downgrade"),
        "{e}"
    );
    assert!(!s.dl.join("d.bin").exists() && !s.dl.join("d.bin.part").exists());
    let o = get(
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
    let s = Setup::new(&[]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut b = [0u8; 4096];
                let _ = c.read(&mut b);
                // A handshake record header announcing 16 KiB, then a byte
                // every 200 ms for at most 12 s.
                let mut bytes = vec![0x16u8, 0x03, 0x03, 0x40, 0x00];
                bytes.resize(5 + 60, 0x02);
                for x in bytes {
                    if c.write_all(&[x]).is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(200));
                }
            });
        }
    });
    let url = format!("https://localhost:{}/h.bin", addr.port());
    let o = get(
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

/// A TLS server on a thread (a leaf for `localhost` signed by `ca`): answers
/// one request with `reply`, then reports how the client ended the
/// connection: "close_notify", "abrupt", or the handshake's error (an alert
/// the client sent shows there).
fn tls_witness(ca: &Ca, reply: &'static [u8]) -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    use rustls::pki_types::PrivateKeyDer;
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let Ok((mut sock, _)) = l.accept() else {
            return;
        };
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.complete_io(&mut sock) {
                Err(e) => {
                    let _ = tx.send(format!("error: {e}"));
                    return;
                }
                Ok((0, 0)) if !conn.is_handshaking() && !conn.wants_read() => {
                    let _ = tx.send("eof before the request".to_string());
                    return;
                }
                Ok(_) => {}
            }
            if let Ok(n) = conn.reader().read(&mut b) {
                req.extend_from_slice(&b[..n]);
            }
        }
        conn.writer().write_all(reply).unwrap();
        while conn.wants_write() {
            if conn.write_tls(&mut sock).is_err() {
                let _ = tx.send("write failed".to_string());
                return;
            }
        }
        // Now the client ends the connection: how?
        loop {
            if let Err(e) = conn.read_tls(&mut sock) {
                let _ = tx.send(format!("error: {e}"));
                return;
            }
            if let Err(e) = conn.process_new_packets() {
                let _ = tx.send(format!("error: {e}"));
                return;
            }
            match conn.reader().read(&mut b) {
                Ok(0) => {
                    let _ = tx.send("close_notify".to_string());
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    let _ = tx.send("abrupt".to_string());
                    return;
                }
            }
        }
    });
    (addr, rx)
}

#[test]
fn the_client_says_close_notify_when_done_and_alerts_on_a_tls_error() {
    // RFC 8446 §6.1: each party MUST send close_notify before closing its
    // write side; §6.2: a fatal error is told with an alert.
    let s = Setup::new(&[]);
    let (addr, seen) = tls_witness(&s.ca, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    let url = format!("https://localhost:{}/n.txt", addr.port());
    let o = get(&s.dl, &["--cacert", &s.cacert(), &url], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("n.txt")).unwrap(), b"hello");
    let how = seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(how, "close_notify");
    // Another CA trusted: the issuer is unknown, and the client says so
    // with an alert.
    let other = ca(&s.dl, "other");
    let (addr, seen) = tls_witness(&s.ca, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let url = format!("https://localhost:{}/a.txt", addr.port());
    let o = get(&s.dl, &["--cacert", other.pem.to_str().unwrap(), &url], &[]);
    assert_eq!(code(&o), EXIT_TLS, "{}", stderr(&o));
    let how = seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(how.contains("alert"), "{how}");
    s.server.signal(libc::SIGTERM);
}

#[test]
fn the_insecure_warning_is_shown_only_when_tls_is_used() {
    let body = pseudo_random(29, 3_000);
    let s = Setup::new(&[("w.bin", body.clone())]);
    // Every URL http://: -k changes nothing, so no warning.
    let plain = format!("http://127.0.0.1:{}/w.bin", s.server.addr().port());
    let o = get(&s.dl, &["-k", "-o", "p.bin", &plain], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains("WARNING"), "{}", stderr(&o));
    assert_eq!(fs::read(s.dl.join("p.bin")).unwrap(), body);
    // An https:// URL: the warning.
    let o = get(&s.dl, &["-k", "-o", "s.bin", &s.url("w.bin")], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("WARNING"), "{}", stderr(&o));
    // An http:// URL redirected to https://: the warning too.
    let redirect = canned(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
            s.url("w.bin")
        )
        .into_bytes(),
        Duration::ZERO,
    );
    let url = format!("http://127.0.0.1:{}/old.bin", redirect.port());
    let o = get(&s.dl, &["-k", "-o", "r.bin", &url], &[]);
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
    let s = Setup::new(&[("i.bin", body)]);
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let proxy = format!("http://{}", trap.local_addr().unwrap());
    let o = get(
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
    let redirect = canned(
        b"HTTP/1.1 302 Found\r\nLocation: https://b\xc3\xbccher.example/i.bin\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
        Duration::ZERO,
    );
    let url = format!("http://127.0.0.1:{}/i.bin", redirect.port());
    let o = get(&s.dl, &["-o", "r.bin", &url], &[("https_proxy", &proxy)]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("non-ASCII"), "{}", stderr(&o));
    assert!(trap.accept().is_err(), "the name went to the proxy");
    s.server.signal(libc::SIGTERM);
}
