//! Byte ranges (RFC 9110 §14): parsing, validation, coalescing and capping.
//!
//! [`parse_ranges`] takes a `Range` header value and the file length and says
//! what to send:
//!
//! - [`RangeResult::Full`] (200, ignore the header) when the header is not a
//!   valid `bytes` range set — another unit, a reversed `a-b` with `b < a`, a
//!   missing `=`, garbage — when it lists more than [`MAX_RAW_RANGES`] ranges,
//!   when several ranges add up to more than the file (nginx and Go do the
//!   same: a multipart answer would be larger than the file), or when more than
//!   [`MAX_RANGES`] disjoint ranges remain after coalescing.
//! - [`RangeResult::Unsatisfiable`] (416 with `Content-Range: bytes */len`)
//!   when the header is valid but no range overlaps the file: every first-pos
//!   is at or beyond the length, or a suffix is `-0`. On an empty file every
//!   valid range is unsatisfiable (there is no byte to send).
//! - [`RangeResult::Satisfiable`] otherwise: the ranges clamped to the file,
//!   sorted, with overlapping and adjacent ranges merged. One range is a plain
//!   206, even one covering the whole file (`bytes=0-` is how media players and
//!   download managers probe for range support); several are
//!   `multipart/byteranges`.
//!
//! Leniency, as nginx and Go: the unit is case-insensitive, spaces and tabs
//! are allowed around list elements and around `-` (`bytes= 0-1` is served),
//! and empty list elements are skipped. Numbers too large for `u64` saturate:
//! a huge last-pos means "to the end", a huge first-pos is beyond any file.
//! Parsing allocates nothing.

/// The most disjoint ranges served after coalescing (more → 200).
pub const MAX_RANGES: usize = 16;

/// The most range specifications accepted in one header (more → 200).
pub const MAX_RAW_RANGES: usize = 100;

/// A non-empty byte range of the file: `start..end`, end exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Range {
    /// The first byte.
    pub start: u64,
    /// One past the last byte; always greater than `start`.
    pub end: u64,
}

impl Range {
    /// The number of bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range is empty (never true for ranges from [`parse_ranges`]).
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The last byte, inclusive, as written in `Content-Range`.
    pub fn last(&self) -> u64 {
        self.end.saturating_sub(1)
    }
}

/// Up to [`MAX_RANGES`] sorted, disjoint, non-adjacent ranges, stored inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranges {
    /// The ranges; only the first `len` are meaningful.
    items: [Range; MAX_RANGES],
    /// How many ranges there are (1..=MAX_RANGES).
    len: usize,
}

impl Ranges {
    /// The ranges, sorted by start.
    pub fn as_slice(&self) -> &[Range] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    /// The total number of bytes in all ranges.
    pub fn total(&self) -> u64 {
        self.as_slice()
            .iter()
            .map(Range::len)
            .fold(0, u64::saturating_add)
    }
}

/// What to answer to a `Range` header.
// Boxing the ranges would cost an allocation per range request; 264 bytes on
// the stack are cheaper.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeResult {
    /// Ignore the header and send the whole file (200).
    Full,
    /// Send these ranges (206): one as a plain body, several as multipart.
    Satisfiable(Ranges),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Parses a decimal number, saturating at `u64::MAX`; `None` if empty or not digits.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        Some(n.saturating_mul(10).saturating_add(u64::from(digit)))
    })
}

/// One range-spec, before it is related to the file length.
enum Spec {
    /// `first-` or `first-last`.
    Int(u64, Option<u64>),
    /// `-suffix`.
    Suffix(u64),
}

/// Parses one non-empty range-spec; `None` if it is invalid.
fn spec(s: &[u8]) -> Option<Spec> {
    let dash = s.iter().position(|&b| b == b'-')?;
    let (first, last) = s.split_at_checked(dash)?;
    let first = crate::http::request::trim_ows(first);
    let last = crate::http::request::trim_ows(last.get(1..)?);
    if first.is_empty() {
        return Some(Spec::Suffix(number(last)?));
    }
    let first = number(first)?;
    if last.is_empty() {
        return Some(Spec::Int(first, None));
    }
    let last = number(last)?;
    if last < first {
        return None;
    }
    Some(Spec::Int(first, Some(last)))
}

/// Parses a `Range` header value against a file of `len` bytes.
pub fn parse_ranges(header: &[u8], len: u64) -> RangeResult {
    let Some(eq) = header.iter().position(|&b| b == b'=') else {
        return RangeResult::Full;
    };
    let (unit, set) = header.split_at(eq);
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return RangeResult::Full;
    }
    let set = set.get(1..).unwrap_or(b"");
    let mut raw = [Range::default(); MAX_RAW_RANGES];
    let mut count = 0usize;
    let mut specs = 0usize;
    let mut sum = 0u64;
    for element in set.split(|&b| b == b',') {
        let element = crate::http::request::trim_ows(element);
        if element.is_empty() {
            continue;
        }
        specs += 1;
        if specs > MAX_RAW_RANGES {
            return RangeResult::Full;
        }
        let Some(spec) = spec(element) else {
            return RangeResult::Full;
        };
        let range = match spec {
            Spec::Int(first, _) if first >= len => continue,
            Spec::Int(first, last) => Range {
                start: first,
                end: last.map_or(len, |l| l.saturating_add(1).min(len)),
            },
            Spec::Suffix(0) => continue,
            Spec::Suffix(n) => Range {
                start: len.saturating_sub(n),
                end: len,
            },
        };
        if range.is_empty() {
            continue;
        }
        sum = sum.saturating_add(range.len());
        if let Some(slot) = raw.get_mut(count) {
            *slot = range;
            count += 1;
        }
    }
    if specs == 0 {
        return RangeResult::Full;
    }
    if count == 0 {
        return RangeResult::Unsatisfiable;
    }
    if specs > 1 && sum > len {
        return RangeResult::Full;
    }
    let raw = raw.get_mut(..count).unwrap_or(&mut []);
    raw.sort_unstable_by_key(|r| (r.start, r.end));
    let mut out = Ranges {
        items: [Range::default(); MAX_RANGES],
        len: 0,
    };
    let mut current: Option<Range> = None;
    for &r in raw.iter() {
        current = match current {
            Some(c) if r.start <= c.end => Some(Range {
                start: c.start,
                end: c.end.max(r.end),
            }),
            Some(c) => {
                let Some(slot) = out.items.get_mut(out.len) else {
                    return RangeResult::Full;
                };
                *slot = c;
                out.len += 1;
                Some(r)
            }
            None => Some(r),
        };
    }
    if let Some(c) = current {
        let Some(slot) = out.items.get_mut(out.len) else {
            return RangeResult::Full;
        };
        *slot = c;
        out.len += 1;
    }
    RangeResult::Satisfiable(out)
}

#[cfg(test)]
#[path = "range_tests.rs"]
mod tests;
