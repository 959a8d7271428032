//! HTTP/2 streams on the `h2` crate directly, for the edge ↔ relay link: a CONNECT stream as a byte
//! pipe ([`H2Io`]), a received stream as an HTTP body ([`RecvBody`]), and a body written out with
//! flow control ([`send_body`]).
//!
//! Why not hyper's upgrade: in hyper 1.x a CONNECT stream's every write is copied into a fresh
//! `Box<[u8]>` and handed through a channel to a per-stream task that feeds h2, so each write costs
//! an allocation and a task wake-up more than it needs. Here the splice task feeds h2 itself, and
//! without copying: it hands h2 the buffer it read the socket into ([`H2Io::poll_send_bytes`]) and
//! writes received DATA frames to the socket as h2 holds them ([`H2Io::poll_read_bytes`]). The
//! `AsyncRead`/`AsyncWrite` impls (one copy each way) serve everything else: ClientHello peeking,
//! prefixes, HTTP/1.1 over a stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::Body;

/// One HTTP/2 stream as a byte pipe: reads are the peer's DATA frames, writes become ours, and
/// shutdown ends our half with END_STREAM. Dropped before both halves ended, the stream is reset
/// (CANCEL) by h2.
pub struct H2Io {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received bytes not yet read out.
    unread: Bytes,
    /// The write buffer: each write is copied here and sent as a frozen slice of it; once h2 has
    /// written those out, the next write reuses the same allocation.
    staging: BytesMut,
    shut: bool,
}

impl H2Io {
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            unread: Bytes::new(),
            staging: BytesMut::new(),
            shut: false,
        }
    }

    /// The next received bytes, or an empty `Bytes` at the end of the stream; leaves the window
    /// alone (callers release it as the bytes leave).
    fn poll_next_data(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        loop {
            match ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(Bytes::new())),
                Some(Ok(data)) if data.is_empty() => {}
                Some(Ok(data)) => return Poll::Ready(Ok(data)),
                Some(Err(e)) => {
                    return Poll::Ready(match e.reason() {
                        // The peer ended or cancelled the stream: end of input.
                        Some(Reason::NO_ERROR | Reason::CANCEL) => Ok(Bytes::new()),
                        Some(Reason::STREAM_CLOSED) => {
                            Err(io::Error::new(io::ErrorKind::BrokenPipe, e))
                        }
                        _ => Err(to_io(e)),
                    });
                }
            }
        }
    }

    /// The next received bytes as h2 holds them, without copying (the splice writes them out as
    /// they are); an empty `Bytes` at the end of the stream. Their window is handed back now: the
    /// splice takes no more until it has written them, so a reader that stops reading still stops
    /// the sender, one chunk later.
    pub(crate) fn poll_read_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let data = if self.unread.is_empty() {
            ready!(self.poll_next_data(cx))?
        } else {
            std::mem::take(&mut self.unread)
        };
        let _ = self.recv.flow_control().release_capacity(data.len());
        Poll::Ready(Ok(data))
    }

    /// Sends as much of `data` as the stream's window allows, without copying: the bytes sent are
    /// split off `data` and handed to h2. Returns how many were sent (at least one).
    pub(crate) fn poll_send_bytes(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<usize>> {
        let n = ready!(self.poll_send_capacity(cx, data.len()))?;
        if self.send.send_data(data.split_to(n), false).is_err() {
            return self.write_error(cx).map(Err);
        }
        Poll::Ready(Ok(n))
    }

    /// Waits for window to send up to `want` (> 0) bytes; returns how many may be sent now.
    fn poll_send_capacity(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        // Ask for window only with bytes in hand: capacity reserved while idle would pin the
        // connection's window for nothing.
        if self.send.capacity() == 0 {
            self.send.reserve_capacity(want);
            loop {
                match ready!(self.send.poll_capacity(cx)) {
                    Some(Ok(0)) => {}
                    Some(Ok(_)) => break,
                    Some(Err(_)) | None => return self.write_error(cx).map(Err),
                }
            }
        }
        Poll::Ready(Ok(self.send.capacity().min(want)))
    }

    /// The error for a write that h2 refused: the peer's reset reason when it sent one.
    fn write_error(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        Poll::Ready(match ready!(self.send.poll_reset(cx)) {
            Ok(Reason::NO_ERROR | Reason::CANCEL | Reason::STREAM_CLOSED) => {
                io::ErrorKind::BrokenPipe.into()
            }
            Ok(reason) => io::Error::other(h2::Error::from(reason)),
            Err(e) => to_io(e),
        })
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.unread.is_empty() {
            self.unread = ready!(self.poll_next_data(cx))?;
            if self.unread.is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
        let n = self.unread.len().min(buf.remaining());
        buf.put_slice(&self.unread[..n]);
        self.unread.advance(n);
        if self.unread.is_empty() {
            // An emptied `Bytes` still holds h2's read buffer: let it go.
            self.unread = Bytes::new();
        }
        // Hand the window back as the bytes leave: a reader that stops reading stops the sender.
        let _ = self.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(self.poll_send_capacity(cx, buf.len()))?;
        let this = &mut *self;
        this.staging.reserve(n);
        this.staging.extend_from_slice(&buf[..n]);
        let chunk = this.staging.split().freeze();
        if this.send.send_data(chunk, false).is_err() {
            return self.write_error(cx).map(Err);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2's connection task writes out what was sent; there is nothing to flush here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shut {
            return Poll::Ready(Ok(()));
        }
        if self.send.send_data(Bytes::new(), true).is_err() {
            return self.write_error(cx).map(Err);
        }
        self.shut = true;
        Poll::Ready(Ok(()))
    }
}

/// A received HTTP/2 stream as a request or response body: data streamed as it arrives, its window
/// handed back as each chunk is taken, trailers passed on.
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
}

