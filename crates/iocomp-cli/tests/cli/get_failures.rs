//! `iocomp get` on bad input and broken servers, and its exit codes: a
//! handshake cut by `--connect-timeout`, a stall cut by `--timeout`, a short
//! body, a `.part` without a validator, malformed URLs, a huge numeric
//! option, a decompression bomb, hostile framing — each a one-line message,
//! its exit code and no output file that looks complete; 404, a refused
//! connection and an existing output have their own exit codes.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::{
    code, get, gzip, ok_with, one_line, pseudo_random, run_in, stderr, Scripted, Server, TempTree,
};

#[test]
fn get_fails_cleanly_on_a_stall_a_short_body_and_bad_urls() {
    let tree = TempTree::new();
    let dir = tree.base();

    // A server that sends 10 of 1000 bytes and then nothing: cut by --timeout.
    let s = Scripted::canned(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"[..],
        Duration::from_secs(20),
    );
    let t0 = Instant::now();
    let o = run_in(
        dir,
        &["get", "-q", "--timeout", "500ms", &s.url("stall.bin")],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(one_line(&o).contains("timed out"), "{}", stderr(&o));
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(!dir.join("stall.bin").exists());
    // What arrived stays resumable, under the .part name only.
    assert_eq!(fs::read(dir.join("stall.bin.part")).unwrap(), b"0123456789");

    // A listener whose backlog is full: the handshake never completes, and
    // --connect-timeout cuts it.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let full = l.local_addr().unwrap();
    {
        use std::os::fd::AsRawFd;
        // SAFETY: listen(2) on a listening socket we own only changes its backlog.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    }
    let _queued: Vec<_> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&full, Duration::from_millis(200)).ok())
        .collect();
    let t0 = Instant::now();
    let o = run_in(
        dir,
        &[
            "get",
            "-q",
            "--connect-timeout",
            "1s",
            &format!("http://{full}/x"),
        ],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(one_line(&o).contains("connect timed out"), "{}", stderr(&o));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(!dir.join("x").exists() && !dir.join("x.part").exists());

    // A server that closes after 10 of 1000 bytes.
    let s = Scripted::canned(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"[..],
        Duration::ZERO,
    );
    let o = run_in(dir, &["get", "-q", &s.url("short.bin")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(one_line(&o).contains("ended early"), "{}", stderr(&o));
    assert!(!dir.join("short.bin").exists());

    // A chunked body cut inside a chunk.
    let s = Scripted::canned(
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc"[..],
        Duration::ZERO,
    );
    let o = run_in(dir, &["get", "-q", &s.url("cut.bin")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!dir.join("cut.bin").exists());

    // A .part longer than the file, with no .meta: no validator says which version it is a
    // prefix of, so -c does not resume it (no Range, no 416) but downloads afresh.
    tree.file("small.txt", b"0123456789");
    let server = Server::start(tree.root(), &[]);
    fs::write(dir.join("small.txt.part"), vec![b'x'; 100]).unwrap();
    let o = run_in(dir, &["get", "-q", "-c", &server.url("small.txt")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(dir.join("small.txt")).unwrap(), b"0123456789");
    assert!(!dir.join("small.txt.part").exists());

    for bad in ["http://[::1", "http://h:99999/", "ftp://h/x", "http://"] {
        let o = run_in(dir, &["get", "-q", bad]);
        assert_eq!(code(&o), 2, "{bad}: {}", stderr(&o));
        one_line(&o);
    }
    let o = run_in(dir, &["get", "-q", "-j", "0", &server.url("small.txt")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn get_exit_codes_for_404_refused_existing_output_and_schemes() {
    let tree = TempTree::new();
    tree.file("here.txt", b"here\n");
    let server = Server::start(tree.root(), &[]);
    let dir = tree.base();

    let o = run_in(dir, &["get", "-q", &server.url("missing.txt")]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(!dir.join("missing.txt").exists() && !dir.join("missing.txt.part").exists());
    let o = run_in(
        dir,
        &[
            "get",
            "-q",
            "--raw",
            &format!("{}/missing.txt", server.addr()),
        ],
    );
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(!dir.join("missing.txt").exists());

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = run_in(dir, &["get", "-q", &format!("http://{free}/x")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));

    let existing = dir.join("here.txt");
    fs::write(&existing, b"mine").unwrap();
    let o = run_in(dir, &["get", "-q", &server.url("here.txt")]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"));
    assert_eq!(fs::read(&existing).unwrap(), b"mine");
    let o = run_in(dir, &["get", "-q", "--force", &server.url("here.txt")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&existing).unwrap(), b"here\n");

    // A scheme other than http:// and https:// is a usage error.
    let o = run_in(dir, &["get", "ftp://example.invalid/x"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not supported"), "{}", stderr(&o));
    let o = run_in(dir, &["get", "not a url"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn huge_numeric_options_are_usage_errors() {
    let tree = TempTree::new();
    let dir = tree.base();
    let s = Scripted::file(pseudo_random(3, 1000), "\"c\"");
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
fn compressed_stops_a_decompression_bomb() {
    let tree = TempTree::new();
    let dir = tree.base();
    // 1 GiB of zeros in about 1 MB: 1024 gzip members of 1 MiB each.
    let member = gzip(&vec![0u8; 1 << 20], flate2::Compression::best());
    let bomb: Vec<u8> = member.repeat(1024);
    let s = Scripted::canned(ok_with("Content-Encoding: gzip\r\n", &bomb), Duration::ZERO);
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
    let gz = gzip(&text, flate2::Compression::best());
    let s = Scripted::canned(ok_with("Content-Encoding: gzip\r\n", &gz), Duration::ZERO);
    let o = get(dir, &["--compressed", &s.url("log.txt")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(dir.join("log.txt")).unwrap(), text);
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
        let s = Scripted::canned(answer, Duration::ZERO);
        let out = dir.join(format!("r{i}.bin"));
        let o = get(&dir, &["-o", out.to_str().unwrap(), &s.url("r.bin")]);
        assert_eq!(code(&o), 3, "{what}: {}", stderr(&o));
        one_line(&o);
        assert!(!out.exists(), "{what}");
    }

    // A list of one and the same length is one length (RFC 9110 §8.6).
    let s = Scripted::canned(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"[..],
        Duration::ZERO,
    );
    let out = dir.join("same.bin");
    let o = get(&dir, &["-o", out.to_str().unwrap(), &s.url("s.bin")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), b"hello");

    // 103 Early Hints (RFC 8297) and 100 Continue come before the final answer.
    let s = Scripted::canned(&b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..], Duration::ZERO);
    let out = dir.join("hints.bin");
    let o = get(&dir, &["-o", out.to_str().unwrap(), &s.url("h.bin")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), b"hello");

    // --timeout 0 and --connect-timeout 0 mean no timeout (as wget's --timeout=0).
    let s = Scripted::canned(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..],
        Duration::ZERO,
    );
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
