//! The pure, I/O-free building blocks of the HTTP/1.1 side of the server.
//!
//! Nothing here touches a socket or a file: every function takes bytes (or
//! numbers the caller got from `fstat`) and returns a decision or writes bytes
//! into a caller-owned buffer. The connection state machine strings them
//! together, in this order for one request:
//!
//! 1. [`detect::detect`] on the first bytes of a connection picks HTTP or the
//!    line protocol.
//! 2. [`request::parse`] turns a request head into a borrowed [`request::Request`]
//!    or a typed error carrying the status to answer with.
//! 3. [`percent::decode_path`] percent-decodes the target once; the shared path
//!    policy (`crate::fs::Root`) then resolves it.
//! 4. [`cond::evaluate`] decides 304/412 from the file's validators;
//!    [`cond::if_range_allows`] and [`range::parse_ranges`] decide 200/206/416.
//! 5. [`encoding::choose`] names the precompressed siblings worth trying.
//! 6. [`response`] writes the head (and the multipart framing), [`listing`]
//!    renders directory listings.
//!
//! Hot-path functions allocate nothing: they borrow from the request buffer or
//! write into a reusable `Vec<u8>`.

pub mod cond;
pub mod date;
pub mod detect;
pub mod encoding;
pub mod error;
pub mod listing;
pub mod multipart;
pub mod percent;
pub mod range;
pub mod request;
pub mod response;
mod target;

/// Tiny deterministic xorshift generator for the randomized unit tests.
#[cfg(test)]
pub(crate) struct XorShift(u64);

#[cfg(test)]
impl XorShift {
    /// A generator seeded with `seed` (zero is replaced by a fixed constant).
    pub(crate) fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next pseudo-random number.
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` must be nonzero).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One request through all the blocks, in the order the connection uses them.
#[cfg(test)]
mod flow_tests {
    use super::*;

    #[test]
    fn ranged_get_of_a_file() {
        let buf = b"GET /docs/a%20b.txt?x HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1,-2\r\n\
                    Accept-Encoding: gzip\r\n\r\n";
        assert_eq!(detect::detect(buf), detect::Proto::Http);
        let Ok(request::Parsed::Complete(req, head_len)) = request::parse(buf) else {
            panic!("parse");
        };
        assert_eq!(head_len, buf.len());
        let name = percent::decode_path(req.path).unwrap();
        assert_eq!(&name[..], b"/docs/a b.txt");
        let v = cond::Validators::new(10, 784_111_777, 0);
        assert_eq!(cond::evaluate(&req, &v), cond::Precondition::Proceed);
        assert!(cond::if_range_allows(&req, &v));
        assert_eq!(
            encoding::choose(req.accept_encoding)[0],
            Some(encoding::Encoding::Gzip)
        );
        let range::RangeResult::Satisfiable(ranges) = range::parse_ranges(req.range.unwrap(), 10)
        else {
            panic!("ranges");
        };
        let ct = response::content_type_for(&name);
        let mut out = Vec::new();
        let mut dates = date::DateCache::new();
        let date = *dates.now();
        let mut head = response::Head::new(&mut out, 206, &date);
        head.content_type_multipart(multipart::boundary())
            .etag(&v.etag)
            .last_modified(v.last_modified);
        let mut parts = Vec::new();
        let plan = multipart::Multipart::plan(&mut parts, ranges.as_slice(), ct, 10).unwrap();
        head.content_length(plan.content_length())
            .connection(req.version, req.keep_alive)
            .finish();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 206 Partial Content\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(plan.parts(), 2);
    }
}
