//! Replays the `request_line` cargo-fuzz corpus on the stable toolchain, so every CI run checks
//! the inputs the fuzzer found interesting against the same checks as
//! `fuzz/fuzz_targets/request_line.rs` (which includes `fuzz_checks/request_line.rs` too).

#[path = "fuzz_checks/request_line.rs"]
mod request_line;

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, bytes)
        })
        .collect();
    files.sort();
    files
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
