//! Benchmarks only: see `benches/sync.rs`.
