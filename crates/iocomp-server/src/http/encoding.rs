//! Content negotiation for precompressed siblings (`name.br`, `name.gz`).
//!
//! [`choose`] reads `Accept-Encoding` (RFC 9110 §12.5.3) and returns the
//! encodings worth trying, best first: each coding gets the q-value of its own
//! entry, else that of `*`, else 0; `q=0` refuses; `x-gzip` counts as `gzip`;
//! ties prefer Brotli (smaller). A malformed q-value makes its entry count as
//! refused, which can only make the server fall back to the identity
//! encoding — always acceptable. No header (or an empty one) means identity
//! only: servers do not send compressed bodies to clients that did not ask.
//!
//! The caller tries `name` + [`Encoding::suffix`] for each candidate in
//! order, serves the first that is a regular file with `Content-Encoding` and
//! its own validators (its entity-tag marked with the coding, `"…-gz"`), and adds `Vary: Accept-Encoding` to every response for
//! a file that has a sibling (200, 206, 304 and 416 alike), so that caches
//! keep the variants apart.

use crate::http::request::trim_ows;

/// A content coding the server can serve from a precompressed sibling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Brotli: `name.br`.
    Br,
    /// gzip: `name.gz`.
    Gzip,
}

impl Encoding {
    /// Every encoding a sibling may have.
    pub const ALL: [Encoding; 2] = [Encoding::Br, Encoding::Gzip];

    /// The `Content-Encoding` value: `br` or `gzip`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// What a variant's entity-tag ends with: `br` or `gz` (see
    /// [`ETag::variant`](crate::http::cond::ETag::variant)).
    pub fn etag_tag(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gz",
        }
    }

    /// The file-name suffix of the sibling: `.br` or `.gz`.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Br => ".br",
            Encoding::Gzip => ".gz",
        }
    }
}

/// The encodings to try, best first; `None` entries are at the end.
pub type Candidates = [Option<Encoding>; 2];

