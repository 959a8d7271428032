//! One HTTP connection (HTTP/1.1 or HTTP/2 over hyper) and one GET on it.

use bytes::Bytes;
use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::dial::{BoxIo, Proto};
use crate::report::Failure;

/// HTTP/2 receive windows: large enough that one stream can fill a loopback link (the 64 KiB
/// protocol default caps a single stream at window / RTT).
const H2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const H2_CONN_WINDOW: u32 = 16 * 1024 * 1024;

/// A ready-to-use HTTP connection.
pub enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// Run the HTTP handshake on `io` and spawn the connection driver.
pub async fn handshake(io: BoxIo, proto: Proto) -> Result<Sender, Failure> {
    let io = TokioIo::new(io);
    match proto {
        Proto::H1 => {
            let (sender, conn) = http1::handshake(io).await.map_err(|_| Failure::Http)?;
            tokio::spawn(async move {
                // Ends when the peer closes or the sender is dropped; its error is the request's.
                let _ = conn.await;
            });
            Ok(Sender::H1(sender))
        }
        Proto::H2 => {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONN_WINDOW)
                .handshake(io)
                .await
                .map_err(|_| Failure::Http)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H2(sender))
        }
    }
}

impl Sender {
    /// GET `path` with `authority` as Host / :authority; reads the whole body and returns its size.
    /// Non-2xx statuses are failures.
    pub async fn get(&mut self, scheme: &str, authority: &str, path: &str) -> Result<u64, Failure> {
        let response = match self {
            Self::H1(sender) => {
                sender.ready().await.map_err(|_| Failure::Http)?;
                let request = Request::get(path)
                    .header(HOST, authority)
                    .body(Empty::new())
                    .map_err(|_| Failure::Http)?;
                sender.send_request(request).await
            }
            Self::H2(sender) => {
                sender.ready().await.map_err(|_| Failure::Http)?;
                let request = Request::get(format!("{scheme}://{authority}{path}"))
                    .body(Empty::new())
                    .map_err(|_| Failure::Http)?;
                sender.send_request(request).await
            }
        }
        .map_err(|_| Failure::Http)?;
        let ok = response.status().is_success();
        let mut body = response.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Failure::Body)?;
            if let Some(data) = frame.data_ref() {
                bytes += data.len() as u64;
            }
        }
        if ok { Ok(bytes) } else { Err(Failure::Status) }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Self::H2(_))
    }
}
