//! The line protocol over real connections: files arrive byte-exact (empty,
//! tiny, large, pipelined and under concurrency); every bad request gets
//! exactly its one `File transmit error: <reason>\r\n` line while the
//! connection survives; hidden files and symlinks follow the policy; a last
//! name without its newline is still answered; garbage disturbs no one.

use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;

use crate::harness::client::{expect_bytes, line, read_exact_timeout, read_to_end_timeout, send};
use crate::harness::{
    assert_bytes_eq, error_line, join_all, pseudo_random, show, Running, Tree, IO_TIMEOUT, REASONS,
};

const OK_CONTENT: &[u8] = b"ok.txt: the reference file\n";

/// Requests `ok.txt` on `stream` and checks its exact content: proof that the
/// connection is still usable after the previous request.
fn expect_ok_still_served(stream: &mut TcpStream, after: &str) {
    send(stream, b"ok.txt\n");
    expect_bytes(
        stream,
        OK_CONTENT,
        &format!("ok.txt after {after} (connection must survive)"),
    );
}

/// Half-closes and checks the server then closes without sending anything
/// more: no stray bytes were left behind by earlier replies.
fn expect_clean_close(mut stream: TcpStream, what: &str) {
    stream.shutdown(Shutdown::Write).expect("half-close");
    let rest = read_to_end_timeout(&mut stream, IO_TIMEOUT);
    assert!(
        rest.is_empty(),
        "{what}: unexpected extra bytes before close: {}",
        show(&rest)
    );
}

#[test]
fn serves_0b_1b_1mib_byte_exact() {
    let tree = Tree::new("lp-sizes");
    let (empty, one, big) = (Vec::new(), vec![0xA5u8], pseudo_random(1, 1 << 20));
    tree.file("empty.bin", &empty)
        .file("one.bin", &one)
        .file("big.bin", &big);
    let srv = tree.serve(|_| {});
    // Each file on its own connection, delimited by the server's close.
    let cases: [(&[u8], &[u8]); 3] = [
        (b"empty.bin", &empty),
        (b"one.bin", &one),
        (b"big.bin", &big),
    ];
    for (name, want) in cases {
        assert_bytes_eq(&srv.lines(&[name]), want, &String::from_utf8_lossy(name));
    }
    // All three pipelined on one connection, delimited by their known sizes.
    let mut stream = srv.connect();
    send(&mut stream, b"big.bin\nempty.bin\none.bin\n");
    let total = big.len() + empty.len() + one.len();
    let got = read_exact_timeout(&mut stream, total, IO_TIMEOUT * 3);
    let want = [&big[..], &empty, &one].concat();
    assert_bytes_eq(&got, &want, "three files pipelined on one connection");
    expect_clean_close(stream, "pipelined connection");
}

#[test]
fn twenty_clients_three_files_each() {
    const CLIENTS: usize = 20;
    let tree = Tree::new("lp-twenty");
    let mut plans: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for c in 0..CLIENTS {
        let sizes = [1024 + c * 3, 100 * 1024 + c * 101, 300 * 1024 + c * 1009];
        let mut files = Vec::new();
        for (f, size) in sizes.into_iter().enumerate() {
            let name = format!("c{c:02}/f{f}.bin");
            let content = pseudo_random((100 + c * 10 + f) as u64, size);
            tree.file(&name, &content);
            files.push((name, content));
        }
        // Vary the request order between clients.
        files.rotate_left(c % 3);
        plans.push(files);
    }
    let srv = tree.serve(|_| {});
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(c, files)| {
            let barrier = Arc::clone(&barrier);
            let mut stream = srv.connect();
            thread::spawn(move || {
                // All clients connected before anyone requests anything.
                barrier.wait();
                for (name, content) in &files {
                    send(&mut stream, &line(name.as_bytes()));
                    let got = read_exact_timeout(&mut stream, content.len(), IO_TIMEOUT * 3);
                    assert_bytes_eq(&got, content, &format!("client {c}: {name}"));
                }
                expect_clean_close(stream, &format!("client {c}"));
            })
        })
        .collect();
    let (_, failed) = join_all(handles);
    assert!(failed.is_empty(), "clients failed: {failed:?}");
}

