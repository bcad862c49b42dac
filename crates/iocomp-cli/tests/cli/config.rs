//! `iocomp serve`'s flags and `--config FILE`: keys set options, the
//! command line wins, errors name the key and the line, the printed
//! configuration (`--print-config`) reads back to itself; out-of-range
//! numbers are usage errors, never panics; the TLS listener's flags
//! (`--tls-*`, `--ktls`) need `--tls-bind`.

use std::process::Output;
use std::time::Duration;

use crate::harness::{
    assert_bytes_eq, assert_read_sees_close, code, curl_https, exit_of, expect_bytes, fetch,
    iocomp_command, output_within, send, serve_command, stderr, tls_flags, Ca, Scripted, Server,
    TempTree, WAIT,
};

/// `iocomp ARGS`, bounded.
fn iocomp(args: &[&str]) -> Output {
    let mut c = iocomp_command();
    c.args(args);
    output_within(c, WAIT)
}

/// Writes the configuration file `name` (outside the served tree); its path.
fn write(tree: &TempTree, name: &str, text: &str) -> String {
    tree.outside_file(name, text.as_bytes())
        .to_str()
        .unwrap()
        .to_owned()
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
        stderr(&out)
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
    let stderr = stderr(&out);
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
        (
            "notsent-lowat = \"AUTO\"\n",
            r#"line 1: key "notsent-lowat": invalid value "AUTO""#,
        ),
        (
            "notsent-lowat = -1\n",
            r#"line 1: key "notsent-lowat": invalid value "-1""#,
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
    let err = stderr(&out);
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
        &fetch(server.addr(), &[b"a.txt"]),
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

#[test]
fn huge_thread_and_connection_counts_of_serve_and_bench_are_usage_errors() {
    let tree = TempTree::new();
    let root = tree.root().to_str().unwrap().to_string();
    let s = Scripted::canned(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"[..],
        Duration::ZERO,
    );
    let u = s.url("b");
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--threads",
            "18446744073709551615",
            &root,
        ],
        vec![
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--threads",
            "100000",
            &root,
        ],
        vec!["bench", "-d", "1s", "-t", "18446744073709551615", &u],
        vec!["bench", "-d", "1s", "-c", "18446744073709551615", &u],
    ];
    for args in cases {
        let mut c = iocomp_command();
        c.args(&args);
        let o = output_within(c, Duration::from_secs(60));
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn tls_files_without_a_tls_listener_are_a_usage_error() {
    let tree = TempTree::new();
    for extra in [
        &["--tls-cert", "c.pem", "--tls-key", "k.pem"][..],
        &["--tls-no-tickets"][..],
    ] {
        let (code, err) = exit_of(serve_command(tree.root(), extra));
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(err.contains("need --tls-bind"), "{extra:?}: {err}");
    }
}

/// `--ktls` takes auto, on or off (anything else is a usage error naming the
/// flag); `on` needs a TLS listener; on a kernel whose probe finds no kernel
/// TLS, `on` refuses to start with an error naming the probe and what it saw,
/// while `off` (and `auto`) serve HTTPS in user space.
#[test]
fn ktls_on_fails_loudly_where_the_probe_finds_nothing_and_off_serves() {
    let tree = TempTree::new();
    tree.file("pub.txt", b"public\n");
    let ca = Ca::new(tree.base(), "ktls");
    let tls = tls_flags(&[ca.leaf(tree.base(), "ktls", &["localhost"], false)]);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let (code, err) = exit_of(serve_command(tree.root(), &["--ktls", "maybe"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--ktls") && err.contains("expected auto, on or off"),
        "{err}"
    );
    let (code, err) = exit_of(serve_command(tree.root(), &["--ktls", "on"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("need --tls-bind"), "{err}");
    let list = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .expect("/proc is mounted for the tests");
    if list.split_whitespace().any(|u| u == "tls") {
        println!(
            "NOTE: this kernel lists `tls` ({list:?}): `--ktls on` may start here, so its \
             refusal was NOT exercised"
        );
    } else {
        let mut on = tls.clone();
        on.extend(["--ktls", "on"]);
        let (code, err) = exit_of(serve_command(tree.root(), &on));
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("--ktls on")
                && err.contains("kernel TLS probe")
                && err.contains("modprobe tls"),
            "{err}"
        );
    }
    for mode in ["off", "auto"] {
        let mut args = tls.clone();
        args.extend(["--ktls", mode]);
        let server = Server::start(tree.root(), &args);
        let out = curl_https(&ca.pem, server.tls_addr().port(), "pub.txt");
        assert!(
            out.status.success(),
            "--ktls {mode}: curl: {}",
            stderr(&out)
        );
        assert_bytes_eq(&out.stdout, b"public\n", "over TLS");
    }
}
