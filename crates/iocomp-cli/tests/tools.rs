//! The client tools against the real server: `iocomp get` (byte-exact over
//! HTTP and the line protocol, resume after a kill, a changed file detected on
//! resume, parallel ranges of a 200 MiB file, exit codes) and `iocomp bench`
//! (its request count agrees with the server's access log).

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{pseudo_random, Server, TempTree};

fn iocomp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iocomp"))
}

/// Runs `iocomp ARGS` in `dir`, bounded to 120 s.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut child = iocomp()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iocomp");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("iocomp {args:?} ran over 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
fn get_exit_codes_for_404_refused_existing_output_and_https() {
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

    let o = run_in(dir, &["get", "https://example.invalid/x"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not supported yet"), "{}", stderr(&o));
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
