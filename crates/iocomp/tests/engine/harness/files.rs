//! Temporary files and directories of a test's own, removed when dropped.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A name under the system's temporary directory that no other test of this
/// process (or of another run) uses: the process id, `tag`, a counter.
fn unique(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("iocomp-test-{}-{tag}-{n}", std::process::id()))
}

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory.
    pub fn new(tag: &str) -> TempDir {
        let p = unique(tag);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// The path of `name` in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file of its own in the temporary directory, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// A name for a file that does not exist yet.
    pub fn new(tag: &str) -> TempFile {
        let p = unique(tag);
        let _ = std::fs::remove_file(&p);
        TempFile(p)
    }

    /// The file, opened for reading and writing (created if need be).
    pub fn open(&self) -> File {
        rw(&self.0)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `path`, opened for reading and writing, created if need be, not truncated.
pub fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}
