//! Replays the cargo-fuzz corpus on the stable toolchain, so every CI run checks the inputs the
//! fuzzer found interesting against the same invariants as `fuzz/fuzz_targets/client_hello.rs`.

mod common;

use common::*;
use tlsgate_wire::Peek;

const MAXES: [usize; 4] = [0, 512, 16 * 1024, usize::MAX];

#[path = "../../../fuzz/corpus_files.rs"]
mod corpus_files;

fn corpus() -> Vec<(String, Vec<u8>)> {
    corpus_files::corpus(env!("CARGO_MANIFEST_DIR"), "client_hello")
}

#[test]
fn replays_every_corpus_file_and_its_prefixes_within_the_invariants() {
    let files = corpus();
    assert!(
        files.len() >= VECTORS.len(),
        "corpus has {} files",
        files.len()
    );
    for (_name, bytes) in &files {
        for max in MAXES {
            peek(bytes, max);
        }
        for cut in 0..bytes.len() {
            peek(&bytes[..cut], MAX);
        }
    }
}

#[test]
fn seeds_from_the_captured_vectors_parse_completely() {
    // `fuzz/seed_corpus.sh` names its seeds `*.bin`; libFuzzer names what it adds by hash.
    let seeds: Vec<_> = corpus()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".bin"))
        .collect();
    assert_eq!(seeds.len(), VECTORS.len() * 3);
    for (name, bytes) in &seeds {
        let info = complete(bytes, usize::MAX);
        assert_eq!(info.consumed, bytes.len(), "{name}");
        let vector = VECTORS
            .iter()
            .find(|v| name.starts_with(&format!("{}.", v.name)))
            .unwrap_or_else(|| panic!("{name} is not seeded from a known vector"));
        let Peek::Complete(original) = peek(vector.bytes, MAX) else {
            panic!("{} does not parse", vector.name);
        };
        assert_eq!(info.sni, original.sni, "{name}");
        assert_eq!(info.alpn, original.alpn, "{name}");
    }
}
