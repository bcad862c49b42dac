//! Unit tests of the `Range` parser (kept apart to keep `range.rs` short).

use super::*;
use crate::http::XorShift;

/// The satisfiable ranges as `(start, end)` pairs, or a panic.
fn sat(header: &str, len: u64) -> Vec<(u64, u64)> {
    match parse_ranges(header.as_bytes(), len) {
        RangeResult::Satisfiable(r) => r.as_slice().iter().map(|r| (r.start, r.end)).collect(),
        other => panic!("{header:?} on {len}: {other:?}"),
    }
}

fn full(header: &str, len: u64) -> bool {
    parse_ranges(header.as_bytes(), len) == RangeResult::Full
}

fn unsat(header: &str, len: u64) -> bool {
    parse_ranges(header.as_bytes(), len) == RangeResult::Unsatisfiable
}

#[test]
fn single_ranges() {
    assert_eq!(sat("bytes=0-0", 10), [(0, 1)]);
    assert_eq!(sat("bytes=2-5", 10), [(2, 6)]);
    assert_eq!(sat("bytes=5-", 10), [(5, 10)]);
    assert_eq!(sat("bytes=-3", 10), [(7, 10)]);
    assert_eq!(sat("bytes=9-9", 10), [(9, 10)]);
    assert_eq!(sat("bytes=5-100", 10), [(5, 10)]);
    assert_eq!(sat("bytes=-100", 10), [(0, 10)]);
}

#[test]
fn whole_file_single_range_is_still_206() {
    assert_eq!(sat("bytes=0-", 10), [(0, 10)]);
    assert_eq!(sat("bytes=0-9", 10), [(0, 10)]);
}

