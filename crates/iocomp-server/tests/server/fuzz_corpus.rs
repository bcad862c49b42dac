//! Replays the fuzz corpora in `fuzz/corpus/NAME/` through the fuzz targets of
//! `iocomp_server::fuzz`, as ordinary tests on the stable toolchain.
//!
//! Each test fails if its corpus directory is missing or empty, so it cannot
//! pass vacuously, and prints how many inputs it replayed.

use iocomp_server::fuzz;
use iocomp_testkit::replay;

#[test]
fn http_request() {
    replay("http_request", fuzz::http_request);
}

#[test]
fn range_header() {
    replay("range_header", fuzz::range_header);
}

#[test]
fn conditional() {
    replay("conditional", fuzz::conditional);
}

#[test]
fn percent_decode() {
    replay("percent_decode", fuzz::percent_decode);
}

#[test]
fn line_framer() {
    replay("line_framer", fuzz::line_framer);
}

#[test]
fn protocol_detect() {
    replay("protocol_detect", fuzz::protocol_detect);
}

#[test]
fn http_date() {
    replay("http_date", fuzz::http_date);
}

#[test]
fn tls_front() {
    replay("tls_front", fuzz::tls_front);
}
