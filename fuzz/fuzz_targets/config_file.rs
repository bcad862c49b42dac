//! cargo-fuzz target `config_file`: see `iocomp_cli::fuzz::config_file` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_cli::fuzz::config_file(data));