/// What a request should produce.
enum Expect {
    /// The file's raw bytes.
    Content(&'static [u8]),
    /// Exactly one error line with this reason.
    Error(&'static str),
}

/// Sends each `(request bytes, expectation)` on one connection, checks the
/// reply, then checks `ok.txt` is still served on the same connection.
fn run_cases(srv: &Running, cases: &[(Vec<u8>, Expect)]) {
    let mut stream = srv.connect();
    for (request, expect) in cases {
        let what = format!("request {}", show(request));
        send(&mut stream, request);
        match expect {
            Expect::Content(bytes) => expect_bytes(&mut stream, bytes, &what),
            Expect::Error(reason) => expect_bytes(&mut stream, &error_line(reason), &what),
        }
        expect_ok_still_served(&mut stream, &what);
    }
    expect_clean_close(stream, "after all cases");
}

const INNER: &[u8] = b"inner file in sub/\n";
const TWO_DOTS: &[u8] = b"a legal name containing two dots\n";

/// The tree shared by the bad-input and policy tests.
pub fn bad_inputs_tree(tag: &str) -> Tree {
    let tree = Tree::new(tag);
    tree.file("ok.txt", OK_CONTENT)
        .file("sub/inner.txt", INNER)
        .file("a..b", TWO_DOTS)
        .file(".secret", b"a dotfile\n")
        .file(".dotdir/in-dotdir.txt", b"in a dot directory\n");
    let outside = tree.outside("outside.txt", b"outside the served tree\n");
    // Absolute symlink out of the tree; /etc/hostname when the system has it.
    let hostname = std::path::Path::new("/etc/hostname");
    tree.link(
        if hostname.exists() {
            hostname
        } else {
            outside.as_path()
        },
        "abs",
    )
    .link(&outside, "abs_outside")
    .link("../outside.txt", "rel")
    .link("does-not-exist.txt", "dangling")
    .link("ok.txt", "link")
    .link("../ok.txt", "sub/up") // relative, `..` in target, stays inside
    .link("sub", "linkdir") // a directory link as a middle component
    .fifo("fifo");
    tree
}

#[test]
fn bad_inputs_get_the_right_error_line_and_the_connection_survives() {
    let tree = bad_inputs_tree("lp-bad");
    let srv = tree.serve(|_| {});
    let long_line = [&[b'x'; 5000][..], b"\n"].concat();
    use Expect::{Content, Error};
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (line(b"ok.txt"), Content(OK_CONTENT)),
        (line(b"../etc/passwd"), Error("forbidden")),
        (line(b"sub/../ok.txt"), Error("forbidden")),
        (line(b"/ok.txt"), Content(OK_CONTENT)),
        (line(b"sub/inner.txt"), Content(INNER)),
        (line(b"abs"), Error("forbidden")),
        (line(b"abs_outside"), Error("forbidden")),
        (line(b"rel"), Error("forbidden")),
        (line(b"dangling"), Error("not found")),
        (line(b"a\0b"), Error("bad name")),
        (line(b"sub"), Error("not a regular file")),
        // Must not block on opening a FIFO that has no writer.
        (line(b"fifo"), Error("not a regular file")),
        (line(b".secret"), Error("forbidden")),
        (line(b".dotdir/in-dotdir.txt"), Error("forbidden")),
        (line(b""), Error("bad name")),
        (long_line.clone(), Error("line too long")),
        (line(b"missing.txt"), Error("not found")),
        (line(b"a..b"), Content(TWO_DOTS)),
        (b"ok.txt\r\n".to_vec(), Content(OK_CONTENT)),
        (line(b"link"), Content(OK_CONTENT)),
        (line(b"sub/up"), Content(OK_CONTENT)),
        (line(b"linkdir/inner.txt"), Content(INNER)),
    ];
    run_cases(&srv, &cases);
}

#[test]
fn bad_inputs_pipelined_and_a_long_line_in_pieces() {
    let tree = bad_inputs_tree("lp-badpipe");
    let srv = tree.serve(|_| {});
    // The same replies when the lines arrive pipelined in a single write,
    // including a too-long line followed directly by the next line.
    let mut stream = srv.connect();
    let mut request = [&[b'x'; 5000][..], b"\n"].concat();
    let mut want = error_line("line too long");
    for (name, reply) in [
        (&b"missing.txt"[..], error_line("not found")),
        (b"ok.txt", OK_CONTENT.to_vec()),
        (b"../x", error_line("forbidden")),
        (b"", error_line("bad name")),
        (b"fifo", error_line("not a regular file")),
        (b"a..b", TWO_DOTS.to_vec()),
    ] {
        request.extend_from_slice(&line(name));
        want.extend_from_slice(&reply);
    }
    send(&mut stream, &request);
    expect_bytes(&mut stream, &want, "pipelined mixed requests");
    expect_clean_close(stream, "pipelined mixed requests");
    // A 100 KiB line written in 1 KiB pieces: far more than any line buffer,
    // so the server has to discard as it goes; still exactly one error line.
    let mut stream = srv.connect();
    for _ in 0..100 {
        send(&mut stream, &[b'z'; 1024]);
    }
    send(&mut stream, b"\n");
    expect_bytes(
        &mut stream,
        &error_line("line too long"),
        "100 KiB line in pieces",
    );
    expect_ok_still_served(&mut stream, "100 KiB line in pieces");
    expect_clean_close(stream, "100 KiB line in pieces");
}

#[test]
fn hidden_files_allowed_serves_dotfiles_but_never_dotdot() {
    let tree = bad_inputs_tree("lp-hidden");
    let srv = tree.serve(|c| c.path.hidden = true);
    use Expect::{Content, Error};
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (line(b".secret"), Content(b"a dotfile\n")),
        (
            line(b".dotdir/in-dotdir.txt"),
            Content(b"in a dot directory\n"),
        ),
        // `..` stays refused even with hidden files allowed.
        (line(b"../outside.txt"), Error("forbidden")),
        (line(b"sub/../ok.txt"), Error("forbidden")),
        (line(b"ok.txt"), Content(OK_CONTENT)),
    ];
    run_cases(&srv, &cases);
}

