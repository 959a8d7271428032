//! The relay's HTTP/2 server, on the `h2` crate directly: CONNECT streams become [`H2Io`] pipes
//! handed to the tunnel (no upgrade bridge, see [`crate::h2io`]); other requests go to the same
//! [`RelayService`] as HTTP/1.1's, their bodies streamed both ways. The limits, timeouts and abuse
//! records are those of [`crate::http_server::serve_h2`]: large windows, bounded streams, header
//! list and reset floods, a response head within `http_request`, keepalive pings, GOAWAY on
//! shutdown.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{Method, Request, Response};
use http_body::Body as _;
use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::RelayService;
use crate::context::{ConnCtx, Shared};
use crate::error::ConnError;
use crate::h2io::{self, H2Io, RecvBody, send_body};
use crate::http_server::{H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT, H2_MAX_LOCAL_ERROR_RESETS};
use crate::http_server::{Timed, h2_abuse};
use crate::http_util::strip_hop_by_hop;
use crate::io::Moved;
use crate::transport::h2::{
    H2_MAX_FRAME, H2_MAX_SEND_BUFFER, H2_STREAM_WINDOW, shared_conn_window,
};
use crate::transport::{Body, boxed};

/// A CONNECT stream's pipe, delivered once its 2xx answer is on its way; travels in the request's
/// extensions to the tunnel (which must be `Clone`, hence the shared slot taken once).
#[derive(Clone)]
pub struct StreamUpgrade(Arc<Mutex<Option<oneshot::Receiver<H2Io>>>>);

impl StreamUpgrade {
    fn new(stream: oneshot::Receiver<H2Io>) -> Self {
        Self(Arc::new(Mutex::new(Some(stream))))
    }

    /// The stream's receiver; `None` once taken.
    pub fn take(&self) -> Option<oneshot::Receiver<H2Io>> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Serves HTTP/2 on `io` until the edge is done or shutdown drains it; a connection ended by the
/// client's abuse gets one flow record.
pub async fn serve<S>(io: S, service: RelayService, shared: &Arc<Shared>, conn: ConnCtx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(error) = serve_conn(io, service, shared, conn.clone()).await {
        conn.finish(shared, Moved::default(), &Err(error));
    }
}

async fn serve_conn<S>(
    io: S,
    service: RelayService,
    shared: &Arc<Shared>,
    conn: ConnCtx,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &shared.limits;
    // The settings of `http_server::serve_h2_conn` (hyper's builder there): keep the two in step,
    // but for the connection window: an edge's connection carries many clients' tunnels, so it has
    // room for every stream's full window (an origin that stops reading one upload must not stall
    // the others).
    let handshake = h2::server::Builder::new()
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(shared_conn_window(limits.h2_max_concurrent_streams))
        .max_frame_size(H2_MAX_FRAME)
        .max_send_buffer_size(H2_MAX_SEND_BUFFER)
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS))
        .max_header_list_size(limits.h2_max_header_list_size)
        .handshake::<_, Bytes>(io);
    let mut connection = match tokio::time::timeout(shared.timeouts.handshake, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => return abuse_or_end(e),
        Err(_) => return Err(ConnError::ClientHeaderTimeout),
    };
    let service = Timed::new(service, shared, conn);
    let keep_alive = h2io::keep_alive(
        connection.ping_pong(),
        H2_KEEPALIVE_INTERVAL,
        H2_KEEPALIVE_TIMEOUT,
    );
    tokio::pin!(keep_alive);
    let mut draining = false;
    // Polled whenever the connection wakes its task (every frame read): see `stop`.
    let mut shutdown = crate::stop::stopped(&shared.shutdown);
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                // The edge closed, or the drain after GOAWAY is complete.
                None => return Ok(()),
                Some(Ok((request, respond))) => {
                    tokio::spawn(answer(request, respond, service.clone()));
                }
                Some(Err(e)) => return abuse_or_end(e),
            },
            () = &mut shutdown, if !draining => {
                // GOAWAY: no new streams; open ones finish within the gateway's grace period.
                connection.graceful_shutdown();
                draining = true;
            }
            reason = &mut keep_alive => {
                tracing::debug!("h2 connection from an edge ended: {reason}");
                return Ok(());
            }
        }
    }
}

/// A connection error that names the client's abuse, or an ordinary ending.
fn abuse_or_end(e: h2::Error) -> Result<(), ConnError> {
    tracing::debug!("h2 connection ended: {e}");
    match h2_abuse(&e) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Answers one stream: the service's response head, then its body, or for an accepted CONNECT the
/// stream itself as a pipe. A stream the edge resets first drops the service's work.
async fn answer(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    service: Timed<RelayService>,
) {
    let (parts, recv) = request.into_parts();
    let (request, tunnel) = if parts.method == Method::CONNECT {
        let (tx, rx) = oneshot::channel();
        let mut request = Request::from_parts(parts, empty());
        request.extensions_mut().insert(StreamUpgrade::new(rx));
        (request, Some((tx, recv)))
    } else {
        (Request::from_parts(parts, boxed(RecvBody::new(recv))), None)
    };
    let handling = service.call(request);
    let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
    let response = tokio::select! {
        response = handling => match response {
            Ok(response) => response,
            Err(never) => match never {},
        },
        _ = reset => return,
    };
    let (mut parts, body) = response.into_parts();
    // Connection-specific headers are not HTTP/2 (h2 refuses to send them).
    strip_hop_by_hop(&mut parts.headers);
    let head = Response::from_parts(parts, ());
    if let Some((tx, recv)) = tunnel
        && head.status().is_success()
    {
        match respond.send_response(head, false) {
            Ok(send) => {
                let _ = tx.send(H2Io::new(send, recv));
            }
            Err(e) => tracing::debug!("answering a CONNECT stream: {e}"),
        }
        return;
    }
    send_response(respond, head, body).await;
}

async fn send_response(mut respond: SendResponse<Bytes>, head: Response<()>, body: Body) {
    let end = body.is_end_stream();
    let send = match respond.send_response(head, end) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!("answering a stream: {e}");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if end {
        return;
    }
    if let Err(e) = send_body(body, send).await {
        tracing::debug!("response body to the edge ended early: {e}");
    }
}

fn empty() -> Body {
    boxed(http_body_util::Empty::<Bytes>::new())
}
