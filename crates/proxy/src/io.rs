//! Byte plumbing: replaying a peeked prefix, and splicing two streams with an idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::error::ConnError;

/// Copy buffer per direction. 64 KiB lets a TLS record (16 KiB) or an h2 DATA frame pass in one read
/// and keeps per-tunnel memory bounded at 128 KiB.
pub const SPLICE_BUF: usize = 64 * 1024;

/// A stream whose first reads return `prefix` (bytes already read while detecting), then the inner
/// stream's bytes. Writes go straight through.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts the bytes read from and written to a stream whose ownership moves on (into a TLS
/// acceptor and an HTTP server); the counts stay readable through [`ByteCounts`].
pub struct Counted<S> {
    inner: S,
    counts: Arc<ByteCounts>,
}

/// The totals of a [`Counted`] stream.
#[derive(Debug, Default)]
pub struct ByteCounts {
    read: AtomicU64,
    written: AtomicU64,
}

impl ByteCounts {
    /// Read from the client / written to the client, as a [`Moved`].
    pub fn moved(&self) -> Moved {
        Moved {
            from_client: self.read.load(Ordering::Relaxed),
            to_client: self.written.load(Ordering::Relaxed),
        }
    }
}

impl<S> Counted<S> {
    pub fn new(inner: S) -> (Self, Arc<ByteCounts>) {
        let counts = Arc::new(ByteCounts::default());
        let counted = Self {
            inner,
            counts: counts.clone(),
        };
        (counted, counts)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counts.read.fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Records the time of the last successful read on either side of a splice.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Bytes read from this side.
    read: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.activity.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Bytes moved by a splice.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub from_client: u64,
    pub to_client: u64,
}

/// Copies both ways between `client` and `upstream` until both sides have closed, an error occurs, or
/// nothing moved for `idle`. `to_upstream` is written to the upstream first and `to_client` to the
/// client first (bytes already read while detecting); they count in the totals.
pub async fn splice<C, U>(
    client: C,
    upstream: U,
    to_upstream: Bytes,
    to_client: Bytes,
    idle: Duration,
) -> (Moved, Result<(), ConnError>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut client = Tracked {
        inner: client,
        activity: activity.clone(),
        read: 0,
    };
    let mut upstream = Tracked {
        inner: upstream,
        activity: activity.clone(),
        read: 0,
    };
    let prefixes = Moved {
        from_client: to_upstream.len() as u64,
        to_client: to_client.len() as u64,
    };
    if !to_upstream.is_empty()
        && let Err(e) = upstream.write_all(&to_upstream).await
    {
        return (prefixes, Err(ConnError::UpstreamIo(e)));
    }
    if !to_client.is_empty()
        && let Err(e) = client.write_all(&to_client).await
    {
        return (prefixes, Err(ConnError::ClientIo(e)));
    }
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        SPLICE_BUF,
        SPLICE_BUF,
    );
    let watchdog = async {
        loop {
            let idle_for = activity.idle_for();
            if idle_for >= idle {
                return;
            }
            tokio::time::sleep(idle - idle_for).await;
        }
    };
    let result = tokio::select! {
        result = copy => match result {
            Ok(_) => Ok(()),
            // A peer that closes its TLS without close_notify ends the tunnel like a FIN would:
            // the inner TLS (end to end) protects itself against truncation.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            // copy_bidirectional does not say which side failed; a reset from either peer is the
            // common case and is reported as client i/o.
            Err(e) => Err(ConnError::ClientIo(e)),
        },
        () = watchdog => Err(ConnError::IdleTimeout),
    };
    let moved = Moved {
        from_client: prefixes.from_client + client.read,
        to_client: prefixes.to_client + upstream.read,
    };
    (moved, result)
}
