//! A response body as bytes arrive (push, not pull: the engine hands the
//! driving thread whatever one receive brought): the framing (`Content-Length`,
//! chunked transfer coding, or to EOF) and the content coding (`gzip`,
//! `deflate`, decoded with flate2's streaming writers).

use std::io::Write;

use crate::client::{Fail, Head};

/// How the body's end is known.
pub(crate) enum Framing {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// To the end of the connection.
    Eof,
}

pub(crate) enum Chunk {
    /// Reading a chunk-size line (bytes so far).
    Size(Vec<u8>),
    /// Inside a chunk: bytes left, then its CRLF.
    Data(u64),
    /// The CRLF after a chunk's data (bytes of it seen).
    Crlf(u8),
    /// After the last chunk (trailers are skipped).
    Trailer(Vec<u8>),
    Done,
}

fn bad(m: &str) -> Fail {
    Fail::Network(format!("receiving the body: chunked: {m}"))
}

/// The body ended before its end.
pub(crate) fn short() -> Fail {
    Fail::Network("receiving the body: the body ended early".into())
}

/// A response whose framing cannot be trusted.
fn refused(m: String) -> Fail {
    Fail::Network(format!("malformed response: {m}"))
}

impl Framing {
    /// The framing a response head announces, refusing what cannot be
    /// framed safely (RFC 9112 §6.1, §6.3): a transfer coding other than
    /// `chunked` alone (`gzip, chunked` is not decoded), and a
    /// `Content-Length` that is not one decimal number (two different
    /// values, or a list that disagrees, as curl refuses).
    pub(crate) fn check(head: &Head) -> Result<Framing, Fail> {
        let codings: Vec<&str> = head
            .headers
            .iter()
            .filter(|(n, _)| n == "transfer-encoding")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if !codings.is_empty()
            && (codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked"))
        {
            return Err(refused(format!(
                "Transfer-Encoding: {} (only chunked is understood)",
                codings.join(", ")
            )));
        }
        let mut len: Option<u64> = None;
        for (_, v) in head.headers.iter().filter(|(n, _)| n == "content-length") {
            for p in v.split(',').map(str::trim) {
                let n = p
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| p.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| refused(format!("Content-Length: {}", v.trim())))?;
                if len.is_some_and(|l| l != n) {
                    return Err(refused("conflicting Content-Length values".into()));
                }
                len = Some(n);
            }
        }
        Ok(Framing::of(head))
    }

    /// The framing a response head announces (see [`Framing::check`] for
    /// what is refused first).
    pub(crate) fn of(head: &Head) -> Framing {
        let chunked = head
            .get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if head.status == 204 || head.status == 304 {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked(Chunk::Size(Vec::new()))
        } else if let Some(n) = head.content_length() {
            Framing::Length(n)
        } else {
            Framing::Eof
        }
    }

    /// The declared length, if known up front.
    pub(crate) fn len_hint(&self) -> Option<u64> {
        match self {
            Framing::Length(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether the body is complete (an EOF body never is before its EOF).
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Chunked(Chunk::Done))
    }

    /// Whether the connection's end is the body's end (else it ended early).
    pub(crate) fn eof_ok(&self) -> bool {
        self.is_done() || matches!(self, Framing::Eof)
    }

    /// Feeds received bytes; the body's bytes go to `out`. Bytes after the
    /// body's end are ignored (one request per connection).
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        while !input.is_empty() {
            match self {
                Framing::Eof => return out(input),
                Framing::Length(0) | Framing::Chunked(Chunk::Done) => return Ok(()),
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    *left -= n as u64;
                    if matches!(self, Framing::Chunked(Chunk::Data(0))) {
                        *self = Framing::Chunked(Chunk::Crlf(0));
                    }
                    out(&input[..n])?;
                    input = &input[n..];
                }
                Framing::Chunked(state) => {
                    state.framing_byte(input[0])?;
                    input = &input[1..];
                }
            }
        }
        Ok(())
    }
}

