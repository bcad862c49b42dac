//! What `iocomp get` does to the local file system: `NAME.part` and
//! `NAME.part.meta` are never written through a symbolic link; the final
//! rename never replaces a file that appeared meanwhile; two downloads to
//! one output never write it together.

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use crate::harness::{
    code, get, iocomp_command, one_line, output_within, pseudo_random, stderr, Req, Scripted,
    TempTree, Version,
};

#[test]
fn part_and_meta_are_never_written_through_a_symlink() {
    let tree = TempTree::new();
    let dir = tree.base();
    let s = Scripted::file(pseudo_random(1, 50_000), "\"a\"");
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
        Version::tagged(&body, "\"b\"", true).answer(req)
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
        Version::tagged(&b, "\"o\"", true).answer(req)
    });
    let mut first = iocomp_command();
    first
        .args(["get", "-q", "-o", out.to_str().unwrap(), &s.url("one.bin")])
        .current_dir(&dir);
    let first = std::thread::spawn(move || output_within(first, Duration::from_secs(120)));
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
