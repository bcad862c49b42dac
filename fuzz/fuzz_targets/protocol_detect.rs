//! cargo-fuzz target `protocol_detect`: see `iocomp_server::fuzz::protocol_detect` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_server::fuzz::protocol_detect(data));
