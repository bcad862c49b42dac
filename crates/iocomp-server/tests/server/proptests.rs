//! Property tests (proptest): range arithmetic against a byte-set model, and
//! path normalisation against a real tree with a secret outside the root.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::PathBuf;
use std::sync::OnceLock;

use iocomp_server::http::percent::decode_path;
use iocomp_server::http::range::{parse_ranges, Range, RangeResult, MAX_RANGES};
use iocomp_server::{OpenError, PathOptions, Root};
use proptest::prelude::*;

/// One range-spec as the model sees it.
#[derive(Clone, Debug)]
enum Spec {
    /// `first-` or `first-last` (last ≥ first).
    Int(u64, Option<u64>),
    /// `-n`.
    Suffix(u64),
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (0u64..80, proptest::option::of(0u64..40))
            .prop_map(|(f, d)| Spec::Int(f, d.map(|d| f + d))),
        (0u64..80).prop_map(Spec::Suffix),
        Just(Spec::Int(u64::MAX, None)),
        Just(Spec::Int(0, Some(u64::MAX))),
    ]
}

fn render(spec: &Spec, pad: &str) -> String {
    match spec {
        Spec::Int(f, None) => format!("{pad}{f}{pad}-"),
        Spec::Int(f, Some(l)) => format!("{f}{pad}-{pad}{l}"),
        Spec::Suffix(n) => format!("-{pad}{n}"),
    }
}

/// The RFC 9110 answer, computed on a byte set (lengths are small).
fn model(specs: &[Spec], len: u64) -> Expect {
    if specs.is_empty() {
        return Expect::Full;
    }
    let mut covered = vec![false; len as usize];
    let (mut any, mut sum) = (false, 0u64);
    for s in specs {
        let (start, end) = match *s {
            Spec::Int(f, _) if f >= len => continue,
            Spec::Int(f, l) => (f, l.map_or(len, |l| l.saturating_add(1).min(len))),
            Spec::Suffix(0) => continue,
            Spec::Suffix(n) => (len.saturating_sub(n), len),
        };
        if end <= start {
            continue;
        }
        any = true;
        sum += end - start;
        for b in &mut covered[start as usize..end as usize] {
            *b = true;
        }
    }
    if !any {
        return Expect::Unsatisfiable;
    }
    if specs.len() > 1 && sum > len {
        return Expect::Full;
    }
    let mut runs = Vec::new();
    let mut i = 0;
    while i < covered.len() {
        if covered[i] {
            let start = i;
            while i < covered.len() && covered[i] {
                i += 1;
            }
            runs.push(Range {
                start: start as u64,
                end: i as u64,
            });
        } else {
            i += 1;
        }
    }
    if runs.len() > MAX_RANGES {
        return Expect::Full;
    }
    Expect::Satisfiable(runs)
}

/// The model's answer (`Ranges` cannot be built outside the crate).
#[derive(Debug, PartialEq)]
enum Expect {
    Full,
    Satisfiable(Vec<Range>),
    Unsatisfiable,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any header built from valid specs: the result is what RFC 9110 (and the
    /// documented 200 fallbacks) say, and satisfiable ranges are sorted,
    /// disjoint, non-adjacent, within the file and at most MAX_RANGES.
    #[test]
    fn ranges_match_the_model(
        specs in proptest::collection::vec(spec(), 0..24),
        len in prop_oneof![0u64..4, 0u64..120],
        pad in prop_oneof![Just(""), Just(" "), Just("\t")],
        unit in prop_oneof![Just("bytes"), Just("BYTES"), Just("Bytes")],
        empties in any::<bool>(),
    ) {
        let sep = if empties { ", ," } else { "," };
        let list: Vec<String> = specs.iter().map(|s| render(s, pad)).collect();
        let header = format!("{unit}={}", list.join(sep));
        let got = parse_ranges(header.as_bytes(), len);
        match (model(&specs, len), got) {
            (Expect::Satisfiable(want), RangeResult::Satisfiable(r)) => {
                prop_assert_eq!(r.as_slice(), &want[..], "{}", header);
                for pair in r.as_slice().windows(2) {
                    prop_assert!(pair[0].end < pair[1].start);
                }
                prop_assert!(r.as_slice().iter().all(|x| x.start < x.end && x.end <= len));
                prop_assert!(r.as_slice().len() <= MAX_RANGES && r.total() <= len);
            }
            (Expect::Full, got) => prop_assert_eq!(got, RangeResult::Full, "{} len {}", header, len),
            (Expect::Unsatisfiable, got) => {
                prop_assert_eq!(got, RangeResult::Unsatisfiable, "{} len {}", header, len)
            }
            (want, got) => prop_assert!(false, "{} len {}: want {:?}, got {:?}", header, len, want, got),
        }
    }

    /// A header with an invalid element, another unit or no `=` is ignored (200).
    #[test]
    fn invalid_headers_are_full(
        specs in proptest::collection::vec(spec(), 0..6),
        bad in prop_oneof![Just("5-1"), Just("x"), Just("1-2-3"), Just("-"), Just("0x1-")],
        len in 0u64..100,
        at in 0usize..6,
    ) {
        let mut list: Vec<String> = specs.iter().map(|s| render(s, "")).collect();
        list.insert(at.min(list.len()), bad.to_string());
        let header = format!("bytes={}", list.join(","));
        prop_assert_eq!(parse_ranges(header.as_bytes(), len), RangeResult::Full);
        let other = format!("items={}", list.join(","));
        prop_assert_eq!(parse_ranges(other.as_bytes(), len), RangeResult::Full);
        prop_assert_eq!(parse_ranges(list.join(",").replace('=', "").as_bytes(), len), RangeResult::Full);
    }
}

/// A served tree: `base/root` with files and symlinks (one pointing out),
/// `base/outside/secret` beside it.
struct Tree {
    root: Root,
    secret: (u64, u64),
    outside: (u64, u64),
}

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let base: PathBuf =
            std::env::temp_dir().join(format!("iocomp-proptest-{}", std::process::id()));
        let root = base.join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::write(base.join("outside/secret"), b"secret").unwrap();
        fs::write(root.join("a"), b"a").unwrap();
        fs::write(root.join(".dot"), b"dot").unwrap();
        fs::write(root.join("sub/b"), b"b").unwrap();
        symlink("../outside/secret", root.join("out")).unwrap();
        symlink("../outside", root.join("outdir")).unwrap();
        symlink("../a", root.join("sub/up")).unwrap();
        let id = |p: PathBuf| {
            let m = fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let opts = PathOptions {
            hidden: true,
            no_symlinks: false,
            ..PathOptions::default()
        };
        Tree {
            root: Root::open(&root, opts).unwrap(),
            secret: id(base.join("outside/secret")),
            outside: id(base.join("outside")),
        }
    })
}

