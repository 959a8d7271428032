//! Origins that fail on purpose, for fault suites and the soak: one that resets the connection in
//! the middle of a body, one that stalls after reading the request, one that never answers its
//! TLS handshake. Each listens on `127.0.0.1:0`, speaks HTTP/1.1 only (so the request it reads is
//! plain text), and stops on Drop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::ca::Leaf;

/// The one chunk of body the resetting origin sends before its reset.
pub const RESET_CHUNK: usize = 16 * 1024;
/// How long a stalling origin holds a connection at most (well past any proxy timeout in tests).
const STALL_HOLD: Duration = Duration::from_secs(20);
/// Bound on the TLS handshake and on reading a request head.
const FAULTY_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a request head.
const MAX_HEAD: usize = 64 * 1024;

/// How a [`FaultyOrigin`] fails, the same way on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers 200 with a chunked body, sends one chunk of [`RESET_CHUNK`] bytes, then resets
    /// the TCP connection (SO_LINGER 0).
    ResetMidBody,
    /// Completes TLS, reads the request, never answers.
    StallAfterRequest,
    /// Accepts TCP and never speaks TLS.
    StallHandshake,
}

/// A running faulty origin; it stops on Drop.
#[derive(Debug)]
pub struct FaultyOrigin {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for FaultyOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an origin presenting `leaf` that fails as `how` says.
pub async fn spawn_faulty_origin(leaf: &Leaf, how: Misbehaviour) -> FaultyOrigin {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
        .expect("test leaf and key match");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a faulty origin");
    let addr = listener.local_addr().expect("faulty origin address");
    let task = tokio::spawn(async move {
        // Dropping the set (when the accept task is aborted) aborts every connection task.
        let mut conns = JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            conns.spawn(async move {
                if how == Misbehaviour::StallHandshake {
                    tokio::time::sleep(STALL_HOLD).await;
                    return;
                }
                let Ok(Ok(mut stream)) = tokio::time::timeout(FAULTY_IO_TIMEOUT, tls.accept(tcp)).await
                else {
                    return;
                };
                if !read_request_head(&mut stream).await {
                    return;
                }
                if how == Misbehaviour::StallAfterRequest {
                    tokio::time::sleep(STALL_HOLD).await;
                    return;
                }
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/octet-stream\r\n\r\n{RESET_CHUNK:x}\r\n"
                )
                .into_bytes();
                out.extend(std::iter::repeat_n(b'x', RESET_CHUNK));
                out.extend_from_slice(b"\r\n");
                if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (tcp, _) = stream.into_inner();
                // SO_LINGER 0: the close is a RST, not a FIN.
                let _ = tcp.set_zero_linger();
            });
        }
    });
    FaultyOrigin { addr, task }
}

/// Reads up to the end of a request head (bounded); false if the peer went away first.
async fn read_request_head<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while head.len() < MAX_HEAD {
        match tokio::time::timeout(FAULTY_IO_TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return false,
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
    }
    false
}
