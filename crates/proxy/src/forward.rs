//! Forwarding one HTTP request as HTTP/1.1 to an upstream already connected: origin-form target,
//! Host set to the requested authority, hop-by-hop headers removed, bodies streamed both ways.

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::context::Shared;
use crate::error::ConnError;
use crate::http_util::{origin_form, strip_hop_by_hop};
use crate::transport::Body;

/// Sends `req` on a fresh HTTP/1.1 connection over `tcp` and returns the streamed response.
/// The response head must arrive within the idle timeout.
pub async fn http1(
    shared: &Shared,
    tcp: TcpStream,
    req: Request<Incoming>,
    authority: &str,
) -> Result<Response<Body>, ConnError> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(ConnError::UpstreamHttp)?;
    shared.spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream http connection ended: {e}");
        }
    });
    let (mut parts, body) = req.into_parts();
    let path = origin_form(&parts.uri);
    parts.uri = Uri::try_from(path).map_err(|_| ConnError::ClientNoHost)?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let host_value = HeaderValue::from_str(authority).map_err(|_| ConnError::ClientNoHost)?;
    parts.headers.insert(header::HOST, host_value);
    let request = Request::from_parts(parts, body.boxed());
    let response = tokio::time::timeout(shared.timeouts.idle, sender.send_request(request))
        .await
        .map_err(|_| ConnError::UpstreamConnectTimeout)?
        .map_err(ConnError::UpstreamHttp)?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}
