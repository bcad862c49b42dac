//! cargo-fuzz target `line_framer`: see `iocomp_server::fuzz::line_framer` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_server::fuzz::line_framer(data));
