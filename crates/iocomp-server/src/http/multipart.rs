//! The `multipart/byteranges` framing of a multi-range answer (RFC 9110 §14.6).
//!
//! [`Multipart::plan`] writes every part head (delimiter, `Content-Type`,
//! `Content-Range`, empty line) and the closing delimiter into one buffer and
//! records where each lies, together with the exact `Content-Length` of the
//! body. The connection then sends, for each part, its head bytes followed by
//! its file range (zero-copy, like a whole file), and finally the closing
//! delimiter. Each part head starts with CRLF: before the first part that
//! CRLF is an empty preamble, which RFC 2046 allows. The boundary is random
//! per process, so file content cannot be crafted to collide with it.

use std::sync::OnceLock;

use crate::http::range::{Range, MAX_RANGES};
use crate::http::response::{push_content_range, ContentType};

/// The per-process multipart boundary: `iocomp-` and 16 hex digits from the
/// standard library's random hasher seed.
pub fn boundary() -> &'static str {
    static BOUNDARY: OnceLock<String> = OnceLock::new();
    BOUNDARY.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        format!("iocomp-{:016x}", h.finish())
    })
}

/// The framing of a `multipart/byteranges` body, planned in one buffer.
///
/// Each part is sent as [`Multipart::part_head`] followed by the bytes of its
/// range from the file; after the last part comes [`Multipart::closing`].
/// [`Multipart::content_length`] is the exact length of it all.
#[derive(Clone, Debug)]
pub struct Multipart {
    /// End offsets in the buffer of each part head, then of the closing delimiter.
    ends: [usize; MAX_RANGES + 1],
    /// The number of parts.
    parts: usize,
    /// Where the plan starts in the buffer.
    start: usize,
    /// The total body length.
    content_length: u64,
}

impl Multipart {
    /// Appends the part heads and the closing delimiter for `ranges` of a file
    /// of `len` bytes and type `ct` to `buf`, and records where each lies.
    ///
    /// Returns `None` if there are more than [`MAX_RANGES`] ranges or the
    /// length overflows (neither happens with ranges from `parse_ranges`).
    pub fn plan(
        buf: &mut Vec<u8>,
        ranges: &[Range],
        ct: ContentType,
        len: u64,
    ) -> Option<Multipart> {
        if ranges.len() > MAX_RANGES {
            return None;
        }
        let start = buf.len();
        let mut plan = Multipart {
            ends: [start; MAX_RANGES + 1],
            parts: ranges.len(),
            start,
            content_length: 0,
        };
        let mut total = 0u64;
        for (i, range) in ranges.iter().enumerate() {
            buf.extend_from_slice(b"\r\n--");
            buf.extend_from_slice(boundary().as_bytes());
            buf.extend_from_slice(b"\r\nContent-Type: ");
            ct.write_to(buf);
            buf.extend_from_slice(b"\r\nContent-Range: ");
            push_content_range(buf, *range, len);
            buf.extend_from_slice(b"\r\n\r\n");
            *plan.ends.get_mut(i)? = buf.len();
            total = total.checked_add(range.len())?;
        }
        buf.extend_from_slice(b"\r\n--");
        buf.extend_from_slice(boundary().as_bytes());
        buf.extend_from_slice(b"--\r\n");
        *plan.ends.get_mut(ranges.len())? = buf.len();
        let framing = u64::try_from(buf.len().checked_sub(start)?).ok()?;
        plan.content_length = total.checked_add(framing)?;
        Some(plan)
    }

    /// The number of parts.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// The exact `Content-Length` of the multipart body.
    pub fn content_length(&self) -> u64 {
        self.content_length
    }

