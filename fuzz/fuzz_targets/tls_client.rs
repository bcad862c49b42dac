//! cargo-fuzz target `tls_client`: see `iocomp_cli::fuzz::tls_client` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_cli::fuzz::tls_client(data));
