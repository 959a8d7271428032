//! The testkit's own checks: origins answer the small clients with the right bodies and the
//! right certificate; leaves are written with private key modes.

use std::os::unix::fs::PermissionsExt;

use tlsgate_testkit::{
    TestCa, client_config, http_get, https_get, pattern, spawn_http_origin, spawn_https_origin,
};

#[tokio::test]
async fn https_origin_answers_h2_and_h1_with_its_certificate() {
    tlsgate_testkit::init_tracing();
    let ca = TestCa::new("testkit CA");
    let leaf = ca.issue(&["origin.example.com", "127.0.0.1"]);
    let origin = spawn_https_origin("alpha", &leaf).await;

    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let reply = https_get(
            origin.addr,
            "origin.example.com",
            client_config(&ca, &[alpn]),
            "/",
        )
        .await
        .expect("GET / through the origin");
        assert_eq!(reply.status, 200);
        let version = if alpn == b"h2" {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        };
        assert_eq!(
            String::from_utf8_lossy(&reply.body),
            format!("origin=alpha host=origin.example.com path=/ version={version}\n")
        );
        assert_eq!(reply.alpn.as_deref(), Some(alpn));
        assert_eq!(
            tlsgate_testkit::sha256(&reply.peer_leaf_der),
            leaf.sha256_fingerprint()
        );
    }
}

#[tokio::test]
async fn https_origin_streams_pattern_bytes() {
    let ca = TestCa::new("testkit CA");
    let leaf = ca.issue(&["bytes.example.com"]);
    let origin = spawn_https_origin("bytes", &leaf).await;
    let len = 1_000_003;
    let reply = https_get(
        origin.addr,
        "bytes.example.com",
        client_config(&ca, &[b"h2"]),
        &format!("/bytes/{len}"),
    )
    .await
    .expect("GET /bytes/N");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), len);
    assert!(reply.body == pattern(0, len), "pattern bytes differ");
}

#[tokio::test]
async fn https_origin_rejects_an_untrusted_client() {
    let ca = TestCa::new("testkit CA");
    let other_ca = TestCa::new("someone else");
    let origin = spawn_https_origin("alpha", &ca.issue(&["origin.example.com"])).await;
    let err = https_get(
        origin.addr,
        "origin.example.com",
        client_config(&other_ca, &[b"h2"]),
        "/",
    )
    .await
    .expect_err("a client trusting another CA must fail the handshake");
    assert!(err.contains("TLS handshake"), "{err}");
}

#[tokio::test]
async fn http_origin_reports_host_and_path() {
    let origin = spawn_http_origin("plain").await;
    let reply = http_get(origin.addr, "plain.example.com", "/some/path")
        .await
        .expect("GET over HTTP/1.1");
    assert_eq!(reply.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        "origin=plain host=plain.example.com path=/some/path version=HTTP/1.1\n"
    );
    let headers = http_get(origin.addr, "plain.example.com", "/headers")
        .await
        .expect("GET /headers");
    assert!(
        String::from_utf8_lossy(&headers.body).contains("host: plain.example.com"),
        "{:?}",
        String::from_utf8_lossy(&headers.body)
    );
}

#[test]
fn leaf_files_have_private_key_mode() {
    let dir = std::env::temp_dir().join(format!("tg-testkit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca = TestCa::new("testkit CA");
    let leaf = ca.issue_client("edge-a");
    let (cert, key) = leaf.write_pem(&dir, "edge");
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&cert)
            .expect("cert file")
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let cloned = leaf.clone();
    assert_eq!(cloned.sha256_fingerprint(), leaf.sha256_fingerprint());
    std::fs::remove_dir_all(&dir).expect("removing temp dir");
}

#[test]
fn pseudorandom_file_is_deterministic_and_digested() {
    let dir = tlsgate_testkit::temp_dir("tg-testkit-");
    let a = dir.path().join("a.bin");
    let b = dir.path().join("b.bin");
    let len = 3 * 1024 * 1024 + 5;
    let digest_a = tlsgate_testkit::write_pseudorandom_file(&a, len, 7).expect("write a");
    let digest_b = tlsgate_testkit::write_pseudorandom_file(&b, len, 7).expect("write b");
    assert_eq!(digest_a, digest_b);
    assert_eq!(
        tlsgate_testkit::sha256_file(&a).expect("digest a"),
        digest_a
    );
    assert_eq!(std::fs::metadata(&a).expect("size").len(), len);
    let bytes = std::fs::read(&a).expect("read a");
    let first_mib = &bytes[..1 << 20];
    let second_mib = &bytes[1 << 20..2 << 20];
    assert_ne!(first_mib, second_mib, "blocks must not repeat");
}

#[test]
fn certs_are_read_back_from_pem_text() {
    let ca = TestCa::new("testkit CA");
    let leaf = ca.issue(&["pem.example.com"]);
    let text = format!("Subject: something\n{}trailing\n", leaf.cert_pem);
    let certs = tlsgate_testkit::certs_from_pem(&text);
    assert_eq!(certs.len(), 1);
    assert_eq!(
        tlsgate_testkit::sha256(&certs[0]),
        leaf.sha256_fingerprint()
    );
}