    /// The head bytes of part `i` (boundary, `Content-Type`, `Content-Range`,
    /// empty line) within the buffer given to [`Multipart::plan`].
    pub fn part_head<'b>(&self, buf: &'b [u8], i: usize) -> &'b [u8] {
        if i >= self.parts {
            return &[];
        }
        let from = match i.checked_sub(1) {
            Some(prev) => self.ends.get(prev).copied().unwrap_or(self.start),
            None => self.start,
        };
        let to = self.ends.get(i).copied().unwrap_or(from);
        buf.get(from..to).unwrap_or(&[])
    }

    /// The closing delimiter, sent after the last part's bytes.
    pub fn closing<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        let from = match self.parts.checked_sub(1) {
            Some(last) => self.ends.get(last).copied().unwrap_or(self.start),
            None => self.start,
        };
        let to = self.ends.get(self.parts).copied().unwrap_or(from);
        buf.get(from..to).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::range::{parse_ranges, RangeResult};
    use crate::http::response::content_type_for;
    use crate::http::XorShift;

    fn text(buf: &[u8]) -> &str {
        std::str::from_utf8(buf).unwrap()
    }

    #[test]
    fn boundary_is_stable_and_plain() {
        let b = boundary();
        assert_eq!(b, boundary());
        assert!(b.len() <= 70 && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
    }

    /// Builds a whole multipart body for `file` and checks it piece by piece.
    fn multipart_body(file: &[u8], header: &str) -> (Vec<u8>, Multipart, Vec<u8>) {
        let RangeResult::Satisfiable(ranges) = parse_ranges(header.as_bytes(), file.len() as u64)
        else {
            panic!("{header}");
        };
        let mut buf = b"unrelated prefix".to_vec();
        let ct = content_type_for(b"f.txt");
        let plan = Multipart::plan(&mut buf, ranges.as_slice(), ct, file.len() as u64).unwrap();
        let mut body = Vec::new();
        for (i, r) in ranges.as_slice().iter().enumerate() {
            body.extend_from_slice(plan.part_head(&buf, i));
            body.extend_from_slice(&file[r.start as usize..r.end as usize]);
        }
        body.extend_from_slice(plan.closing(&buf));
        (buf, plan, body)
    }

    #[test]
    fn multipart_framing() {
        let file = b"0123456789abcdefghij";
        let (buf, plan, body) = multipart_body(file, "bytes=0-1,10-12");
        assert_eq!(plan.parts(), 2);
        assert_eq!(plan.content_length(), body.len() as u64);
        let b = boundary();
        let want = format!(
            "\r\n--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-1/20\r\n\r\n01\
             \r\n--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 10-12/20\r\n\r\nabc\
             \r\n--{b}--\r\n"
        );
        assert_eq!(text(&body), want);
        assert!(buf.starts_with(b"unrelated prefix"));
        assert_eq!(plan.part_head(&buf, 2), b"");
    }

    #[test]
    fn multipart_refuses_too_many_ranges() {
        let ranges = vec![Range { start: 0, end: 1 }; MAX_RANGES + 1];
        assert!(Multipart::plan(&mut Vec::new(), &ranges, ContentType::TEXT, 10).is_none());
        let plan = Multipart::plan(&mut Vec::new(), &[], ContentType::TEXT, 10).unwrap();
        assert_eq!(plan.parts(), 0);
    }

    #[test]
    fn randomized_multipart_lengths() {
        let mut rng = XorShift::new(31337);
        let file: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for _ in 0..500 {
            let len = 1 + rng.below(file.len() as u64) as usize;
            let n = 2 + rng.below(6);
            let header = (0..n)
                .map(|_| {
                    let a = rng.below(len as u64);
                    format!("{a}-{}", a + rng.below(50))
                })
                .collect::<Vec<_>>()
                .join(",");
            let header = format!("bytes={header}");
            if let RangeResult::Satisfiable(_) = parse_ranges(header.as_bytes(), len as u64) {
                let (_, plan, body) = multipart_body(&file[..len], &header);
                assert_eq!(plan.content_length(), body.len() as u64, "{header}");
            }
        }
    }
}
