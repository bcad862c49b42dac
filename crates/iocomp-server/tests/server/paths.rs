//! Names that the path policy resolves: a regular file named with a trailing
//! slash (or `/.`) is not found, as in nginx and lighttpd, on both protocols,
//! whether the server resolves names with `openat2` or without it.

use crate::harness::{error_line, Tree};

#[test]
fn a_file_with_a_trailing_slash_or_dot_is_not_found_over_http() {
    let t = Tree::new("slash");
    t.file("file.txt", b"content")
        .file("d/index.html", b"<p>i</p>");
    t.serve_each(
        |_| {},
        |srv, via| {
            for target in ["/file.txt/", "/file.txt/.", "/file.txt//", "/d/index.html/"] {
                let r = srv.get(target, &[]);
                assert_eq!(r.status, 404, "{via}: {target}: {r:?}");
            }
            assert_eq!(srv.get("/file.txt", &[]).body, b"content", "{via}");
            assert_eq!(srv.get("/d/", &[]).body, b"<p>i</p>", "{via}");
        },
    );
}

#[test]
fn a_file_with_a_trailing_slash_or_dot_is_not_found_over_the_line_protocol() {
    let t = Tree::new("slashline");
    t.file("file.txt", b"content");
    t.serve_each(
        |_| {},
        |srv, via| {
            let mut want = error_line("not found");
            want.extend_from_slice(&error_line("not found"));
            want.extend_from_slice(b"content");
            assert_eq!(
                String::from_utf8_lossy(&srv.lines(&[b"file.txt/", b"file.txt/.", b"/file.txt"])),
                String::from_utf8_lossy(&want),
                "{via}"
            );
        },
    );
}

#[test]
fn names_that_climb_out_of_the_root_or_through_links_out_of_it_are_refused() {
    // Beside the root: a file no name may reach.
    let t = Tree::new("escape");
    t.file("in.txt", b"inside")
        .file("../outside.txt", b"OUTSIDE")
        .link("../outside.txt", "up")
        .link("/etc/passwd", "abs")
        .link("d/../../outside.txt", "deep");
    std::fs::create_dir_all(t.path("d")).unwrap();
    t.serve_each(
        |c| c.path.hidden = true,
        |srv, via| {
            for target in [
                "/../outside.txt",
                "/d/../../outside.txt",
                "/%2e%2e/outside.txt",
                "/up",
                "/abs",
                "/deep",
            ] {
                let r = srv.get(target, &[]);
                assert!(
                    matches!(r.status, 400 | 403 | 404),
                    "{via}: {target}: {r:?}"
                );
                let body = String::from_utf8_lossy(&r.body);
                assert!(
                    !body.contains("OUTSIDE") && !body.contains("root:"),
                    "{via}: {target}: {body}"
                );
            }
            let names: [&[u8]; 4] = [b"../outside.txt", b"up", b"abs", b"deep"];
            let mut want = Vec::new();
            for _ in names {
                want.extend_from_slice(&error_line("forbidden"));
            }
            want.extend_from_slice(b"inside");
            let mut ask = names.to_vec();
            ask.push(b"in.txt");
            assert_eq!(
                String::from_utf8_lossy(&srv.lines(&ask)),
                String::from_utf8_lossy(&want),
                "{via}"
            );
            assert_eq!(srv.get("/in.txt", &[]).body, b"inside", "{via}");
        },
    );
}