impl Chunk {
    /// Advances through a chunk-size line, a chunk's CRLF or the trailers.
    fn framing_byte(&mut self, b: u8) -> Result<(), Fail> {
        match self {
            Chunk::Size(line) => {
                if b != b'\n' {
                    if line.len() > 1024 {
                        return Err(bad("size line too long"));
                    }
                    line.push(b);
                    return Ok(());
                }
                let text = String::from_utf8_lossy(line);
                let hex = text.split(';').next().unwrap_or("").trim();
                // Hex digits only: `from_str_radix` would take a sign (`+5`).
                if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(bad("bad chunk size"));
                }
                let size = u64::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))?;
                *self = if size == 0 {
                    Chunk::Trailer(Vec::new())
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Crlf(seen) => match (b, *seen) {
                (b'\r', 0) => *seen = 1,
                (b'\n', _) => *self = Chunk::Size(Vec::new()),
                _ => return Err(bad("missing CRLF after a chunk")),
            },
            Chunk::Trailer(line) => {
                if b == b'\n' {
                    let empty = line.iter().all(|&c| c == b'\r');
                    line.clear();
                    if empty {
                        *self = Chunk::Done;
                    }
                } else if line.len() > 8192 {
                    return Err(bad("trailer line too long"));
                } else {
                    line.push(b);
                }
            }
            Chunk::Data(_) | Chunk::Done => {}
        }
        Ok(())
    }
}

/// A content coding `get --compressed` decodes.
#[derive(Clone, Copy)]
pub(crate) enum Coding {
    Gzip,
    /// HTTP's `deflate`: a zlib stream (RFC 9110 §8.4.1.2).
    Deflate,
}

/// Decoded bytes always allowed, whatever the compressed size.
const DECODED_FLOOR: u64 = 64 << 20;
/// Beyond the floor, the decoded body may be at most this many times the
/// compressed bytes received: ordinary files compress 2 to 20 times, a
/// decompression bomb about 1000 times (deflate's limit is 1032).
const MAX_RATIO: u64 = 200;
/// Compressed bytes handed to the decoder at once: with deflate's 1032:1
/// limit, one step never decodes more than about 4 MiB into memory.
const STEP: usize = 4096;

/// A streaming decoder of the body's content coding (or none), with its
/// output bounded: in memory per step, and in total relative to the input.
pub(crate) struct Decode {
    kind: Kind,
    /// Compressed bytes in.
    inp: u64,
    /// Decoded bytes out.
    outp: u64,
}

enum Kind {
    Identity,
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
}

fn undecodable(e: std::io::Error) -> Fail {
    Fail::Network(format!("receiving the body: cannot decode it: {e}"))
}

impl Decode {
    pub(crate) fn new(coding: Option<Coding>) -> Decode {
        let kind = match coding {
            None => Kind::Identity,
            Some(Coding::Gzip) => Kind::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
            Some(Coding::Deflate) => Kind::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
        };
        Decode {
            kind,
            inp: 0,
            outp: 0,
        }
    }

    /// Hands what the decoder produced to `out`, within the bound.
    fn drain(&mut self, out: &mut dyn FnMut(&[u8]) -> Result<(), Fail>) -> Result<(), Fail> {
        let decoded = match &mut self.kind {
            Kind::Identity => return Ok(()),
            Kind::Gzip(d) => d.get_mut(),
            Kind::Deflate(d) => d.get_mut(),
        };
        self.outp += decoded.len() as u64;
        if self.outp > DECODED_FLOOR.saturating_add(self.inp.saturating_mul(MAX_RATIO)) {
            return Err(Fail::Network(format!(
                "receiving the body: it expands more than {MAX_RATIO} times ({} compressed bytes gave {}): stopped, as a decompression bomb",
                self.inp, self.outp
            )));
        }
        let r = out(decoded);
        decoded.clear();
        r
    }

    /// Decodes `data` and hands what comes out to `out`.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        if let Kind::Identity = self.kind {
            return out(data);
        }
        for step in data.chunks(STEP) {
            match &mut self.kind {
                Kind::Identity => {}
                Kind::Gzip(d) => d.write_all(step).map_err(undecodable)?,
                Kind::Deflate(d) => d.write_all(step).map_err(undecodable)?,
            }
            self.inp += step.len() as u64;
            self.drain(out)?;
        }
        Ok(())
    }

    /// The body ended: the decoder's last bytes go to `out`.
    pub(crate) fn finish(
        &mut self,
        out: &mut dyn FnMut(&[u8]) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        match &mut self.kind {
            Kind::Identity => return Ok(()),
            Kind::Gzip(d) => d.try_finish().map_err(undecodable)?,
            Kind::Deflate(d) => d.try_finish().map_err(undecodable)?,
        }
        self.drain(out)
    }
}
