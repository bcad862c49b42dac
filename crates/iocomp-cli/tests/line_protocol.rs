//! End-to-end tests of the `iocomp serve` line protocol over real TCP
//! connections: files arrive byte-exact (empty, tiny, large, pipelined and
//! under concurrency), every bad request gets exactly its one
//! `File transmit error: <reason>\r\n` line while the connection survives,
//! the `--hidden` and `--no-symlinks` flags change what is served, garbage and
//! vanishing clients do not disturb anyone else, and the server's descriptor
//! count returns to its baseline once all clients are gone.

mod common;

use common::{
    assert_bytes_eq, error_line, expect_bytes, fetch, line, pseudo_random, read_exact_timeout,
    read_to_end_timeout, send, set_linger_zero, show, Server, TempTree, IO_TIMEOUT, REASONS,
};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;

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
    let tree = TempTree::new();
    let empty: Vec<u8> = Vec::new();
    let one = vec![0xA5u8];
    let big = pseudo_random(1, 1 << 20);
    tree.file("empty.bin", &empty);
    tree.file("one.bin", &one);
    tree.file("big.bin", &big);
    let server = Server::start(tree.root(), &[]);

    // Each file on its own connection, delimited by the server's close.
    let cases: [(&[u8], &[u8]); 3] = [
        (b"empty.bin", &empty),
        (b"one.bin", &one),
        (b"big.bin", &big),
    ];
    for (name, want) in cases {
        let got = fetch(server.addr(), &[name]);
        assert_bytes_eq(&got, want, &String::from_utf8_lossy(name));
    }

    // All three pipelined on one connection, delimited by their known sizes.
    let mut stream = server.connect();
    send(&mut stream, b"big.bin\nempty.bin\none.bin\n");
    let total = big.len() + empty.len() + one.len();
    let got = read_exact_timeout(&mut stream, total, IO_TIMEOUT * 3);
    let mut want = big.clone();
    want.extend_from_slice(&empty);
    want.extend_from_slice(&one);
    assert_bytes_eq(&got, &want, "three files pipelined on one connection");
    expect_clean_close(stream, "pipelined connection");
}

#[test]
fn twenty_clients_three_files_each() {
    const CLIENTS: usize = 20;
    let tree = TempTree::new();
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
    let server = Server::start(tree.root(), &[]);
    let addr = server.addr();

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(c, files)| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut stream = common::connect(addr);
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
    let failed: Vec<usize> = handles
        .into_iter()
        .enumerate()
        .filter_map(|(c, h)| h.join().is_err().then_some(c))
        .collect();
    assert!(
        failed.is_empty(),
        "clients failed (see their panics above): {failed:?}"
    );
}

