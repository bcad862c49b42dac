//! cargo-fuzz target `http_request`: see `iocomp_server::fuzz::http_request` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_server::fuzz::http_request(data));
