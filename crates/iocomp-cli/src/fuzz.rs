//! Fuzz targets for the parsers of untrusted input in the `iocomp` command,
//! shared by the cargo-fuzz harness in `fuzz/` (nightly) and the corpus
//! replay in `tests/cli/fuzz_corpus.rs` (stable, part of `cargo test`). Each
//! target takes arbitrary bytes, must never panic, and asserts the
//! invariants its documentation lists.

use clap::CommandFactory;

use crate::client::{parse_head, Fail};
use crate::get::body::Framing;

/// Longest input whose head is also parsed at every shorter prefix.
const PREFIX_CHECK_MAX: usize = 2048;

/// `iocomp get`'s response parsing: the head (status line and header
/// fields, with `httparse`), the fields `get` reads from it
/// (`Content-Length`, `Content-Range`, the 416's `bytes */LEN`, the
/// validator) and the body framing (`Content-Length`, chunked, to EOF).
///
/// Invariants:
/// - a head parsed from the whole input is parsed, identically and with the
///   same length, from exactly its own bytes, and no shorter prefix is a
///   complete head;
/// - a `Content-Range` that is accepted is valid by RFC 9110 §14.4
///   (first ≤ last < total);
/// - the body framing gives the same bytes, the same end and the same
///   verdict whether the body arrives whole, in two pieces, or byte by byte,
///   and never more bytes than arrived (nor more than a `Content-Length`).
pub fn get_response(data: &[u8]) {
    let Ok(Some((head, used))) = parse_head(data) else {
        return;
    };
    assert!(used <= data.len());
    match parse_head(&data[..used]) {
        Ok(Some((again, n))) => {
            assert_eq!(n, used, "the head's own bytes parse to another length");
            assert_eq!(again.status, head.status);
            assert_eq!(again.reason, head.reason);
            assert_eq!(again.headers, head.headers);
        }
        other => panic!("the head's own bytes do not parse: {other:?}"),
    }
    if used <= PREFIX_CHECK_MAX {
        for k in 0..used {
            assert!(
                !matches!(parse_head(&data[..k]), Ok(Some(_))),
                "a prefix of {k} of {used} bytes is a complete head"
            );
        }
    }
    let _ = head.content_length();
    let _ = head.unsatisfied_total();
    let _ = head.validator();
    if let Some((a, b, total)) = head.content_range() {
        assert!(a <= b, "Content-Range {a}-{b} accepted");
        if let Some(t) = total {
            assert!(b < t, "Content-Range {a}-{b}/{t} accepted");
        }
    }

    let body = &data[used..];
    let whole = frame(&head, &[body]);
    let cut = body
        .first()
        .map_or(0, |&b| usize::from(b) % (body.len() + 1));
    let halves = frame(&head, &[&body[..cut], &body[cut..]]);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    let single = frame(&head, &bytes);
    assert_eq!(whole, halves, "whole vs two pieces (cut at {cut})");
    assert_eq!(whole, single, "whole vs byte by byte");
    assert!(whole.0.len() <= body.len());
    if let Framing::Length(n) = Framing::of(&head) {
        assert!(whole.0.len() as u64 <= n);
    }
}

/// Feeds `pieces` through a fresh framing of `head`: the body bytes out,
/// whether it failed, whether it is complete.
fn frame(head: &crate::client::Head, pieces: &[&[u8]]) -> (Vec<u8>, bool, bool) {
    let mut f = Framing::of(head);
    let mut out = Vec::new();
    let mut failed = false;
    for p in pieces {
        let r = f.feed(p, &mut |d: &[u8]| -> Result<(), Fail> {
            out.extend_from_slice(d);
            Ok(())
        });
        if r.is_err() {
            failed = true;
            break;
        }
    }
    (out, failed, f.is_done())
}

/// `iocomp serve --config FILE`: the TOML file turned into `serve`'s flags.
///
/// Invariants:
/// - an error names a line of the file (1 to its line count, or 1 for an
///   empty file) and says something;
/// - a file that is accepted gives flags that parse as a whole (each was
///   checked alone; together they must hold too);
/// - what `--print-config` prints for the result is itself an accepted
///   file, and prints back the same.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let top = crate::Cli::command();
    let serve = top
        .find_subcommand("serve")
        .expect("a serve command")
        .clone();
    let bare = ["iocomp", "serve"];
    let given = top
        .clone()
        .try_get_matches_from(bare)
        .expect("`iocomp serve` parses");
    let given = given.subcommand_matches("serve").expect("serve matches");
    let words = match crate::config::file_args(&serve, given, text) {
        Err((line, msg)) => {
            let lines = text.split('\n').count().max(1);
            assert!(
                (1..=lines).contains(&line),
                "error on line {line} of {lines}: {msg}"
            );
            assert!(!msg.trim().is_empty(), "an empty error message");
            return;
        }
        Ok(w) => w,
    };
    let parse = |words: Vec<std::ffi::OsString>| {
        let mut argv: Vec<std::ffi::OsString> = bare.iter().map(Into::into).collect();
        argv.extend(words);
        top.clone().try_get_matches_from(argv)
    };
    let m = parse(words.clone())
        .unwrap_or_else(|e| panic!("accepted file, flags {words:?} rejected: {e}"));
    let m = m.subcommand_matches("serve").expect("serve matches");
    let printed = crate::config::print(&serve, m);
    let again = crate::config::file_args(&serve, given, &printed)
        .unwrap_or_else(|e| panic!("--print-config output rejected: {e:?}\n{printed}"));
    let m2 = parse(again.clone())
        .unwrap_or_else(|e| panic!("--print-config flags {again:?} rejected: {e}"));
    let m2 = m2.subcommand_matches("serve").expect("serve matches");
    assert_eq!(
        printed,
        crate::config::print(&serve, m2),
        "--print-config is not a fixed point"
    );
}

