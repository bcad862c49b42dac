//! cargo-fuzz target `http_date`: see `iocomp_server::fuzz::http_date` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_server::fuzz::http_date(data));
