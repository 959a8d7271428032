//! Byte plumbing: replaying a peeked prefix, and splicing two streams with an idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::bufs;
use crate::error::{ConnError, tls_alert};
use crate::h2io::H2Io;

/// Copy buffer per direction. 64 KiB lets a TLS record (16 KiB) or an h2 DATA frame pass in one read
/// and keeps per-tunnel memory bounded at 128 KiB. The buffer is held only while bytes are in
/// flight and given back when the side it reads from has nothing more (see [`Direction`]), so an idle
/// tunnel holds none.
pub const SPLICE_BUF: usize = bufs::SIZE;

/// Buffers a [`ReadChunks`] reader hands over per read: four full TLS records, what the outer
/// layer's 64 KiB socket read holds.
pub const MAX_CHUNKS: usize = 4;

/// Owned buffers handed over by a reader ([`ReadChunks`]), written out in order and in one
/// vectored write where the writer takes one. Inline, so holding them allocates nothing.
#[derive(Default)]
pub struct Chunks {
    items: [Bytes; MAX_CHUNKS],
    /// `items[first..len]` still hold bytes to write.
    first: usize,
    len: usize,
}

impl Chunks {
    pub fn is_full(&self) -> bool {
        self.len == MAX_CHUNKS
    }

    pub fn is_empty(&self) -> bool {
        self.first == self.len
    }

    /// Adds `chunk` behind the others; an empty one is dropped. The caller checks
    /// [`Chunks::is_full`] first: a full `Chunks` takes nothing.
    pub fn push(&mut self, chunk: Bytes) {
        debug_assert!(!self.is_full(), "a chunk pushed to full Chunks");
        if !chunk.is_empty() && self.len < MAX_CHUNKS {
            self.items[self.len] = chunk;
            self.len += 1;
        }
    }

    /// Bytes still to write.
    pub fn remaining(&self) -> usize {
        self.items[self.first..self.len]
            .iter()
            .map(Bytes::len)
            .sum()
    }

    /// Writes as much as `writer` takes in one call.
    fn poll_write_to<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
    ) -> Poll<io::Result<usize>> {
        let pending = &self.items[self.first..self.len];
        let n = if writer.is_write_vectored() && pending.len() > 1 {
            let slices: [io::IoSlice<'_>; MAX_CHUNKS] =
                std::array::from_fn(|i| io::IoSlice::new(pending.get(i).map_or(&[], |b| &b[..])));
            std::task::ready!(Pin::new(writer).poll_write_vectored(cx, &slices[..pending.len()]))?
        } else {
            std::task::ready!(Pin::new(writer).poll_write(cx, &pending[0]))?
        };
        self.advance(n);
        Poll::Ready(Ok(n))
    }

    /// Drops the first `n` bytes; a buffer written whole is released at once, so the reader can
    /// fill its allocation again.
    fn advance(&mut self, mut n: usize) {
        while n > 0 && self.first < self.len {
            let item = &mut self.items[self.first];
            if n < item.len() {
                item.advance(n);
                return;
            }
            n -= item.len();
            *item = Bytes::new();
            self.first += 1;
        }
        if self.first == self.len {
            self.first = 0;
            self.len = 0;
        }
    }

    /// The first buffer, taken out (for a writer that takes ownership, an HTTP/2 stream).
    pub fn pop(&mut self) -> Option<Bytes> {
        if self.is_empty() {
            return None;
        }
        let chunk = std::mem::take(&mut self.items[self.first]);
        self.first += 1;
        if self.first == self.len {
            self.first = 0;
            self.len = 0;
        }
        Some(chunk)
    }
}

/// A stream that hands over what it received as owned buffers instead of copying it into the
/// reader's: the outer TLS layer ([`crate::outer::Outer`]), whose records are opened where they were
/// read. Spliced as [`End::Chunked`].
pub trait ReadChunks: AsyncRead + AsyncWrite + Unpin {
    /// Moves received bytes into `out` while it has room; `Ready(Ok(0))` at the end of input. An
    /// `out` without room is an error (`InvalidInput`), never mistaken for the end.
    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Chunks,
    ) -> Poll<io::Result<usize>>;
}

