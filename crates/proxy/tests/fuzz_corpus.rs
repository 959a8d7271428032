//! Replays the `request_line` cargo-fuzz corpus on the stable toolchain, so every CI run checks
//! the inputs the fuzzer found interesting against the same checks as
//! `fuzz/fuzz_targets/request_line.rs` (which includes `fuzz_checks/request_line.rs` too), and the
//! `outer_records` corpus against `fuzz_checks/outer_records.rs` likewise.

#[path = "fuzz_checks/request_line.rs"]
mod request_line;

#[path = "fuzz_checks/outer_records.rs"]
mod outer_records;

#[path = "../../../fuzz/corpus_files.rs"]
mod corpus_files;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    corpus_files::corpus(env!("CARGO_MANIFEST_DIR"), target)
}

#[test]
fn replays_the_request_line_corpus() {
    let files = corpus("request_line");
    assert!(
        files.len() >= 8,
        "request_line corpus has {} files",
        files.len()
    );
    for (name, bytes) in &files {
        eprintln!("request_line/{name}");
        request_line::check(bytes);
        // Every prefix too: the proxy sniffs connections as their bytes arrive.
        for cut in 0..bytes.len().min(64) {
            request_line::check(&bytes[..cut]);
        }
    }
}

#[test]
fn replays_the_outer_records_corpus() {
    let files = corpus("outer_records");
    assert!(
        files.len() >= 18,
        "outer_records corpus has {} files",
        files.len()
    );
    for (name, bytes) in &files {
        eprintln!("outer_records/{name}");
        outer_records::check(bytes);
    }
}