/// Parses a qvalue (`0`, `0.5`, `1`, `1.000`, …) into thousandths.
fn qvalue(s: &[u8]) -> Option<u16> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (s.get(..dot)?, s.get(dot + 1..)?),
        None => (s, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        let digit = frac.get(i).map_or(0, |d| u16::from(d - b'0'));
        thousandths = thousandths * 10 + digit;
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The q-value in the parameters (`;q=0.5;…`) of one list element of
/// `Accept-Encoding` or `Accept`: 1000 if absent, 0 if malformed.
pub(crate) fn element_q(params: &[u8]) -> u16 {
    for param in params.split(|&b| b == b';').map(trim_ows) {
        if param.is_empty() {
            continue;
        }
        let Some(eq) = param.iter().position(|&b| b == b'=') else {
            return 0;
        };
        let (name, value) = param.split_at(eq);
        if trim_ows(name).eq_ignore_ascii_case(b"q") {
            let value = trim_ows(value.get(1..).unwrap_or(b""));
            return qvalue(value).unwrap_or(0);
        }
    }
    1000
}

/// The precompressed encodings acceptable to the client, best first.
pub fn choose(accept_encoding: Option<&[u8]>) -> Candidates {
    let Some(header) = accept_encoding else {
        return [None, None];
    };
    let (mut br, mut gzip, mut star) = (None, None, None);
    for element in header.split(|&b| b == b',') {
        let (coding, params) = match element.iter().position(|&b| b == b';') {
            Some(semi) => element.split_at(semi),
            None => (element, &b""[..]),
        };
        let coding = trim_ows(coding);
        let slot = if coding.eq_ignore_ascii_case(b"br") {
            &mut br
        } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            &mut gzip
        } else if coding == b"*" {
            &mut star
        } else {
            continue;
        };
        let q = element_q(params);
        // If a coding is listed twice, the lower preference wins (cautious).
        *slot = Some(slot.map_or(q, |old: u16| old.min(q)));
    }
    let br = br.or(star).unwrap_or(0);
    let gzip = gzip.or(star).unwrap_or(0);
    let pick = |q: u16, e: Encoding| (q > 0).then_some(e);
    if gzip > br {
        [pick(gzip, Encoding::Gzip), pick(br, Encoding::Br)]
    } else {
        [pick(br, Encoding::Br), pick(gzip, Encoding::Gzip)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::XorShift;
    use Encoding::{Br, Gzip};

    /// The server takes a cache hit's sibling bits as its own: they must be
    /// the bits of exactly this list, in this order.
    #[test]
    fn the_open_file_cache_keeps_the_siblings_of_every_encoding() {
        assert_eq!(
            Encoding::ALL.map(Encoding::suffix),
            crate::fs::CACHED_SIBLINGS
        );
    }

    fn c(h: &str) -> Candidates {
        choose(Some(h.as_bytes()))
    }

    #[test]
    fn names_and_suffixes() {
        assert_eq!((Br.name(), Br.suffix()), ("br", ".br"));
        assert_eq!((Gzip.name(), Gzip.suffix()), ("gzip", ".gz"));
    }

    #[test]
    fn absent_or_empty_means_identity() {
        assert_eq!(choose(None), [None, None]);
        assert_eq!(c(""), [None, None]);
        assert_eq!(c("identity"), [None, None]);
        assert_eq!(c("deflate, zstd"), [None, None]);
    }

    #[test]
    fn browser_headers() {
        assert_eq!(c("gzip, deflate, br, zstd"), [Some(Br), Some(Gzip)]);
        assert_eq!(c("gzip, deflate"), [Some(Gzip), None]);
        assert_eq!(c("br"), [Some(Br), None]);
        assert_eq!(c("x-gzip"), [Some(Gzip), None]);
        assert_eq!(c("GZIP, BR"), [Some(Br), Some(Gzip)]);
    }

    #[test]
    fn q_values() {
        assert_eq!(c("br;q=0.5, gzip;q=0.8"), [Some(Gzip), Some(Br)]);
        assert_eq!(c("br;q=0.8, gzip;q=0.8"), [Some(Br), Some(Gzip)]);
        assert_eq!(c("br;q=0, gzip"), [Some(Gzip), None]);
        assert_eq!(c("br; q=0.000, gzip;Q=1"), [Some(Gzip), None]);
        assert_eq!(c("br;q=1.0, gzip;q=0.001"), [Some(Br), Some(Gzip)]);
        assert_eq!(c("gzip;q=0"), [None, None]);
    }

    #[test]
    fn malformed_q_refuses_that_entry() {
        assert_eq!(c("br;q=2, gzip"), [Some(Gzip), None]);
        assert_eq!(c("br;q=1.5, gzip"), [Some(Gzip), None]);
        assert_eq!(c("br;q=0.1234, gzip"), [Some(Gzip), None]);
        assert_eq!(c("br;q=, gzip"), [Some(Gzip), None]);
        assert_eq!(c("br;q=-1, gzip"), [Some(Gzip), None]);
        assert_eq!(c("br;junk, gzip"), [Some(Gzip), None]);
        assert_eq!(c("br;level=5, gzip"), [Some(Br), Some(Gzip)]);
    }

    #[test]
    fn star() {
        assert_eq!(c("*"), [Some(Br), Some(Gzip)]);
        assert_eq!(c("*;q=0"), [None, None]);
        assert_eq!(c("br;q=0, *"), [Some(Gzip), None]);
        assert_eq!(c("gzip;q=0.5, *;q=0.1"), [Some(Gzip), Some(Br)]);
        assert_eq!(c("*, gzip;q=0"), [Some(Br), None]);
    }

    #[test]
    fn duplicates_take_the_lower_q() {
        assert_eq!(c("br, br;q=0"), [None, None]);
        assert_eq!(c("gzip;q=0, gzip"), [None, None]);
    }

    #[test]
    fn qvalue_grammar() {
        assert_eq!(qvalue(b"0"), Some(0));
        assert_eq!(qvalue(b"0."), Some(0));
        assert_eq!(qvalue(b"0.5"), Some(500));
        assert_eq!(qvalue(b"0.125"), Some(125));
        assert_eq!(qvalue(b"1"), Some(1000));
        assert_eq!(qvalue(b"1.000"), Some(1000));
        assert_eq!(qvalue(b"1.001"), None);
        assert_eq!(qvalue(b".5"), None);
        assert_eq!(qvalue(b""), None);
        assert_eq!(qvalue(b"0.5x"), None);
    }

    #[test]
    fn randomized_no_panic() {
        let mut rng = XorShift::new(5);
        let alphabet = b"brgzip*;q=0.1, \tx-";
        for _ in 0..20_000 {
            let h: Vec<u8> = (0..rng.below(30))
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            let [a, b] = choose(Some(&h));
            assert!(a.is_some() || b.is_none());
            assert!(a.is_none() || a != b);
        }
    }
}