#[test]
fn range_accessors() {
    let r = Range { start: 2, end: 6 };
    assert_eq!((r.len(), r.last(), r.is_empty()), (4, 5, false));
    assert!(Range { start: 3, end: 3 }.is_empty());
    match parse_ranges(b"bytes=0-1,5-6", 10) {
        RangeResult::Satisfiable(r) => assert_eq!(r.total(), 4),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reversed_range_is_invalid() {
    assert!(full("bytes=5-1", 10));
    assert!(full("bytes=0-1,5-1", 10));
    assert!(full("bytes=10-1", 5));
}

#[test]
fn suffix_zero_is_unsatisfiable() {
    assert!(unsat("bytes=-0", 10));
    assert!(unsat("bytes=-0,-0", 10));
    assert_eq!(sat("bytes=-0,0-1", 10), [(0, 2)]);
}

#[test]
fn start_beyond_length_is_unsatisfiable() {
    assert!(unsat("bytes=10-", 10));
    assert!(unsat("bytes=10-20", 10));
    assert!(unsat("bytes=100-200,50-", 10));
    assert_eq!(sat("bytes=100-200,2-3", 10), [(2, 4)]);
}

#[test]
fn many_identical_ranges_x1000() {
    let header = format!("bytes={}", vec!["0-0"; 1000].join(","));
    assert!(full(&header, 1_000_000));
}

#[test]
fn identical_ranges_under_the_cap_coalesce() {
    let header = format!("bytes={}", vec!["0-0"; 50].join(","));
    assert_eq!(sat(&header, 1000), [(0, 1)]);
    // ...unless they add up to more than the file.
    assert!(full(&header, 10));
}

#[test]
fn u64_max_start() {
    assert!(unsat("bytes=18446744073709551615-", 10));
    assert!(unsat("bytes=18446744073709551615-", u64::MAX));
    assert_eq!(
        sat("bytes=18446744073709551614-", u64::MAX),
        [(u64::MAX - 1, u64::MAX)]
    );
}

#[test]
fn last_pos_overflowing_u64() {
    assert_eq!(sat("bytes=0-18446744073709551616", 10), [(0, 10)]);
    assert_eq!(sat("bytes=3-99999999999999999999999999", 10), [(3, 10)]);
    assert!(unsat("bytes=99999999999999999999999999-", 10));
    assert_eq!(sat("bytes=-99999999999999999999999999", 10), [(0, 10)]);
    assert_eq!(
        sat("bytes=0-18446744073709551615", u64::MAX),
        [(0, u64::MAX)]
    );
}

#[test]
fn whitespace_rules() {
    assert_eq!(sat("bytes= 0-1", 10), [(0, 2)]);
    assert_eq!(sat("bytes=0-1 , 3-4\t", 10), [(0, 2), (3, 5)]);
    assert_eq!(sat("bytes=0 - 1", 10), [(0, 2)]);
    assert_eq!(sat("bytes=,,0-1,,", 10), [(0, 2)]);
    assert!(full("bytes =0-1", 10));
    assert!(full(" bytes=0-1", 10));
    assert!(full("bytes=0 1-2", 10));
    assert!(full("bytes=", 10));
    assert!(full("bytes=,", 10));
}

#[test]
fn other_units_are_ignored() {
    assert!(full("items=0-1", 10));
    assert!(full("byte=0-1", 10));
    assert!(full("0-1", 10));
    assert!(full("", 10));
    assert_eq!(sat("BYTES=0-1", 10), [(0, 2)]);
    assert_eq!(sat("Bytes=0-1", 10), [(0, 2)]);
}

#[test]
fn malformed_specs() {
    for h in [
        "bytes=-",
        "bytes=a-b",
        "bytes=1",
        "bytes=1-2-3",
        "bytes=--1",
        "bytes=+1-2",
        "bytes=0x1-2",
        "bytes=1-2;x",
        "bytes=\u{e9}-1",
        "bytes=-1-",
    ] {
        assert!(full(h, 10), "{h}");
    }
}

#[test]
fn range_on_empty_file() {
    assert!(unsat("bytes=0-", 0));
    assert!(unsat("bytes=0-0", 0));
    assert!(unsat("bytes=-1", 0));
    assert!(unsat("bytes=-0", 0));
    assert!(full("bytes=1-0", 0));
    assert!(full("items=0-", 0));
}

#[test]
fn multiple_ranges_sorted_and_coalesced() {
    assert_eq!(sat("bytes=5-6,0-1", 100), [(0, 2), (5, 7)]);
    assert_eq!(sat("bytes=0-4,3-8", 100), [(0, 9)]);
    assert_eq!(sat("bytes=0-4,5-8", 100), [(0, 9)]);
    assert_eq!(sat("bytes=0-4,6-8", 100), [(0, 5), (6, 9)]);
    assert_eq!(sat("bytes=-5,0-1", 100), [(0, 2), (95, 100)]);
    assert_eq!(sat("bytes=0-1,2-3,4-5", 100), [(0, 6)]);
}

#[test]
fn ranges_adding_up_to_more_than_the_file() {
    assert!(full("bytes=0-5,3-9", 10));
    assert!(full("bytes=0-,0-", 10));
    assert_eq!(sat("bytes=0-4,5-", 10), [(0, 10)]);
}

#[test]
fn range_count_caps() {
    let list = |n: u64| {
        (0..n)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(sat(&format!("bytes={}", list(16)), 1000).len(), 16);
    assert!(full(&format!("bytes={}", list(17)), 1000));
    assert!(full(&format!("bytes={}", list(101)), 100_000));
    // 100 specs that coalesce into one are fine.
    let adjacent = (0..100)
        .map(|i| format!("{i}-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(sat(&format!("bytes={adjacent}"), 1000), [(0, 100)]);
}

/// Satisfiable ranges are never empty, never reach past the file, and are
/// sorted, disjoint and non-adjacent; the outcome never depends on panics.
#[test]
fn randomized_invariants() {
    let mut rng = XorShift::new(2024);
    for _ in 0..20_000 {
        let len = match rng.below(4) {
            0 => 0,
            1 => rng.below(20),
            2 => rng.below(10_000),
            _ => rng.next(),
        };
        let n = 1 + rng.below(20);
        let mut header = String::from("bytes=");
        for i in 0..n {
            if i > 0 {
                header.push(',');
            }
            let a = rng.below(len.saturating_add(10).max(1));
            let b = a.saturating_add(rng.below(len.saturating_add(10).max(1)));
            match rng.below(4) {
                0 => header.push_str(&format!("{a}-{b}")),
                1 => header.push_str(&format!("{a}-")),
                2 => header.push_str(&format!("-{a}")),
                _ => header.push_str(&format!("{b}-{a}")),
            }
        }
        match parse_ranges(header.as_bytes(), len) {
            RangeResult::Satisfiable(r) => {
                let s = r.as_slice();
                assert!(!s.is_empty() && s.len() <= MAX_RANGES);
                for w in s.windows(2) {
                    assert!(w[0].end < w[1].start, "{header} {s:?}");
                }
                for x in s {
                    assert!(x.start < x.end && x.end <= len, "{header} {len} {s:?}");
                }
                assert!(s.len() == 1 || r.total() <= len);
            }
            RangeResult::Unsatisfiable => {}
            RangeResult::Full => {}
        }
        // Random bytes never panic.
        let junk: Vec<u8> = (0..rng.below(30))
            .map(|_| b"bytes=0123456789-, \t"[rng.below(20) as usize])
            .collect();
        let _ = parse_ranges(&junk, len);
    }
}
