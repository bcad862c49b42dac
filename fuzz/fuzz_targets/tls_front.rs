//! cargo-fuzz target `tls_front`: see `iocomp_server::fuzz::tls_front` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocomp_server::fuzz::tls_front(data));