/// What a request should produce.
enum Expect {
    /// The file's raw bytes.
    Content(Vec<u8>),
    /// Exactly one error line with this reason.
    Error(&'static str),
}

/// Sends each `(request bytes, expectation)` on one connection, checks the
/// reply, then checks `ok.txt` is still served on the same connection.
fn run_cases(server: &Server, cases: &[(Vec<u8>, Expect)]) {
    let mut stream = server.connect();
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

/// Builds the tree shared by the bad-input and flag tests.
fn bad_inputs_tree() -> TempTree {
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    tree.file("sub/inner.txt", b"inner file in sub/\n");
    tree.file("a..b", b"a legal name containing two dots\n");
    tree.file(".secret", b"a dotfile\n");
    tree.file(".dotdir/in-dotdir.txt", b"in a dot directory\n");
    let outside = tree.outside_file("outside.txt", b"outside the served tree\n");
    // Absolute symlink out of the tree; /etc/hostname when the system has it.
    let hostname = std::path::Path::new("/etc/hostname");
    if hostname.exists() {
        tree.symlink(hostname, "abs");
    } else {
        tree.symlink(&outside, "abs");
    }
    tree.symlink(&outside, "abs_outside");
    tree.symlink("../outside.txt", "rel");
    tree.symlink("does-not-exist.txt", "dangling");
    tree.symlink("ok.txt", "link");
    tree.symlink("../ok.txt", "sub/up"); // relative, `..` in target, stays inside
    tree.symlink("sub", "linkdir"); // directory symlink used as a middle component
    tree.fifo("fifo");
    tree
}

#[test]
fn bad_inputs_get_the_right_error_line_and_the_connection_survives() {
    let tree = bad_inputs_tree();
    let server = Server::start(tree.root(), &[]);
    let long_line = {
        let mut l = vec![b'x'; 5000];
        l.push(b'\n');
        l
    };
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (line(b"ok.txt"), Expect::Content(OK_CONTENT.to_vec())),
        (line(b"../etc/passwd"), Expect::Error("forbidden")),
        (line(b"sub/../ok.txt"), Expect::Error("forbidden")),
        (line(b"/ok.txt"), Expect::Content(OK_CONTENT.to_vec())),
        (
            line(b"sub/inner.txt"),
            Expect::Content(b"inner file in sub/\n".to_vec()),
        ),
        (line(b"abs"), Expect::Error("forbidden")),
        (line(b"abs_outside"), Expect::Error("forbidden")),
        (line(b"rel"), Expect::Error("forbidden")),
        (line(b"dangling"), Expect::Error("not found")),
        (line(b"a\0b"), Expect::Error("bad name")),
        (line(b"sub"), Expect::Error("not a regular file")),
        // Must not block on opening a FIFO that has no writer: the reply has
        // to arrive within the read timeout.
        (line(b"fifo"), Expect::Error("not a regular file")),
        (line(b".secret"), Expect::Error("forbidden")),
        (line(b".dotdir/in-dotdir.txt"), Expect::Error("forbidden")),
        (line(b""), Expect::Error("bad name")),
        (long_line.clone(), Expect::Error("line too long")),
        (line(b"missing.txt"), Expect::Error("not found")),
        (
            line(b"a..b"),
            Expect::Content(b"a legal name containing two dots\n".to_vec()),
        ),
        (b"ok.txt\r\n".to_vec(), Expect::Content(OK_CONTENT.to_vec())),
        (line(b"link"), Expect::Content(OK_CONTENT.to_vec())),
        (line(b"sub/up"), Expect::Content(OK_CONTENT.to_vec())),
        (
            line(b"linkdir/inner.txt"),
            Expect::Content(b"inner file in sub/\n".to_vec()),
        ),
    ];
    run_cases(&server, &cases);

    // The same replies when the lines arrive pipelined in a single write,
    // including a too-long line followed directly by the next line.
    let mut stream = server.connect();
    let mut request = Vec::new();
    let mut want = Vec::new();
    request.extend_from_slice(&long_line);
    want.extend_from_slice(&error_line("line too long"));
    for (name, reply) in [
        (&b"missing.txt"[..], error_line("not found")),
        (b"ok.txt", OK_CONTENT.to_vec()),
        (b"../x", error_line("forbidden")),
        (b"", error_line("bad name")),
        (b"fifo", error_line("not a regular file")),
        (b"a..b", b"a legal name containing two dots\n".to_vec()),
    ] {
        request.extend_from_slice(&line(name));
        want.extend_from_slice(&reply);
    }
    send(&mut stream, &request);
    expect_bytes(&mut stream, &want, "pipelined mixed requests");
    expect_clean_close(stream, "pipelined mixed requests");

    // A 100 KiB line written in 1 KiB pieces: far more than any line buffer,
    // so the server has to discard as it goes; still exactly one error line.
    let mut stream = server.connect();
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
fn hidden_flag_serves_dotfiles() {
    let tree = bad_inputs_tree();
    let server = Server::start(tree.root(), &["--hidden"]);
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (line(b".secret"), Expect::Content(b"a dotfile\n".to_vec())),
        (
            line(b".dotdir/in-dotdir.txt"),
            Expect::Content(b"in a dot directory\n".to_vec()),
        ),
        // `..` stays refused even with --hidden.
        (line(b"../outside.txt"), Expect::Error("forbidden")),
        (line(b"sub/../ok.txt"), Expect::Error("forbidden")),
        (line(b"ok.txt"), Expect::Content(OK_CONTENT.to_vec())),
    ];
    run_cases(&server, &cases);
}

#[test]
fn no_symlinks_flag_refuses_inner_symlinks() {
    let tree = bad_inputs_tree();
    let server = Server::start(tree.root(), &["--no-symlinks"]);
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (line(b"link"), Expect::Error("forbidden")),
        (line(b"sub/up"), Expect::Error("forbidden")),
        (line(b"linkdir/inner.txt"), Expect::Error("forbidden")),
        (line(b"abs"), Expect::Error("forbidden")),
        (line(b"rel"), Expect::Error("forbidden")),
        // Plain files are unaffected.
        (line(b"ok.txt"), Expect::Content(OK_CONTENT.to_vec())),
        (
            line(b"sub/inner.txt"),
            Expect::Content(b"inner file in sub/\n".to_vec()),
        ),
    ];
    run_cases(&server, &cases);
}

