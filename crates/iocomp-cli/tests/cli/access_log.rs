//! The access log in a file (`--access-log-file`): lines go there, not to
//! stdout; SIGUSR1 reopens it, as logrotate expects, and a reopen that fails
//! keeps the old file; a symbolic link in its place is refused at start.

use crate::harness::{assert_bytes_eq, exit_of, fetch, serve_command, wait_file, Server, TempTree};

#[test]
fn the_access_log_file_is_reopened_on_sigusr1() {
    let tree = TempTree::new();
    tree.file("first.txt", b"1\n");
    tree.file("second.txt", b"2\n");
    let log = tree.base().join("access.log");
    let rotated = tree.base().join("access.log.1");
    let server = Server::start(
        tree.root(),
        &["--quiet", "--access-log-file", log.to_str().unwrap()],
    );
    assert_bytes_eq(&fetch(server.addr(), &[b"first.txt"]), b"1\n", "first");
    wait_file(&log, "first line", |t| t.contains("\"first.txt\" 200 2"));
    assert!(
        !server
            .stdout_lines()
            .iter()
            .any(|l| l.contains("first.txt")),
        "the log went to stdout too"
    );

    std::fs::rename(&log, &rotated).unwrap(); // what logrotate does
    server.signal(libc::SIGUSR1);
    wait_file(&log, "the reopened file", |_| log.exists());
    assert_bytes_eq(&fetch(server.addr(), &[b"second.txt"]), b"2\n", "second");
    let new = wait_file(&log, "second line", |t| t.contains("\"second.txt\" 200 2"));
    assert!(
        !new.contains("first.txt"),
        "old line in the new file: {new}"
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("\"first.txt\" 200 2"), "{old}");
    assert!(
        !old.contains("second.txt"),
        "new line in the old file: {old}"
    );
    a_failed_reopen_keeps_the_old_file(&server, &log);
}

/// With a directory where the log was, SIGUSR1's reopen fails: a warning,
/// and the old descriptor goes on taking the lines.
fn a_failed_reopen_keeps_the_old_file(server: &Server, log: &std::path::Path) {
    std::fs::remove_file(log).unwrap();
    std::fs::create_dir(log).unwrap(); // a directory cannot be opened for appending
    server.signal(libc::SIGUSR1);
    server.wait_stderr("cannot reopen the access log");
    assert_bytes_eq(
        &fetch(server.addr(), &[b"first.txt"]),
        b"1\n",
        "after a failed reopen",
    );
    // The old descriptor (its file now unlinked) still takes the lines: the
    // server is alive and serving, and wrote nothing to stdout.
    assert!(!server
        .stdout_lines()
        .iter()
        .any(|l| l.contains("first.txt")));
}

#[test]
fn an_access_log_file_that_is_a_symlink_is_refused_at_start() {
    let tree = TempTree::new();
    let victim = tree.outside_file("victim.txt", b"untouched\n");
    let link = tree.base().join("access.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let (code, err) = exit_of(serve_command(
        tree.root(),
        &["--access-log-file", link.to_str().unwrap()],
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot open the access log"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched\n");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
}
