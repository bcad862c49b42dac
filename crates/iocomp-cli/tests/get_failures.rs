//! `iocomp get` on bad input and broken servers: a handshake cut by
//! `--connect-timeout`, a stall cut by `--timeout`,
//! a short body, a `.part` without a validator, malformed URLs — each a one-line message, its exit
//! code and no output file that looks complete — and `-c` combined with `-j`,
//! and several URLs downloading at once on the one driving thread.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{code, one_line, pseudo_random, run_in, stderr, Server, TempTree};

fn iocomp() -> Command {
    common::iocomp_command()
}

fn url(s: &Server, name: &str) -> String {
    format!("http://{}/{name}", s.addr())
}

fn same_file(a: &Path, b: &Path) -> bool {
    fs::read(a).unwrap() == fs::read(b).unwrap()
}

/// A loopback server for one connection: reads the request head, writes
/// `reply`, then holds the connection `hold` before closing it.
fn one_shot(reply: &'static [u8], hold: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut s: TcpStream = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(_) => return,
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
            head.push(b[0]);
        }
        let _ = s.write_all(reply);
        std::thread::sleep(hold);
    });
    addr
}

#[test]
fn get_fails_cleanly_on_a_stall_a_short_body_and_bad_urls() {
    let tree = TempTree::new();
    let dir = tree.base();

    // A server that sends 10 of 1000 bytes and then nothing: cut by --timeout.
    let addr = one_shot(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
        Duration::from_secs(20),
    );
    let t0 = Instant::now();
    let o = run_in(
        dir,
        &[
            "get",
            "-q",
            "--timeout",
            "500ms",
            &format!("http://{addr}/stall.bin"),
        ],
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
    let addr = one_shot(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
        Duration::ZERO,
    );
    let o = run_in(dir, &["get", "-q", &format!("http://{addr}/short.bin")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(one_line(&o).contains("ended early"), "{}", stderr(&o));
    assert!(!dir.join("short.bin").exists());

    // A chunked body cut inside a chunk.
    let addr = one_shot(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
        Duration::ZERO,
    );
    let o = run_in(dir, &["get", "-q", &format!("http://{addr}/cut.bin")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!dir.join("cut.bin").exists());

    // A .part longer than the file, with no .meta: no validator says which version it is a
    // prefix of, so -c does not resume it (no Range, no 416) but downloads afresh.
    tree.file("small.txt", b"0123456789");
    let server = Server::start(tree.root(), &[]);
    fs::write(dir.join("small.txt.part"), vec![b'x'; 100]).unwrap();
    let o = run_in(dir, &["get", "-q", "-c", &url(&server, "small.txt")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(dir.join("small.txt")).unwrap(), b"0123456789");
    assert!(!dir.join("small.txt.part").exists());

    for bad in ["http://[::1", "http://h:99999/", "ftp://h/x", "http://"] {
        let o = run_in(dir, &["get", "-q", bad]);
        assert_eq!(code(&o), 2, "{bad}: {}", stderr(&o));
        one_line(&o);
    }
    let o = run_in(dir, &["get", "-q", "-j", "0", &url(&server, "small.txt")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

/// Starts `get ARGS` and SIGKILLs it once `ready` says so.
fn kill_when(dir: &Path, args: &[&str], ready: impl Fn() -> bool) {
    let mut child = iocomp()
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "the download did not start");
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn get_c_with_j_resumes_a_sequential_part_and_restarts_a_parallel_one() {
    let tree = TempTree::new();
    let src = tree.file("big.bin", &pseudo_random(21, 16 << 20));
    let server = Server::start(tree.root(), &[]);
    let dir = tree.base();
    let out = dir.join("big.bin");
    let part = dir.join("big.bin.part");
    let u = url(&server, "big.bin");

    // Killed while 4 ranges run: its .part has the full length but holes.
    kill_when(
        dir,
        &["get", "-q", "-j", "4", "--limit-rate", "4M", &u],
        || dir.join("big.bin.part.meta").exists() && fs::metadata(&part).is_ok_and(|m| m.len() > 0),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!out.exists());
    assert_eq!(fs::metadata(&part).unwrap().len(), 16 << 20);
    let o = run_in(dir, &["get", "-c", "-j", "4", &u]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("parallel download"), "{}", stderr(&o));
    assert!(
        same_file(&src, &out),
        "a parallel .part must not be resumed as a prefix"
    );

    // Killed on one connection: -c -j resumes it on one connection.
    fs::remove_file(&out).unwrap();
    kill_when(dir, &["get", "-q", "--limit-rate", "4M", &u], || {
        fs::metadata(&part).is_ok_and(|m| m.len() >= 2 << 20)
    });
    let o = run_in(dir, &["get", "-c", "-j", "4", &u]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming at"), "{}", stderr(&o));
    assert!(same_file(&src, &out));
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
    args.extend(names.iter().map(|n| url(&server, n)));
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
    let to = one_shot(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthere",
        Duration::ZERO,
    );
    let reply = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://{to}/there.txt\r\nContent-Length: 0\r\n\r\n"
    );
    let from = one_shot(
        Box::leak(reply.into_bytes().into_boxed_slice()),
        Duration::ZERO,
    );
    let o = run_in(
        tree.base(),
        &[
            "get",
            "-q",
            "-o",
            "f.txt",
            &format!("http://{from}/here.txt"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(tree.base().join("f.txt")).unwrap(), b"there");
}
