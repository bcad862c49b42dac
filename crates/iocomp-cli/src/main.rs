//! The `iocomp` binary: everything is in the library (`iocomp_cli`), so that
//! the fuzz targets can reach its parsers.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    iocomp_cli::run()
}