impl<T: ReadChunks + ?Sized> ReadChunks for Box<T> {
    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Chunks,
    ) -> Poll<io::Result<usize>> {
        (**self).poll_read_chunks(cx, out)
    }
}

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
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// One side of a splice: a byte stream, an HTTP/2 stream whose data the splice hands over as
/// owned buffers, so neither the bytes read from the other side nor the DATA frames received are
/// copied on the way (see [`H2Io::poll_read_bytes`], [`H2Io::poll_send_bytes`]), or a stream that
/// hands over what it received likewise ([`ReadChunks`]: the outer TLS layer).
pub enum End<'a, S> {
    Stream(S),
    H2(H2Io),
    Chunked(&'a mut (dyn ReadChunks + Send)),
}

impl<S: AsyncRead + Unpin> AsyncRead for End<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            End::Stream(s) => Pin::new(s).poll_read(cx, buf),
            End::H2(h2) => Pin::new(h2).poll_read(cx, buf),
            End::Chunked(c) => Pin::new(&mut **c).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for End<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            End::Stream(s) => Pin::new(s).poll_write(cx, buf),
            End::H2(h2) => Pin::new(h2).poll_write(cx, buf),
            End::Chunked(c) => Pin::new(&mut **c).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            End::Stream(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            End::H2(h2) => Pin::new(h2).poll_write_vectored(cx, bufs),
            End::Chunked(c) => Pin::new(&mut **c).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            End::Stream(s) => s.is_write_vectored(),
            End::H2(h2) => h2.is_write_vectored(),
            End::Chunked(c) => c.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            End::Stream(s) => Pin::new(s).poll_flush(cx),
            End::H2(h2) => Pin::new(h2).poll_flush(cx),
            End::Chunked(c) => Pin::new(&mut **c).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            End::Stream(s) => Pin::new(s).poll_shutdown(cx),
            End::H2(h2) => Pin::new(h2).poll_shutdown(cx),
            End::Chunked(c) => Pin::new(&mut **c).poll_shutdown(cx),
        }
    }
}

/// Bound on telling a client why its connection is not carried ([`refuse_tls`]).
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// Ends a TLS connection that will not be carried with the alert that says why
/// ([`ConnError::refusal_alert`]), if the error has one, and closes the write side; returns what
/// moved: the `read` bytes of the client's, and the alert if it went out. The client has sent only
/// its ClientHello, so the alert is a plaintext record it reads as the server's answer (curl:
/// "tlsv1 alert access denied").
pub async fn refuse_tls<W: AsyncWrite + Unpin>(io: &mut W, error: &ConnError, read: u64) -> Moved {
    let mut moved = Moved {
        from_client: read,
        to_client: 0,
    };
    let Some(alert) = error.refusal_alert() else {
        return moved;
    };
    let record = tls_alert(alert);
    let written = tokio::time::timeout(REFUSAL_WRITE, async {
        io.write_all(&record).await?;
        moved.to_client = record.len() as u64;
        io.shutdown().await
    });
    let _ = written.await;
    moved
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
    splice_ends(
        End::Stream(client),
        End::Stream(upstream),
        to_upstream,
        to_client,
        idle,
    )
    .await
}

/// [`splice`] between two [`End`]s: an HTTP/2 end is fed and drained without copies.
pub async fn splice_ends<C, U>(
    mut client: End<'_, C>,
    mut upstream: End<'_, U>,
    to_upstream: Bytes,
    to_client: Bytes,
    idle: Duration,
) -> (Moved, Result<(), ConnError>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
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
    let mut up = Direction::default();
    let mut down = Direction::default();
    let copy = copy_both(&mut client, &mut upstream, &mut up, &mut down, &activity);
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
        from_client: prefixes.from_client + up.read,
        to_client: prefixes.to_client + down.read,
    };
    (moved, result)
}

