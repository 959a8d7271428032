//! The checks of the `config` fuzz target (`fuzz/fuzz_targets/config.rs` includes this file),
//! replayed on the committed corpus by `tests/fuzz_corpus.rs` on the stable toolchain.
//!
//! Any text through what `tlsgate check` does short of binding: the YAML into the serde file
//! shape, then `validate()` (policy files, CA, certificates and TLS configs included). Checked: no
//! panic; a refusal names at least one problem, each with a message; relative paths resolve under
//! a directory that does not exist, and validating creates nothing there.

use std::path::Path;

use tlsgate::config::{parse_and_validate, parse_yaml};

/// Relative paths in the config resolve here, where nothing exists: every read fails.
pub const BASE_DIR: &str = "/nonexistent/tlsgate-fuzz";

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, shape_errors) = parse_yaml(text);
    if file.is_none() {
        assert!(
            !shape_errors.is_empty(),
            "an unreadable file names its problem"
        );
    }
    match parse_and_validate(text, Path::new(BASE_DIR)) {
        Ok(_) => assert!(shape_errors.is_empty(), "{shape_errors:?}"),
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal names its problems");
            // Paths are not checked for shape: a key may itself hold dots (`.relays:` is
            // reported at `.relays`, found by this target), so any text is a valid path.
            for error in &errors {
                assert!(!error.message.is_empty(), "{error:?}");
            }
        }
    }
    assert!(!Path::new(BASE_DIR).exists(), "validate created {BASE_DIR}");
}