#[test]
fn name_without_newline_then_half_close_is_served_then_closed() {
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let server = Server::start(tree.root(), &[]);

    let got = fetch(server.addr(), &[]); // nothing at all, then half-close
    assert!(got.is_empty(), "empty request got bytes: {}", show(&got));

    let mut stream = server.connect();
    send(&mut stream, b"ok.txt");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let got = read_to_end_timeout(&mut stream, IO_TIMEOUT);
    assert_bytes_eq(&got, OK_CONTENT, "final name without LF");

    // Complete lines first, then an unterminated one: all answered, in order.
    let mut stream = server.connect();
    send(&mut stream, b"ok.txt\nmissing\nok.txt");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let got = read_to_end_timeout(&mut stream, IO_TIMEOUT);
    let mut want = OK_CONTENT.to_vec();
    want.extend_from_slice(&error_line("not found"));
    want.extend_from_slice(OK_CONTENT);
    assert_bytes_eq(&got, &want, "two lines then a final name without LF");
}

/// Splits a reply made only of error lines; panics on anything else.
fn parse_error_lines(reply: &[u8]) -> Vec<String> {
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
    let tree = TempTree::new();
    tree.file("ok.txt", OK_CONTENT);
    let big = pseudo_random(7, 256 * 1024);
    tree.file("big.bin", &big);
    let mut server = Server::start(tree.root(), &[]);
    let addr = server.addr();

    let mut garbage = pseudo_random(0xBAD, 64 * 1024);
    // Make sure the mix has NULs, CRs and LFs in it, and end on an ordinary
    // byte so the final (unterminated) name is a real request.
    for i in (0..garbage.len()).step_by(997) {
        garbage[i] = [b'\n', b'\0', b'\r', b'\n'][(i / 997) % 4];
    }
    *garbage.last_mut().unwrap() = b'x';
    // Every LF ends one request, plus the final unterminated name.
    let expected_replies = garbage.iter().filter(|&&b| b == b'\n').count() + 1;

    let garbage_client = thread::spawn(move || {
        let mut stream = common::connect(addr);
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
    let got = fetch(addr, &[b"big.bin", b"ok.txt"]);
    let mut want = big.clone();
    want.extend_from_slice(OK_CONTENT);
    assert_bytes_eq(&got, &want, "fetch alongside the garbage client");

    let reply = garbage_client.join().expect("garbage client");
    let reasons = parse_error_lines(&reply);
    assert_eq!(
        reasons.len(),
        expected_replies,
        "one error line per garbage line expected"
    );

    // And afterwards.
    server.assert_alive();
    let got = fetch(addr, &[b"ok.txt", b"big.bin"]);
    let mut want = OK_CONTENT.to_vec();
    want.extend_from_slice(&big);
    assert_bytes_eq(&got, &want, "fetch after the garbage client");
    server.assert_alive();
}

/// Requests `name`, checks the first `keep` bytes against `content`, then
/// drops the connection in one of several abrupt ways.
fn vanish(addr: SocketAddr, name: &[u8], content: &[u8], keep: usize, style: usize) {
    let mut stream = common::connect(addr);
    send(&mut stream, &line(name));
    let got = read_exact_timeout(&mut stream, keep, IO_TIMEOUT);
    assert_bytes_eq(&got, &content[..keep], "prefix before vanishing");
    match style % 3 {
        0 => set_linger_zero(&stream), // RST on drop
        1 => {
            // FIN first; the drop with unread data then resets.
            let _ = stream.shutdown(Shutdown::Write);
        }
        _ => {} // plain close with unread data
    }
    drop(stream);
}

#[test]
fn clients_vanishing_mid_transfer() {
    let tree = TempTree::new();
    let big = Arc::new(pseudo_random(32, 32 << 20));
    tree.file("big.bin", &big);
    let mut server = Server::start(tree.root(), &[]);
    let baseline = server.fd_count();
    let addr = server.addr();

    let handles: Vec<_> = (0..10)
        .map(|i| {
            let big = Arc::clone(&big);
            thread::spawn(move || vanish(addr, b"big.bin", &big, 2048 + i * 1500, i))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert!(h.join().is_ok(), "vanishing client {i} failed");
    }

    server.assert_alive();
    let got = fetch(addr, &[b"big.bin"]);
    assert_bytes_eq(&got, &big, "full 32 MiB fetch after vanishing clients");
    server.assert_alive();
    server.assert_fds_back_to(baseline);
}

#[test]
fn no_descriptor_leak_after_mixed_traffic() {
    let tree = bad_inputs_tree();
    let big = Arc::new(pseudo_random(4, 4 << 20));
    tree.file("big.bin", &big);
    let mut server = Server::start(tree.root(), &[]);
    let baseline = server.fd_count();
    let addr = server.addr();

    let mut handles = Vec::new();
    // Good fetches.
    for i in 0..4 {
        let big = Arc::clone(&big);
        handles.push(thread::spawn(move || {
            let got = fetch(addr, &[b"ok.txt", b"big.bin", b"link"]);
            let mut want = OK_CONTENT.to_vec();
            want.extend_from_slice(&big);
            want.extend_from_slice(OK_CONTENT);
            assert_bytes_eq(&got, &want, &format!("good fetch {i}"));
        }));
    }
    // Every kind of error, one connection.
    handles.push(thread::spawn(move || {
        let mut long = vec![b'y'; 5000];
        long.push(b'\n');
        let names: [&[u8]; 9] = [
            b"missing",
            b"../x",
            b"a\0b",
            b"sub",
            b"fifo",
            b".secret",
            b"",
            b"rel",
            b"dangling",
        ];
        let mut stream = common::connect(addr);
        let mut request = long;
        for name in names {
            request.extend_from_slice(&line(name));
        }
        send(&mut stream, &request);
        stream.shutdown(Shutdown::Write).expect("half-close");
        let reply = read_to_end_timeout(&mut stream, IO_TIMEOUT);
        let reasons = parse_error_lines(&reply);
        assert_eq!(
            reasons,
            [
                "line too long",
                "not found",
                "forbidden",
                "bad name",
                "not a regular file",
                "not a regular file",
                "forbidden",
                "bad name",
                "forbidden",
                "not found"
            ]
        );
    }));
    // Vanishing clients mid-transfer.
    for i in 0..4 {
        let big = Arc::clone(&big);
        handles.push(thread::spawn(move || {
            vanish(addr, b"big.bin", &big, 4096 + i * 777, i)
        }));
    }
    // Clients that connect and leave without a full request.
    handles.push(thread::spawn(move || {
        drop(common::connect(addr)); // nothing sent
        let mut s = common::connect(addr);
        send(&mut s, b"ok.t"); // partial line, then a full close
        drop(s);
        let s = common::connect(addr);
        set_linger_zero(&s); // nothing sent, reset
        drop(s);
    }));
    for (i, h) in handles.into_iter().enumerate() {
        assert!(h.join().is_ok(), "traffic thread {i} failed");
    }

    server.assert_alive();
    server.assert_fds_back_to(baseline);
    // Still fully working afterwards.
    let got = fetch(addr, &[b"ok.txt"]);
    assert_bytes_eq(&got, OK_CONTENT, "fetch after mixed traffic");
    server.assert_fds_back_to(baseline);
}
