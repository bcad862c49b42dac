//! The client tools against the real server: `iocomp get` (byte-exact over
//! HTTP and the line protocol, resume after a kill, a changed file detected on
//! resume, parallel ranges of a 200 MiB file, exit codes) and `iocomp bench`
//! (its request count agrees with the server's access log).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{pseudo_random, Server, TempTree};

/// `iocomp`, with no proxy from the environment that runs the tests.
fn iocomp() -> Command {
    common::iocomp_command()
}

/// Runs `iocomp ARGS` in `dir`, bounded to 120 s.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    run_env(dir, args, &[])
}

/// [`run_in`] with environment variables set.
fn run_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = iocomp();
    c.args(args).envs(env.iter().copied()).current_dir(dir);
    common::output_within(c, Duration::from_secs(120))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn url(s: &Server, name: &str) -> String {
    format!("http://{}/{name}", s.addr())
}

/// Access-log lines (everything on stdout after `listening on`), once their
/// count has stopped changing (the log is flushed on a timer).
fn settled_log(s: &Server) -> Vec<String> {
    let mut last = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = s
            .stdout_lines()
            .into_iter()
            .filter(|l| !l.starts_with("listening on"))
            .collect();
        if lines.len() == last || Instant::now() > deadline {
            return lines;
        }
        last = lines.len();
        std::thread::sleep(Duration::from_millis(1500));
    }
}

