//! Names that the path policy resolves: a regular file named with a trailing
//! slash (or `/.`) is not found, as in nginx and lighttpd, on both protocols.

use crate::harness::{error_line, Tree};

#[test]
fn a_file_with_a_trailing_slash_or_dot_is_not_found_over_http() {
    let t = Tree::new("slash");
    t.file("file.txt", b"content")
        .file("d/index.html", b"<p>i</p>");
    let srv = t.serve(|_| {});
    for target in ["/file.txt/", "/file.txt/.", "/file.txt//", "/d/index.html/"] {
        let r = srv.get(target, &[]);
        assert_eq!(r.status, 404, "{target}: {r:?}");
    }
    assert_eq!(srv.get("/file.txt", &[]).body, b"content");
    assert_eq!(srv.get("/d/", &[]).body, b"<p>i</p>");
}

#[test]
fn a_file_with_a_trailing_slash_or_dot_is_not_found_over_the_line_protocol() {
    let t = Tree::new("slashline");
    t.file("file.txt", b"content");
    let srv = t.serve(|_| {});
    let mut want = error_line("not found");
    want.extend_from_slice(&error_line("not found"));
    want.extend_from_slice(b"content");
    assert_eq!(
        String::from_utf8_lossy(&srv.lines(&[b"file.txt/", b"file.txt/.", b"/file.txt"])),
        String::from_utf8_lossy(&want)
    );
}