fn component() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"..".to_vec()),
        Just(b".".to_vec()),
        Just(Vec::new()),
        Just(b".dot".to_vec()),
        Just(b"a".to_vec()),
        Just(b"sub".to_vec()),
        Just(b"b".to_vec()),
        Just(b"up".to_vec()),
        Just(b"out".to_vec()),
        Just(b"outdir".to_vec()),
        Just(b"secret".to_vec()),
        Just(b"outside".to_vec()),
        Just(b"%2e%2e".to_vec()),
        Just(b"%2E.".to_vec()),
        Just(b"%2f".to_vec()),
        Just(b"..%2f..".to_vec()),
        Just(b"%00".to_vec()),
        Just(b"%5c".to_vec()),
        Just(b"%".to_vec()),
        proptest::collection::vec(any::<u8>(), 1..4),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// decode_path, then the policy: never the secret outside the root, never
    /// the outside directory; a decoded `..` component is always Forbidden.
    #[test]
    fn paths_never_escape_the_root(
        comps in proptest::collection::vec(component(), 0..7),
        lead in any::<bool>(),
    ) {
        let t = tree();
        let mut raw = if lead { b"/".to_vec() } else { Vec::new() };
        raw.extend(comps.join(&b'/'));
        let Ok(name) = decode_path(&raw) else {
            return Ok(());
        };
        let dotdot = name.split(|&b| b == b'/').any(|c| c == b"..");
        for o in [t.root.open_file(&name), t.root.open_entry(&name)].into_iter().flatten() {
            {
                let id = (o.meta.dev(), o.meta.ino());
                prop_assert!(id != t.secret && id != t.outside, "{:?} escaped", raw);
                prop_assert!(!dotdot, "{:?} with `..` opened", raw);
            }
        }
        if dotdot {
            prop_assert!(matches!(t.root.open_file(&name), Err(OpenError::Forbidden)));
        }
    }

    /// The line protocol takes raw names (no decoding): any name with a `..`
    /// component is Forbidden, whatever surrounds it.
    #[test]
    fn line_names_with_dotdot_are_forbidden(
        before in proptest::collection::vec(component(), 0..4),
        after in proptest::collection::vec(component(), 0..4),
        lead in any::<bool>(),
    ) {
        let t = tree();
        let mut parts = before;
        parts.push(b"..".to_vec());
        parts.extend(after);
        let mut name = if lead { b"/".to_vec() } else { Vec::new() };
        name.extend(parts.join(&b'/'));
        if name.contains(&0) {
            prop_assert!(matches!(t.root.open_file(&name), Err(OpenError::BadName)));
        } else {
            prop_assert!(matches!(t.root.open_file(&name), Err(OpenError::Forbidden)), "{:?}", name);
        }
    }
}

/// The escape routes the properties rely on do exist: the symlinks resolve
/// outside on the file system, and the policy refuses them.
#[test]
fn tree_sanity() {
    let t = tree();
    assert!(t.root.open_file(b"a").is_ok());
    assert!(t.root.open_file(b"sub/up").is_ok());
    assert!(matches!(
        t.root.open_file(b"out"),
        Err(OpenError::Forbidden)
    ));
    assert!(matches!(
        t.root.open_file(b"outdir/secret"),
        Err(OpenError::Forbidden)
    ));
    assert!(matches!(
        t.root.open_file(b"../outside/secret"),
        Err(OpenError::Forbidden)
    ));
}
