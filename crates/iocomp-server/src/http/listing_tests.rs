//! Unit tests of directory listings.

use super::*;
use crate::http::percent::decode_path;
use crate::http::XorShift;

fn entry(name: &[u8], is_dir: bool, len: u64, mtime: i64) -> Entry<'_> {
    Entry {
        name,
        is_dir,
        len,
        mtime,
    }
}

fn html(dir: &[u8], entries: &mut [Entry<'_>], sort: Sort) -> String {
    let mut out = Vec::new();
    render_html(&mut out, dir, entries, sort);
    String::from_utf8(out).unwrap()
}

fn json(entries: &mut [Entry<'_>]) -> String {
    let mut out = Vec::new();
    render_json(&mut out, entries, Sort::default());
    String::from_utf8(out).unwrap()
}

/// The `href` targets of the rows, in order.
fn hrefs(page: &str) -> Vec<&str> {
    page.split("<tr><td><a href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect()
}

#[test]
fn awkward_names_are_escaped_and_encoded() {
    let names: [&[u8]; 8] = [
        b"with space.txt",
        b"hash#tag",
        b"what?",
        b"100%",
        b"<b>bold</b>",
        "emoji \u{1f600}".as_bytes(),
        b"new\nline",
        b"latin1-\xe9",
    ];
    let mut entries: Vec<Entry<'_>> = names.iter().map(|n| entry(n, false, 1, 0)).collect();
    let page = html(b"/files/", &mut entries, Sort::default());
    assert!(!page.contains("<b>bold"), "names must be escaped");
    assert!(page.contains("&lt;b&gt;bold&lt;/b&gt;"));
    assert!(page.contains(">emoji \u{1f600}<"));
    assert!(page.contains(">latin1-\u{fffd}<"));
    let links = hrefs(&page);
    assert!(links.contains(&"with%20space.txt"));
    assert!(links.contains(&"hash%23tag"));
    assert!(links.contains(&"what%3F"));
    assert!(links.contains(&"100%25"));
    assert!(links.contains(&"new%0Aline"));
    assert!(links.contains(&"latin1-%E9"));
    // Every link decodes back to exactly the name's bytes.
    for (link, name) in links.iter().skip(1).zip({
        let mut sorted = names.to_vec();
        sorted.sort();
        sorted
    }) {
        assert_eq!(decode_path(link.as_bytes()).unwrap().as_ref(), name);
    }
}

#[test]
fn parent_link_except_at_root() {
    let page = html(b"/", &mut [], Sort::default());
    assert!(!page.contains("href=\"../\""));
    let page = html(b"//./", &mut [], Sort::default());
    assert!(!page.contains("href=\"../\""));
    let page = html(b"/sub/", &mut [], Sort::default());
    assert_eq!(hrefs(&page), ["../"]);
}

#[test]
fn directories_first_with_trailing_slash() {
    let mut entries = [
        entry(b"b.txt", false, 3, 0),
        entry(b"a-dir", true, 4096, 0),
        entry(b"a.txt", false, 1, 0),
    ];
    let page = html(b"/", &mut entries, Sort::default());
    assert_eq!(hrefs(&page), ["a-dir/", "a.txt", "b.txt"]);
    assert!(page.contains(">a-dir/</a></td><td class=\"s\">-</td>"));
}

#[test]
fn title_is_escaped() {
    let page = html(b"/<script>/", &mut [], Sort::default());
    assert!(page.contains("<title>Index of /&lt;script&gt;/</title>"));
    assert!(!page.contains("<script>"));
}

#[test]
fn sizes_and_dates() {
    let mut entries = [entry(b"f", false, 1536, 784_111_777)];
    let page = html(b"/", &mut entries, Sort::default());
    assert!(
        page.contains("title=\"1536\">1.5 KiB</td><td>1994-11-06 08:49:37</td>"),
        "{page}"
    );
    let cases = [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1_048_575, "1023.9 KiB"),
        (1_048_576, "1.0 MiB"),
        (u64::MAX, "15.9 EiB"),
    ];
    for (n, want) in cases {
        let mut out = Vec::new();
        push_size(&mut out, n);
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
    let dates = [
        (0, "1970-01-01 00:00:00"),
        (951_782_400, "2000-02-29 00:00:00"),
        (-5, "1970-01-01 00:00:00"),
        (i64::MAX, "9999-12-31 23:59:59"),
        (1_709_251_199, "2024-02-29 23:59:59"),
    ];
    for (secs, want) in dates {
        let mut out = Vec::new();
        push_datetime(&mut out, secs);
        assert_eq!(String::from_utf8(out).unwrap(), want, "{secs}");
    }
}

#[test]
fn sorting() {
    let mut entries = [
        entry(b"b", false, 10, 300),
        entry(b"a", false, 30, 100),
        entry(b"c", false, 20, 200),
        entry(b"d", true, 0, 0),
    ];
    let order = |entries: &[Entry<'_>]| entries.iter().map(|e| e.name[0]).collect::<Vec<_>>();
    let s = |key, order| Sort { key, order };
    sort_entries(&mut entries, s(SortKey::Name, Order::Asc));
    assert_eq!(order(&entries), b"dabc");
    sort_entries(&mut entries, s(SortKey::Name, Order::Desc));
    assert_eq!(order(&entries), b"dcba");
    sort_entries(&mut entries, s(SortKey::Size, Order::Asc));
    assert_eq!(order(&entries), b"dbca");
    sort_entries(&mut entries, s(SortKey::Mtime, Order::Desc));
    assert_eq!(order(&entries), b"dbca");
    sort_entries(&mut entries, s(SortKey::Mtime, Order::Asc));
    assert_eq!(order(&entries), b"dacb");
}

#[test]
fn sort_from_query() {
    assert_eq!(Sort::from_query(None), Sort::default());
    let s = Sort::from_query(Some(b"sort=size&order=desc"));
    assert_eq!((s.key, s.order), (SortKey::Size, Order::Desc));
    let s = Sort::from_query(Some(b"order=desc&x&sort=mtime&sort=bogus"));
    assert_eq!((s.key, s.order), (SortKey::Mtime, Order::Desc));
    assert_eq!(
        Sort::from_query(Some(b"sort=NAME&order=up")),
        Sort::default()
    );
}

#[test]
fn column_links_toggle_order() {
    let page = html(
        b"/",
        &mut [],
        Sort {
            key: SortKey::Name,
            order: Order::Asc,
        },
    );
    assert!(page.contains("href=\"?sort=name&amp;order=desc\">Name \u{2191}</a>"));
    assert!(page.contains("href=\"?sort=size&amp;order=asc\">Size</a>"));
    let page = html(
        b"/",
        &mut [],
        Sort {
            key: SortKey::Size,
            order: Order::Desc,
        },
    );
    assert!(page.contains("href=\"?sort=size&amp;order=asc\">Size \u{2193}</a>"));
}

#[test]
fn json_listing() {
    let mut entries = [
        entry(b"f \"q\"\\.txt", false, 5, 1_700_000_000),
        entry(b"sub", true, 0, -1),
    ];
    assert_eq!(
        json(&mut entries),
        "[{\"name\":\"sub\",\"href\":\"sub/\",\"type\":\"dir\",\"size\":0,\"mtime\":-1},\
         {\"name\":\"f \\\"q\\\"\\\\.txt\",\"href\":\"f%20%22q%22%5C.txt\",\"type\":\"file\",\"size\":5,\"mtime\":1700000000}]\n"
    );
    assert_eq!(json(&mut []), "[]\n");
}

#[test]
fn json_escapes_controls_markup_and_invalid_utf8() {
    let mut entries = [entry(b"a\nb\t\x01\x7f<&>\xe9\xc3\xa9", false, 0, 0)];
    let out = json(&mut entries);
    assert!(
        out.contains("\"name\":\"a\\nb\\t\\u0001\\u007f\\u003c\\u0026\\u003e\\u00e9\u{e9}\""),
        "{out}"
    );
}

#[test]
fn wants_json_rules() {
    assert!(wants_json(None, Some(b"format=json")));
    assert!(wants_json(None, Some(b"sort=size&format=json")));
    assert!(!wants_json(None, Some(b"format=jsonp")));
    assert!(!wants_json(None, None));
    assert!(wants_json(Some(b"application/json"), None));
    assert!(wants_json(Some(b"Application/JSON; charset=utf-8"), None));
    assert!(!wants_json(Some(b"application/json;q=0"), None));
    let browser = b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    assert!(!wants_json(Some(browser), None));
    assert!(!wants_json(Some(b"*/*"), None));
    assert!(!wants_json(Some(b"text/html, application/json"), None));
    assert!(wants_json(Some(b"text/html;q=0.5, application/json"), None));
}

#[test]
fn randomized_names_round_trip() {
    let mut rng = XorShift::new(8);
    for _ in 0..500 {
        let name: Vec<u8> = (0..1 + rng.below(12))
            .map(|_| rng.next() as u8)
            .filter(|&b| b != 0 && b != b'/' && b != b'\\')
            .collect();
        if name.is_empty() {
            continue;
        }
        let mut entries = [entry(
            &name,
            rng.below(2) == 0,
            rng.next(),
            rng.next() as i64,
        )];
        let page = html(b"/d/", &mut entries, Sort::default());
        let link = hrefs(&page)[1].trim_end_matches('/');
        assert_eq!(decode_path(link.as_bytes()).unwrap().as_ref(), &name[..]);
        let _ = json(&mut entries);
    }
}

#[test]
fn control_characters_in_names_are_shown_as_control_pictures() {
    let mut out = Vec::new();
    let mut entries = [
        Entry {
            name: b"new\nline.txt",
            is_dir: false,
            len: 1,
            mtime: 0,
        },
        Entry {
            name: b"new line.txt",
            is_dir: false,
            len: 1,
            mtime: 0,
        },
    ];
    render_html(&mut out, b"/d/", &mut entries, Sort::from_query(None));
    let html = String::from_utf8(out).unwrap();
    assert!(html.contains("new\u{240a}line.txt"), "{html}");
    assert!(html.contains("new line.txt"));
    assert!(html.contains("new%0Aline.txt") && html.contains("new%20line.txt"));
}