/// One direction of a splice. Bytes read from a stream land in a buffer held only while it holds
/// bytes: when the reader has nothing (`Pending`) and every byte read was written, the buffer goes
/// back to the thread's kept buffers ([`bufs`]), and the next wake-up takes one from there
/// (uninitialised, so neither zeroing nor page faults). An idle tunnel therefore keeps no copy
/// buffer, and a busy one does not allocate per request. Bytes bound for an HTTP/2 end leave as that
/// buffer, shared (`chunk`, [`bufs::share`]): h2 holds it until written, then it goes back to the
/// thread's kept buffers, and the next read takes one from there; bytes received from one
/// arrive as h2's own buffer (`chunk`), written out as they are. Bytes read from the outer TLS
/// layer arrive as slices of the buffer its records were opened in (`chunks`), written out in one
/// vectored write and dropped as soon as written, so that layer reads into the same buffer again.
#[derive(Default)]
struct Direction {
    buf: BytesMut,
    /// Bytes to write that are not in `buf`: a received DATA frame, or `buf` handed to h2.
    chunk: Bytes,
    /// Bytes handed over by a [`ReadChunks`] reader.
    chunks: Chunks,
    /// Bytes read from this direction's reader.
    read: u64,
    /// Written since the last flush.
    need_flush: bool,
    read_done: bool,
    done: bool,
}

impl Direction {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        activity: &Activity,
        reader: &mut End<R>,
        writer: &mut End<W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.buf.is_empty()
                && self.chunk.is_empty()
                && self.chunks.is_empty()
                && !self.read_done
            {
                match self.poll_read(cx, reader) {
                    Poll::Ready(Ok(0)) => self.read_done = true,
                    Poll::Ready(Ok(n)) => {
                        self.read += n as u64;
                        activity.touch();
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing in flight: give the buffer back while this side is idle.
                        bufs::give(&mut self.buf);
                        if self.need_flush {
                            std::task::ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            std::task::ready!(self.poll_write(cx, writer))?;
            if self.read_done {
                std::task::ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                std::task::ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                bufs::give(&mut self.buf);
                self.done = true;
            }
        }
    }

    /// Reads into `buf` (a stream), `chunk` (an HTTP/2 stream) or `chunks` (a [`ReadChunks`]
    /// stream); 0 at the end of input.
    fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut End<R>,
    ) -> Poll<io::Result<usize>> {
        match reader {
            End::Stream(stream) => {
                // `reserve` on an empty, uniquely owned buffer reuses its allocation.
                bufs::reserve(&mut self.buf, SPLICE_BUF);
                poll_read_buf(Pin::new(stream), cx, &mut self.buf)
            }
            End::H2(h2) => {
                self.chunk = std::task::ready!(h2.poll_read_bytes(cx))?;
                Poll::Ready(Ok(self.chunk.len()))
            }
            End::Chunked(stream) => stream.poll_read_chunks(cx, &mut self.chunks),
        }
    }

    /// Writes out everything read; `Ready` once nothing is left.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut End<W>,
    ) -> Poll<io::Result<()>> {
        if let End::H2(h2) = writer {
            loop {
                if self.chunk.is_empty() {
                    // Only one of `buf`, `chunk` and `chunks` holds bytes at a time.
                    self.chunk = match self.chunks.pop() {
                        Some(chunk) => chunk,
                        None if self.buf.is_empty() => Bytes::new(),
                        // h2 keeps the buffer until it has written it out; it then goes back to
                        // the thread's kept buffers for a next read to take.
                        None => bufs::share(std::mem::take(&mut self.buf)),
                    };
                }
                while !self.chunk.is_empty() {
                    std::task::ready!(h2.poll_send_bytes(cx, &mut self.chunk))?;
                    self.need_flush = true;
                }
                // An emptied `Bytes` still holds its allocation.
                self.chunk = Bytes::new();
                if self.chunks.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
        }
        while !self.chunks.is_empty() {
            let n = std::task::ready!(self.chunks.poll_write_to(cx, writer))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.need_flush = true;
        }
        std::task::ready!(drain(cx, writer, &mut self.chunk, &mut self.need_flush))?;
        // An emptied `Bytes` still holds its allocation (here: h2's read buffer).
        self.chunk = Bytes::new();
        drain(cx, writer, &mut self.buf, &mut self.need_flush)
    }
}

/// Writes all of `data` to `writer`, advancing it as bytes are taken; sets `need_flush` when any were.
fn drain<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    writer: &mut W,
    data: &mut impl Buf,
    need_flush: &mut bool,
) -> Poll<io::Result<()>> {
    while data.has_remaining() {
        let n = std::task::ready!(Pin::new(&mut *writer).poll_write(cx, data.chunk()))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        data.advance(n);
        *need_flush = true;
    }
    Poll::Ready(Ok(()))
}

