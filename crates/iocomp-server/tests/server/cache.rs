//! The open-file cache: by default every request re-checks the name, so a
//! file rewritten in place is served anew at once; with a validity interval
//! (nginx's `open_file_cache_valid`) the cached copy, head and bytes
//! together, is served until the interval ends, and what is known of a
//! file's precompressed siblings is trusted as long.

use std::time::Duration;

use crate::harness::{assert_bytes_eq, Tree};

#[test]
fn a_file_rewritten_in_place_is_served_anew_unless_within_the_interval() {
    let tree = Tree::new("ofcvalid");
    let old = vec![b'a'; 1000];
    let new = vec![b'b'; 1000];
    for (valid, want_after) in [(Duration::ZERO, &new), (Duration::from_secs(3600), &old)] {
        tree.file("small.txt", &old);
        let srv = tree.serve(|c| c.open_file_cache_valid = valid);
        let got = srv.lines(&[b"small.txt"]);
        assert_bytes_eq(&got, &old, "small.txt first request");
        // Rewrite in place, same length: a cached copy would still match by
        // length; only the check (or the interval) tells them apart.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(tree.path("small.txt"), &new).expect("rewrite small.txt");
        let got = srv.lines(&[b"small.txt", b"small.txt"]);
        let want = [&want_after[..], &want_after[..]].concat();
        assert_bytes_eq(
            &got,
            &want,
            &format!("small.txt after the rewrite, valid {valid:?}"),
        );
    }
}

#[test]
fn siblings_created_or_removed_later_are_seen_with_the_open_file_cache() {
    let t = Tree::new("varycache");
    t.file("d/a.txt", b"identity");
    let srv = t.serve(|c| c.open_file_cache = 64);
    let gz = [("Accept-Encoding", "gzip")];
    // Let the directory age past the window in which its times are not
    // trusted, so that what is known about the siblings is kept.
    std::thread::sleep(Duration::from_millis(2100));
    for _ in 0..2 {
        let r = srv.get("/d/a.txt", &gz);
        assert_eq!((r.vary(), &r.body[..]), (String::new(), &b"identity"[..]));
    }
    std::fs::write(t.path("d/a.txt.gz"), b"GZ").unwrap();
    let r = srv.get("/d/a.txt", &gz);
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (Some("gzip"), &b"GZ"[..])
    );
    assert_eq!(srv.get("/d/a.txt", &[]).vary(), "Accept-Encoding");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(srv.get("/d/a.txt", &[]).vary(), "Accept-Encoding");
    std::fs::remove_file(t.path("d/a.txt.gz")).unwrap();
    let r = srv.get("/d/a.txt", &gz);
    assert_eq!((r.vary(), &r.body[..]), (String::new(), &b"identity"[..]));
}

/// With a validity interval (nginx's `open_file_cache_valid`), what the
/// open-file cache knows about a hot file's precompressed siblings is trusted
/// for the interval, as the file itself is: a sibling created meanwhile is
/// not looked for (no `fstatat` of the directory per request) until the
/// interval has passed.
#[test]
fn with_a_validity_interval_known_siblings_are_trusted_for_the_interval() {
    let t = Tree::new("varyvalid");
    t.file("d/a.txt", b"identity");
    let srv = t.serve(|c| {
        c.open_file_cache = 64;
        c.open_file_cache_valid = Duration::from_secs(3600);
    });
    let gz = [("Accept-Encoding", "gzip")];
    // Past the window in which the directory's times are not trusted.
    std::thread::sleep(Duration::from_millis(2100));
    for _ in 0..2 {
        let r = srv.get("/d/a.txt", &gz);
        assert_eq!((r.vary(), &r.body[..]), (String::new(), &b"identity"[..]));
    }
    std::fs::write(t.path("d/a.txt.gz"), b"GZ").unwrap();
    let r = srv.get("/d/a.txt", &gz);
    assert_eq!(
        (r.vary(), r.header("content-encoding"), &r.body[..]),
        (String::new(), None, &b"identity"[..]),
        "the sibling was looked for within the interval"
    );
    // A file the cache does not know yet is looked at afresh: its sibling
    // is found at once.
    t.file("d/b.txt", b"identity");
    std::fs::write(t.path("d/b.txt.gz"), b"GZ").unwrap();
    let r = srv.get("/d/b.txt", &gz);
    assert_eq!(
        (r.header("content-encoding"), &r.body[..]),
        (Some("gzip"), &b"GZ"[..])
    );
}

/// `Root::sibling_files` answers the suffixes it is asked, whatever an
/// earlier call with another list left in the open-file cache (found by
/// review: bits kept for `[".gz"]` answered `[".br", ".gz"]` and `[".br"]`).
#[test]
fn sibling_bits_answer_the_suffixes_asked_whatever_was_asked_before() {
    use iocomp_server::{PathOptions, Root, CACHED_SIBLINGS};
    let t = Tree::new("siblist");
    t.file("a.txt", b"a").file("a.txt.gz", b"g");
    // A directory changed within two seconds is not trusted: let it age so
    // that what is found is kept.
    std::thread::sleep(Duration::from_millis(2100));
    let root = Root::open(&t.path(""), PathOptions::default())
        .expect("root")
        .with_cache(16, Duration::from_secs(60));
    root.open_file(b"a.txt").expect("a.txt");
    for _ in 0..2 {
        assert_eq!(root.sibling_files(b"a.txt", &CACHED_SIBLINGS), 0b10);
        assert_eq!(root.sibling_files(b"a.txt", &[".gz"]), 0b1);
        assert_eq!(root.sibling_files(b"a.txt", &[".br", ".gz"]), 0b10);
        assert_eq!(root.sibling_files(b"a.txt", &[".br"]), 0b0);
        assert_eq!(root.sibling_files(b"a.txt", &[".gz", ".br"]), 0b1);
    }
}
