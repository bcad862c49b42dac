//! Byte ranges (RFC 9110 §14): single, suffix and open ranges; several as
//! `multipart/byteranges`, framed exactly; unsatisfiable ones are 416 with
//! `bytes */len`; malformed ones get the whole file; `If-Range` with an old
//! validator gets the whole file; HEAD with a range has no body.

use crate::harness::client::req;
use crate::harness::http::{boundary_of, multipart_parts};
use crate::harness::{assert_bytes_eq, pseudo_random, show, Running, Tree};

/// `r.bin` (1000 pseudo-random bytes) and `r.txt`, served.
fn serve(tree: &Tree) -> (Running, Vec<u8>) {
    let content = pseudo_random(51, 1000);
    tree.file("r.bin", &content).file("r.txt", b"text ranges");
    (tree.serve(|_| {}), content)
}

#[test]
fn single_suffix_and_open_ranges() {
    let tree = Tree::new("ranges1");
    let (srv, content) = serve(&tree);
    let len = content.len();
    let single = |range: &str, first: usize, last: usize| {
        let r = srv.get("/r.bin", &[("Range", range)]);
        r.assert_status(206, range);
        assert_eq!(
            r.must("content-range"),
            format!("bytes {first}-{last}/{len}"),
            "{range}: Content-Range"
        );
        assert_eq!(
            r.must("content-length"),
            (last - first + 1).to_string(),
            "{range}: Content-Length"
        );
        assert_eq!(r.must("content-type"), "application/octet-stream");
        assert_bytes_eq(&r.body, &content[first..=last], range);
    };
    single("bytes=10-19", 10, 19);
    single("bytes=-5", len - 5, len - 1);
    single("bytes=5-", 5, len - 1);
    single("bytes=0-", 0, len - 1);
    single("bytes=990-5000", 990, len - 1);
}

#[test]
fn two_ranges_are_a_multipart_body_framed_exactly() {
    let tree = Tree::new("ranges2");
    let (srv, content) = serve(&tree);
    let len = content.len() as u64;
    let mut c = srv.client();
    c.send(&req("GET", "/r.bin", &[("Range", "bytes=0-9,500-549")]));
    let r = c.response(false);
    r.assert_status(206, "two ranges");
    let ct = r.must("content-type").to_string();
    let boundary = boundary_of(&ct).unwrap_or_else(|| panic!("two ranges: Content-Type {ct:?}"));
    assert!(!boundary.is_empty(), "empty boundary");
    assert_eq!(
        r.must("content-length"),
        r.body.len().to_string(),
        "Content-Length vs body"
    );
    let parts = multipart_parts(&r.body, &boundary);
    assert_eq!(parts.len(), 2, "two ranges: {} parts", parts.len());
    for ((first, last, total, bytes), (wf, wl)) in parts.iter().zip([(0u64, 9u64), (500, 549)]) {
        assert_eq!((*first, *last, *total), (wf, wl, len), "part range");
        assert_bytes_eq(bytes, &content[wf as usize..=wl as usize], "part bytes");
    }
    assert!(
        r.body.ends_with(format!("--{boundary}--\r\n").as_bytes()),
        "multipart body does not end with the closing delimiter: {}",
        show(&r.body[r.body.len().saturating_sub(60)..])
    );
    // Exactly framed: the next response follows immediately.
    c.send(&req("GET", "/r.txt", &[]));
    assert_bytes_eq(
        &c.response(false).body,
        b"text ranges",
        "GET after multipart",
    );
}

#[test]
fn unsatisfiable_malformed_if_range_and_head_ranges() {
    let tree = Tree::new("ranges3");
    let (srv, content) = serve(&tree);
    let len = content.len();
    let etag = srv.get("/r.bin", &[]).must("etag").to_string();
    let r = srv.get("/r.bin", &[("Range", &format!("bytes={len}-"))]);
    r.assert_status(416, "bytes=LEN-");
    assert_eq!(
        r.must("content-range"),
        format!("bytes */{len}"),
        "416 Content-Range"
    );
    // Malformed (reversed): the whole file.
    let r = srv.get("/r.bin", &[("Range", "bytes=5-1")]);
    r.assert_status(200, "bytes=5-1");
    assert_bytes_eq(&r.body, &content, "bytes=5-1");
    // If-Range.
    let r = srv.get("/r.bin", &[("Range", "bytes=10-19"), ("If-Range", &etag)]);
    r.assert_status(206, "If-Range: current ETag");
    assert_bytes_eq(&r.body, &content[10..20], "If-Range: current ETag");
    let r = srv.get(
        "/r.bin",
        &[("Range", "bytes=10-19"), ("If-Range", "\"old-etag\"")],
    );
    r.assert_status(200, "If-Range: old ETag");
    assert_bytes_eq(&r.body, &content, "If-Range: old ETag");
    // HEAD with a range: 206 headers, no body (proved by the next response).
    let mut c = srv.client();
    let mut both = req("HEAD", "/r.bin", &[("Range", "bytes=10-19")]);
    both.extend_from_slice(&req("GET", "/r.txt", &[]));
    c.send(&both);
    let h = c.response(true);
    h.assert_status(206, "HEAD with a range");
    assert_eq!(h.must("content-range"), format!("bytes 10-19/{len}"));
    assert_eq!(h.must("content-length"), "10");
    let g = c.response(false);
    assert_bytes_eq(&g.body, b"text ranges", "GET after HEAD with a range");
}

#[test]
#[should_panic(expected = "bad part header line")]
fn the_multipart_reader_rejects_a_part_header_line_without_a_colon() {
    // The checker itself: a part head line that is not a field (RFC 2046
    // §5.1.1: header fields only) must fail the test, not be skipped.
    let body = b"--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-0/1\r\ngarbage\r\n\r\na\r\n--B--\r\n";
    multipart_parts(body, "B");
}