/// Streams two files and says whether they are equal (no 200 MiB in memory).
fn same_file(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

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
            &url(&server, "f.bin"),
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

/// Starts a rate-limited download and SIGKILLs it once its `.part` holds at
/// least `at` bytes.
fn killed_half_way(dir: &Path, out: &Path, url: &str, at: u64) {
    let mut child = iocomp()
        .args([
            "get",
            "-q",
            "--limit-rate",
            "4M",
            "-o",
            out.to_str().unwrap(),
            url,
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = dir.join(format!(
        "{}.part",
        out.file_name().unwrap().to_str().unwrap()
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::metadata(&part).map_or(0, |m| m.len()) < at {
        assert!(Instant::now() < deadline, "the .part file did not grow");
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.exists(),
        "an interrupted download must not look complete"
    );
}

#[test]
fn get_resumes_after_a_kill_and_restarts_when_the_file_changed() {
    let tree = TempTree::new();
    let data = pseudo_random(11, 16 * 1024 * 1024);
    let src = tree.file("big.bin", &data);
    let server = Server::start(tree.root(), &[]);
    let out = tree.base().join("big.bin");
    let u = url(&server, "big.bin");

    killed_half_way(tree.base(), &out, &u, 2 * 1024 * 1024);
    let o = run_in(tree.base(), &["get", "-c", "-o", out.to_str().unwrap(), &u]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming at"), "{}", stderr(&o));
    assert!(same_file(&src, &out));
    let log = settled_log(&server);
    assert!(
        log.last()
            .is_some_and(|l| l.contains("\"GET /big.bin HTTP/1.1\" 206 ")),
        "{log:?}"
    );

    // Changed on the server between the kill and the resume: downloaded afresh.
    fs::remove_file(&out).unwrap();
    killed_half_way(tree.base(), &out, &u, 2 * 1024 * 1024);
    let changed = pseudo_random(12, 16 * 1024 * 1024 + 5);
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(&src, &changed).unwrap();
    let o = run_in(tree.base(), &["get", "-c", "-o", out.to_str().unwrap(), &u]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("downloading afresh"), "{}", stderr(&o));
    assert!(same_file(&src, &out));
    let log = settled_log(&server);
    assert!(
        log.last()
            .is_some_and(|l| l.contains("\"GET /big.bin HTTP/1.1\" 200 ")),
        "{log:?}"
    );
}

#[test]
fn get_j4_of_a_200_mib_file_equals_the_original() {
    let tree = TempTree::new();
    // 200 MiB: one pseudo-random MiB, each copy stamped with its index, so a
    // misplaced range shows.
    let block = pseudo_random(3, 1 << 20);
    let src = tree.root().join("200m.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(fs::File::create(&src).unwrap());
        for i in 0u32..200 {
            f.write_all(&i.to_le_bytes()).unwrap();
            f.write_all(&block[4..]).unwrap();
        }
    }
    let server = Server::start(tree.root(), &[]);
    let out = tree.base().join("copy.bin");
    let o = run_in(
        tree.base(),
        &[
            "get",
            "-q",
            "-j",
            "4",
            "-o",
            out.to_str().unwrap(),
            &url(&server, "200m.bin"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(same_file(&src, &out));
    let ranges = settled_log(&server)
        .iter()
        .filter(|l| l.contains("\" 206 "))
        .count();
    assert_eq!(ranges, 5, "one probe and four ranges");
}

#[test]
fn get_exit_codes_for_404_refused_existing_output_and_schemes() {
    let tree = TempTree::new();
    tree.file("here.txt", b"here\n");
    let server = Server::start(tree.root(), &[]);
    let dir = tree.base();

    let o = run_in(dir, &["get", "-q", &url(&server, "missing.txt")]);
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
    let o = run_in(dir, &["get", "-q", &url(&server, "here.txt")]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"));
    assert_eq!(fs::read(&existing).unwrap(), b"mine");
    let o = run_in(dir, &["get", "-q", "--force", &url(&server, "here.txt")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&existing).unwrap(), b"here\n");

    // A scheme other than http:// and https:// is a usage error.
    let o = run_in(dir, &["get", "ftp://example.invalid/x"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not supported"), "{}", stderr(&o));
    let o = run_in(dir, &["get", "not a url"]);
    assert_eq!(code(&o), 2);
}

/// The `"requests":N` of bench's JSON.
fn json_requests(stdout: &[u8]) -> u64 {
    let s = String::from_utf8_lossy(stdout);
    let at = s.find("\"requests\":").expect("requests in the JSON") + 11;
    s[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn bench_counts_what_the_access_log_counts_on_both_protocols() {
    let tree = TempTree::new();
    tree.file("b.bin", &pseudo_random(5, 100_000));
    let server = Server::start(tree.root(), &[]);
    let conns = 4;
    let o = run_in(
        tree.base(),
        &[
            "bench",
            &url(&server, "b.bin"),
            "-c",
            "4",
            "-d",
            "1s",
            "-t",
            "1",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let n = json_requests(&o.stdout);
    assert!(n > 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"errors\":{}"));
    let logged = settled_log(&server).len() as u64;
    assert!(
        logged >= n && logged <= n + conns,
        "bench {n}, log {logged}"
    );

    let o = run_in(
        tree.base(),
        &[
            "bench",
            "--raw",
            &format!("{}/b.bin", server.addr()),
            "-c",
            "4",
            "-d",
            "1s",
            "-t",
            "1",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let m = json_requests(&o.stdout);
    assert!(m > 0);
    // One HEAD learned the size, then the line-protocol requests.
    let raw_logged = settled_log(&server).len() as u64 - logged - 1;
    assert!(
        raw_logged >= m && raw_logged <= m + conns,
        "bench {m}, log {raw_logged}"
    );

    // A wrong expected size is caught, not counted as fast.
    let o = run_in(
        tree.base(),
        &[
            "bench",
            "--raw",
            "--size",
            "99999",
            &format!("{}/b.bin", server.addr()),
            "-c",
            "1",
            "-d",
            "300ms",
            "--json",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("more bytes than the file"), "{out}");
}

/// A tmux server on a private socket (`-L iocomp-test-PID-N`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `None` (after saying so) when tmux is missing and `IOCOMP_SKIP_TMUX=1`.
    fn start() -> Option<Tmux> {
        let found = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
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
        url(&server, "tty.bin"),
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

/// Reads a request head (to the blank line) from `s`.
fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
        assert!(head.len() < 64 * 1024, "request head too long");
    }
    head
}

/// A loopback listener that serves one connection on a thread with `serve`
/// (given the stream and the request head) and hands back the head. Bounded:
/// with no connection within 60 s the thread gives up (an empty head).
fn one_shot(
    serve: impl FnOnce(&mut TcpStream, &[u8]) + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let h = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(_) => return String::new(),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = read_head(&mut s);
        serve(&mut s, &head);
        String::from_utf8_lossy(&head).into_owned()
    });
    (addr, h)
}

#[test]
fn get_goes_through_http_proxy_unless_no_proxy_says_not() {
    let tree = TempTree::new();
    let data = pseudo_random(31, 300_000);
    let src = tree.file("p.bin", &data);
    let server = Server::start(tree.root(), &[]);
    let dir = tree.base();
    let target = url(&server, "p.bin");

    // A forwarding proxy: the absolute-form request goes on to the server.
    let origin = server.addr();
    let (proxy, seen) = one_shot(move |c, head| {
        let mut up = TcpStream::connect(origin).unwrap();
        up.write_all(head).unwrap();
        let mut body = Vec::new();
        up.read_to_end(&mut body).unwrap();
        c.write_all(&body).unwrap();
    });
    let out = dir.join("via-proxy.bin");
    let o = run_env(
        dir,
        &["get", "-q", "-o", out.to_str().unwrap(), &target],
        &[("http_proxy", &format!("http://{proxy}"))],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let head = seen.join().unwrap();
    assert!(
        head.starts_with(&format!("GET {target} HTTP/1.1\r\n")),
        "not absolute-form: {head:?}"
    );
    assert!(head.contains(&format!("Host: {origin}\r\n")), "{head:?}");
    assert!(same_file(&src, &out));

    // http_proxy without a scheme: the proxy answers for a host that does
    // not resolve here, so no lookup of it was made.
    let (proxy, seen) = one_shot(|c, _| {
        c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nproxy\n")
            .unwrap();
    });
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
        &[("http_proxy", &proxy.to_string())],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(seen
        .join()
        .unwrap()
        .starts_with("GET http://nowhere.invalid:81/x.txt HTTP/1.1\r\n"));
    assert_eq!(fs::read(&out).unwrap(), b"proxy\n");

    // no_proxy / NO_PROXY exempt the host: straight to the server, the proxy
    // never sees a connection.
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
            &["get", "-q", "-o", out.to_str().unwrap(), &target],
            &[("http_proxy", &trap_url), (k, v)],
        );
        assert_eq!(code(&o), 0, "{k}={v}: {}", stderr(&o));
        assert!(same_file(&src, &out));
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
        &["get", "-q", "-o", out.to_str().unwrap(), &target],
        &[("HTTP_PROXY", &trap_url)],
    );
    assert_eq!(code(&o), 0, "HTTP_PROXY: {}", stderr(&o));
    assert!(same_file(&src, &out));
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
            &target,
        ],
        &[
            ("http_proxy", &trap_url),
            ("no_proxy", "127.0.0.10,localhost"),
        ],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
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

/// Answers with `encoded` as a chunked body (odd chunk sizes) with `Content-Encoding: coding`.
fn chunked_server(
    coding: &'static str,
    encoded: Vec<u8>,
) -> (SocketAddr, std::thread::JoinHandle<String>) {
    one_shot(move |c, _| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for piece in encoded.chunks(997) {
            r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            r.extend_from_slice(piece);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        let _ = c.write_all(&r);
    })
}

#[test]
fn get_compressed_decodes_gzip_and_deflate_and_refuses_unasked_compression() {
    let tree = TempTree::new();
    let dir = tree.base();
    let text = compressible(500_000);
    let gz = gzip(&text);
    assert!(gz.len() < text.len() / 2);

    // gzip + chunked from a foreign server.
    let (addr, seen) = chunked_server("gzip", gz.clone());
    let out = dir.join("g.txt");
    let o = run_in(
        dir,
        &[
            "get",
            "-q",
            "--compressed",
            "-o",
            out.to_str().unwrap(),
            &format!("http://{addr}/g.txt"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(seen
        .join()
        .unwrap()
        .contains("Accept-Encoding: gzip, deflate\r\n"));
    assert!(
        fs::read(&out).unwrap() == text,
        "gzip body not decoded byte-exact"
    );

    // deflate (zlib) + chunked.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&text).unwrap();
    let (addr, _) = chunked_server("deflate", z.finish().unwrap());
    let out = dir.join("d.txt");
    let o = run_in(
        dir,
        &[
            "get",
            "-q",
            "--compressed",
            "-o",
            out.to_str().unwrap(),
            &format!("http://{addr}/d.txt"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        fs::read(&out).unwrap() == text,
        "deflate body not decoded byte-exact"
    );

    // Compressed though not asked for: refused, nothing left behind.
    let (addr, seen) = chunked_server("gzip", gz.clone());
    let out = dir.join("u.txt");
    let o = run_in(
        dir,
        &[
            "get",
            "-q",
            "-o",
            out.to_str().unwrap(),
            &format!("http://{addr}/u.txt"),
        ],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("--compressed"), "{}", stderr(&o));
    assert!(seen
        .join()
        .unwrap()
        .contains("Accept-Encoding: identity\r\n"));
    assert!(!out.exists());

    // A corrupt gzip stream is a network error, not a file.
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad.truncate(bad.len() - 100);
    let (addr, _) = chunked_server("gzip", bad);
    let out = dir.join("bad.txt");
    let o = run_in(
        dir,
        &[
            "get",
            "-q",
            "--compressed",
            "-o",
            out.to_str().unwrap(),
            &format!("http://{addr}/bad.txt"),
        ],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!out.exists());

    // The real server with a .gz sibling: it sends the sibling (its length
    // in the access log), and get decodes it.
    tree.file("t.txt", &text);
    tree.file("t.txt.gz", &gz);
    let server = Server::start(tree.root(), &[]);
    let out = dir.join("t.txt");
    let o = run_in(
        dir,
        &[
            "get",
            "-q",
            "--compressed",
            "-o",
            out.to_str().unwrap(),
            &url(&server, "t.txt"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        fs::read(&out).unwrap() == text,
        "server's gzip not decoded byte-exact"
    );
    let log = settled_log(&server);
    assert!(
        log.last()
            .is_some_and(|l| l.ends_with(&format!("\" 200 {}", gz.len()))),
        "the .gz sibling was not what came: {log:?}"
    );
    // -c/-j/--raw cannot be combined with it.
    let o = run_in(dir, &["get", "--compressed", "-c", &url(&server, "t.txt")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}
