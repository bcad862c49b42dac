//! Fuzz targets for the parsers of untrusted input in the `iocomp` command,
//! shared by the cargo-fuzz harness in `fuzz/` (nightly) and the corpus
//! replay in `tests/fuzz_corpus.rs` (stable, part of `cargo test`). Each
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
