//! A real browser over a directory listing: headless Chromium (Debian's
//! `chromium`, driven by `playwright-core` from `tests/browser/`) opens the
//! HTML listing of a folder whose file names hold a space, `#`, `?`, `%`,
//! `<b>`, an emoji and a newline, checks each name is displayed as text,
//! clicks each link and checks the page it lands on shows that file's content.
//!
//! Needs `node`, `chromium` (or `$IOCOMP_CHROMIUM`) and
//! `npm ci --prefix crates/iocomp-cli/tests/browser`; CI installs them. When
//! one is missing the test fails saying what to install, unless
//! `IOCOMP_SKIP_BROWSER=1` is set, in which case it says it is skipped and
//! passes. The Node script runs in its own process group, which is killed
//! after [`NODE_TIMEOUT`] (and in any case once it exits, so that no
//! Chromium process outlives the test), with `TMPDIR` inside the test's
//! temporary tree, so the browser profile goes when the tree does.
//! `IOCOMP_BROWSER_SCREENSHOT=PATH` keeps the listing's screenshot at PATH.
//!
//! A second test opens the live status page of the `--metrics` listener
//! (`status.mjs`) while two rate-limited downloads run, one per protocol, and
//! checks from the DOM that both are listed and that their progress moves by
//! itself; `IOCOMP_STATUS_SCREENSHOT=PATH` keeps its second screenshot at
//! PATH (README's `docs/status-page.png` is made so).

use crate::harness::{
    connect, json_string, output_within_group, pseudo_random, runs, Json, Server, TempTree,
};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::Duration;

/// A mebibyte.
const MIB: usize = 1 << 20;

/// Bound for the whole Node script (browser start-up included).
const NODE_TIMEOUT: Duration = Duration::from_secs(90);

/// The awkward names, one file each; every file's content is its marker.
const AWKWARD: [&str; 7] = [
    "a b.txt",
    "h#sh.txt",
    "q?.txt",
    "100%.txt",
    "<b>bold.txt",
    "\u{1f600}.txt",
    "new\nline.txt",
];

/// The unique content of the `i`th awkward file.
fn marker(i: usize) -> String {
    format!("iocomp-browser-marker-{i}-{}", 7919 * (i + 1))
}