/// Copies both ways until both directions have seen end of stream (each then shuts its writer
/// down), like `tokio::io::copy_bidirectional`, with [`Direction`]'s lazily held buffers.
async fn copy_both<A, B>(
    a: &mut End<'_, A>,
    b: &mut End<'_, B>,
    a_to_b: &mut Direction,
    b_to_a: &mut Direction,
    activity: &Activity,
) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| {
        let a_to_b = a_to_b.poll_copy(cx, activity, a, b)?;
        let b_to_a = b_to_a.poll_copy(cx, activity, b, a)?;
        std::task::ready!(a_to_b);
        std::task::ready!(b_to_a);
        Poll::Ready(Ok(()))
    })
    .await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Writes `send` to `peer` and ends it while reading everything `peer` receives.
    async fn drive<P: AsyncRead + AsyncWrite + Unpin>(mut peer: P, send: Vec<u8>) -> Vec<u8> {
        let (mut r, mut w) = tokio::io::split(&mut peer);
        let write = async {
            w.write_all(&send).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let read = r.read_to_end(&mut got);
        let ((), n) = tokio::join!(write, read);
        n.unwrap();
        got
    }

    /// Splices `client` and `upstream` with prefixes both ways while their peers each send more
    /// than a buffer; each peer must see exactly the other's bytes, then EOF.
    pub(crate) async fn assert_splices_exactly<C, U, CP, UP>(
        client: End<'_, C>,
        client_peer: CP,
        upstream: End<'_, U>,
        upstream_peer: UP,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
        CP: AsyncRead + AsyncWrite + Unpin,
        UP: AsyncRead + AsyncWrite + Unpin,
    {
        let up = pattern(3 * SPLICE_BUF + 123, 1);
        let down = pattern(2 * SPLICE_BUF + 45, 7);
        let splicing = splice_ends(
            client,
            upstream,
            Bytes::from_static(b"prefix-up"),
            Bytes::from_static(b"prefix-down"),
            Duration::from_secs(10),
        );
        let run = async {
            tokio::join!(
                splicing,
                drive(client_peer, up.clone()),
                drive(upstream_peer, down.clone())
            )
        };
        let ((moved, result), at_client, at_upstream) =
            tokio::time::timeout(Duration::from_secs(20), run)
                .await
                .expect("splice finished");
        result.unwrap();
        let mut want_up = b"prefix-up".to_vec();
        want_up.extend_from_slice(&up);
        let mut want_down = b"prefix-down".to_vec();
        want_down.extend_from_slice(&down);
        assert_eq!(at_upstream, want_up);
        assert_eq!(at_client, want_down);
        assert_eq!(moved.from_client, want_up.len() as u64);
        assert_eq!(moved.to_client, want_down.len() as u64);
    }

    /// Both directions carry more than a buffer through pipes small enough to make every write
    /// partial and every read pend.
    #[tokio::test]
    async fn lazily_buffered_splice_copies_exactly_both_ways() {
        let (client_peer, client) = tokio::io::duplex(1000);
        let (upstream, upstream_peer) = tokio::io::duplex(777);
        assert_splices_exactly(
            End::Stream(client),
            client_peer,
            End::Stream(upstream),
            upstream_peer,
        )
        .await;
    }

    /// Two ends of one HTTP/2 stream over an in-memory connection with h2's default windows
    /// (64 KiB), so that every transfer here waits for window updates: (client's, server's).
    pub(crate) async fn h2_stream_pair() -> (H2Io, H2Io) {
        let (a, b) = tokio::io::duplex(16 * 1024);
        let client = async move {
            let (send_request, conn) = h2::client::handshake(a).await.unwrap();
            tokio::spawn(conn);
            let mut send_request = send_request.ready().await.unwrap();
            let request = http::Request::post("https://origin.test/")
                .body(())
                .unwrap();
            let (response, send) = send_request.send_request(request, false).unwrap();
            H2Io::new(send, response.await.unwrap().into_body())
        };
        let server = async move {
            let mut conn = h2::server::handshake(b).await.unwrap();
            let (request, mut respond) = conn.accept().await.unwrap().unwrap();
            let send = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            H2Io::new(send, request.into_body())
        };
        tokio::join!(client, server)
    }

    /// An HTTP/2 end (the edge's side of a tunnel: bytes handed to h2 as read, frames written as
    /// received) carries exactly what a stream end does, under flow control.
    #[tokio::test]
    async fn splice_to_an_h2_stream_hands_over_exact_bytes() {
        let (client_peer, client) = tokio::io::duplex(1000);
        let (edge_side, relay_side) = h2_stream_pair().await;
        let upstream: End<tokio::io::DuplexStream> = End::H2(edge_side);
        assert_splices_exactly(End::Stream(client), client_peer, upstream, relay_side).await;
    }

    /// Bytes read for an HTTP/2 end go to h2 in the buffer they were read into, which comes back
    /// to the thread's kept buffers once h2 has written them out ([`bufs::share`]): the next read
    /// takes it again instead of a new allocation (frozen, it was freed to the allocator).
    #[tokio::test]
    async fn a_buffer_handed_to_h2_comes_back_once_written() {
        crate::bufs::clear();
        let (mut feed, reader) = tokio::io::duplex(64 * 1024);
        let (edge_side, mut relay_side) = h2_stream_pair().await;
        let mut reader = End::Stream(reader);
        let mut writer: End<tokio::io::DuplexStream> = End::H2(edge_side);
        let activity = Activity::new();
        let mut dir = Direction::default();
        let chunk = pattern(10_000, 3);
        let mut used = None;
        for round in 0..3 {
            feed.write_all(&chunk).await.unwrap();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let poll = dir.poll_copy(&mut cx, &activity, &mut reader, &mut writer);
            assert!(
                poll.is_pending(),
                "round {round}: everything read was handed over"
            );
            let mut got = vec![0; chunk.len()];
            tokio::time::timeout(Duration::from_secs(5), relay_side.read_exact(&mut got))
                .await
                .expect("the peer received the bytes")
                .unwrap();
            assert_eq!(got, chunk);
            // Two buffers: the one the bytes went to h2 in, which h2's connection task lets go
            // of once it has written them, and the one the direction then tried to read into
            // (given back when the reader had nothing).
            let back = async {
                while crate::bufs::kept() < 2 {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(5), back)
                .await
                .unwrap_or_else(|_| panic!("round {round}: the buffer never came back"));
            let mut both = [crate::bufs::take(), crate::bufs::take()];
            let mut ptrs = both.each_ref().map(|buf| buf.as_ptr());
            ptrs.sort();
            assert_eq!(
                *used.get_or_insert(ptrs),
                ptrs,
                "round {round}: the same two buffers"
            );
            for buf in &mut both {
                crate::bufs::give(buf);
            }
        }
    }

    /// The relay's orientation: the HTTP/2 stream is the client side.
    #[tokio::test]
    async fn splice_from_an_h2_stream_hands_over_exact_bytes() {
        let (edge_side, relay_side) = h2_stream_pair().await;
        let (upstream, upstream_peer) = tokio::io::duplex(777);
        let client: End<tokio::io::DuplexStream> = End::H2(relay_side);
        assert_splices_exactly(client, edge_side, End::Stream(upstream), upstream_peer).await;
    }

    /// Both ends HTTP/2: frames pass from one stream to the other without a copy in between.
    #[tokio::test]
    async fn splice_between_two_h2_streams_hands_over_exact_bytes() {
        let (a_peer, a) = h2_stream_pair().await;
        let (b, b_peer) = h2_stream_pair().await;
        let (a, b): (End<tokio::io::DuplexStream>, End<tokio::io::DuplexStream>) =
            (End::H2(a), End::H2(b));
        assert_splices_exactly(a, a_peer, b, b_peer).await;
    }

    /// A direction whose reader has nothing to give holds no buffer; once bytes arrive it copies
    /// them and, drained and pending again, gives the buffer back again: to its thread's stack
    /// ([`crate::bufs`]), where the next bytes find it.
    #[tokio::test]
    async fn idle_direction_holds_no_buffer() {
        crate::bufs::clear();
        let (mut feed, reader) = tokio::io::duplex(4096);
        let (writer, mut sink) = tokio::io::duplex(4096);
        let (mut reader, mut writer) = (End::Stream(reader), End::Stream(writer));
        let activity = Activity::new();
        let mut dir = Direction::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let poll = dir.poll_copy(&mut cx, &activity, &mut reader, &mut writer);
        assert!(poll.is_pending());
        assert_eq!(dir.buf.capacity(), 0);
        assert_eq!(crate::bufs::kept(), 1, "the buffer went to the thread");

        feed.write_all(b"hello").await.unwrap();
        let poll = dir.poll_copy(&mut cx, &activity, &mut reader, &mut writer);
        assert!(poll.is_pending());
        assert_eq!(
            dir.buf.capacity(),
            0,
            "drained and idle again: buffer given back"
        );
        assert_eq!(
            crate::bufs::kept(),
            1,
            "the same buffer taken from the thread and given back, not a second one"
        );
        let mut got = [0u8; 5];
        sink.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");

        drop(feed);
        let poll = dir.poll_copy(&mut cx, &activity, &mut reader, &mut writer);
        assert!(matches!(poll, Poll::Ready(Ok(()))));
        let mut rest = Vec::new();
        sink.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "EOF passed on as a shutdown");
    }

    /// A writer that accepts nothing while the reader has bytes keeps them buffered (not lost),
    /// and they are delivered once the writer has room.
    #[tokio::test]
    async fn blocked_writer_keeps_the_buffered_bytes() {
        let (mut feed, reader) = tokio::io::duplex(SPLICE_BUF * 2);
        let (writer, mut sink) = tokio::io::duplex(16);
        let data = pattern(5000, 3);
        feed.write_all(&data).await.unwrap();
        drop(feed);
        let (mut reader, mut writer) = (End::Stream(reader), End::Stream(writer));
        let activity = Activity::new();
        let mut dir = Direction::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let poll = dir.poll_copy(&mut cx, &activity, &mut reader, &mut writer);
        assert!(poll.is_pending());
        assert!(!dir.buf.is_empty(), "unwritten bytes stay in the buffer");
        let copy =
            std::future::poll_fn(|cx| dir.poll_copy(cx, &activity, &mut reader, &mut writer));
        let mut got = Vec::new();
        let (copied, read) = tokio::join!(copy, sink.read_to_end(&mut got));
        copied.unwrap();
        read.unwrap();
        assert_eq!(got, data);
    }
}
