//! Listings are bounded work: at most 10,000 entries and 4 MiB of body,
//! chosen after sorting the whole directory in the order asked for (so the
//! cut never depends on the order the file system returns names in), and a
//! cut listing says so.

use crate::harness::Tree;

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