/// The directory holding `listing.mjs`, `package.json` and `node_modules/`.
fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The Chromium to drive: `$IOCOMP_CHROMIUM`, or Debian's `/usr/bin/chromium`.
fn chromium_path() -> String {
    std::env::var("IOCOMP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

/// What is missing to run the test, each with how to install it.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let chromium = chromium_path();
    if !runs(&chromium, "--version") {
        missing.push(format!(
            "Chromium at {chromium} (`apt-get install -y --no-install-recommends chromium`, \
             or point IOCOMP_CHROMIUM at a Chromium)"
        ));
    }
    if !runs("node", "--version") {
        missing.push("node, 18 or later (`apt-get install -y nodejs`)".to_string());
    }
    let package = script_dir().join("node_modules/playwright-core/package.json");
    if !package.is_file() {
        missing.push(format!(
            "playwright-core in {} (`npm ci --prefix {}`)",
            script_dir().join("node_modules").display(),
            script_dir().display()
        ));
    }
    missing
}

/// What the Node script ran into: its exit status and output.
struct NodeRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl NodeRun {
    /// The script's JSON summary (its last line starting with `{`), and the
    /// whole run as text for assertion messages.
    fn summary(&self) -> (Json, String) {
        let context = format!(
            "node exited {:?}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            self.status, self.stdout, self.stderr
        );
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON summary from the script; {context}"));
        (Json::parse(line), context)
    }
}

/// Runs `node listing.mjs args...` in its own process group, with `TMPDIR`
/// set to `tmp` (so the browser profile and Playwright's files go there, and
/// are removed with it even when the script is killed); kills the group past
/// [`NODE_TIMEOUT`], and after the script exits as well, so a browser it left
/// behind does not linger.
fn run_node(script: &str, tmp: &Path, args: &[&str]) -> NodeRun {
    let mut cmd = Command::new("node");
    cmd.arg(script_dir().join(script))
        .args(args)
        .current_dir(script_dir())
        .env("IOCOMP_CHROMIUM", chromium_path())
        .env("TMPDIR", tmp);
    let out = output_within_group(cmd, NODE_TIMEOUT);
    NodeRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The page text a browser shows for `name` in normal white-space: each run
/// of ASCII whitespace (the newline included) becomes one space.
/// What the browser shows for a name: the listing renders each control
/// character as its control picture (U+2400 + byte; U+2421 for DEL), so a
/// newline in a name cannot pass for a space; runs of spaces then collapse.
fn displayed(name: &str) -> String {
    let pictured: String = name
        .chars()
        .map(|c| match c {
            '\0'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or(c),
            '\u{7f}' => '\u{2421}',
            c => c,
        })
        .collect();
    pictured
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

/// Whether the browser tests can run: `false` (after saying why on stderr)
/// when something is missing and `IOCOMP_SKIP_BROWSER=1`; a failure naming
/// what to install when it is missing otherwise.
fn browser_ready() -> bool {
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        let list = missing.join("\n  - ");
        if std::env::var("IOCOMP_SKIP_BROWSER").as_deref() == Ok("1") {
            // Straight to stderr: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: browser test (IOCOMP_SKIP_BROWSER=1); missing:\n  - {list}"
            );
            return false;
        }
        panic!(
            "the browser test needs, and cannot find:\n  - {list}\n\
             (set IOCOMP_SKIP_BROWSER=1 to skip it instead)"
        );
    }
    true
}

#[test]
fn chromium_follows_links_with_awkward_names() {
    if !browser_ready() {
        return;
    }

    let tree = TempTree::new();
    tree.dir("awkward");
    for (i, name) in AWKWARD.iter().enumerate() {
        tree.file(&format!("awkward/{name}"), marker(i).as_bytes());
    }
    let mut server = Server::start(tree.root(), &[]);
    let url = format!("http://{}/awkward/", server.addr());
    let screenshot = std::env::var_os("IOCOMP_BROWSER_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tree.base().join("listing.png"));
    let _ = fs::remove_file(&screenshot);
    let spec = format!(
        "[{}]",
        AWKWARD
            .iter()
            .enumerate()
            .map(|(i, n)| format!(
                "{{\"name\":{},\"marker\":{}}}",
                json_string(n),
                json_string(&marker(i))
            ))
            .collect::<Vec<_>>()
            .join(",")
    );

    let tmp = tree.base().join("tmp");
    fs::create_dir(&tmp).unwrap_or_else(|e| panic!("mkdir {}: {e}", tmp.display()));
    let run = run_node(
        "listing.mjs",
        &tmp,
        &[&url, screenshot.to_str().expect("UTF-8 temp path"), &spec],
    );
    let (summary, context) = run.summary();

    assert_eq!(
        *summary.get("error"),
        Json::Null,
        "the script threw; {context}"
    );
    assert!(
        summary.get("foreignRequests").arr().is_empty(),
        "the pages fetched from elsewhere; {context}"
    );
    assert!(summary.get("pageErrors").arr().is_empty(), "{context}");

    the_listing_shows_every_name_as_text(summary.get("listing"), &context);
    every_link_leads_to_its_file(summary.get("files").arr(), &context);
    // Whatever else the script itself found wrong.
    let failures: Vec<&str> = summary
        .get("failures")
        .arr()
        .iter()
        .map(Json::str)
        .collect();
    assert!(
        failures.is_empty(),
        "the script reports:\n  {}\n{context}",
        failures.join("\n  ")
    );
    assert!(run.status.success(), "{context}");

    // One screenshot of the listing: a non-empty PNG of sensible size.
    assert_png(&screenshot);

    server.assert_alive();
    let log = server.stderr_text();
    assert!(!log.contains("panicked"), "server log:\n{log}");
}

/// The listing itself: HTML, no scripts, no markup smuggled in by a name,
/// and every name findable in the text the browser displays.
fn the_listing_shows_every_name_as_text(listing: &Json, context: &str) {
    assert_eq!(listing.get("status").num(), 200.0, "{context}");
    assert_eq!(
        listing.get("contentType").str(),
        "text/html; charset=utf-8",
        "{context}"
    );
    assert_eq!(
        listing.get("title").str(),
        "Index of /awkward/",
        "{context}"
    );
    assert_eq!(listing.get("scripts").num(), 0.0, "{context}");
    assert_eq!(listing.get("injectedElements").num(), 0.0, "{context}");
    let body_text = listing.get("bodyText").str();
    let link_texts: Vec<&str> = listing
        .get("links")
        .arr()
        .iter()
        .map(|l| l.get("innerText").str())
        .collect();
    for name in AWKWARD {
        let shown = displayed(name);
        assert!(
            body_text.contains(&shown),
            "{name:?} is not displayed as {shown:?}; page text: {body_text:?}"
        );
        assert_eq!(
            link_texts.iter().filter(|t| **t == shown).count(),
            1,
            "{name:?}: want exactly one link displayed as {shown:?}; links: {link_texts:?}"
        );
    }
    // In the DOM each link's text is the name with control characters turned
    // into their pictures (nothing else changed: no whitespace folded).
    let raw_texts: Vec<&str> = listing
        .get("links")
        .arr()
        .iter()
        .map(|l| l.get("text").str())
        .collect();
    for name in AWKWARD {
        let pictured: String = name
            .chars()
            .map(|c| {
                if c < ' ' {
                    char::from_u32(0x2400 + c as u32).unwrap_or(c)
                } else {
                    c
                }
            })
            .collect();
        assert!(
            raw_texts.contains(&pictured.as_str()),
            "{pictured:?} missing from the links' DOM text {raw_texts:?}"
        );
    }
}

/// Every link, clicked by its visible text, led to exactly that file.
fn every_link_leads_to_its_file(files: &[Json], context: &str) {
    assert_eq!(files.len(), AWKWARD.len(), "{context}");
    for (i, (name, file)) in AWKWARD.iter().zip(files).enumerate() {
        let what = format!("clicking {:?}", displayed(name));
        assert_eq!(file.get("name").str(), *name, "{what}");
        assert_eq!(file.get("matchingLinks").num(), 1.0, "{what}");
        assert_eq!(*file.get("visible"), Json::Bool(true), "{what}");
        assert_eq!(file.get("status").num(), 200.0, "{what}: {file:?}");
        assert!(
            file.get("contentType").str().starts_with("text/plain"),
            "{what}: {file:?}"
        );
        assert_eq!(
            file.get("decodedLastSegment").str(),
            *name,
            "{what}: landed on {}",
            file.get("finalUrl").str()
        );
        assert_eq!(*file.get("pre"), Json::Bool(true), "{what}: {file:?}");
        assert_eq!(file.get("text").str(), marker(i), "{what}: {file:?}");
    }
}

/// Asserts `path` holds a PNG at least 100×100.
fn assert_png(path: &Path) {
    let png = fs::read(path).unwrap_or_else(|e| panic!("read screenshot {}: {e}", path.display()));
    assert!(png.len() > 1000, "screenshot is only {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "screenshot is not a PNG");
    assert_eq!(&png[12..16], b"IHDR", "screenshot: no IHDR chunk first");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(
        width >= 100 && height >= 100,
        "screenshot is {width}x{height}"
    );
}

#[test]
fn chromium_sees_two_transfers_move_on_the_status_page() {
    if !browser_ready() {
        return;
    }
    let tree = TempTree::new();
    // 256 KiB/s: the downloads would last 96 and 160 s, longer than the
    // script may run (NODE_TIMEOUT), however slowly a loaded machine starts
    // the browser (at 1 MiB/s the first could end before the page was read);
    // they end with the server when the test is done. At a page refresh a
    // second, each still moves more than one displayed digit (0.1 MiB, 0.1 %).
    tree.file("releases/iocomp-0.1.tar.gz", &pseudo_random(1, 24 * MIB));
    tree.file("images/debian-netinst.iso", &pseudo_random(2, 40 * MIB));
    let mut server = Server::start(
        tree.root(),
        &["--rate-limit", "256K", "--metrics", "127.0.0.1:0"],
    );
    let url = format!("http://{}/", server.metrics_addr());
    let readers = two_downloads(server.addr());

    let tmp = tree.base().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let shot1 = tree.base().join("status-1.png");
    let shot2 = std::env::var_os("IOCOMP_STATUS_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tree.base().join("status-2.png"));
    let run = run_node(
        "status.mjs",
        &tmp,
        &[&url, shot1.to_str().unwrap(), shot2.to_str().unwrap(), "2"],
    );
    let (summary, context) = run.summary();
    assert_eq!(
        *summary.get("error"),
        Json::Null,
        "the script threw; {context}"
    );
    assert!(summary.get("pageErrors").arr().is_empty(), "{context}");
    assert!(summary.get("foreignRequests").arr().is_empty(), "{context}");
    assert!(run.status.success(), "{context}");

    both_transfers_moved(&summary, &context);
    assert_png(&shot1);
    assert_png(&shot2);
    server.assert_alive();
    drop(server);
    for r in readers {
        let _ = r.join();
    }
}

/// One download per protocol from `addr`, read and thrown away.
fn two_downloads(addr: std::net::SocketAddr) -> Vec<thread::JoinHandle<()>> {
    let mut line = connect(addr);
    line.write_all(b"releases/iocomp-0.1.tar.gz\n").unwrap();
    let mut http = connect(addr);
    http.write_all(b"GET /images/debian-netinst.iso HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    [line, http]
        .into_iter()
        .map(|mut s| {
            thread::spawn(move || {
                let mut buf = vec![0; 64 * 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            })
        })
        .collect()
}

/// Both transfers are listed in both readings of the status page, and
/// their progress moved between the two, by itself.
fn both_transfers_moved(summary: &Json, context: &str) {
    let row = |reading: &Json, file: &str| -> (f64, f64, String, String) {
        let rows = reading.arr();
        assert_eq!(rows.len(), 2, "two transfers listed; {context}");
        let r = rows
            .iter()
            .find(|r| r.get("file").str() == file)
            .unwrap_or_else(|| panic!("no row for {file}; {context}"));
        assert!(r.get("client").str().starts_with("127.0.0.1:"), "{r:?}");
        (
            r.get("sent").num(),
            r.get("percent").num(),
            r.get("sentText").str().to_string(),
            r.get("progressText").str().to_string(),
        )
    };
    for (file, size) in [
        ("releases/iocomp-0.1.tar.gz", 24 * MIB),
        ("/images/debian-netinst.iso", 40 * MIB),
    ] {
        let (sent1, pct1, text1, bar1) = row(summary.get("first"), file);
        let (sent2, pct2, text2, bar2) = row(summary.get("second"), file);
        assert!(
            sent1 > 0.0 && sent2 > sent1,
            "{file}: sent {sent1} then {sent2}"
        );
        assert!(sent2 < size as f64, "{file}: still in progress: {sent2}");
        assert!(
            pct1 > 0.0 && pct2 > pct1 && pct2 < 100.0,
            "{file}: {pct1} % then {pct2} %"
        );
        assert_ne!(text1, text2, "{file}: the displayed bytes moved");
        assert_ne!(bar1, bar2, "{file}: the displayed progress moved");
    }
}
