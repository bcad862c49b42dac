//! Directories: a name without its slash is redirected (never off the site),
//! `index.html` is served, listings (HTML and JSON) show awkward names
//! escaped and linked so that every link leads to its entry, hide dotfiles
//! unless asked, and can be turned off. Listings are bounded work: at most
//! 10,000 entries and 4 MiB of body, chosen after sorting the whole directory
//! in the order asked for (so the cut never depends on the order the file
//! system returns names in), and a cut listing says so.

use std::collections::BTreeSet;

use crate::harness::http::{find, hex, is_safe_url_path, pct_decode};
use crate::harness::run::python;
use crate::harness::{assert_bytes_eq, Running, Tree};

/// The most entries a listing shows.
const MAX_ENTRIES: usize = 10_000;
/// The most bytes a listing body holds (about: one entry may pass it).
const MAX_BYTES: usize = 4 << 20;

/// A directory `big/` of `n` empty files `f00000`, `f00001`, ….
fn many(t: &Tree, n: usize) {
    std::fs::create_dir_all(t.path("big")).unwrap();
    for i in 0..n {
        std::fs::File::create(t.path(&format!("big/f{i:05}"))).unwrap();
    }
}

#[test]
fn a_long_listing_is_sorted_before_it_is_cut_and_says_so() {
    let t = Tree::new("longlist");
    many(&t, MAX_ENTRIES + 50);
    let srv = t.serve(|_| {});
    let asc = srv.get("/big/?sort=name&order=asc", &[]);
    assert_eq!(asc.status, 200);
    let html = String::from_utf8(asc.body).unwrap();
    assert!(html.contains(">f00000</a>") && html.contains(">f09999</a>"));
    assert!(!html.contains(">f10000</a>") && !html.contains(">f10049</a>"));
    assert!(
        html.contains("10000 of 10050 entries"),
        "the page must say it is cut"
    );
    let desc = String::from_utf8(srv.get("/big/?sort=name&order=desc", &[]).body).unwrap();
    assert!(desc.contains(">f10049</a>") && desc.contains(">f00050</a>"));
    assert!(!desc.contains(">f00049</a>") && !desc.contains(">f00000</a>"));
    let json = srv.get("/big/?sort=name", &[("Accept", "application/json")]);
    assert_eq!(json.header("x-listing-cut"), Some("10000 of 10050"));
    let text = String::from_utf8(json.body).unwrap();
    assert_eq!(text.matches("\"name\":").count(), MAX_ENTRIES);
    assert!(text.starts_with("[{\"name\":\"f00000\""), "{}", &text[..40]);
}

#[test]
fn a_listing_of_escape_heavy_names_is_capped_in_bytes() {
    let t = Tree::new("heavylist");
    std::fs::create_dir_all(t.path("big")).unwrap();
    // 240-byte names of '<' and '&': each one is over 1.9 KB of HTML.
    for i in 0..3000 {
        let name = format!("{}{i:04}", "<&".repeat(118));
        std::fs::File::create(t.path("big").join(name)).unwrap();
    }
    let srv = t.serve(|_| {});
    let r = srv.get("/big/", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.len() <= MAX_BYTES + 8192, "{} bytes", r.body.len());
    let html = String::from_utf8(r.body).unwrap();
    assert!(
        html.contains(" of 3000 entries"),
        "the page must say it is cut"
    );
    assert!(
        html.ends_with("</html>\n"),
        "a cut listing is still a whole page"
    );
    let shown = html.matches("<tr><td><a href=\"%3C").count();
    assert!((1000..3000).contains(&shown), "{shown} entries shown");
    let json = srv.get("/big/", &[("Accept", "application/json")]);
    assert!(
        json.body.len() <= MAX_BYTES + 8192,
        "{} bytes",
        json.body.len()
    );
    assert!(json
        .header("x-listing-cut")
        .is_some_and(|v| v.ends_with(" of 3000")));
    assert!(
        json.body.ends_with(b"]\n"),
        "a cut JSON listing is still valid JSON"
    );
}

#[test]
fn a_listing_within_the_bounds_says_nothing_of_cuts() {
    let t = Tree::new("shortlist");
    many(&t, 3);
    let srv = t.serve(|_| {});
    let r = srv.get("/big/", &[]);
    assert_eq!(r.header("x-listing-cut"), None);
    assert!(!String::from_utf8_lossy(&r.body).contains(" entries"));
}

