//! `iocomp get --raw`: the line protocol. Send the name and a newline,
//! half-close, and read until the server closes — or exactly `--size` bytes.
//! A reply that is one error line (`File transmit error: …`) is an error.

use std::fs;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::Path;

use iocomp_server::ERROR_PREFIX;

use super::{copy, finish, local, side, start_part, Opts};
use crate::client::{self, net, Fail};
use crate::progress::Progress;
use crate::target::Target;

/// An error line is at most this long (the server's reasons are short).
const MAX_ERROR_LINE: u64 = 256;

pub(super) fn download(t: &Target, out: &Path, opts: &Opts, p: &Progress) -> Result<(), Fail> {
    let part = side(out, ".part");
    let meta = side(out, ".part.meta");
    let mut s = client::connect(t, opts.to)?;
    let mut line = t.path.clone().into_bytes();
    line.push(b'\n');
    s.write_all(&line).map_err(|e| net("sending the name", e))?;
    // Half-close: the server answers this one name, then closes.
    s.shutdown(Shutdown::Write)
        .map_err(|e| net("half-closing", e))?;
    let file = start_part(&part, &meta, None)?;
    p.start(opts.size, 0);
    let got = match opts.size {
        Some(n) => {
            let mut body = (&s).take(n);
            copy(&mut body, file, &part, opts, p)?
        }
        None => copy(&mut &s, file, &part, opts, p)?,
    };
    if let Some(reason) = error_line(&part, got, opts.size)? {
        let _ = fs::remove_file(&part);
        return Err(Fail::Http(format!("the server says: {reason}")));
    }
    if let Some(n) = opts.size {
        if got < n {
            return Err(Fail::Network(format!(
                "the server closed after {got} of {n} bytes"
            )));
        }
    }
    finish(&part, &meta, out)
}

/// The reason, if what arrived is exactly one error line (and not a file of
/// the expected size that happens to look like one).
fn error_line(part: &Path, got: u64, size: Option<u64>) -> Result<Option<String>, Fail> {
    if got > MAX_ERROR_LINE || size == Some(got) {
        return Ok(None);
    }
    let bytes = fs::read(part).map_err(|e| local(part, e))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .strip_prefix(ERROR_PREFIX)
        .and_then(|r| r.strip_suffix("\r\n"))
        .filter(|r| !r.contains('\n'))
        .map(str::to_string))
}
