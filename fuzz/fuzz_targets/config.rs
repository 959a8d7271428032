//! Any text as a config file: YAML → serde file shape → `validate()`, without binding. The checks
//! live in `crates/tlsgate/tests/fuzz_checks/config.rs`, which the stable test
//! `crates/tlsgate/tests/fuzz_corpus.rs` replays on the corpus.
#![no_main]

#[path = "../../crates/tlsgate/tests/fuzz_checks/config.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
