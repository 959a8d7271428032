//! A connection's first bytes as a request line: the HTTP sniff and the name the proxy decides
//! on (`tlsgate_wire::host_of`) against the `http` crate's reading of the same authority. The
//! checks live in `crates/proxy/tests/fuzz_checks/request_line.rs`, which the stable test
//! `crates/proxy/tests/fuzz_corpus.rs` replays on the corpus.
#![no_main]

#[path = "../../crates/proxy/tests/fuzz_checks/request_line.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
