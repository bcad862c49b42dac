//! cargo-fuzz target `percent_decode`: see `iocomp_server::fuzz::percent_decode` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_server::fuzz::percent_decode(data));
