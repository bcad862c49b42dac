//! The hidden-file rule (no name component starting with `.` unless
//! `--hidden`) holds for what is actually opened: a symlink inside the root
//! that leads to a dotfile or into a dot-directory is refused like the dotfile
//! itself, on both protocols, for listings, precompressed siblings and through
//! the open-file cache. And a special file is never opened for reading: a
//! process blocked writing into a FIFO is not released by a request for it.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use crate::harness::{error_line, Tree};

/// A tree with dotfiles and links to them, and links that stay visible.
fn tree() -> Tree {
    let t = Tree::new("hidden");
    t.file("pub.txt", b"public")
        .file(".secret", b"SECRET")
        .file(".git/config", b"GITCONF")
        .file("d/x", b"x")
        .link(".secret", "s")
        .link(".git/config", "gc")
        .link(".git", "g")
        .link("../.secret", "d/up")
        .link("d/../.secret", "via")
        .link("./.git/../pub.txt", "through")
        .link("pub.txt", "ok")
        .link("ok", "chain")
        .link("d", "dl")
        .link("../d/x", "dl2");
    t
}

#[test]
fn links_to_dotfiles_and_dot_directories_are_refused_over_http() {
    let t = tree();
    t.serve_each(
        |_| {},
        |srv, via| {
            for target in [
                "/s",
                "/gc",
                "/g/config",
                "/g/",
                "/g",
                "/d/up",
                "/via",
                "/through",
            ] {
                let r = srv.get(target, &[]);
                assert_eq!(r.status, 403, "{via}: {target}: {r:?}");
                let body = String::from_utf8_lossy(&r.body);
                assert!(
                    !body.contains("SECRET") && !body.contains("GITCONF"),
                    "{via}: {target}: {body}"
                );
            }
            for (target, body) in [("/ok", "public"), ("/chain", "public"), ("/dl/x", "x")] {
                let r = srv.get(target, &[]);
                assert_eq!(
                    (r.status, &r.body[..]),
                    (200, body.as_bytes()),
                    "{via}: {target}"
                );
            }
            let listing = srv.get("/dl/", &[]);
            assert_eq!(listing.status, 200, "{via}");
            assert!(
                String::from_utf8_lossy(&listing.body).contains(">x</a>"),
                "{via}"
            );
        },
    );
}

#[test]
fn links_to_dotfiles_and_dot_directories_are_refused_over_the_line_protocol() {
    let t = tree();
    t.serve_each(
        |_| {},
        |srv, via| {
            let names: [&[u8]; 6] = [b"s", b"gc", b"g/config", b"d/up", b"via", b"through"];
            let mut want = Vec::new();
            for _ in names {
                want.extend_from_slice(&error_line("forbidden"));
            }
            assert_eq!(
                String::from_utf8_lossy(&srv.lines(&names)),
                String::from_utf8_lossy(&want),
                "{via}"
            );
            assert_eq!(srv.lines(&[b"chain", b"dl/x"]), b"publicx", "{via}");
        },
    );
}

#[test]
fn with_hidden_files_allowed_the_links_are_followed() {
    let t = tree();
    t.serve_each(
        |c| c.path.hidden = true,
        |srv, via| {
            assert_eq!(srv.get("/s", &[]).body, b"SECRET", "{via}");
            assert_eq!(srv.lines(&[b"g/config"]), b"GITCONF", "{via}");
            assert_eq!(srv.get("/through", &[]).body, b"public", "{via}");
            assert_eq!(srv.get("/d/up", &[]).body, b"SECRET", "{via}");
        },
    );
}

#[test]
fn a_precompressed_sibling_that_links_to_a_dotfile_is_not_served() {
    let t = Tree::new("sibling");
    t.file("a.txt", b"plain")
        .file(".a.txt.gz", b"GZSECRET")
        .link(".a.txt.gz", "a.txt.gz");
    t.serve_each(
        |_| {},
        |srv, via| {
            let r = srv.get("/a.txt", &[("Accept-Encoding", "gzip")]);
            assert_eq!(r.status, 200, "{via}");
            assert_eq!(r.body, b"plain", "{via}");
            assert_eq!(r.header("content-encoding"), None, "{via}");
        },
    );
}

#[test]
fn the_open_file_cache_never_serves_a_link_swapped_to_a_dotfile() {
    let t = Tree::new("cacheswap");
    t.file("pub.txt", b"public")
        .file(".secret", b"SECRET")
        .link("pub.txt", "l");
    t.serve_each(
        |c| c.open_file_cache = 64,
        |srv, via| {
            std::fs::remove_file(t.path("l")).unwrap();
            std::os::unix::fs::symlink("pub.txt", t.path("l")).unwrap();
            assert_eq!(srv.get("/l", &[]).body, b"public", "{via}");
            assert_eq!(srv.lines(&[b"l"]), b"public", "{via}");
            std::fs::remove_file(t.path("l")).unwrap();
            std::os::unix::fs::symlink(".secret", t.path("l")).unwrap();
            assert_eq!(srv.get("/l", &[]).status, 403, "{via}");
            assert_eq!(srv.lines(&[b"l"]), error_line("forbidden"), "{via}");
        },
    );
}

#[test]
fn a_fifo_writer_is_not_released_by_requests_for_the_fifo() {
    let t = Tree::new("fifo");
    let fifo = t.path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    t.link("fifo", "to-fifo");
    t.serve_each(
        |_| {},
        |srv, via| {
            let (tx, rx) = std::sync::mpsc::channel();
            let path = fifo.clone();
            // Opening a FIFO for writing blocks until someone opens it for reading.
            let writer = std::thread::spawn(move || {
                let w = OpenOptions::new().write(true).open(path);
                let _ = tx.send(w.is_ok());
            });
            assert_eq!(srv.get("/fifo", &[]).status, 403, "{via}");
            assert_eq!(srv.get("/to-fifo", &[]).status, 403, "{via}");
            assert_eq!(
                srv.lines(&[b"fifo"]),
                error_line("not a regular file"),
                "{via}"
            );
            assert_eq!(
                srv.lines(&[b"to-fifo"]),
                error_line("not a regular file"),
                "{via}"
            );
            assert!(
                rx.recv_timeout(Duration::from_secs(1)).is_err(),
                "{via}: the server opened the FIFO for reading: the writer was released"
            );
            // Release the writer ourselves: it must be waiting still.
            let _reader = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap();
            assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(true), "{via}");
            writer.join().unwrap();
        },
    );
}
