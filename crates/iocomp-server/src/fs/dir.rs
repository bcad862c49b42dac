//! Reading a directory through its open descriptor (`getdents64`), so that a
//! rename of its path meanwhile cannot redirect us and no `/proc` is needed.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use crate::sys;

/// One entry of a directory, with its own metadata (not its symlink target's:
/// a link that leaves the root must not disclose what it points at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The name, raw bytes.
    pub(crate) name: Vec<u8>,
    /// A directory (not a symlink to one).
    pub(crate) is_dir: bool,
    /// Size in bytes.
    pub(crate) len: u64,
    /// Modification time, Unix seconds.
    pub(crate) mtime: i64,
}

/// Every entry [`each`] gives, collected (for tests).
#[cfg(test)]
pub(crate) fn entries(dir: &File, hidden: bool) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    each(dir, hidden, true, |e| out.push(e))?;
    Ok(out)
}

/// The entry `name` of the directory `dir`, with its own metadata; `None` if
/// it vanished (or cannot be described).
pub(crate) fn stat(dir: &File, name: &[u8]) -> Option<Entry> {
    let cname = std::ffi::CString::new(name).ok()?;
    let st = sys::fstatat(dir.as_fd(), &cname, libc::AT_SYMLINK_NOFOLLOW).ok()?;
    Some(Entry {
        name: name.to_vec(),
        is_dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        len: u64::try_from(st.st_size).unwrap_or(0),
        mtime: st.st_mtime,
    })
}

/// Calls `f` on each entry of the directory `dir` (opened for reading, at its
/// start), without `.` and `..`, and without dot-names unless `hidden`; an
/// entry that vanishes while it is read is left out. One at a time: the
/// caller decides what to keep, so memory stays bounded however large the
/// directory.
///
/// Without `stat_all`, an entry whose type the directory records (`d_type`)
/// is not stat'ed: its `len` and `mtime` are 0 (for a caller that orders by
/// name and stats with [`stat`] only the entries it keeps).
pub(crate) fn each(
    dir: &File,
    hidden: bool,
    stat_all: bool,
    mut f: impl FnMut(Entry),
) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = sys::getdents(dir.as_fd(), &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut records = &buf[..n];
        while let Some((name, kind, rest)) = next_record(records) {
            records = rest;
            if name == b"." || name == b".." || (name.first() == Some(&b'.') && !hidden) {
                continue;
            }
            if !stat_all && kind != libc::DT_UNKNOWN {
                f(Entry {
                    name: name.to_vec(),
                    is_dir: kind == libc::DT_DIR,
                    len: 0,
                    mtime: 0,
                });
                continue;
            }
            if let Some(e) = stat(dir, name) {
                f(e);
            }
        }
    }
}

/// Splits the first `linux_dirent64` record off `buf`: its name (up to the
/// NUL), its type (`DT_*`) and the records after it. `None` at the end or on
/// a malformed record.
fn next_record(buf: &[u8]) -> Option<(&[u8], u8, &[u8])> {
    // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    const NAME: usize = 19;
    let reclen = usize::from(u16::from_ne_bytes(buf.get(16..18)?.try_into().ok()?));
    if reclen <= NAME || reclen > buf.len() {
        return None;
    }
    let kind = *buf.get(18)?;
    let raw = &buf[NAME..reclen];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some((&raw[..end], kind, &buf[reclen..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_entry_with_its_own_metadata() {
        let base = std::env::temp_dir().join(format!("iocomp-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("sub")).unwrap();
        std::fs::write(base.join("a"), b"12345").unwrap();
        std::fs::write(base.join(".h"), b"").unwrap();
        std::os::unix::fs::symlink("sub", base.join("l")).unwrap();
        // Many long names: several getdents64 calls.
        for i in 0..400 {
            std::fs::write(base.join(format!("{i:0>200}")), b"").unwrap();
        }
        let dir = File::open(&base).unwrap();
        let mut all = entries(&dir, false).unwrap();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(all.len(), 403);
        let find = |n: &[u8]| all.iter().find(|e| e.name == n).cloned().unwrap();
        assert_eq!((find(b"a").len, find(b"a").is_dir), (5, false));
        assert!(find(b"sub").is_dir);
        assert!(!find(b"l").is_dir, "a link is described as itself");
        assert!(all.iter().all(|e| e.name != b".h"));
        let dir = File::open(&base).unwrap();
        assert_eq!(entries(&dir, true).unwrap().len(), 404);
        // Without stat_all: the same names and kinds (from d_type, or a stat
        // where the filesystem records none), and stat gives the rest.
        let dir = File::open(&base).unwrap();
        let mut cheap = Vec::new();
        each(&dir, false, false, |e| cheap.push(e)).unwrap();
        cheap.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(cheap.len(), 403);
        for (c, full) in cheap.iter().zip(&all) {
            assert_eq!((&c.name, c.is_dir), (&full.name, full.is_dir));
            assert_eq!(stat(&dir, &c.name).as_ref(), Some(full));
        }
        assert_eq!(stat(&dir, b"missing"), None);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
