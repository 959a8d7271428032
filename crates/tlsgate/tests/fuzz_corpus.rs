//! Replays the `config` cargo-fuzz corpus on the stable toolchain, so every CI run checks the
//! inputs the fuzzer found interesting against the same checks as `fuzz/fuzz_targets/config.rs`
//! (which includes `fuzz_checks/config.rs` too).

#[path = "fuzz_checks/config.rs"]
mod config;

#[path = "../../../fuzz/corpus_files.rs"]
mod corpus_files;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    corpus_files::corpus(env!("CARGO_MANIFEST_DIR"), target)
}

#[test]
fn replays_the_config_corpus() {
    let files = corpus("config");
    assert!(files.len() >= 6, "config corpus has {} files", files.len());
    for (name, bytes) in &files {
        eprintln!("config/{name}");
        config::check(bytes);
    }
}

#[test]
fn config_seeds_from_the_examples_parse_into_the_file_shape() {
    // The `example-*` seeds are copies of examples/: they must still parse (validation fails only
    // on the files they name, which do not exist under the fuzz base directory), so the fuzzer
    // starts deep in validate() rather than at the YAML syntax.
    let mut seen = 0;
    for (name, bytes) in corpus("config") {
        if !name.starts_with("example-") {
            continue;
        }
        let text = String::from_utf8(bytes).expect("seed is UTF-8");
        let (file, errors) = tlsgate::config::parse_yaml(&text);
        assert!(file.is_some() && errors.is_empty(), "{name}: {errors:?}");
        seen += 1;
    }
    assert!(seen >= 4, "{seen} example seeds");
}
