//! Forwarding one HTTP request as HTTP/1.1 to an upstream: origin-form target, Host set to the
//! requested authority, hop-by-hop headers removed, bodies streamed both ways, on a connection
//! from the generation's keep-alive pool ([`pool`]). Used by the relay (requests from edges) and
//! the interceptor (plain HTTP through the explicit proxy).

pub mod pool;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Version};
use hyper::body::Incoming;

use crate::context::Shared;
use crate::error::ConnError;
use crate::http_util::{origin_form, strip_hop_by_hop};
use crate::transport::Body;

/// Sends `req` to `host:port` on a keep-alive connection from the generation's pool (a new one is
/// resolved, guarded and connected within the connect timeout) and returns the streamed response.
/// The response head must arrive within the idle timeout.
pub async fn pooled<B>(
    shared: &Shared,
    req: Request<B>,
    authority: &str,
    host: &str,
    port: u16,
) -> Result<Response<Body>, ConnError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<crate::transport::BoxError>,
{
    let (mut parts, body) = req.into_parts();
    parts.uri = pool::upstream_uri(host, port, origin_form(&parts.uri))?;
    rewrite_head(&mut parts, authority)?;
    let request = Request::from_parts(parts, crate::transport::boxed(body));
    let response = shared.upstream_pool.send(shared, request).await?;
    Ok(streamed(response))
}

/// HTTP/1.1 towards the upstream, hop-by-hop headers gone, Host the requested authority.
fn rewrite_head(parts: &mut Parts, authority: &str) -> Result<(), ConnError> {
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let host_value = HeaderValue::from_str(authority).map_err(|_| ConnError::ClientNoHost)?;
    parts.headers.insert(header::HOST, host_value);
    Ok(())
}

fn streamed(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, crate::transport::boxed(body))
}