impl RecvBody {
    pub fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            data_done: false,
        }
    }
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// Why writing a body to a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendBodyError {
    #[error("reading the body: {0}")]
    Body(#[source] crate::transport::BoxError),
    #[error("the peer reset the stream: {0}")]
    Stream(#[source] h2::Error),
}

/// Writes `body` to `send` as DATA frames (and trailers), never holding more than the stream's
/// window plus h2's send buffer; ends the stream. When the body fails, the stream is reset
/// (INTERNAL_ERROR) so that the peer sees a broken body rather than a short one.
pub async fn send_body(mut body: Body, mut send: SendStream<Bytes>) -> Result<(), SendBodyError> {
    if body.is_end_stream() {
        return send
            .send_data(Bytes::new(), true)
            .map_err(SendBodyError::Stream);
    }
    loop {
        let frame = std::future::poll_fn(|cx| {
            // A peer that resets the stream stops the copy at once.
            if let Poll::Ready(reset) = send.poll_reset(cx) {
                let error = match reset {
                    Ok(reason) => h2::Error::from(reason),
                    Err(e) => e,
                };
                return Poll::Ready(Err(SendBodyError::Stream(error)));
            }
            Pin::new(&mut body).poll_frame(cx).map(Ok)
        })
        .await?;
        let frame = match frame {
            None => {
                return send
                    .send_data(Bytes::new(), true)
                    .map_err(SendBodyError::Stream);
            }
            Some(Err(e)) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                return Err(SendBodyError::Body(e));
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                // END_STREAM rides on the last DATA frame when the body knows it is done (a
                // Content-Length body): a peer that stops reading at the length then finds the
                // stream closed, instead of resetting it while an empty final frame is on its way.
                let last = body.is_end_stream();
                send_data(&mut send, data, last).await?;
                if last {
                    return Ok(());
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            return send_trailers(&mut send, trailers);
        }
    }
}

/// Sends `data` as the stream's window allows, waiting for window between pieces; `last` ends the
/// stream with the final piece.
pub(crate) async fn send_data(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    last: bool,
) -> Result<(), SendBodyError> {
    if data.is_empty() {
        return send.send_data(data, last).map_err(SendBodyError::Stream);
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let capacity = std::future::poll_fn(|cx| {
            loop {
                let capacity = send.capacity();
                if capacity > 0 {
                    return Poll::Ready(Ok(capacity));
                }
                match ready!(send.poll_capacity(cx)) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => return Poll::Ready(Err(h2::Error::from(Reason::STREAM_CLOSED))),
                }
            }
        })
        .await
        .map_err(SendBodyError::Stream)?;
        let piece = data.split_to(capacity.min(data.len()));
        send.send_data(piece, last && data.is_empty())
            .map_err(SendBodyError::Stream)?;
    }
    Ok(())
}

fn send_trailers(send: &mut SendStream<Bytes>, trailers: HeaderMap) -> Result<(), SendBodyError> {
    send.send_trailers(trailers).map_err(SendBodyError::Stream)
}

/// Why [`keep_alive`] gave up on a connection.
#[derive(Debug, thiserror::Error)]
pub enum KeepAliveEnded {
    #[error("pinging the peer failed: {0}")]
    Failed(#[source] h2::Error),
    #[error("no answer to a ping within {0:?}")]
    Unanswered(Duration),
}

/// Pings the peer every `every`, busy or idle; returns once a ping fails or goes unanswered for
/// `within` (a peer that vanished without closing the connection). Poll it alongside the
/// connection, which carries the pings.
pub async fn keep_alive(
    pings: Option<h2::PingPong>,
    every: Duration,
    within: Duration,
) -> KeepAliveEnded {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(within, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return KeepAliveEnded::Failed(e),
            Err(_) => return KeepAliveEnded::Unanswered(within),
        }
    }
}

fn to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into());
    }
    io::Error::other(e)
}
