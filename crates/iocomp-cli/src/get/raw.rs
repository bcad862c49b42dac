//! `iocomp get --raw`: the line protocol. The driver sends the name and a
//! newline, half-closes, and reads until the server closes — or exactly
//! `--size` bytes. Here: the check of what arrived. A reply that is one error
//! line (`File transmit error: …`) is an error, and so is a short reply.

use std::fs;
use std::path::Path;

use iocomp_server::ERROR_PREFIX;

use super::local;
use crate::client::Fail;

/// An error line is at most this long (the server's reasons are short).
const MAX_ERROR_LINE: u64 = 256;

/// Whether `got` bytes in `part` are the file (else the error, and an error
/// line's `.part` is removed).
pub(super) fn check(part: &Path, got: u64, size: Option<u64>) -> Result<(), Fail> {
    if let Some(reason) = error_line(part, got, size)? {
        let _ = fs::remove_file(part);
        return Err(Fail::Http(format!("the server says: {reason}")));
    }
    if let Some(n) = size {
        if got < n {
            return Err(Fail::Network(format!(
                "the server closed after {got} of {n} bytes"
            )));
        }
    }
    Ok(())
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
