//! Replays the fuzz corpora `fuzz/corpus/get_response/` and
//! `fuzz/corpus/config_file/` through the fuzz targets of `iocomp_cli::fuzz`,
//! as ordinary tests on the stable toolchain (the server's targets are
//! replayed by `crates/iocomp-server/tests/server/fuzz_corpus.rs`).
//!
//! Each test fails if its corpus directory is missing or empty, so it cannot
//! pass vacuously, and prints how many inputs it replayed.

use iocomp_cli::fuzz;
use iocomp_testkit::replay;

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
