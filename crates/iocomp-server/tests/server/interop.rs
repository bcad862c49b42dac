//! curl against the server: `-C -` resumes, `--range`, `-z` in both
//! directions, `--compressed` with a precompressed sibling (and its own
//! ETag).

use std::fs;

use crate::harness::http::{now_secs, set_mtime};
use crate::harness::run::{curl, python};
use crate::harness::{assert_bytes_eq, pseudo_random, Tree, MIB};

fn url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

#[test]
fn curl_resumes_and_asks_for_ranges() {
    let tree = Tree::new("curlresume");
    let big = pseudo_random(61, MIB + 12345);
    tree.file("big.bin", &big);
    let srv = tree.serve(|_| {});
    // -C - resume: the first half is already on disk.
    let out = tree.base().join("big.part");
    fs::write(&out, &big[..big.len() / 2]).unwrap();
    let o = curl(&[
        "-C",
        "-",
        "-o",
        out.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &url(srv.addr, "/big.bin"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "206",
        "curl -C - was not answered with a 206"
    );
    assert_bytes_eq(&fs::read(&out).unwrap(), &big, "curl -C - resumed file");
    let o = curl(&["--range", "100-199", "-o", "-", &url(srv.addr, "/big.bin")]);
    assert_bytes_eq(&o.stdout, &big[100..200], "curl --range 100-199");
}

#[test]
fn curl_z_gets_304_when_newer_and_the_file_when_older() {
    let tree = Tree::new("curlz");
    let big = pseudo_random(62, MIB + 12345);
    tree.file("big.bin", &big);
    let srv = tree.serve(|_| {});
    let body = tree.base().join("z-body");
    let newer = tree.outside("newer", b"x");
    set_mtime(&newer, now_secs() + 3600);
    let z = |local: &std::path::Path| {
        let args = [
            "-z",
            local.to_str().unwrap(),
            "-o",
            body.to_str().unwrap(),
            "-w",
            "%{http_code}",
        ];
        curl(&[&args[..], &[url(srv.addr, "/big.bin").as_str()]].concat())
    };
    let o = z(&newer);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "304", "curl -z newer");
    let got = fs::read(&body).unwrap_or_default();
    assert!(
        got.is_empty(),
        "curl -z newer got a body of {} bytes",
        got.len()
    );
    let older = tree.outside("older", b"x");
    set_mtime(&older, 631_152_000); // 1990
    let o = z(&older);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "curl -z older");
    assert_bytes_eq(&fs::read(&body).unwrap(), &big, "curl -z older body");
}

#[test]
fn curl_compressed_gets_the_gzip_sibling_with_its_own_etag() {
    let tree = Tree::new("curlgz");
    let text = b"The quick brown fox jumps over the lazy dog.\n".repeat(400);
    tree.file("text.txt", &text);
    let (src, dst) = (tree.path("text.txt"), tree.path("text.txt.gz"));
    python(
        "import gzip,sys; open(sys.argv[2],'wb').write(gzip.compress(open(sys.argv[1],'rb').read()))",
        &[src.to_str().unwrap(), dst.to_str().unwrap()],
        None,
    );
    let gz = fs::read(&dst).unwrap();
    let srv = tree.serve(|_| {});
    let decoded = tree.base().join("text.out");
    let o = curl(&[
        "--compressed",
        "-D",
        "-",
        "-o",
        decoded.to_str().unwrap(),
        &url(srv.addr, "/text.txt"),
    ]);
    let headers = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    assert!(
        headers.contains("\ncontent-encoding: gzip\r\n"),
        "curl --compressed: no Content-Encoding: gzip in\n{headers}"
    );
    assert!(
        headers.contains("\nvary: accept-encoding\r\n"),
        "curl --compressed: no Vary: Accept-Encoding in\n{headers}"
    );
    assert!(
        headers.contains(&format!("\ncontent-length: {}\r\n", gz.len())),
        "curl --compressed: Content-Length is not the .gz length {} in\n{headers}",
        gz.len()
    );
    assert_bytes_eq(
        &fs::read(&decoded).unwrap(),
        &text,
        "curl --compressed body",
    );
    // The compressed representation has its own ETag; without
    // Accept-Encoding the plain file comes back.
    let plain = srv.get("/text.txt", &[]);
    assert!(
        plain.header("content-encoding").is_none(),
        "plain GET encoded"
    );
    assert_bytes_eq(&plain.body, &text, "plain GET /text.txt");
    let zipped = srv.get("/text.txt", &[("Accept-Encoding", "gzip")]);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_bytes_eq(&zipped.body, &gz, "GET /text.txt gzip");
    assert_ne!(
        plain.must("etag"),
        zipped.must("etag"),
        "identity and gzip share an ETag"
    );
}
