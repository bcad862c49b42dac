//! The one system call `iocomp get` needs that std does not offer:
//! `renameat2(RENAME_NOREPLACE)`. Every `unsafe` block of the download path
//! is here.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`), in one
/// step: a file that appears at `to` meanwhile is never replaced. On a file
/// system without `RENAME_NOREPLACE` (`EINVAL`), a hard link and an unlink
/// give the same guarantee (`link` never replaces either).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (c_path(from)?, c_path(to)?);
    // SAFETY: both pointers are to NUL-terminated strings that live across
    // the call; renameat2 reads them and keeps nothing; AT_FDCWD is valid.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// Takes `flock(LOCK_EX | LOCK_NB)` on `f`: `Ok(false)` when another open
/// file description holds a lock on the file. The lock goes with the last
/// descriptor of this open file description.
pub(crate) fn try_lock_exclusive(f: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a descriptor and flags and touches no memory; `f`
    // is borrowed for the call, so its descriptor is open and valid.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}
