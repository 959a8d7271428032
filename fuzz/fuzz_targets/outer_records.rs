//! Records a peer sends on the relay's outer TLS layer after a real handshake, sealed with its
//! real keys: data, alerts, key updates, foreign types, flipped bits, raw bytes, in chunks. The
//! checks live in `crates/proxy/tests/fuzz_checks/outer_records.rs`, which the stable test
//! `crates/proxy/tests/fuzz_corpus.rs` replays on the corpus.
#![no_main]

#[path = "../../crates/proxy/tests/fuzz_checks/outer_records.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
