//! Any text as a policy file, tlsgate's format or Cilium's (`kind:`): read, compile, decide. The
//! checks live in `crates/policy/tests/fuzz_checks/policy_reader.rs`, which the stable test
//! `crates/policy/tests/fuzz_corpus.rs` replays on the corpus.
#![no_main]

#[path = "../../crates/policy/tests/fuzz_checks/policy_reader.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
