//! Replays the cargo-fuzz corpora of the policy targets on the stable toolchain, so every CI run
//! checks the inputs the fuzzers found interesting against the same checks as
//! `fuzz/fuzz_targets/policy_reader.rs` and `policy_matcher.rs` (both include these files).

#[path = "fuzz_checks/policy_matcher.rs"]
mod policy_matcher;
#[path = "fuzz_checks/policy_reader.rs"]
mod policy_reader;

#[path = "../../../fuzz/corpus_files.rs"]
mod corpus_files;

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    corpus_files::corpus(env!("CARGO_MANIFEST_DIR"), target)
}

#[test]
fn replays_the_policy_reader_corpus() {
    let files = corpus("policy_reader");
    assert!(
        files.len() >= 8,
        "policy_reader corpus has {} files",
        files.len()
    );
    for (name, bytes) in &files {
        eprintln!("policy_reader/{name}");
        policy_reader::check(bytes);
    }
}

#[test]
fn policy_reader_seeds_include_loading_cilium_and_tlsgate_policies() {
    // The seeds named `*.yaml` are the repository's own policies: each must still load, so the
    // fuzzer starts from inputs that reach the compiled matcher, in both formats.
    let mut formats = Vec::new();
    for (name, bytes) in corpus("policy_reader") {
        if !name.ends_with(".yaml") || name.starts_with("invalid-") {
            continue;
        }
        let text = String::from_utf8(bytes).expect("seed is UTF-8");
        let loaded = tlsgate_policy::load_str(
            &text,
            &name,
            Path::new(policy_reader::BASE_DIR),
            &tlsgate_policy::LoadOptions::default(),
        );
        if let Err(errors) = loaded {
            panic!("seed {name} must load: {errors:#?}");
        }
        formats.push(tlsgate_policy::detect_format(&text).expect("a loaded seed has a format"));
    }
    assert!(formats.contains(&tlsgate_policy::Format::Cilium));
    assert!(formats.contains(&tlsgate_policy::Format::Tlsgate));
}

#[test]
fn replays_the_policy_matcher_corpus() {
    let files = corpus("policy_matcher");
    assert!(
        files.len() >= 8,
        "policy_matcher corpus has {} files",
        files.len()
    );
    for (name, bytes) in &files {
        eprintln!("policy_matcher/{name}");
        policy_matcher::check(bytes);
    }
}

#[test]
fn policy_matcher_seeds_reach_every_action_of_the_fixed_policy() {
    // The seeds are written by fuzz/seed_corpus.sh to cover bump, splice and deny verdicts and
    // allowed and denied requests; if the policy file changes, this says which went missing.
    let policy = policy_matcher::policy();
    let (mut actions, mut allowed, mut denied) = (Vec::new(), 0, 0);
    for (_, bytes) in corpus("policy_matcher") {
        let Some(facts) = policy_matcher::decode(&bytes) else {
            continue;
        };
        actions.push(policy.decide_connection(&facts.name, facts.port).action);
        let request = tlsgate_policy::RequestFacts {
            method: &facts.method,
            path: &facts.path,
            host: &facts.host,
            headers: &facts.headers,
        };
        if policy
            .decide_request(&facts.name, facts.port, &request)
            .is_allow()
        {
            allowed += 1;
        } else {
            denied += 1;
        }
    }
    for action in [
        tlsgate_policy::TlsAction::Bump,
        tlsgate_policy::TlsAction::Splice,
        tlsgate_policy::TlsAction::Deny,
    ] {
        assert!(actions.contains(&action), "no seed decides {action:?}");
    }
    assert!(
        allowed > 0 && denied > 0,
        "allowed {allowed}, denied {denied}"
    );
}

#[test]
fn decodes_facts_from_the_documented_layout() {
    let facts = policy_matcher::decode(b"\x00\x01\xbbGET\n/cucumber\nwww.facebook.com\ndada: dada")
        .expect("three bytes and fields");
    assert_eq!(facts.name, "www.facebook.com");
    assert_eq!(facts.port, 443);
    assert_eq!(
        (facts.method.as_str(), facts.path.as_str()),
        ("GET", "/cucumber")
    );
    assert_eq!(facts.headers.get("dada").unwrap(), "dada");
    let verdict = policy_matcher::policy().decide_request(
        &facts.name,
        facts.port,
        &tlsgate_policy::RequestFacts {
            method: &facts.method,
            path: &facts.path,
            host: &facts.host,
            headers: &facts.headers,
        },
    );
    assert!(verdict.is_allow(), "{verdict:?}");
    assert!(policy_matcher::decode(b"\x00\x01").is_none());
}
