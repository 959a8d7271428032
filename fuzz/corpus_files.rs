//! The files of one committed cargo-fuzz corpus, for the stable-toolchain replay tests of every crate
//! (`crates/*/tests/fuzz_corpus.rs` include this file with `#[path]`).

use std::path::Path;

/// `(file name, bytes)` of every file in `fuzz/corpus/<target>`, sorted by name. `manifest_dir` is
/// the including crate's `CARGO_MANIFEST_DIR` (crates sit two levels below the workspace root).
pub fn corpus(manifest_dir: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(manifest_dir)
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
