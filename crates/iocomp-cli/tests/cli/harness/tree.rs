//! [`TempTree`]: a served directory and its surroundings, removed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static TREE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique temporary directory, removed (with everything in it) on drop.
///
/// Layout: `base/` holds the served tree `base/root/` and may hold files
/// *outside* the served tree (next to it): downloads, configuration files,
/// logs, certificates, and files for escape tests.
pub struct TempTree {
    base: PathBuf,
    root: PathBuf,
}

impl TempTree {
    /// Creates a fresh, empty tree.
    pub fn new() -> TempTree {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = TREE_COUNTER.fetch_add(1, Ordering::SeqCst);
        let base =
            std::env::temp_dir().join(format!("iocomp-itest-{}-{n}-{nanos}", std::process::id()));
        // `create_dir` (not `_all`) so a leftover directory is never reused.
        fs::create_dir(&base).unwrap_or_else(|e| panic!("create {}: {e}", base.display()));
        let root = base.join("root");
        fs::create_dir(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        TempTree { base, root }
    }

    /// The directory the server serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding `root/`; files here are outside the served tree.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Creates (or replaces) the file `rel` under the root with `content`,
    /// creating parent directories. Returns its path.
    pub fn file(&self, rel: &str, content: &[u8]) -> PathBuf {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Creates a file next to the served tree (outside it). Returns its path.
    pub fn outside_file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.base.join(name);
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Creates the directory `rel` (and its parents) under the root.
    pub fn dir(&self, rel: &str) -> PathBuf {
        let path = self.root.join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        path
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        // `remove_dir_all` does not follow symlinks, so escape links are safe.
        let _ = fs::remove_dir_all(&self.base);
    }
}
