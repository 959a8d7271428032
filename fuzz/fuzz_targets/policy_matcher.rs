//! The fixed policy `fuzz/policy_matcher.yaml` deciding arbitrary connections and requests. The
//! checks (and the input layout) live in `crates/policy/tests/fuzz_checks/policy_matcher.rs`,
//! which the stable test `crates/policy/tests/fuzz_corpus.rs` replays on the corpus.
#![no_main]

#[path = "../../crates/policy/tests/fuzz_checks/policy_matcher.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
