//! `iocomp get -c` and `-j` never splice two versions of a file. A scripted
//! loopback server changes the file between requests, and may ignore
//! `If-Range` (as a broken server or cache does): every 206 must carry the
//! validator saved with the partial file (a strong ETag, else Last-Modified)
//! and the same total size in its `Content-Range`; a parallel download's
//! parts must all agree with its first answer; a 416 `bytes */LEN` means
//! "already complete" only for the same version. A mismatch downloads the
//! file afresh (RFC 9110 §14.4, §13.1.5; curl and wget send `If-Range`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{pseudo_random, Req, Scripted, TempTree, Version};

const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn get(dir: &Path, args: &[&str]) -> Output {
    let mut c = common::iocomp_command();
    c.arg("get").arg("-q").args(args).current_dir(dir);
    common::output_within(c, Duration::from_secs(120))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `answer` cut after `keep` body bytes (the server then closes).
fn cut(answer: Vec<u8>, keep: usize) -> Vec<u8> {
    let head = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    answer[..head + keep].to_vec()
}

/// A chunked 200 of `body` with `validators` that ends without its last
/// chunk: the download fails with the whole body in `.part`.
fn chunked_unfinished(validators: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 200 OK\r\n{validators}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v.extend_from_slice(b"\r\n");
    v
}

fn strong<'a>(body: &'a [u8], etag: &'static str, honours_if_range: bool) -> Version<'a> {
    Version {
        body,
        etag: Some(etag),
        last_modified: None,
        honours_if_range,
    }
}

/// A first download cut after `keep` bytes leaves a resumable `.part`.
fn interrupted(dir: &Path, out: &Path, url: &str) {
    let o = get(dir, &["-o", out.to_str().unwrap(), url]);
    assert_eq!(code(&o), 3, "the cut download fails: {}", stderr(&o));
    assert!(!out.exists(), "a cut download must not look complete");
}

fn assert_is(out: &Path, want: &[u8], what: &str) {
    let got = fs::read(out).unwrap_or_else(|e| panic!("{what}: read {}: {e}", out.display()));
    assert!(
        got == want,
        "{what}: the output is not the expected version ({} bytes)",
        got.len()
    );
}

#[test]
fn resume_against_a_server_that_ignores_if_range_downloads_the_new_version_afresh() {
    let tree = TempTree::new();
    let dir = tree.base();
    let out = dir.join("f.bin");
    let (v1, v2) = (pseudo_random(1, 300_000), pseudo_random(2, 300_000));
    let (a, b) = (v1.clone(), v2.clone());
    let s = Scripted::start(move |n, req: &Req| match n {
        0 => cut(strong(&a, "\"v1\"", false).answer(req), 100_000),
        _ => strong(&b, "\"v2\"", false).answer(req),
    });
    interrupted(dir, &out, &s.url("f.bin"));

    let o = get(dir, &["-c", "-o", out.to_str().unwrap(), &s.url("f.bin")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v2, "a 206 of another ETag");
    let reqs = s.requests();
    assert_eq!(reqs[1].range(), Some((100_000, None)), "{reqs:?}");
    assert_eq!(
        reqs[1].header("if-range").as_deref(),
        Some("\"v1\""),
        "{reqs:?}"
    );
    assert_eq!(
        reqs.len(),
        3,
        "one fresh request after the mismatch: {reqs:?}"
    );
    assert_eq!(reqs[2].range(), None, "{reqs:?}");
}

#[test]
fn resume_with_the_same_last_modified_but_another_total_downloads_afresh() {
    let tree = TempTree::new();
    let dir = tree.base();
    let out = dir.join("f.bin");
    // Rewritten within the same second: Last-Modified is equal, the size is not.
    let (v1, v2) = (pseudo_random(3, 300_000), pseudo_random(4, 400_000));
    let (a, b) = (v1.clone(), v2.clone());
    let s = Scripted::start(move |n, req: &Req| {
        let v = |body| Version {
            body,
            etag: None,
            last_modified: Some(DATE),
            honours_if_range: true,
        };
        match n {
            0 => cut(v(&a).answer(req), 100_000),
            _ => v(&b).answer(req),
        }
    });
    interrupted(dir, &out, &s.url("f.bin"));

    let o = get(dir, &["-c", "-o", out.to_str().unwrap(), &s.url("f.bin")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(
        &out,
        &v2,
        "a 206 whose total differs from the first answer's",
    );
    let reqs = s.requests();
    assert_eq!(
        reqs[1].header("if-range").as_deref(),
        Some(DATE),
        "{reqs:?}"
    );
    assert_eq!(reqs.last().unwrap().range(), None, "{reqs:?}");
}

#[test]
fn a_416_means_complete_only_for_the_version_saved() {
    let tree = TempTree::new();
    let dir = tree.base();
    let (v1, v2) = (pseudo_random(5, 200_000), pseudo_random(6, 200_000));

    // The same version: the 416 says the .part is whole; nothing is fetched again.
    let out = dir.join("same.bin");
    let a = v1.clone();
    let s = Scripted::start(move |n, req: &Req| match n {
        0 => chunked_unfinished("ETag: \"v1\"\r\n", &a),
        _ => strong(&a, "\"v1\"", true).answer(req),
    });
    interrupted(dir, &out, &s.url("same.bin"));
    let o = get(
        dir,
        &["-c", "-o", out.to_str().unwrap(), &s.url("same.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v1, "a 416 of the same version");
    assert_eq!(s.requests().len(), 2, "{:?}", s.requests());

    // Another version of the same length, from a server that ignores If-Range.
    let out = dir.join("other.bin");
    let (a, b) = (v1.clone(), v2.clone());
    let s = Scripted::start(move |n, req: &Req| match n {
        0 => chunked_unfinished("ETag: \"v1\"\r\n", &a),
        _ => strong(&b, "\"v2\"", false).answer(req),
    });
    interrupted(dir, &out, &s.url("other.bin"));
    let o = get(
        dir,
        &["-c", "-o", out.to_str().unwrap(), &s.url("other.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v2, "a 416 of another version");
    assert_eq!(s.requests().last().unwrap().range(), None);
}

#[test]
fn parallel_parts_of_two_versions_are_never_mixed() {
    let tree = TempTree::new();
    let dir = tree.base();
    let len = 1536 * 1024;
    let (v1, v2) = (pseudo_random(7, len), pseudo_random(8, len));

    // Parts alternate between two ETags (the probe saw v1): the parts disagree.
    let (a, b) = (v1.clone(), v2.clone());
    let s = Scripted::start(move |n, req: &Req| match req.range() {
        None => strong(&b, "\"v2\"", false).answer(req),
        Some((0, Some(0))) => strong(&a, "\"v1\"", false).answer(req),
        Some(_) if n % 2 == 0 => strong(&b, "\"v2\"", false).answer(req),
        Some(_) => strong(&a, "\"v1\"", false).answer(req),
    });
    let out = dir.join("etag.bin");
    let o = get(
        dir,
        &["-j", "4", "-o", out.to_str().unwrap(), &s.url("etag.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v2, "parts of two ETags");
    assert_eq!(s.requests().last().unwrap().range(), None, "afresh, whole");

    // The same ETag (a broken server) but the parts' total differs from the probe's.
    let longer: Vec<u8> = [&v2[..], b"tail"].concat();
    let (a, b) = (v1.clone(), longer.clone());
    let s = Scripted::start(move |n, req: &Req| match req.range() {
        None => strong(&b, "\"v\"", false).answer(req),
        Some((0, Some(0))) => strong(&a, "\"v\"", false).answer(req),
        Some(_) if n % 2 == 0 => strong(&b, "\"v\"", false).answer(req),
        Some(_) => strong(&a, "\"v\"", false).answer(req),
    });
    let out = dir.join("total.bin");
    let o = get(
        dir,
        &["-j", "4", "-o", out.to_str().unwrap(), &s.url("total.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &longer, "parts of two sizes");
}
