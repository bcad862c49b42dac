//! The access log: one line per request, HTTP and line protocol, in Common
//! Log Format (the body bytes sent, as nginx's `%b`) or JSON. The log file is
//! opened (as root, before privileges are dropped) without following a
//! symlink at its name, and only if it is a regular file (or absent) with no
//! other name: a symlink or a hard link planted where the log goes cannot
//! make root append to another file, and a FIFO there cannot block the start.

use std::path::Path;
use std::time::Duration;

use iocomp_server::{AccessLogFormat, LogFile};

use crate::harness::client::req;
use crate::harness::{
    assert_bytes_eq, error_line, log_lines, poll_until, pseudo_random, Running, Tree,
};

/// Bound for an access-log line to show up (the log is flushed on a timer).
const LOG_WAIT: Duration = Duration::from_secs(10);

/// The tree served with its access log in `access.log` beside the root.
fn serve_logged(tree: &Tree, format: AccessLogFormat) -> (Running, std::path::PathBuf) {
    let log = tree.base().join("access.log");
    let file = LogFile::open(&log).expect("open the access log");
    let srv = tree.serve(|c| {
        c.access_log = format;
        c.access_log_file = Some(file);
    });
    (srv, log)
}

/// Polls (bounded) for a line of the log satisfying `pred`.
fn wait_line(path: &Path, pred: impl Fn(&str) -> bool) -> Option<String> {
    let mut found = None;
    poll_until(LOG_WAIT, || {
        found = log_lines(path).into_iter().find(|l| pred(l));
        found.is_some()
    });
    found
}

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

#[test]
fn one_clf_line_per_http_request_with_body_bytes() {
    let tree = Tree::new("clfhttp");
    let f = pseudo_random(101, 12_345);
    tree.file("f.bin", &f).file("g.txt", b"g file\n");
    let (srv, log) = serve_logged(&tree, AccessLogFormat::Clf);
    let mut c = srv.client();
    let mut batch = req("GET", "/f.bin", &[]);
    batch.extend_from_slice(&req("HEAD", "/g.txt", &[]));
    batch.extend_from_slice(&req("GET", "/missing.txt", &[]));
    batch.extend_from_slice(&req("GET", "/g.txt", &[("Range", "bytes=0-2")]));
    c.send(&batch);
    c.response(false).assert_status(200, "GET /f.bin");
    c.response(true).assert_status(200, "HEAD /g.txt");
    c.response(false).assert_status(404, "GET /missing.txt");
    c.response(false).assert_status(206, "GET /g.txt range");
    drop(c);
    let expect = [
        ("\"GET /f.bin HTTP/1.1\" 200 ", Some(f.len())),
        ("\"HEAD /g.txt HTTP/1.1\" 200 ", None),
        ("\"GET /missing.txt HTTP/1.1\" 404 ", None),
        ("\"GET /g.txt HTTP/1.1\" 206 ", Some(3)),
    ];
    // Wait for all four (the log is flushed on a timer), then check each.
    poll_until(LOG_WAIT, || {
        let lines = log_lines(&log);
        expect
            .iter()
            .all(|(p, _)| lines.iter().any(|l| l.contains(p)))
    });
    let lines = log_lines(&log);
    let mut problems = Vec::new();
    for (pattern, bytes) in expect {
        let matching: Vec<&String> = lines.iter().filter(|l| l.contains(pattern)).collect();
        if matching.len() != 1 {
            problems.push(format!(
                "{} lines contain {pattern:?} (want 1)",
                matching.len()
            ));
            continue;
        }
        let line = matching[0];
        if !line.starts_with("127.0.0.1 - - [") {
            problems.push(format!("not a CLF line: {line:?}"));
        }
        let logged = line.rsplit(' ').next().unwrap_or_default();
        if bytes.is_some_and(|n| logged != n.to_string()) {
            problems.push(format!(
                "{pattern}: logged {logged} bytes, want {bytes:?} (CLF %b): {line:?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "access log:\n{}\nlog:\n{}",
        problems.join("\n"),
        lines.join("\n")
    );
}

const OK_CONTENT: &[u8] = b"ok.txt: a small file for the access log tests\n";

/// Fetches `ok.txt` then `missing` on one line-protocol connection.
fn fetch_ok_and_missing(srv: &Running) {
    let got = srv.lines(&[b"ok.txt", b"missing"]);
    let want = [OK_CONTENT, &error_line("not found")].concat();
    assert_bytes_eq(&got, &want, "ok.txt then missing");
}

#[test]
fn clf_lines_for_line_protocol_files_and_errors() {
    let tree = Tree::new("clfline");
    tree.file("ok.txt", OK_CONTENT);
    let (srv, log) = serve_logged(&tree, AccessLogFormat::Clf);
    fetch_ok_and_missing(&srv);
    let ok = format!("\"ok.txt\" 200 {}", OK_CONTENT.len());
    let line = wait_line(&log, |l| l.ends_with(&ok)).unwrap_or_else(|| {
        panic!(
            "no CLF line ending in {ok:?} within {LOG_WAIT:?}; log: {:?}",
            log_lines(&log)
        )
    });
    assert!(
        line.starts_with("127.0.0.1 - - ["),
        "CLF line does not start with `127.0.0.1 - - [`: {line:?}"
    );
    // The byte count is what was sent: the error line itself (as nginx
    // counts an error page's body).
    let missing = format!("\"missing\" 404 {}", error_line("not found").len());
    assert!(
        wait_line(&log, |l| l.ends_with(&missing)).is_some(),
        "CLF: no line ending in {missing:?}; log: {:?}",
        log_lines(&log)
    );
}

#[test]
fn json_lines_for_line_protocol_files_and_errors() {
    let tree = Tree::new("jsonline");
    tree.file("ok.txt", OK_CONTENT);
    let (srv, log) = serve_logged(&tree, AccessLogFormat::Json);
    fetch_ok_and_missing(&srv);
    let line = wait_line(&log, |l| l.contains("\"name\":\"ok.txt\"")).unwrap_or_else(|| {
        panic!(
            "no JSON line for ok.txt within {LOG_WAIT:?}; log: {:?}",
            log_lines(&log)
        )
    });
    assert!(
        line.starts_with('{') && line.ends_with('}') && line.matches('{').count() == 1,
        "not one JSON object on one line: {line:?}"
    );
    assert!(
        line.contains("\"status\":200"),
        "JSON line without \"status\":200: {line:?}"
    );
    assert!(
        line.contains(&format!("\"bytes\":{}", OK_CONTENT.len())),
        "JSON line without the byte count: {line:?}"
    );
    assert!(
        wait_line(&log, |l| l.contains("\"name\":\"missing\"")
            && l.contains("\"status\":404"))
        .is_some(),
        "JSON: no line for `missing` with status 404; log: {:?}",
        log_lines(&log)
    );
}