#[test]
fn a_listing_by_name_gives_each_entry_its_own_size_and_kind() {
    let t = Tree::new("namelist");
    t.file("d/b.txt", b"12345")
        .file("d/a.txt", b"1")
        .file("d/sub/x", b"");
    t.link("b.txt", "d/link");
    let srv = t.serve(|_| {});
    for sort in ["", "?sort=name", "?sort=name&order=desc", "?sort=size"] {
        let r = srv.get(&format!("/d/{sort}"), &[("Accept", "application/json")]);
        assert_eq!(r.status, 200);
        let text = String::from_utf8(r.body).unwrap();
        for want in [
            "{\"name\":\"b.txt\",",
            "\"type\":\"file\",\"size\":5,",
            "\"type\":\"file\",\"size\":1,",
            "{\"name\":\"sub\",",
            "\"type\":\"dir\",",
            "{\"name\":\"link\",",
        ] {
            assert!(text.contains(want), "{sort}: {want} in {text}");
        }
        // Directories first, whatever the order.
        assert!(text.starts_with("[{\"name\":\"sub\","), "{sort}: {text}");
    }
}

/// The awkward names of the listing tests, each a file with its own content.
const AWKWARD: [&str; 8] = [
    "a b.txt",
    "h#sh.txt",
    "q?.txt",
    "100%.txt",
    "<b>bold.txt",
    "\u{1f600}.txt",
    "new\nline.txt",
    "plain.txt",
];

/// `sub/index.html`, directories with awkward names, and `list/` holding
/// the awkward names, a directory `d ir` and a dotfile.
fn dirs_tree(tag: &str) -> Tree {
    let tree = Tree::new(tag);
    tree.file("sub/index.html", b"<p>index of sub</p>\n")
        .dir("a b")
        .dir("x#y")
        .dir("evil.example/x");
    for name in AWKWARD {
        tree.file(
            &format!("list/{name}"),
            format!("content of {name:?}").as_bytes(),
        );
    }
    tree.file("list/d ir/inner.txt", b"inner")
        .file("list/.hidden", b"secret dotfile");
    tree
}

/// The `href` values of a listing, minus the sort links and `../`.
fn listing_hrefs(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("href=\"") {
        rest = &rest[i + 6..];
        let end = rest.find('"').expect("closing quote of href");
        let href = &rest[..end];
        if !href.starts_with('?') && href != "../" {
            out.push(href.to_string());
        }
        rest = &rest[end..];
    }
    out
}

fn check_redirect(srv: &Running, path: &str, want_decoded: &[u8]) {
    let r = srv.get(path, &[]);
    r.assert_status(301, &format!("GET {path}"));
    let loc = r.must("location");
    assert!(
        loc.starts_with('/') && !loc.starts_with("//"),
        "GET {path}: Location {loc:?} is not path-absolute with a single leading /"
    );
    assert!(
        is_safe_url_path(loc),
        "GET {path}: Location {loc:?} is not percent-encoded"
    );
    assert_eq!(
        pct_decode(loc),
        want_decoded,
        "GET {path}: Location {loc:?} decodes wrong"
    );
}

#[test]
fn directories_redirect_to_their_slash_and_never_off_the_site() {
    let tree = dirs_tree("redirects");
    let srv = tree.serve(|_| {});
    check_redirect(&srv, "/sub", b"/sub/");
    check_redirect(&srv, "/a%20b", b"/a b/");
    check_redirect(&srv, "/x%23y", b"/x#y/");
    check_redirect(&srv, "/list/d%20ir", b"/list/d ir/");
    for evil in [
        "//evil.example/x",
        "///evil.example/x",
        "/%2fevil.example/x",
        "/%2F%2Fevil.example/x",
        "/.//evil.example/x",
    ] {
        let r = srv.get(evil, &[]);
        assert!(
            r.status == 301 || (400..500).contains(&r.status),
            "GET {evil}: status {}",
            r.status
        );
        if let Some(loc) = r.header("location") {
            assert!(
                loc.starts_with('/') && !loc.starts_with("//") && !loc.starts_with("/\\"),
                "GET {evil}: Location {loc:?} could leave the site"
            );
            assert_eq!(
                pct_decode(loc),
                b"/evil.example/x/",
                "GET {evil}: Location {loc:?}"
            );
        }
    }
    let r = srv.get("/sub/", &[]);
    r.assert_status(200, "GET /sub/");
    assert_eq!(r.must("content-type"), "text/html; charset=utf-8");
    assert_bytes_eq(&r.body, b"<p>index of sub</p>\n", "GET /sub/ (index.html)");
}