/// How a run of [`crate::get::tls::feed`] ended: the peer's close, or the
/// kind of failure (exit code).
fn tls_outcome(r: &Result<crate::get::tls::Closed, Fail>) -> Result<crate::get::tls::Closed, u8> {
    match r {
        Ok(c) => Ok(*c),
        Err(e) => Err(e.code()),
    }
}

/// Feeds `pieces` (then, with `eof`, the socket's end) to a fresh client
/// session that has sent its ClientHello; stops at the first failure.
fn tls_feed(pieces: &[&[u8]], eof: bool) -> (Result<crate::get::tls::Closed, u8>, Vec<u8>) {
    use crate::get::tls;
    static CFG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    let cfg = CFG.get_or_init(|| {
        // -k: no file to read (no certificate can be presented anyway:
        // arbitrary bytes never finish a handshake).
        tls::config(&tls::Trust {
            cacert: None,
            insecure: true,
        })
        .expect("a client config")
    });
    let mut c = tls::connect(cfg, "localhost").expect("a client session");
    let hello = tls::pending(&mut c).expect("a ClientHello");
    assert!(
        hello.as_ref().is_some_and(|h| h.first() == Some(&0x16)),
        "no ClientHello record first"
    );
    let mut plain = Vec::new();
    let mut last = Ok(tls::Closed::No);
    // An empty piece is the socket's end to `feed`: only with `eof`.
    let pieces = pieces.iter().copied().filter(|p| !p.is_empty());
    for p in pieces.chain(eof.then_some(&b""[..])) {
        let r = tls::feed(&mut c, p, &mut plain);
        last = tls_outcome(&r);
        if let Err(e) = &r {
            assert!(
                matches!(e, Fail::Tls(m) | Fail::Network(m) if !m.is_empty()),
                "a TLS failure as {e:?}"
            );
            break;
        }
        // What the session wants to send (alerts) is framed as records.
        let _ = tls::pending(&mut c);
    }
    (last, plain)
}

/// `iocomp get https://`'s TLS feed, `get::tls::feed`: arbitrary bytes as
/// the server's answer to our ClientHello.
///
/// Invariants: no plaintext comes out (arbitrary bytes cannot finish a
/// handshake); the outcome (still open, closed cleanly or abruptly, or the
/// kind of failure) is the same whether the bytes arrive whole, in two
/// pieces cut where the input says, or byte by byte; a failure is a `Tls` or
/// `Network` failure with a message; the socket's end during the handshake
/// is a failure, never a clean close.
pub fn tls_client(data: &[u8]) {
    let (whole, plain) = tls_feed(&[data], false);
    assert!(plain.is_empty(), "plaintext before a handshake");
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let (halves, _) = tls_feed(&[&data[..cut], &data[cut..]], false);
    assert_eq!(whole, halves, "whole vs two pieces (cut at {cut})");
    if data.len() <= 4096 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        let (single, _) = tls_feed(&bytes, false);
        assert_eq!(whole, single, "whole vs byte by byte");
    }
    let (ended, plain) = tls_feed(&[data], true);
    assert!(plain.is_empty());
    assert!(
        ended.is_err(),
        "the socket's end mid-handshake gave {ended:?}"
    );
}

/// The `https_proxy` tunnel: the proxy's answer to `CONNECT`,
/// `get::tls::connect_answer`.
///
/// Invariants: deterministic; the tunnel opens only on a complete head with
/// a 2xx status that ends exactly where the input ends (a strict prefix of
/// it is "more to come", and a byte more is refused); a non-2xx answer is an
/// HTTP failure naming the status; every failure has a message.
pub fn connect_answer(data: &[u8]) {
    use crate::get::tls::connect_answer;
    let r = connect_answer(data);
    let again = connect_answer(data);
    assert_eq!(
        r.as_ref().map_err(Fail::code),
        again.as_ref().map_err(Fail::code),
        "not deterministic"
    );
    let parsed = parse_head(data);
    match &r {
        Ok(true) => {
            let Ok(Some((head, used))) = &parsed else {
                panic!("a tunnel without a complete head");
            };
            assert!(
                (200..300).contains(&head.status),
                "tunnel on {}",
                head.status
            );
            assert_eq!(*used, data.len(), "a tunnel with bytes after the head");
            if data.len() <= PREFIX_CHECK_MAX {
                for k in 0..data.len() {
                    assert!(
                        matches!(connect_answer(&data[..k]), Ok(false)),
                        "a prefix of {k} bytes did not wait for more"
                    );
                }
            }
            let mut more = data.to_vec();
            more.push(0x16);
            assert!(
                matches!(connect_answer(&more), Err(Fail::Network(_))),
                "bytes after the answer accepted"
            );
        }
        Ok(false) => assert!(
            matches!(parsed, Ok(None)),
            "waiting for more on a complete or bad head"
        ),
        Err(Fail::Http(m)) => {
            let Ok(Some((head, _))) = &parsed else {
                panic!("a refusal without a head");
            };
            assert!(!(200..300).contains(&head.status));
            assert!(m.contains(&head.status.to_string()), "{m}");
        }
        Err(e @ (Fail::Network(m) | Fail::Tls(m) | Fail::Usage(m) | Fail::Local(m))) => {
            assert!(!m.is_empty(), "{e:?} without a message");
        }
    }
}
