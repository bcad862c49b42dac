//! Validators: the `ETag` is made of the file's size and modification time
//! (to the nanosecond) only, as nginx's and lighttpd's are — no inode, so two
//! servers with the same files agree, and the inode does not leak.

use std::fs::{File, FileTimes};
use std::time::{Duration, SystemTime};

use crate::harness::Tree;

/// Writes `content` to `rel` with modification time `mtime`.
fn write_at(t: &Tree, rel: &str, content: &[u8], mtime: SystemTime) {
    t.file(rel, content);
    let f = File::options().write(true).open(t.path(rel)).unwrap();
    f.set_times(FileTimes::new().set_modified(mtime)).unwrap();
}

#[test]
fn the_etag_depends_on_size_and_mtime_not_on_the_inode() {
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    let (a, b) = (Tree::new("etag-a"), Tree::new("etag-b"));
    write_at(&a, "f.txt", b"same bytes", mtime);
    // Other files first, so that f.txt gets another inode in the second tree.
    for i in 0..3 {
        b.file(&format!("pad{i}"), b"");
    }
    write_at(&b, "f.txt", b"same bytes", mtime);
    let ino = |t: &Tree| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(t.path("f.txt")).unwrap())
    };
    assert_ne!(ino(&a), ino(&b), "the test needs two inodes");
    let (sa, sb) = (a.serve(|_| {}), b.serve(|_| {}));
    let (ra, rb) = (sa.get("/f.txt", &[]), sb.get("/f.txt", &[]));
    let etag = ra.header("etag").expect("an ETag").to_string();
    assert_eq!(
        rb.header("etag"),
        Some(etag.as_str()),
        "same file, same ETag"
    );
    // A validator from one server is honoured by the other.
    let r = sb.get("/f.txt", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    // Replaced by a copy with the same size and time: a new inode, the same tag.
    std::fs::remove_file(a.path("f.txt")).unwrap();
    write_at(&a, "f.txt", b"same bytes", mtime);
    assert_eq!(sa.get("/f.txt", &[]).header("etag"), Some(etag.as_str()));
    // A change of a nanosecond or of the size is a new tag.
    write_at(&a, "f.txt", b"same bytes", mtime + Duration::from_nanos(1));
    assert_ne!(sa.get("/f.txt", &[]).header("etag"), Some(etag.as_str()));
    write_at(&a, "f.txt", b"same bytez!", mtime);
    assert_ne!(sa.get("/f.txt", &[]).header("etag"), Some(etag.as_str()));
}

#[test]
fn a_precompressed_variant_has_its_own_etag_and_if_range_never_splices_variants() {
    // The identity file and its gzip sibling with the same size and the same
    // modification time: only the encoding tells their tags apart.
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5);
    let t = Tree::new("etag-variant");
    write_at(&t, "a.txt", b"identity bytes", mtime);
    write_at(&t, "a.txt.gz", b"gzipped bytes!", mtime);
    let s = t.serve(|_| {});
    let plain = s.get("/a.txt", &[]);
    let gz = s.get("/a.txt", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let (tag, gz_tag) = (plain.header("etag").unwrap(), gz.header("etag").unwrap());
    assert_ne!(tag, gz_tag, "two representations, two strong tags");
    assert!(gz_tag.starts_with('"') && gz_tag.ends_with('"'), "{gz_tag}");
    // A range of the identity body asked with its tag while the gzip variant
    // is chosen: the tag does not match, so the whole gzip body (RFC 9110
    // §13.1.5), never a slice of it spliced onto identity bytes.
    let r = s.get(
        "/a.txt",
        &[
            ("Accept-Encoding", "gzip"),
            ("Range", "bytes=2-"),
            ("If-Range", tag),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"gzipped bytes!");
    // With its own tag the range is honoured.
    let r = s.get(
        "/a.txt",
        &[
            ("Accept-Encoding", "gzip"),
            ("Range", "bytes=2-"),
            ("If-Range", gz_tag),
        ],
    );
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(r.body, b"ipped bytes!");
    // And each tag validates only its own representation.
    assert_eq!(s.get("/a.txt", &[("If-None-Match", gz_tag)]).status, 200);
    let r = s.get(
        "/a.txt",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", gz_tag)],
    );
    assert_eq!(r.status, 304);
}