#[test]
fn an_html_listing_escapes_and_links_awkward_names() {
    let tree = dirs_tree("awkward");
    let srv = tree.serve(|_| {});
    let r = srv.get("/list/", &[]);
    r.assert_status(200, "GET /list/");
    assert_eq!(r.must("content-type"), "text/html; charset=utf-8");
    let html = String::from_utf8(r.body.clone()).expect("listing is UTF-8");
    assert!(
        !html.contains("<b>bold"),
        "a name is not HTML-escaped in the listing"
    );
    assert!(
        html.contains("&lt;b&gt;bold.txt"),
        "escaped `<b>bold.txt` not in the listing:\n{html}"
    );
    assert!(html.contains("\u{1f600}.txt"), "emoji name not shown");
    assert!(!html.contains(".hidden"), "dotfile listed:\n{html}");
    let hrefs = listing_hrefs(&html);
    let mut want: BTreeSet<Vec<u8>> = AWKWARD.iter().map(|n| n.as_bytes().to_vec()).collect();
    want.insert(b"d ir/".to_vec());
    let decoded: BTreeSet<Vec<u8>> = hrefs.iter().map(|h| pct_decode(h)).collect();
    let lossy = |s: &BTreeSet<Vec<u8>>| -> Vec<String> {
        s.iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect()
    };
    assert_eq!(
        lossy(&decoded),
        lossy(&want),
        "listing links (decoded) vs the directory's entries; hrefs: {hrefs:?}"
    );
    assert_eq!(hrefs.len(), want.len(), "duplicate links: {hrefs:?}");
    for href in &hrefs {
        assert!(
            is_safe_url_path(href),
            "href {href:?} is not percent-encoded"
        );
        let r = srv.get(&format!("/list/{href}"), &[]);
        r.assert_status(200, &format!("following href {href:?}"));
        let name = String::from_utf8(pct_decode(href)).unwrap();
        if name == "d ir/" {
            assert!(
                find(&r.body, b"inner.txt").is_some(),
                "the d ir/ link does not list inner.txt"
            );
        } else {
            let want = format!("content of {name:?}");
            assert_bytes_eq(
                &r.body,
                want.as_bytes(),
                &format!("following href {href:?}"),
            );
        }
    }
}

/// The names of a JSON listing (parsed by Python's json module), as
/// `hex(utf8 name) type` lines.
fn json_names(body: &[u8]) -> BTreeSet<String> {
    let out = python(
        "import json,sys\nfor e in json.load(sys.stdin): print(e['name'].encode('utf-8').hex(), e['type'])",
        &[],
        Some(body),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_json_listing_names_every_entry_exactly() {
    let tree = dirs_tree("jsonlist");
    let srv = tree.serve(|_| {});
    let mut want_json: BTreeSet<String> = AWKWARD
        .iter()
        .map(|n| format!("{} file", hex(n.as_bytes())))
        .collect();
    want_json.insert(format!("{} dir", hex(b"d ir")));
    for (what, path, headers) in [
        ("?format=json", "/list/?format=json", vec![]),
        (
            "Accept: application/json",
            "/list/",
            vec![("Accept", "application/json")],
        ),
    ] {
        let r = srv.get(path, &headers);
        r.assert_status(200, what);
        assert!(
            r.must("content-type").starts_with("application/json"),
            "{what}: Content-Type {:?}",
            r.must("content-type")
        );
        assert_eq!(
            json_names(&r.body),
            want_json,
            "{what}: names (hex) and types"
        );
    }
}

#[test]
fn listings_can_be_turned_off_and_can_show_dotfiles() {
    let tree = dirs_tree("nolisting");
    // No listing: 404 for a directory without index.html; index still served.
    let srv = tree.serve(|c| c.listing = false);
    srv.get("/list/", &[])
        .assert_status(404, "no listing: GET /list/");
    srv.get("/list/?format=json", &[])
        .assert_status(404, "no listing: JSON");
    let r = srv.get("/sub/", &[]);
    r.assert_status(200, "no listing: GET /sub/");
    assert_bytes_eq(&r.body, b"<p>index of sub</p>\n", "no listing: index.html");
    drop(srv);
    // Hidden files allowed: dotfiles are listed and served.
    let srv = tree.serve(|c| c.path.hidden = true);
    let r = srv.get("/list/", &[]);
    r.assert_status(200, "hidden: GET /list/");
    let hrefs = listing_hrefs(&String::from_utf8_lossy(&r.body));
    assert!(
        hrefs.iter().any(|h| h == ".hidden"),
        "hidden listing lacks .hidden: {hrefs:?}"
    );
    let r = srv.get("/list/.hidden", &[]);
    r.assert_status(200, "hidden: GET /list/.hidden");
    assert_bytes_eq(&r.body, b"secret dotfile", "hidden: GET /list/.hidden");
}
