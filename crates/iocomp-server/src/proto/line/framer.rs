//! The line-protocol framer: splitting a byte stream into file-name requests.
//!
//! A client (`nc` is enough) sends one file name per line, terminated by LF;
//! CRLF is accepted too, since exactly one CR before the LF is dropped. A
//! line may hold at most [`MAX_LINE`] bytes before its LF (a CR counts). Input
//! arrives in arbitrary chunks, so the framer is incremental: the caller keeps
//! the unconsumed bytes, and the framer remembers how far it has already
//! searched them, so that a line trickling in byte by byte is scanned once.
//! A line that grows past the limit is reported as [`Frame::TooLong`] once,
//! its bytes are dropped as they come, up to and including the next LF, and
//! framing then resumes — so the caller never holds more than `MAX_LINE + 1`
//! bytes of an unterminated line. At end of input a final unterminated line
//! counts as if it had been terminated, unless it was too long.

use std::ops::Range;

/// The most bytes a line may hold before its LF (a trailing CR included).
pub const MAX_LINE: usize = 4096;

/// One framing event.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line: the range of the name in the buffer given, CR and LF excluded.
    Line(Range<usize>),
    /// A line longer than [`MAX_LINE`]; reported once, the line itself is dropped.
    TooLong,
}

/// An incremental splitter of input into lines.
#[derive(Debug, Default)]
pub struct LineFramer {
    /// Whether the rest of a too-long line is being dropped, up to its LF.
    discarding: bool,
    /// How many bytes at the front of the unconsumed buffer are known to hold no LF.
    scanned: usize,
}

impl LineFramer {
    /// A framer at the start of a line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at the unconsumed input `buf` (the caller keeps a buffer; bytes
    /// before `consumed` are dropped by the caller).
    ///
    /// Returns `(Some(frame), consumed)` when a frame is ready: the caller
    /// handles it, then removes `consumed` bytes from the front of its buffer.
    /// Returns `(None, consumed)` when more input is needed; `consumed` may be
    /// greater than 0 when bytes were discarded (after `TooLong`) and the caller
    /// must drop them too. A `Line` range always lies within `buf[..consumed]`.
    pub fn next(&mut self, buf: &[u8]) -> (Option<Frame>, usize) {
        let mut skipped = 0;
        if self.discarding {
            match find_lf(buf) {
                Some(lf) => {
                    self.discarding = false;
                    self.scanned = 0;
                    skipped = lf + 1;
                }
                None => return (None, buf.len()),
            }
        }
        let rest = buf.get(skipped..).unwrap_or_default();
        let from = self.scanned.min(rest.len());
        match find_lf(rest.get(from..).unwrap_or_default()) {
            Some(pos) => {
                self.scanned = 0;
                let lf = from + pos;
                let frame = if lf > MAX_LINE {
                    Frame::TooLong
                } else {
                    let end = strip_cr(rest.get(..lf).unwrap_or_default());
                    Frame::Line(skipped..skipped + end)
                };
                (Some(frame), skipped + lf + 1)
            }
            None if rest.len() > MAX_LINE => {
                self.scanned = 0;
                self.discarding = true;
                (Some(Frame::TooLong), buf.len())
            }
            None => {
                self.scanned = rest.len();
                (None, skipped)
            }
        }
    }

    /// Called once at end of input with the remaining unconsumed bytes (what is
    /// left once [`next`](Self::next) returns no frame); returns the final line if any.
    ///
    /// The remainder is framed as if an LF followed it: it yields a `Line`
    /// (one trailing CR stripped) or `TooLong`, or nothing when it is empty or
    /// the tail of a line already reported as too long. The framer is then
    /// back at the start of a line.
    pub fn finish(&mut self, buf: &[u8]) -> Option<Frame> {
        let discarding = self.discarding;
        *self = Self::default();
        if discarding || buf.is_empty() {
            return None;
        }
        // The caller should have drained every complete line; if not, only the
        // first one is taken.
        let line = match find_lf(buf) {
            Some(lf) => buf.get(..lf).unwrap_or_default(),
            None => buf,
        };
        if line.len() > MAX_LINE {
            Some(Frame::TooLong)
        } else {
            Some(Frame::Line(0..strip_cr(line)))
        }
    }
}

