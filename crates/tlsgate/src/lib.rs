//! tlsgate's command line and config file, as a library so the config parser can be fuzzed
//! (`fuzz/fuzz_targets/config.rs`) and its corpus replayed (`tests/fuzz_corpus.rs`); the binary
//! in `main.rs` only calls [`main`].

mod cli;
pub mod config;
pub mod heap;
mod paths;

pub use cli::main;
