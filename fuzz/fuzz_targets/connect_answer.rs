//! cargo-fuzz target `connect_answer`: see `iocomp_cli::fuzz::connect_answer` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_cli::fuzz::connect_answer(data));
