//! Replays the fuzz corpora `fuzz/corpus/get_response/` and
//! `fuzz/corpus/config_file/` through the fuzz targets of `iocomp_cli::fuzz`,
//! as ordinary tests on the stable toolchain (the server's targets are
//! replayed by `crates/iocomp-server/tests/server/fuzz_corpus.rs`).
//!
//! Each test fails if its corpus directory is missing or empty, so it cannot
//! pass vacuously, and prints how many inputs it replayed.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use iocomp_cli::fuzz;

/// Runs `target` on every file under `fuzz/corpus/<name>/`; returns the count.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "fuzz",
        "corpus",
        name,
    ]
    .iter()
    .collect();
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} missing: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("read corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "corpus directory {} is empty",
        dir.display()
    );
    let mut failed = Vec::new();
    for path in &paths {
        let data = fs::read(path).expect("read corpus file");
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", path.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} input(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    println!("{name}: replayed {} inputs", paths.len());
    paths.len()
}

#[test]
fn get_response() {
    replay("get_response", fuzz::get_response);
}

#[test]
fn config_file() {
    replay("config_file", fuzz::config_file);
}

#[test]
fn tls_client() {
    replay("tls_client", fuzz::tls_client);
}

#[test]
fn connect_answer() {
    replay("connect_answer", fuzz::connect_answer);
}
