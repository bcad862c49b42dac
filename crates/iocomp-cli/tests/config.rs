//! `iocomp serve --config FILE` and `--print-config`: keys set options, the
//! command line wins, errors name the key and the line, and the printed
//! configuration reads back to itself.

mod common;

use common::{assert_bytes_eq, assert_read_sees_close, expect_bytes, send, Server, TempTree};
use std::process::{Command, Output};

fn iocomp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iocomp"))
        .args(args)
        .output()
        .expect("run iocomp")
}

fn write(tree: &TempTree, name: &str, text: &str) -> String {
    let path = tree.base().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn print_config(args: &[&str]) -> String {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    all.push("--print-config");
    let out = iocomp(&all);
    assert!(
        out.status.success(),
        "--print-config failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 config")
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

const FILE: &str = r#"# a comment
threads = 3
bind = ["127.0.0.1:18080", "127.0.0.1:18081"]
hidden = true
header-timeout = "2s"
root = "/srv/files"
cache-control = "max-age=60"
"#;

#[test]
fn the_file_sets_options_and_the_command_line_overrides_it() {
    let tree = TempTree::new();
    let cfg = write(&tree, "iocomp.toml", FILE);
    let shown = print_config(&["--config", &cfg]);
    for line in [
        "threads = 3",
        r#"bind = ["127.0.0.1:18080", "127.0.0.1:18081"]"#,
        "hidden = true",
        r#"header-timeout = "2s""#,
        r#"root = "/srv/files""#,
        r#"cache-control = "max-age=60""#,
        r#"# idle-timeout = "60s""#, // a default, shown commented out
        "# quiet = false",
        "# access-log = (not set)",
    ] {
        assert!(has_line(&shown, line), "no {line:?} in\n{shown}");
    }
    let root = tree.root().to_str().unwrap();
    let shown = print_config(&[
        "--config",
        &cfg,
        "--threads",
        "5",
        "--bind",
        "127.0.0.1:9",
        "--header-timeout",
        "750ms",
        root,
    ]);
    for line in [
        "threads = 5",
        r#"bind = ["127.0.0.1:9"]"#, // replaced, not added to
        r#"header-timeout = "750ms""#,
        &format!("root = {root:?}"),
        "hidden = true", // still the file's
    ] {
        assert!(has_line(&shown, line), "no {line:?} in\n{shown}");
    }
    // A flag that conflicts with a key of the file wins over it.
    let cfg = write(&tree, "quiet.toml", "quiet = true\n");
    let shown = print_config(&["--config", &cfg, "--verbose"]);
    assert!(
        has_line(&shown, "# quiet = false") && has_line(&shown, "verbose = true"),
        "{shown}"
    );
}

#[test]
fn print_config_reads_back_to_itself() {
    let tree = TempTree::new();
    let cfg = write(&tree, "iocomp.toml", FILE);
    let first = print_config(&["--config", &cfg, "--access-log", "json", "--no-listing"]);
    let again = write(&tree, "printed.toml", &first);
    let second = print_config(&["--config", &again]);
    assert_eq!(
        first, second,
        "print-config output did not read back to itself"
    );
    // The defaults alone read back too.
    let defaults = print_config(&[]);
    let again = write(&tree, "defaults.toml", &defaults);
    assert_eq!(defaults, print_config(&["--config", &again]));
}

fn config_error(text: &str) -> (Option<i32>, String) {
    let tree = TempTree::new();
    let cfg = write(&tree, "bad.toml", text);
    let out = iocomp(&["serve", "--config", &cfg]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains(&format!("iocomp: config {cfg} line ")),
        "the error does not name the file: {stderr}"
    );
    (out.status.code(), stderr)
}

#[test]
fn an_unknown_key_is_an_error_naming_it_and_its_line() {
    let (code, err) = config_error("threads = 2\nhidden = true\nthread = 4\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(r#"line 3: unknown key "thread" (did you mean "threads"?)"#),
        "{err}"
    );
    let (code, err) = config_error("[serve]\nthreads = 1\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(r#"line 1: unknown key "serve""#), "{err}");
}

#[test]
fn a_bad_value_is_an_error_naming_the_key_and_its_line() {
    let (code, err) = config_error("threads = 2\n\n\n\nheader-timeout = \"ten\"\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(r#"line 5: key "header-timeout": invalid value "ten": "#),
        "{err}"
    );
    for (text, want) in [
        (
            "hidden = \"yes\"\n",
            r#"line 1: key "hidden": expected true or false"#,
        ),
        (
            "\nthreads = [1, 2]\n",
            r#"line 2: key "threads": takes one value"#,
        ),
        (
            "bind = [\"127.0.0.1:1\",\n  \"nowhere\"]\n",
            r#"line 1: key "bind": invalid value "nowhere""#,
        ),
        (
            "max-conns = -4\n",
            r#"line 1: key "max-conns": invalid value "-4""#,
        ),
        (
            "backend = \"fast\"\n",
            r#"line 1: key "backend": invalid value "fast""#,
        ),
        (
            "quiet = true\nverbose = true\n",
            r#"line 2: key "verbose" conflicts with key "quiet""#,
        ),
        ("threads = \n", "line 1: "),
    ] {
        let (code, err) = config_error(text);
        assert_eq!(code, Some(2), "{text:?}: {err}");
        assert!(err.contains(want), "{text:?}: want {want:?} in {err}");
    }
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = iocomp(&["serve", "--config", "/nonexistent/iocomp.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read config /nonexistent/iocomp.toml"),
        "{err}"
    );
}

#[test]
fn a_short_idle_timeout_from_the_file_is_observed() {
    let tree = TempTree::new();
    tree.file("a.txt", b"hello\n");
    let cfg = write(
        &tree,
        "idle.toml",
        "idle-timeout = \"300ms\"\nheader-timeout = \"300ms\"\n",
    );
    let server = Server::start(tree.root(), &["--config", &cfg]);
    let mut s = server.connect();
    send(&mut s, b"a.txt\n");
    expect_bytes(&mut s, b"hello\n", "the file");
    // The default idle timeout is 60 s: only the file's 300 ms closes it
    // within assert_read_sees_close's 5 s.
    assert_read_sees_close(&mut s, "idle connection after the file's idle-timeout");
    assert_bytes_eq(
        &common::fetch(server.addr(), &[b"a.txt"]),
        b"hello\n",
        "a new connection still works",
    );
}

/// `ktls` is a key like every flag: the file sets it, the command line
/// overrides it, a bad value names the key and its line, the default shows.
#[test]
fn the_ktls_key_sets_the_kernel_tls_mode() {
    assert!(has_line(&print_config(&[]), r#"# ktls = "auto""#));
    let tree = TempTree::new();
    let cfg = write(&tree, "ktls.toml", "ktls = \"off\"\n");
    let shown = print_config(&["--config", &cfg]);
    assert!(has_line(&shown, r#"ktls = "off""#), "{shown}");
    let shown = print_config(&["--config", &cfg, "--ktls", "on"]);
    assert!(has_line(&shown, r#"ktls = "on""#), "{shown}");
    let (code, err) = config_error("\nktls = \"maybe\"\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(r#"line 2: key "ktls": invalid value "maybe""#),
        "{err}"
    );
}