/// The index of the first LF in `buf`.
fn find_lf(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// The length of `line` without one trailing CR.
fn strip_cr(line: &[u8]) -> usize {
    match line {
        [.., b'\r'] => line.len() - 1,
        _ => line.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Out {
        Line(Vec<u8>),
        TooLong,
    }

    fn line(s: &[u8]) -> Out {
        Out::Line(s.to_vec())
    }

    /// Plays the caller: feeds `chunks`, drains frames, and finishes.
    fn feed(chunks: &[&[u8]]) -> Vec<Out> {
        let mut framer = LineFramer::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                let (frame, consumed) = framer.next(&buf);
                assert!(consumed <= buf.len());
                let done = frame.is_none();
                match frame {
                    Some(Frame::Line(r)) => {
                        assert!(r.end < consumed);
                        out.push(Out::Line(buf[r].to_vec()));
                    }
                    Some(Frame::TooLong) => out.push(Out::TooLong),
                    None => {}
                }
                buf.drain(..consumed);
                if done {
                    break;
                }
            }
            assert!(buf.len() <= MAX_LINE, "caller holds {} bytes", buf.len());
            assert!(framer.discarding || framer.scanned == buf.len());
        }
        match framer.finish(&buf) {
            Some(Frame::Line(r)) => out.push(Out::Line(buf[r].to_vec())),
            Some(Frame::TooLong) => out.push(Out::TooLong),
            None => {}
        }
        out
    }

    /// The frames a whole input should give, computed the obvious way.
    fn model(input: &[u8]) -> Vec<Out> {
        let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let last = pieces.pop().unwrap_or_default();
        if !last.is_empty() {
            pieces.push(last);
        }
        pieces
            .into_iter()
            .map(|p| match p {
                _ if p.len() > MAX_LINE => Out::TooLong,
                [head @ .., b'\r'] => line(head),
                _ => line(p),
            })
            .collect()
    }

    #[test]
    fn single_lines() {
        assert_eq!(feed(&[b"hello\n"]), [line(b"hello")]);
        assert_eq!(feed(&[b"hello\r\n"]), [line(b"hello")]);
        assert_eq!(feed(&[b"a\r\r\n"]), [line(b"a\r")]);
        assert_eq!(feed(&[b"\n"]), [line(b"")]);
        assert_eq!(feed(&[b"\r\n"]), [line(b"")]);
        assert_eq!(feed(&[b"a\rb\n"]), [line(b"a\rb")]);
        let mut framer = LineFramer::new();
        assert_eq!(framer.next(b"ab\r\nc"), (Some(Frame::Line(0..2)), 4));
        assert_eq!(framer.next(b"c"), (None, 0));
    }

    #[test]
    fn several_lines_in_one_buffer() {
        assert_eq!(
            feed(&[b"a\nbb\r\n\nccc\nd"]),
            [line(b"a"), line(b"bb"), line(b""), line(b"ccc"), line(b"d")]
        );
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let input = b"one\r\ntwo\n\nthree\r\r\nfour";
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&bytes), feed(&[input]));
        assert_eq!(feed(&[input]), model(input));
    }

    #[test]
    fn scan_offset_advances() {
        let mut framer = LineFramer::new();
        let mut buf = Vec::new();
        for i in 1..=MAX_LINE {
            buf.push(b'x');
            assert_eq!(framer.next(&buf), (None, 0));
            assert_eq!(framer.scanned, i);
        }
        buf.push(b'\n');
        assert_eq!(
            framer.next(&buf),
            (Some(Frame::Line(0..MAX_LINE)), MAX_LINE + 1)
        );
        assert_eq!(framer.scanned, 0);
    }

    #[test]
    fn length_limit() {
        let ok = [b'x'; MAX_LINE];
        assert_eq!(feed(&[&ok, b"\n"]), [line(&ok)]);
        assert_eq!(feed(&[&ok]), [line(&ok)]);
        let long = [b'y'; MAX_LINE + 1];
        assert_eq!(feed(&[&long, b"\nnext\n"]), [Out::TooLong, line(b"next")]);
        assert_eq!(
            feed(&[&long, b"tail\nnext\n"]),
            [Out::TooLong, line(b"next")]
        );
        // A CR counts against the limit.
        assert_eq!(feed(&[&ok, b"\r\n"]), [Out::TooLong]);
        let big = [b'z'; 5000];
        let chunks: Vec<&[u8]> = big.chunks(700).chain([&b"\nok\n"[..]]).collect();
        assert_eq!(feed(&chunks), [Out::TooLong, line(b"ok")]);
        // Everything in one buffer, LF included.
        let mut one = big.to_vec();
        one.extend_from_slice(b"\nok\n");
        assert_eq!(feed(&[&one]), [Out::TooLong, line(b"ok")]);
    }

    #[test]
    fn too_long_consumes_everything_seen() {
        let mut framer = LineFramer::new();
        let long = [b'q'; MAX_LINE + 1];
        assert_eq!(framer.next(&long), (Some(Frame::TooLong), MAX_LINE + 1));
        assert_eq!(framer.next(b"qqq"), (None, 3));
        assert_eq!(framer.next(b"qq\nab\n"), (Some(Frame::Line(3..5)), 6));
        assert_eq!(framer.next(b""), (None, 0));
    }

    #[test]
    fn finish() {
        assert_eq!(feed(&[b"partial"]), [line(b"partial")]);
        assert_eq!(feed(&[b"a\npartial\r"]), [line(b"a"), line(b"partial")]);
        assert_eq!(feed(&[b"a\n"]), [line(b"a")]);
        assert_eq!(feed(&[b""]), []);
        let long = [b'g'; 6000];
        assert_eq!(feed(&[&long]), [Out::TooLong]);
        assert_eq!(feed(&[&long[..MAX_LINE + 1], b"more"]), [Out::TooLong]);
        let mut framer = LineFramer::new();
        assert_eq!(framer.finish(&long), Some(Frame::TooLong));
        assert_eq!(framer.finish(b"ab\ncd"), Some(Frame::Line(0..2)));
        assert_eq!(framer.finish(b""), None);
    }

    #[test]
    fn binary_garbage() {
        let garbage: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .map(|b| if b == b'\n' { 0 } else { b })
            .collect();
        assert_eq!(feed(&[&garbage]), [Out::TooLong]);
        let chunks: Vec<&[u8]> = garbage.chunks(333).collect();
        assert_eq!(feed(&chunks), [Out::TooLong]);
    }

    /// xorshift64*, enough to pick lengths and split points deterministically.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_splits_match_model() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..200 {
            let mut input = Vec::new();
            for _ in 0..rng.below(8) {
                let len = match rng.below(4) {
                    0 => rng.below(4),
                    1 => rng.below(64),
                    2 => MAX_LINE - 2 + rng.below(5),
                    _ => rng.below(3 * MAX_LINE),
                };
                input.extend((0..len).map(|_| b"ab\r\0\xff"[rng.below(5)]));
                match rng.below(3) {
                    0 => input.extend_from_slice(b"\r\n"),
                    _ => input.push(b'\n'),
                }
            }
            input.extend((0..rng.below(10)).map(|_| b'c'));
            let mut chunks = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let cap = if rng.below(2) == 0 { 8 } else { 2000 };
                let n = 1 + rng.below(rest.len().min(cap));
                let (head, tail) = rest.split_at(n);
                chunks.push(head);
                rest = tail;
            }
            let expected = model(&input);
            assert_eq!(feed(&chunks), expected);
            assert_eq!(feed(&[&input]), expected);
        }
    }
}
