//! What `iocomp get` does to the local file system, and its numeric options:
//! `NAME.part` and `NAME.part.meta` are never written through a symbolic
//! link; the final rename never replaces a file that appeared meanwhile;
//! a huge `--limit-rate` or `--timeout` is a usage error, not a panic (and so
//! is a huge thread or connection count of `serve` and `bench`);
//! `--compressed` stops a decompression bomb; `-c` continues a partial file
//! another tool left (as `wget -c` and `curl -C -` do) and refuses to
//! overwrite it with a whole new download.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::time::Duration;

use common::{code, get, one_line, pseudo_random, stderr, Req, Scripted, TempTree, Version};

fn serve(body: Vec<u8>, etag: &'static str) -> Scripted {
    Scripted::start(move |_, req: &Req| {
        Version {
            body: &body,
            etag: Some(etag),
            last_modified: None,
            honours_if_range: true,
        }
        .answer(req)
    })
}

#[test]
fn part_and_meta_are_never_written_through_a_symlink() {
    let tree = TempTree::new();
    let dir = tree.base();
    let s = serve(pseudo_random(1, 50_000), "\"a\"");
    for side in [".part", ".part.meta"] {
        let victim = dir.join(format!("victim{side}"));
        fs::write(&victim, b"precious").unwrap();
        let out = dir.join(format!("out{side}-test"));
        let link = dir.join(format!("out{side}-test{side}"));
        symlink(&victim, &link).unwrap();
        let o = get(dir, &["-o", out.to_str().unwrap(), &s.url("f")]);
        assert!(
            fs::read(&victim).unwrap() == b"precious",
            "{side}: written through the link"
        );
        assert_eq!(code(&o), 5, "{side}: {}", stderr(&o));
        assert!(
            one_line(&o).contains("symbolic link"),
            "{side}: {}",
            stderr(&o)
        );
        assert!(!out.exists(), "{side}");
    }
}

