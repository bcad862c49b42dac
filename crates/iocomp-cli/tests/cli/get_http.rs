//! `iocomp get` over HTTP and the line protocol: byte-exact downloads, a
//! progress bar on a terminal, several URLs at once, redirects, `http_proxy`
//! and `no_proxy`, and content codings (`--compressed`). Resuming and
//! parallel ranges are in `get_resume`, failures in `get_failures`.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    chunked, code, gzip, pseudo_random, redirect, run_env, run_in, runs, same_file, stderr,
    Scripted, Server, TempTree,
};

#[test]
fn get_is_byte_exact_over_http_and_the_line_protocol() {
    let tree = TempTree::new();
    let data = pseudo_random(7, 3 * 1024 * 1024 + 17);
    let src = tree.file("f.bin", &data);
    let server = Server::start(tree.root(), &[]);
    let out = tree.base().join("http.bin");
    let o = run_in(
        tree.base(),
        &[
            "get",
            "-q",
            "-o",
            out.to_str().unwrap(),
            &server.url("f.bin"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(same_file(&src, &out));
    assert!(!tree.base().join("http.bin.part").exists());

    let raw = format!("{}/f.bin", server.addr());
    let out = tree.base().join("raw.bin");
    let o = run_in(
        tree.base(),
        &["get", "--raw", "-q", "-o", out.to_str().unwrap(), &raw],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(same_file(&src, &out));
    // With the size given, no EOF is waited for; the default name is the remote one.
    let size = data.len().to_string();
    let o = run_in(tree.base(), &["get", "--raw", "--size", &size, &raw]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(same_file(&src, &tree.base().join("f.bin")));
    // Not a terminal: plain progress lines, ending with "done".
    assert!(stderr(&o).contains("f.bin: done"), "{}", stderr(&o));
}

/// A tmux server on a private socket (`-L iocomp-test-PID-N`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `None` (after saying so) when tmux is missing and `IOCOMP_SKIP_TMUX=1`.
    fn start() -> Option<Tmux> {
        if !runs("tmux", "-V") {
            if std::env::var("IOCOMP_SKIP_TMUX").as_deref() == Ok("1") {
                println!("skipped: tmux is not installed (IOCOMP_SKIP_TMUX=1)");
                return None;
            }
            panic!(
                "the terminal test needs tmux: apt-get install -y tmux \
                 (or set IOCOMP_SKIP_TMUX=1 to skip it)"
            );
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(Tmux {
            socket: format!("iocomp-test-{}-{n}", std::process::id()),
        })
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    /// The visible text of the pane.
    fn capture(&self) -> String {
        let o = self.cmd(&["capture-pane", "-p", "-t", "t"]);
        assert!(o.status.success(), "capture-pane: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-session", "-t", "t"]);
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The bytes so far on the progress line of `name` (`1.50 MiB/16.00 MiB …`).
fn bar_bytes(screen: &str, name: &str) -> Option<f64> {
    let line = screen
        .lines()
        .find(|l| l.contains(name) && l.contains('['))?;
    let after = &line[line.find(']')? + 1..];
    let done = after.trim_start().split('/').next()?;
    let mut it = done.split_whitespace();
    let v: f64 = it.next()?.parse().ok()?;
    let unit = match it.next()? {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(v * unit)
}

#[test]
fn get_shows_a_moving_progress_bar_on_a_terminal() {
    let Some(tmux) = Tmux::start() else { return };
    let tree = TempTree::new();
    let data = pseudo_random(21, 12 * 1024 * 1024);
    let src = tree.file("tty.bin", &data);
    let server = Server::start(tree.root(), &[]);
    let out = tree.base().join("tty-copy.bin");
    let rc = tree.base().join("tty.rc");
    // The pane runs the download, then records its exit code and lingers so
    // the last frame can still be captured.
    let script = format!(
        "'{}' get --limit-rate 3M -o '{}' '{}'; echo $? > '{}'; sleep 60",
        env!("CARGO_BIN_EXE_iocomp"),
        out.display(),
        server.url("tty.bin"),
        rc.display()
    );
    let o = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "120",
        "-y",
        "10",
        "sh",
        "-c",
        &script,
    ]);
    assert!(o.status.success(), "tmux new-session: {}", stderr(&o));

    // At 3 MiB/s the 12 MiB take about 4 s: sample the bar until done.
    let mut seen: Vec<f64> = Vec::new();
    let mut screens = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rc.exists() {
        assert!(Instant::now() < deadline, "no exit after 60 s: {screens:?}");
        let screen = tmux.capture();
        if let Some(b) = bar_bytes(&screen, "tty.bin") {
            // Before the response head arrives the bar has no total yet
            // (`0 B/0 B`); frames from then on are the ones that count.
            if b > 0.0 && b < data.len() as f64 {
                seen.push(b);
                screens.push(screen);
            }
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(fs::read_to_string(&rc).unwrap().trim(), "0", "{screens:?}");
    assert!(same_file(&src, &out));
    // The bar was drawn with a total, more than once, and it moved forward.
    assert!(
        screens.iter().all(|s| s.contains("12.00 MiB")),
        "no total on the bar: {screens:?}"
    );
    let rising = seen.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        seen.len() >= 3 && rising >= 2 && seen.windows(2).all(|w| w[1] >= w[0]),
        "the bar did not move forward: {seen:?}\n{screens:?}"
    );
    let last = tmux.capture();
    assert!(last.contains("12.00 MiB/12.00 MiB"), "final frame: {last}");
}

/// Text that compresses, with some noise so it is not trivial.
fn compressible(len: usize) -> Vec<u8> {
    let noise = pseudo_random(41, len / 8);
    let mut v = Vec::with_capacity(len);
    let mut i = 0;
    while v.len() < len {
        v.extend_from_slice(
            format!(
                "line {i} of the text, noise {:02x}\n",
                noise[i % noise.len()]
            )
            .as_bytes(),
        );
        i += 1;
    }
    v.truncate(len);
    v
}

#[test]
fn several_urls_download_at_once() {
    let tree = TempTree::new();
    let names = ["a.bin", "b.bin", "c.bin"];
    for (i, n) in names.iter().enumerate() {
        tree.file(n, &pseudo_random(30 + i as u64, 3 << 20));
    }
    let server = Server::start(tree.root(), &[]);
    let dir = tree.base();
    let mut args = vec![
        "get".to_string(),
        "-q".into(),
        "--limit-rate".into(),
        "2M".into(),
    ];
    args.extend(names.iter().map(|n| server.url(n)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let o = run_in(dir, &args);
    let took = t0.elapsed();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for n in names {
        assert!(same_file(&tree.root().join(n), &dir.join(n)), "{n}");
    }
    // Each takes 1.5 s at 2 MiB/s; one after the other would take 4.5 s.
    assert!(
        took < Duration::from_millis(3500),
        "not concurrent: {took:?}"
    );
}

#[test]
fn get_follows_a_redirect_to_another_server() {
    let tree = TempTree::new();
    let to = Scripted::canned(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthere"[..],
        Duration::ZERO,
    );
    let from = Scripted::canned(redirect(&to.url("there.txt")), Duration::ZERO);
    let o = run_in(
        tree.base(),
        &["get", "-q", "-o", "f.txt", &from.url("here.txt")],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(tree.base().join("f.txt")).unwrap(), b"there");
}

/// A forwarding proxy: each absolute-form request goes on to `origin` as it
/// came, and the answer back.
fn forwarding_proxy(origin: SocketAddr) -> Scripted {
    Scripted::serve(move |c, _, req| {
        let mut up = TcpStream::connect(origin).unwrap();
        up.write_all(req.head.as_bytes()).unwrap();
        let mut body = Vec::new();
        up.read_to_end(&mut body).unwrap();
        c.write_all(&body).unwrap();
    })
}

#[test]
fn get_goes_through_http_proxy_unless_no_proxy_says_not() {
    let tree = TempTree::new();
    let data = pseudo_random(31, 300_000);
    let src = tree.file("p.bin", &data);
    let server = Server::start(tree.root(), &[]);
    let dir = tree.base();
    let target = server.url("p.bin");

    // A forwarding proxy: the absolute-form request goes on to the server.
    let origin = server.addr();
    let proxy = forwarding_proxy(origin);
    let out = dir.join("via-proxy.bin");
    let o = run_env(
        dir,
        &["get", "-q", "-o", out.to_str().unwrap(), &target],
        &[("http_proxy", &format!("http://{}", proxy.addr()))],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let head = proxy.requests()[0].head.clone();
    assert!(
        head.starts_with(&format!("GET {target} HTTP/1.1\r\n")),
        "not absolute-form: {head:?}"
    );
    assert!(head.contains(&format!("Host: {origin}\r\n")), "{head:?}");
    assert!(same_file(&src, &out));

    // http_proxy without a scheme: the proxy answers for a host that does
    // not resolve here, so no lookup of it was made.
    let proxy = Scripted::canned(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nproxy\n"[..],
        Duration::ZERO,
    );
    let out = dir.join("answered.txt");
    let o = run_env(
        dir,
        &[
            "get",
            "-q",
            "-o",
            out.to_str().unwrap(),
            "http://nowhere.invalid:81/x.txt",
        ],
        &[("http_proxy", &proxy.addr().to_string())],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(proxy.requests()[0]
        .head
        .starts_with("GET http://nowhere.invalid:81/x.txt HTTP/1.1\r\n"));
    assert_eq!(fs::read(&out).unwrap(), b"proxy\n");
    no_proxy_bypasses_the_proxy(dir, &src, &target);
}

/// `no_proxy` / `NO_PROXY` exempt the host and `HTTP_PROXY` is not read:
/// straight to the server, the proxy never sees a connection; a `no_proxy`
/// that does not match leaves the proxy in use.
fn no_proxy_bypasses_the_proxy(dir: &Path, src: &Path, target: &str) {
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    for (i, (k, v)) in [("no_proxy", "example.com, 127.0.0.1"), ("NO_PROXY", "*")]
        .into_iter()
        .enumerate()
    {
        let out = dir.join(format!("direct{i}.bin"));
        let o = run_env(
            dir,
            &["get", "-q", "-o", out.to_str().unwrap(), target],
            &[("http_proxy", &trap_url), (k, v)],
        );
        assert_eq!(code(&o), 0, "{k}={v}: {}", stderr(&o));
        assert!(same_file(src, &out));
    }
    assert!(
        trap.accept().is_err(),
        "the proxy was used despite no_proxy"
    );
    // HTTP_PROXY in capitals is not read, as curl does not (httpoxy: a CGI
    // program gets a request's `Proxy:` header under that name).
    let out = dir.join("direct-upper.bin");
    let o = run_env(
        dir,
        &["get", "-q", "-o", out.to_str().unwrap(), target],
        &[("HTTP_PROXY", &trap_url)],
    );
    assert_eq!(code(&o), 0, "HTTP_PROXY: {}", stderr(&o));
    assert!(same_file(src, &out));
    assert!(trap.accept().is_err(), "HTTP_PROXY was used");
    // A no_proxy that does not match: the (closed) proxy is used, and fails.
    drop(trap);
    let o = run_env(
        dir,
        &[
            "get",
            "-q",
            "-o",
            dir.join("no.bin").to_str().unwrap(),
            target,
        ],
        &[
            ("http_proxy", &trap_url),
            ("no_proxy", "127.0.0.10,localhost"),
        ],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

/// Answers with `encoded` as a chunked body (odd chunk sizes) with `Content-Encoding: coding`.
fn chunked_server(coding: &'static str, encoded: Vec<u8>) -> Scripted {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    r.extend_from_slice(&chunked(&encoded, 997));
    Scripted::canned(r, Duration::ZERO)
}

/// `get -q --compressed` (or without it) of `url` to `out`.
fn get_to(dir: &Path, out: &Path, url: &str, compressed: bool) -> Output {
    let mut args = vec!["get", "-q"];
    if compressed {
        args.push("--compressed");
    }
    args.extend(["-o", out.to_str().unwrap(), url]);
    run_in(dir, &args)
}

#[test]
fn get_compressed_decodes_gzip_and_deflate_and_refuses_unasked_compression() {
    let tree = TempTree::new();
    let dir = tree.base();
    let text = compressible(500_000);
    let gz = gzip(&text, flate2::Compression::default());
    assert!(gz.len() < text.len() / 2);

    // gzip + chunked from a foreign server.
    let s = chunked_server("gzip", gz.clone());
    let out = dir.join("g.txt");
    let o = get_to(dir, &out, &s.url("g.txt"), true);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(s.requests()[0]
        .head
        .contains("Accept-Encoding: gzip, deflate\r\n"));
    assert!(
        fs::read(&out).unwrap() == text,
        "gzip body not decoded byte-exact"
    );

    // deflate (zlib) + chunked.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&text).unwrap();
    let s = chunked_server("deflate", z.finish().unwrap());
    let out = dir.join("d.txt");
    let o = get_to(dir, &out, &s.url("d.txt"), true);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        fs::read(&out).unwrap() == text,
        "deflate body not decoded byte-exact"
    );

    // Compressed though not asked for: refused, nothing left behind.
    let s = chunked_server("gzip", gz.clone());
    let out = dir.join("u.txt");
    let o = get_to(dir, &out, &s.url("u.txt"), false);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("--compressed"), "{}", stderr(&o));
    assert!(s.requests()[0]
        .head
        .contains("Accept-Encoding: identity\r\n"));
    assert!(!out.exists());

    // A corrupt gzip stream is a network error, not a file.
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad.truncate(bad.len() - 100);
    let s = chunked_server("gzip", bad);
    let out = dir.join("bad.txt");
    let o = get_to(dir, &out, &s.url("bad.txt"), true);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!out.exists());
    the_server_s_gz_sibling_is_decoded(&tree, &text, &gz);
}

/// The real server with a .gz sibling: it sends the sibling (its length in
/// the access log), and get decodes it; `-c` cannot be combined with it.
fn the_server_s_gz_sibling_is_decoded(tree: &TempTree, text: &[u8], gz: &[u8]) {
    let dir = tree.base();
    tree.file("t.txt", text);
    tree.file("t.txt.gz", gz);
    let server = Server::start(tree.root(), &[]);
    let out = dir.join("t.txt");
    let o = get_to(dir, &out, &server.url("t.txt"), true);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        fs::read(&out).unwrap() == text,
        "server's gzip not decoded byte-exact"
    );
    let sibling = |log: &[String]| {
        log.last()
            .is_some_and(|l| l.ends_with(&format!("\" 200 {}", gz.len())))
    };
    let log = server.settled_log(sibling);
    assert!(sibling(&log), "the .gz sibling was not what came: {log:?}");
    // -c/-j/--raw cannot be combined with it.
    let o = run_in(dir, &["get", "--compressed", "-c", &server.url("t.txt")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}
