//! The access-log file is opened (as root, before privileges are dropped)
//! without following a symlink at its name, and only if it is a regular file
//! (or absent) with no other name: a symlink or a hard link planted where the
//! log goes cannot make root append to another file, and a FIFO there cannot
//! block the start.

use std::time::Duration;

use iocomp_server::LogFile;

use crate::harness::Tree;

#[test]
fn the_log_file_is_not_opened_through_a_symlink_nor_as_a_fifo() {
    let t = Tree::new("accesslog");
    t.file("victim", b"precious\n");
    t.link("victim", "via-link.log");
    let err = LogFile::open(t.path("via-link.log")).expect_err("a symlink is refused");
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    assert_eq!(std::fs::read(t.path("victim")).unwrap(), b"precious\n");

    let fifo = t.path("fifo.log");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(LogFile::open(fifo).map(|_| ())));
    let res = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("opening a FIFO as the log must not block");
    assert!(res.is_err(), "a FIFO is not a log file");

    // A regular file, new or existing, is appended to.
    let log = LogFile::open(t.path("new.log")).unwrap();
    assert_eq!(log.path(), t.path("new.log"));
    t.file("old.log", b"line 1\n");
    assert!(LogFile::open(t.path("old.log")).is_ok());
}

#[test]
fn the_log_file_is_not_opened_through_a_hard_link() {
    let t = Tree::new("accesslog-hard");
    t.file("victim", b"precious\n");
    // A hard link planted where the log goes: the same inode as another file.
    std::fs::hard_link(t.path("victim"), t.path("hard.log")).unwrap();
    let err = LogFile::open(t.path("hard.log")).expect_err("a hard link is refused");
    assert!(err.to_string().contains("link"), "{err}");
    assert_eq!(std::fs::read(t.path("victim")).unwrap(), b"precious\n");
    // Once it is the file's only name, it is a log like any other.
    std::fs::remove_file(t.path("victim")).unwrap();
    assert!(LogFile::open(t.path("hard.log")).is_ok());
}