#[test]
fn the_final_rename_never_replaces_a_file_that_appeared_meanwhile() {
    let tree = TempTree::new();
    let dir = tree.base().to_path_buf();
    let out = dir.join("late.bin");
    let body = pseudo_random(2, 50_000);
    let o2 = out.clone();
    // The file appears while the server answers.
    let s = Scripted::start(move |_, req: &Req| {
        fs::write(&o2, b"someone else's").unwrap();
        Version {
            body: &body,
            etag: Some("\"b\""),
            last_modified: None,
            honours_if_range: true,
        }
        .answer(req)
    });
    let o = get(&dir, &["-o", out.to_str().unwrap(), &s.url("late.bin")]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(one_line(&o).contains("appeared"), "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), b"someone else's");
    assert!(
        fs::read(dir.join("late.bin.part")).unwrap() == pseudo_random(2, 50_000),
        "the download is kept in .part"
    );
}

#[test]
fn huge_numeric_options_are_usage_errors() {
    let tree = TempTree::new();
    let dir = tree.base();
    let s = serve(pseudo_random(3, 1000), "\"c\"");
    let u = s.url("n.bin");
    for args in [
        ["--limit-rate", "18446744073709551615G"],
        ["--limit-rate", "17179869184G"],
        ["--limit-rate", "0"],
        ["--timeout", "100000000000000000s"],
        ["--connect-timeout", "100000000000000000s"],
        ["--timeout", "1e300h"],
        ["--timeout", "-1s"],
        ["-j", "18446744073709551617"],
        ["--raw", "--size"],
    ] {
        let mut a: Vec<&str> = args.to_vec();
        if a == ["--raw", "--size"] {
            a.push("99999999999999999999999");
        }
        a.push(&u);
        let o = get(dir, &a);
        assert_eq!(code(&o), 2, "{a:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{a:?}: {}", stderr(&o));
        assert!(!dir.join("n.bin").exists(), "{a:?}");
    }
}

#[test]
fn huge_thread_and_connection_counts_of_serve_and_bench_are_usage_errors() {
    let tree = TempTree::new();
    let root = tree.root().to_str().unwrap().to_string();
    let s = serve(pseudo_random(5, 10), "\"e\"");
    let u = s.url("b");
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--threads",
            "18446744073709551615",
            &root,
        ],
        vec![
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--threads",
            "100000",
            &root,
        ],
        vec!["bench", "-d", "1s", "-t", "18446744073709551615", &u],
        vec!["bench", "-d", "1s", "-c", "18446744073709551615", &u],
    ];
    for args in cases {
        let mut c = common::iocomp_command();
        c.args(&args);
        let o = common::output_within(c, Duration::from_secs(60));
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn compressed_stops_a_decompression_bomb() {
    let tree = TempTree::new();
    let dir = tree.base();
    // 1 GiB of zeros in about 1 MB: 1024 gzip members of 1 MiB each.
    let member = gzip(&vec![0u8; 1 << 20]);
    let bomb: Vec<u8> = member.repeat(1024);
    let s = Scripted::start(move |_, _: &Req| {
        let mut v = format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            bomb.len()
        )
        .into_bytes();
        v.extend_from_slice(&bomb);
        v
    });
    let o = get(dir, &["--compressed", &s.url("bomb.txt")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(one_line(&o).contains("expands"), "{}", stderr(&o));
    assert!(!dir.join("bomb.txt").exists());
    let part = fs::metadata(dir.join("bomb.txt.part")).map_or(0, |m| m.len());
    assert!(part <= 512 << 20, "stopped early: {part} bytes written");

    // A gzip of ordinary, compressible text still decodes.
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {i} of a log file\n").into_bytes())
        .collect();
    let gz = gzip(&text);
    let s = Scripted::start(move |_, _: &Req| {
        let mut v = format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            gz.len()
        )
        .into_bytes();
        v.extend_from_slice(&gz);
        v
    });
    let o = get(dir, &["--compressed", &s.url("log.txt")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(dir.join("log.txt")).unwrap(), text);
}

#[test]
fn continue_extends_a_partial_file_left_by_another_tool() {
    let tree = TempTree::new();
    let dir = tree.base();
    let body = pseudo_random(4, 300_000);
    let s = serve(body.clone(), "\"d\"");
    let out = dir.join("foreign.bin");
    fs::write(&out, &body[..100_000]).unwrap();
    let o = get(
        dir,
        &["-c", "-o", out.to_str().unwrap(), &s.url("foreign.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        fs::read(&out).unwrap() == body,
        "continued to the whole file"
    );
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].range(), Some((100_000, None)), "{reqs:?}");
    assert!(!dir.join("foreign.bin.part").exists());

    // Already whole: the server answers 416 bytes */SIZE, nothing to do.
    let o = get(
        dir,
        &["-c", "-o", out.to_str().unwrap(), &s.url("foreign.bin")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(fs::read(&out).unwrap() == body);

    // A server without ranges sends the whole file: the partial file is not overwritten.
    let whole = body.clone();
    let s = Scripted::start(move |_, _: &Req| {
        let mut v =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", whole.len()).into_bytes();
        v.extend_from_slice(&whole);
        v
    });
    fs::write(&out, &body[..100_000]).unwrap();
    let o = get(
        dir,
        &["-c", "-o", out.to_str().unwrap(), &s.url("foreign.bin")],
    );
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(one_line(&o).contains("--force"), "{}", stderr(&o));
    assert!(fs::read(&out).unwrap() == body[..100_000], "left as it was");
}

#[test]
fn two_downloads_to_one_output_never_write_it_together() {
    let tree = TempTree::new();
    let dir = tree.base().to_path_buf();
    let out = dir.join("one.bin");
    let body = pseudo_random(5, 200_000);
    let b = body.clone();
    // The first answer waits until the second download is over: the first holds
    // one.bin.part meanwhile.
    let release = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = release.clone();
    let s = Scripted::start(move |n, req: &Req| {
        let t0 = std::time::Instant::now();
        while n == 0
            && !r.load(std::sync::atomic::Ordering::SeqCst)
            && t0.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        Version {
            body: &b,
            etag: Some("\"o\""),
            last_modified: None,
            honours_if_range: true,
        }
        .answer(req)
    });
    let mut first = common::iocomp_command();
    first
        .args(["get", "-q", "-o", out.to_str().unwrap(), &s.url("one.bin")])
        .current_dir(&dir);
    let first = std::thread::spawn(move || common::output_within(first, Duration::from_secs(120)));
    let t0 = std::time::Instant::now();
    while s.requests().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no request");
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = get(&dir, &["-o", out.to_str().unwrap(), &s.url("one.bin")]);
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(
        one_line(&o).contains("another download is writing"),
        "{}",
        stderr(&o)
    );
    let o = first.join().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(fs::read(&out).unwrap() == body, "the first download's file");
    assert_eq!(s.requests().len(), 1, "{:?}", s.requests());
}

/// A server that answers every request with `answer`.
fn always(answer: &'static [u8]) -> Scripted {
    Scripted::start(move |_, _: &Req| answer.to_vec())
}

#[test]
fn hostile_framing_is_refused_and_interim_answers_are_skipped() {
    let tree = TempTree::new();
    let dir = tree.base().to_path_buf();
    let refused: [(&str, &'static [u8]); 5] = [
        (
            "a transfer coding iocomp cannot decode",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "two Content-Length values",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "a Content-Length list that disagrees",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
        (
            "a chunk size with a sign",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "a Content-Length that is not a number",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
        ),
    ];
    for (i, (what, answer)) in refused.into_iter().enumerate() {
        let s = always(answer);
        let out = dir.join(format!("r{i}.bin"));
        let o = get(&dir, &["-o", out.to_str().unwrap(), &s.url("r.bin")]);
        assert_eq!(code(&o), 3, "{what}: {}", stderr(&o));
        one_line(&o);
        assert!(!out.exists(), "{what}");
    }

    // A list of one and the same length is one length (RFC 9110 §8.6).
    let s = always(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello");
    let out = dir.join("same.bin");
    let o = get(&dir, &["-o", out.to_str().unwrap(), &s.url("s.bin")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), b"hello");

    // 103 Early Hints (RFC 8297) and 100 Continue come before the final answer.
    let s = always(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    );
    let out = dir.join("hints.bin");
    let o = get(&dir, &["-o", out.to_str().unwrap(), &s.url("h.bin")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), b"hello");

    // --timeout 0 and --connect-timeout 0 mean no timeout (as wget's --timeout=0).
    let s = always(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    let out = dir.join("t0.bin");
    let o = get(
        &dir,
        &[
            "--timeout",
            "0",
            "--connect-timeout",
            "0",
            "-o",
            out.to_str().unwrap(),
            &s.url("t.bin"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), b"hello");
}
