//! Validators and conditional requests: the `ETag` is made of the file's
//! size and modification time (to the nanosecond) only, as nginx's and
//! lighttpd's are — no inode, so two servers with the same files agree, and
//! the inode does not leak; `If-None-Match`, `If-Modified-Since`, `If-Match`
//! and `If-Unmodified-Since` answer 304 and 412 as RFC 9110 §13 says.

use std::fs::{File, FileTimes};
use std::time::{Duration, SystemTime};

use crate::harness::client::req;
use crate::harness::http::{assert_strong_etag, http_date, mtime_of};
use crate::harness::{assert_bytes_eq, show, Tree};

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

/// A conditional request: what it tests, its headers, the status it must get.
type CondCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);

#[test]
fn conditional_requests_answer_304_and_412() {
    let tree = Tree::new("cond");
    let content = b"conditional content\n".repeat(10);
    let other = b"other".to_vec();
    tree.file("cond.txt", &content).file("other.txt", &other);
    let srv = tree.serve(|_| {});
    let base = srv.get("/cond.txt", &[]);
    base.assert_status(200, "GET /cond.txt");
    let etag = assert_strong_etag(&base, "GET /cond.txt");
    let last_modified = base.must("last-modified").to_string();
    assert_eq!(last_modified, http_date(mtime_of(&tree.path("cond.txt"))));
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", W/\"other\", {etag}");
    let old_date = http_date(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    let cases: Vec<CondCase<'_>> = vec![
        ("If-None-Match: etag", vec![("If-None-Match", &etag)], 304),
        ("If-None-Match: W/etag", vec![("If-None-Match", &weak)], 304),
        ("If-None-Match: list", vec![("If-None-Match", &list)], 304),
        ("If-None-Match: *", vec![("If-None-Match", "*")], 304),
        (
            "If-None-Match: other",
            vec![("If-None-Match", "\"not-it\"")],
            200,
        ),
        (
            "If-Modified-Since: LM",
            vec![("If-Modified-Since", &last_modified)],
            304,
        ),
        (
            "If-Modified-Since: older",
            vec![("If-Modified-Since", &old_date)],
            200,
        ),
        ("If-Match: wrong", vec![("If-Match", "\"wrong\"")], 412),
        ("If-Match: etag", vec![("If-Match", &etag)], 200),
        (
            "If-Unmodified-Since: past",
            vec![("If-Unmodified-Since", &old_date)],
            412,
        ),
    ];
    // All on one connection: each response must be framed exactly (a 304
    // with a body would break the next one), and the connection survives.
    let mut c = srv.client();
    for (what, headers, want) in &cases {
        c.send(&req("GET", "/cond.txt", headers));
        let r = c.response(false);
        r.assert_status(*want, what);
        match want {
            304 => {
                assert_eq!(r.must("etag"), etag, "{what}: 304 ETag");
                assert!(
                    r.header("content-length")
                        .is_none_or(|v| v == content.len().to_string() || v == "0"),
                    "{what}: odd Content-Length on 304:\n{r:?}"
                );
            }
            200 => assert_bytes_eq(&r.body, &content, what),
            _ => {}
        }
        // A HEAD with the same conditions answers the same status.
        c.send(&req("HEAD", "/cond.txt", headers));
        c.response(true)
            .assert_status(*want, &format!("HEAD {what}"));
    }
    // Framing check: nothing stray came before this response.
    c.send(&req("GET", "/other.txt", &[]));
    let r = c.response(false);
    r.assert_status(200, "GET after the conditional requests");
    assert_bytes_eq(&r.body, &other, "GET after the conditional requests");
    // And a 304 is followed by nothing: the connection has no extra bytes.
    assert!(c.buf.is_empty(), "stray bytes: {}", show(&c.buf));
}
