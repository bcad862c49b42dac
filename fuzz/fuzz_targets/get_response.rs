//! cargo-fuzz target `get_response`: see `iocomp_cli::fuzz::get_response` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_cli::fuzz::get_response(data));
