//! Test-only helpers for tlsgate: throw-away CAs and leaves, in-process HTTPS/HTTP origins
//! on `127.0.0.1:0`, small HTTPS clients, child-process guards and network-namespace
//! helpers with Drop-guarded cleanup.
//!
//! Everything here panics on setup failures that make a test meaningless (a key that cannot
//! be generated, a port that cannot be bound); network outcomes are returned as `Result`s so
//! tests can assert on them.

mod ca;
mod client;
mod dns;
mod faulty;
mod files;
mod hop;
mod netns;
mod origin;
mod process;

use std::sync::{Arc, Once};

pub use ca::{Leaf, TestCa, hex, sha256};
pub use client::{
    CLIENT_REQUEST_TIMEOUT, HttpReply, HttpsReply, client_config, client_config_trusting, http_get,
    https_get, https_get_via_proxy,
};
pub use dns::{TEST_DNS_TTL_SECS, TestDns};
pub use faulty::{FaultyOrigin, Misbehaviour, RESET_CHUNK, spawn_faulty_origin};
pub use files::{TempDir, certs_from_pem, sha256_file, temp_dir, write_pseudorandom_file};
pub use hop::TcpHop;
pub use netns::{
    NEED_ROOT_MESSAGE, NetNs, SKIP_E2E_ENV, e2e_preflight, is_root, run, unique_prefix, veth,
};
pub use origin::{
    Origin, pattern, pattern_byte, spawn_http_origin, spawn_https_origin, spawn_https_origin_at,
};
pub use process::{
    ChildGuard, NetSocket, TlsgateRun, fd_targets, metrics_text, net_sockets, rss_kib,
    socket_inode, thread_names,
};

/// Installs a tracing subscriber writing through the test harness (so output is captured per
/// test); `RUST_LOG` is honoured, default `info`. Safe to call from every test.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Another subscriber may already be installed by the test binary itself; keep it.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// The crypto provider every testkit TLS config uses (ring, as in the rest of the tree).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
