//! cargo-fuzz target `conditional`: see `iocomp_server::fuzz::conditional` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_server::fuzz::conditional(data));
