//! cargo-fuzz target `range_header`: see `iocomp_server::fuzz::range_header` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_server::fuzz::range_header(data));
