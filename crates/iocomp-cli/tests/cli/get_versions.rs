//! `iocomp get -c` and `-j` never splice two versions of a file. A scripted
//! loopback server changes the file between requests, and may ignore
//! `If-Range` (as a broken server or cache does): every 206 must carry the
//! validator saved with the partial file (a strong ETag, else Last-Modified)
//! and the same total size in its `Content-Range`; a parallel download's
//! parts must all agree with its first answer; a 416 `bytes */LEN` means
//! "already complete" only for the same version. A mismatch downloads the
//! file afresh (RFC 9110 §14.4, §13.1.5; curl and wget send `If-Range`).

use std::fs;
use std::path::Path;

use crate::harness::{chunked, code, get, pseudo_random, stderr, Req, Scripted, TempTree, Version};

const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

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
        0 => cut(Version::tagged(&a, "\"v1\"", false).answer(req), 100_000),
        _ => Version::tagged(&b, "\"v2\"", false).answer(req),
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
        _ => Version::tagged(&a, "\"v1\"", true).answer(req),
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
        _ => Version::tagged(&b, "\"v2\"", false).answer(req),
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
        None => Version::tagged(&b, "\"v2\"", false).answer(req),
        Some((0, Some(0))) => Version::tagged(&a, "\"v1\"", false).answer(req),
        Some(_) if n % 2 == 0 => Version::tagged(&b, "\"v2\"", false).answer(req),
        Some(_) => Version::tagged(&a, "\"v1\"", false).answer(req),
    });
    let out = dir.join("etag.bin");
    let o = get(
        dir,
        &["-j", "4", "-o", out.to_str().unwrap(), &s.url("etag.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v2, "parts of two ETags");
    // Afresh, whole. (Not necessarily the last one recorded: a part cancelled
    // when another one mismatched may reach the server's threads later.)
    assert!(
        s.requests().iter().any(|r| r.range().is_none()),
        "afresh, whole: {:?}",
        s.requests()
    );

    // The same ETag (a broken server) but the parts' total differs from the probe's.
    let longer: Vec<u8> = [&v2[..], b"tail"].concat();
    let (a, b) = (v1.clone(), longer.clone());
    let s = Scripted::start(move |n, req: &Req| match req.range() {
        None => Version::tagged(&b, "\"v\"", false).answer(req),
        Some((0, Some(0))) => Version::tagged(&a, "\"v\"", false).answer(req),
        Some(_) if n % 2 == 0 => Version::tagged(&b, "\"v\"", false).answer(req),
        Some(_) => Version::tagged(&a, "\"v\"", false).answer(req),
    });
    let out = dir.join("total.bin");
    let o = get(
        dir,
        &["-j", "4", "-o", out.to_str().unwrap(), &s.url("total.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &longer, "parts of two sizes");
}

/// A 206 of `body[a..=b]` (total `body.len()`) with ETag `etag`, in chunked
/// framing, its data `extra` bytes of garbage longer (or shorter, negative).
fn chunked_206(body: &[u8], a: u64, b: u64, etag: &str, extra: i64) -> Vec<u8> {
    let mut data = body[a as usize..=b as usize].to_vec();
    if extra >= 0 {
        data.resize(data.len() + extra as usize, b'X');
    } else {
        data.truncate(data.len() - (-extra) as usize);
    }
    let mut v = format!(
        "HTTP/1.1 206 Partial Content\r\nETag: {etag}\r\nContent-Range: bytes {a}-{b}/{}\r\nTransfer-Encoding: chunked\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(&chunked(&data, 65536));
    v
}

#[test]
fn parallel_parts_in_chunked_framing_are_decoded_and_held_to_their_range() {
    let tree = TempTree::new();
    let dir = tree.base();
    let len = 1536 * 1024;
    let v1 = pseudo_random(9, len);

    // Every part is a chunked 206 (RFC 9112 §7.1): the file holds the data, never the framing.
    let a = v1.clone();
    let s = Scripted::start(move |_, req: &Req| match req.range() {
        Some((0, Some(0))) | None => Version::tagged(&a, "\"v\"", true).answer(req),
        Some((x, y)) => chunked_206(&a, x, y.unwrap(), "\"v\"", 0),
    });
    let out = dir.join("chunked.bin");
    let o = get(
        dir,
        &[
            "-j",
            "4",
            "-o",
            out.to_str().unwrap(),
            &s.url("chunked.bin"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v1, "chunked parts");

    // A chunked part one byte short, or with bytes past its range: never a complete file.
    for extra in [-1i64, 100] {
        let a = v1.clone();
        let s = Scripted::start(move |_, req: &Req| match req.range() {
            Some((0, Some(0))) | None => Version::tagged(&a, "\"v\"", true).answer(req),
            Some((x, y)) => chunked_206(&a, x, y.unwrap(), "\"v\"", extra),
        });
        let out = dir.join(format!("bad{extra}.bin"));
        let o = get(
            dir,
            &["-j", "4", "-o", out.to_str().unwrap(), &s.url("x.bin")],
        );
        assert_eq!(code(&o), 3, "{extra}: {}", stderr(&o));
        assert!(!out.exists(), "{extra}: a part of the wrong length");
    }
}

#[test]
fn a_resumed_206_must_bring_exactly_the_rest_of_the_file() {
    let tree = TempTree::new();
    let dir = tree.base();
    let v1 = pseudo_random(10, 300_000);
    let part = dir.join("f.bin.part");

    // The rest is announced by Content-Range, but the connection closes after 1000 bytes
    // (no Content-Length): a short transfer, the .part kept for a later -c.
    let out = dir.join("f.bin");
    let a = v1.clone();
    let s = Scripted::start(move |n, req: &Req| match n {
        0 => cut(Version::tagged(&a, "\"v1\"", true).answer(req), 100_000),
        1 => {
            let (x, _) = req.range().unwrap();
            let mut v = format!(
                "HTTP/1.1 206 Partial Content\r\nETag: \"v1\"\r\nContent-Range: bytes {x}-299999/300000\r\n\r\n"
            )
            .into_bytes();
            v.extend_from_slice(&a[x as usize..x as usize + 1000]);
            v
        }
        // A chunked 206 with garbage after the file's last byte.
        2 => {
            let (x, _) = req.range().unwrap();
            chunked_206(&a, x, 299_999, "\"v1\"", 500)
        }
        // To EOF (no Content-Length), with garbage after the file's last byte.
        3 => {
            let (x, _) = req.range().unwrap();
            let mut v = format!(
                "HTTP/1.1 206 Partial Content\r\nETag: \"v1\"\r\nContent-Range: bytes {x}-299999/300000\r\n\r\n"
            )
            .into_bytes();
            v.extend_from_slice(&a[x as usize..]);
            v.extend_from_slice(&[b'X'; 500]);
            v
        }
        _ => Version::tagged(&a, "\"v1\"", true).answer(req),
    });
    interrupted(dir, &out, &s.url("f.bin"));
    let o = get(dir, &["-c", "-o", out.to_str().unwrap(), &s.url("f.bin")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!out.exists(), "a short 206 is not a complete file");
    assert_eq!(fs::metadata(&part).unwrap().len(), 101_000, "kept for -c");

    let o = get(dir, &["-c", "-o", out.to_str().unwrap(), &s.url("f.bin")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!out.exists(), "an over-long 206 is not a complete file");
    assert!(
        fs::metadata(&part).unwrap().len() <= 300_000,
        "nothing past the total"
    );

    let o = get(dir, &["-c", "-o", out.to_str().unwrap(), &s.url("f.bin")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        !out.exists(),
        "an over-long 206 to EOF is not a complete file"
    );
    assert!(fs::metadata(&part).unwrap().len() <= 300_000);

    let o = get(dir, &["-c", "-o", out.to_str().unwrap(), &s.url("f.bin")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v1, "resumed at last");
}

#[test]
fn a_weak_etag_is_compared_and_no_validator_means_no_joining() {
    let tree = TempTree::new();
    let dir = tree.base();
    let (v1, v2) = (pseudo_random(11, 300_000), pseudo_random(12, 300_000));

    // A weak ETag is never sent in If-Range (RFC 9110 §13.1.5), but another one proves a change.
    let out = dir.join("weak.bin");
    let (a, b) = (v1.clone(), v2.clone());
    let s = Scripted::start(move |n, req: &Req| match n {
        0 => cut(Version::tagged(&a, "W/\"v1\"", false).answer(req), 100_000),
        _ => Version::tagged(&b, "W/\"v2\"", false).answer(req),
    });
    interrupted(dir, &out, &s.url("weak.bin"));
    let o = get(
        dir,
        &["-c", "-o", out.to_str().unwrap(), &s.url("weak.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v2, "a 206 of another weak ETag");
    let reqs = s.requests();
    assert_eq!(reqs[1].range(), Some((100_000, None)), "{reqs:?}");
    assert_eq!(reqs[1].header("if-range"), None, "{reqs:?}");
    assert_eq!(reqs.last().unwrap().range(), None, "afresh: {reqs:?}");

    // The same weak ETag: resumed.
    let out = dir.join("same.bin");
    let a = v1.clone();
    let s = Scripted::start(move |n, req: &Req| match n {
        0 => cut(Version::tagged(&a, "W/\"v1\"", false).answer(req), 100_000),
        _ => Version::tagged(&a, "W/\"v1\"", false).answer(req),
    });
    interrupted(dir, &out, &s.url("same.bin"));
    let o = get(
        dir,
        &["-c", "-o", out.to_str().unwrap(), &s.url("same.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v1, "the same weak ETag");
    assert_eq!(s.requests().len(), 2, "{:?}", s.requests());

    // No validator at all: -c cannot tell versions apart, so it starts afresh.
    let out = dir.join("none.bin");
    let (a, b) = (v1.clone(), v2.clone());
    let s = Scripted::start(move |n, req: &Req| match n {
        0 => cut(Version::bare(&a).answer(req), 100_000),
        _ => Version::bare(&b).answer(req),
    });
    interrupted(dir, &out, &s.url("none.bin"));
    let o = get(
        dir,
        &["-c", "-o", out.to_str().unwrap(), &s.url("none.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v2, "no validator");
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range(), None, "afresh: {reqs:?}");

    // -j without a validator: one connection (parts could not be proved one version).
    let len = 1536 * 1024;
    let (a, b) = (pseudo_random(13, len), pseudo_random(14, len));
    let want = b.clone();
    let s = Scripted::start(move |n, req: &Req| match req.range() {
        Some((0, Some(0))) => Version::bare(&a).answer(req),
        None => Version::bare(&b).answer(req),
        Some(_) if n % 2 == 0 => Version::bare(&b).answer(req),
        Some(_) => Version::bare(&a).answer(req),
    });
    let out = dir.join("nj.bin");
    let o = get(
        dir,
        &["-j", "4", "-o", out.to_str().unwrap(), &s.url("nj.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2, "the probe, then one plain request: {reqs:?}");
    assert_eq!(reqs[1].range(), None, "{reqs:?}");
    assert_is(&out, &want, "-j without a validator");
}

#[test]
fn a_416_proves_nothing_without_a_matching_validator_or_total() {
    let tree = TempTree::new();
    let dir = tree.base();
    let len = 1536 * 1024;
    let (v1, v2) = (pseudo_random(15, len), pseudo_random(16, 1000));

    // -j: the parts are answered 416 of another size and ETag (the file shrank): afresh.
    let (a, b) = (v1.clone(), v2.clone());
    let s = Scripted::start(move |_, req: &Req| {
        match req.range() {
        Some((0, Some(0))) => Version::tagged(&a, "\"v1\"", true).answer(req),
        Some(_) => format!(
            "HTTP/1.1 416 Range Not Satisfiable\r\nETag: \"v2\"\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\n\r\n",
            b.len()
        )
        .into_bytes(),
        None => Version::tagged(&b, "\"v2\"", true).answer(req),
    }
    });
    let out = dir.join("shrunk.bin");
    let o = get(
        dir,
        &["-j", "4", "-o", out.to_str().unwrap(), &s.url("shrunk.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_is(&out, &v2, "a 416 of another version to a part");

    // -c: a 416 of the local size but no validator, and no total saved: not "whole".
    let out = dir.join("nv.bin");
    let a = pseudo_random(17, 200_000);
    let b = a.clone();
    let s = Scripted::start(move |n, _: &Req| {
        match n {
        0 => chunked_unfinished("ETag: \"v1\"\r\n", &b),
        _ => b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */200000\r\nContent-Length: 0\r\n\r\n".to_vec(),
    }
    });
    interrupted(dir, &out, &s.url("nv.bin"));
    let o = get(dir, &["-c", "-o", out.to_str().unwrap(), &s.url("nv.bin")]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(!out.exists(), "not proved whole");
}
