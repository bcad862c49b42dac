//! Resuming (`-c`) and parallel ranges (`-j`) of `iocomp get`: a download
//! killed half-way resumes from its `.part` with a Range request, or starts
//! afresh when the file changed meanwhile; `-c` continues a partial file
//! another tool left (as `wget -c` and `curl -C -` do); a parallel `.part`
//! (holes) is never resumed as a prefix; `-j 4` of a 200 MiB file is
//! byte-exact. What proves "the same version" is in `get_versions`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::harness::{
    code, get, kill_when, ok_with, one_line, pseudo_random, run_in, same_file, stderr, Req,
    Scripted, Server, TempTree,
};

/// Starts a rate-limited download and SIGKILLs it once its `.part` holds at
/// least `at` bytes; it must not look complete then.
fn killed_half_way(dir: &Path, out: &Path, url: &str, at: u64) {
    let part = dir.join(format!(
        "{}.part",
        out.file_name().unwrap().to_str().unwrap()
    ));
    kill_when(
        dir,
        &[
            "get",
            "-q",
            "--limit-rate",
            "4M",
            "-o",
            out.to_str().unwrap(),
            url,
        ],
        || fs::metadata(&part).map_or(0, |m| m.len()) >= at,
    );
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
    let u = server.url("big.bin");

    killed_half_way(tree.base(), &out, &u, 2 * 1024 * 1024);
    let o = run_in(tree.base(), &["get", "-c", "-o", out.to_str().unwrap(), &u]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming at"), "{}", stderr(&o));
    assert!(same_file(&src, &out));
    let last_is = |status: &'static str| {
        move |log: &[String]| {
            log.last()
                .is_some_and(|l| l.contains(&format!("\"GET /big.bin HTTP/1.1\" {status} ")))
        }
    };
    let log = server.settled_log(last_is("206"));
    assert!(last_is("206")(&log), "{log:?}");

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
    let log = server.settled_log(last_is("200"));
    assert!(last_is("200")(&log), "{log:?}");
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
            &server.url("200m.bin"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(same_file(&src, &out));
    let ranges_in = |log: &[String]| log.iter().filter(|l| l.contains("\" 206 ")).count();
    let ranges = ranges_in(&server.settled_log(|log| ranges_in(log) >= 5));
    assert_eq!(ranges, 5, "one probe and four ranges");
}

#[test]
fn get_c_with_j_resumes_a_sequential_part_and_restarts_a_parallel_one() {
    let tree = TempTree::new();
    let src = tree.file("big.bin", &pseudo_random(21, 16 << 20));
    let server = Server::start(tree.root(), &[]);
    let dir = tree.base();
    let out = dir.join("big.bin");
    let part = dir.join("big.bin.part");
    let u = server.url("big.bin");

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
fn continue_extends_a_partial_file_left_by_another_tool() {
    let tree = TempTree::new();
    let dir = tree.base();
    let body = pseudo_random(4, 300_000);
    let s = Scripted::file(body.clone(), "\"d\"");
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
    let s = Scripted::start(move |_, _: &Req| ok_with("", &whole));
    fs::write(&out, &body[..100_000]).unwrap();
    let o = get(
        dir,
        &["-c", "-o", out.to_str().unwrap(), &s.url("foreign.bin")],
    );
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(one_line(&o).contains("--force"), "{}", stderr(&o));
    assert!(fs::read(&out).unwrap() == body[..100_000], "left as it was");
}