#[test]
fn no_symlinks_refuses_inner_symlinks() {
    let tree = bad_inputs_tree("lp-nolinks");
    let srv = tree.serve(|c| c.path.no_symlinks = true);
    use Expect::{Content, Error};
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (line(b"link"), Error("forbidden")),
        (line(b"sub/up"), Error("forbidden")),
        (line(b"linkdir/inner.txt"), Error("forbidden")),
        (line(b"abs"), Error("forbidden")),
        (line(b"rel"), Error("forbidden")),
        // Plain files are unaffected.
        (line(b"ok.txt"), Content(OK_CONTENT)),
        (line(b"sub/inner.txt"), Content(INNER)),
    ];
    run_cases(&srv, &cases);
}

#[test]
fn name_without_newline_then_half_close_is_served_then_closed() {
    let tree = Tree::new("lp-nolf");
    tree.file("ok.txt", OK_CONTENT);
    let srv = tree.serve(|_| {});
    let got = srv.lines(&[]); // nothing at all, then half-close
    assert!(got.is_empty(), "empty request got bytes: {}", show(&got));
    let mut stream = srv.connect();
    send(&mut stream, b"ok.txt");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let got = read_to_end_timeout(&mut stream, IO_TIMEOUT);
    assert_bytes_eq(&got, OK_CONTENT, "final name without LF");
    // Complete lines first, then an unterminated one: all answered, in order.
    let mut stream = srv.connect();
    send(&mut stream, b"ok.txt\nmissing\nok.txt");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let got = read_to_end_timeout(&mut stream, IO_TIMEOUT);
    let want = [OK_CONTENT, &error_line("not found"), OK_CONTENT].concat();
    assert_bytes_eq(&got, &want, "two lines then a final name without LF");
}

/// Splits a reply made only of error lines; panics on anything else.
pub fn parse_error_lines(reply: &[u8]) -> Vec<String> {
    let mut reasons = Vec::new();
    let mut rest = reply;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("reply does not end in CRLF: {}", show(rest)));
        let l = &rest[..end];
        let reason = l
            .strip_prefix(b"File transmit error: ")
            .unwrap_or_else(|| panic!("not an error line: {}", show(l)));
        let reason = String::from_utf8_lossy(reason).into_owned();
        assert!(
            REASONS.contains(&reason.as_str()),
            "unknown reason {reason:?}"
        );
        reasons.push(reason);
        rest = &rest[end + 2..];
    }
    reasons
}

#[test]
fn random_binary_garbage_does_not_disturb_others() {
    let tree = Tree::new("lp-garbage");
    let big = pseudo_random(7, 256 * 1024);
    tree.file("ok.txt", OK_CONTENT).file("big.bin", &big);
    let srv = tree.serve(|_| {});
    let mut garbage = pseudo_random(0xBAD, 64 * 1024);
    // Make sure the mix has NULs, CRs and LFs in it, and end on an ordinary
    // byte so the final (unterminated) name is a real request.
    for i in (0..garbage.len()).step_by(997) {
        garbage[i] = [b'\n', b'\0', b'\r', b'\n'][(i / 997) % 4];
    }
    *garbage.last_mut().unwrap() = b'x';
    // Every LF ends one request, plus the final unterminated name.
    let expected_replies = garbage.iter().filter(|&&b| b == b'\n').count() + 1;
    let mut stream = srv.connect();
    let garbage_client = thread::spawn(move || {
        let mut writer = stream.try_clone().expect("clone socket");
        // Write on another thread so neither side can block the other.
        let writer = thread::spawn(move || {
            send(&mut writer, &garbage);
            writer.shutdown(Shutdown::Write).expect("half-close");
        });
        let reply = read_to_end_timeout(&mut stream, IO_TIMEOUT * 3);
        writer.join().expect("garbage writer");
        reply
    });
    // Meanwhile, a well-behaved client.
    let got = srv.lines(&[b"big.bin", b"ok.txt"]);
    assert_bytes_eq(
        &got,
        &[&big[..], OK_CONTENT].concat(),
        "fetch alongside the garbage client",
    );
    let reply = garbage_client.join().expect("garbage client");
    let reasons = parse_error_lines(&reply);
    assert_eq!(
        reasons.len(),
        expected_replies,
        "one error line per garbage line expected"
    );
    // And afterwards.
    let got = srv.lines(&[b"ok.txt", b"big.bin"]);
    assert_bytes_eq(
        &got,
        &[OK_CONTENT, &big[..]].concat(),
        "fetch after the garbage client",
    );
}
