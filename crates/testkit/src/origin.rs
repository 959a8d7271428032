//! In-process origin servers on `127.0.0.1:0`.
//!
//! Routes (the same over HTTPS and plain HTTP):
//! - `GET /bytes/N`: N bytes of [`pattern`], streamed in chunks (never buffered whole);
//! - `POST /echo`: the request body, streamed back as it arrives;
//! - `GET /headers`: the request headers, one `name: value` per line;
//! - any other `GET`: `origin=<name> host=<Host or :authority> path=<path>\n`;
//! - anything else: 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::ca::Leaf;

/// TLS handshake bound for origin connections.
const ORIGIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunk size of streamed `/bytes/N` bodies.
const PATTERN_CHUNK: usize = 16 * 1024;

type OriginBody = BoxBody<Bytes, hyper::Error>;

/// A running origin; its accept loop and every connection task stop on Drop.
pub struct Origin {
    pub addr: SocketAddr,
    pub name: String,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts the connection tasks.
        self.task.abort();
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish()
    }
}

/// The byte at `offset` of the deterministic `/bytes/N` pattern.
pub fn pattern_byte(offset: u64) -> u8 {
    // 251 is prime, so the pattern does not line up with power-of-two chunk or record sizes.
    (offset % 251) as u8
}

/// `len` pattern bytes starting at `offset`.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(offset + i)).collect()
}

/// An HTTPS origin (TLS 1.2 + 1.3, ALPN h2 and http/1.1) presenting `leaf`.
pub async fn spawn_https_origin(name: &str, leaf: &Leaf) -> Origin {
    spawn_https_origin_at("127.0.0.1:0".parse().expect("a socket address"), name, leaf).await
}

/// [`spawn_https_origin`] on a given address (e.g. `127.0.0.31:443`, which needs root).
pub async fn spawn_https_origin_at(addr: SocketAddr, name: &str, leaf: &Leaf) -> Origin {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
        .expect("test origin: certificate and key do not match");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    spawn(addr, name, Some(TlsAcceptor::from(Arc::new(config)))).await
}

/// A plain HTTP/1.1 origin.
pub async fn spawn_http_origin(name: &str) -> Origin {
    spawn("127.0.0.1:0".parse().expect("a socket address"), name, None).await
}

async fn spawn(addr: SocketAddr, name: &str, tls: Option<TlsAcceptor>) -> Origin {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    let addr = listener
        .local_addr()
        .expect("local_addr of a bound listener");
    let shared_name: Arc<str> = Arc::from(name);
    let task = tokio::spawn(accept_loop(listener, tls, shared_name));
    Origin {
        addr,
        name: name.to_owned(),
        task,
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, name: Arc<str>) {
    let mut conns = JoinSet::new();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(%e, "origin accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        conns.spawn(serve_connection(tcp, peer, tls.clone(), name.clone()));
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    name: Arc<str>,
) {
    let Some(acceptor) = tls else {
        serve_http(tcp, false, name).await;
        return;
    };
    let stream = match tokio::time::timeout(ORIGIN_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, %e, "origin TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "origin TLS handshake timed out");
            return;
        }
    };
    let is_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_http(stream, is_h2, name).await;
}

async fn serve_http<S>(io: S, is_h2: bool, name: Arc<str>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let name = name.clone();
        async move { Ok::<_, Infallible>(route(&name, req)) }
    });
    let io = TokioIo::new(io);
    let result = if is_h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await
    } else {
        hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await
    };
    if let Err(e) = result {
        tracing::debug!(%e, "origin connection ended with an error");
    }
}

fn route(name: &str, req: Request<Incoming>) -> Response<OriginBody> {
    // Routes match on the path; the identifying body echoes path, query and HTTP version.
    let version = req.version();
    let path = req.uri().path().to_owned();
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if req.method() == Method::POST && path == "/echo" {
        return Response::new(req.into_body().boxed());
    }
    if req.method() != Method::GET {
        return text(StatusCode::NOT_FOUND, "not found\n".to_owned());
    }
    // Like the blog's origin (www.facebook.com has no /cucumber): a 404 from the origin itself.
    if path == "/cucumber" {
        return text(
            StatusCode::NOT_FOUND,
            format!("origin={name}: no such page\n"),
        );
    }
    if path == "/headers" {
        let mut out = String::new();
        for (key, value) in req.headers() {
            out.push_str(&format!(
                "{key}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        return text(StatusCode::OK, out);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let Ok(len) = n.parse::<u64>() else {
            return text(StatusCode::BAD_REQUEST, "bad length\n".to_owned());
        };
        return Response::new(PatternBody { next: 0, end: len }.boxed());
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    text(
        StatusCode::OK,
        format!(
            "origin={name} host={host} path={target} version={:?}\n",
            version
        ),
    )
}

fn text(status: StatusCode, body: String) -> Response<OriginBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The `/bytes/N` body: produced chunk by chunk as the peer reads.
struct PatternBody {
    next: u64,
    end: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.next >= self.end {
            return Poll::Ready(None);
        }
        let len = (self.end - self.next).min(PATTERN_CHUNK as u64) as usize;
        let chunk = pattern(self.next, len);
        self.next += len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.next)
    }
}
