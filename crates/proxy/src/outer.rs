//! The outer TLS 1.3 layer between edge and relay, with records opened where they land.
//!
//! rustls runs the handshake through its unbuffered API, so every byte read past the handshake
//! stays in this module's buffer. Then the traffic keys move here (rustls' `KernelConnection`, the
//! interface kernel TLS uses), and records are sealed and opened in place: a received record is
//! decrypted in the buffer it was read into and copied once, into the reader's buffer, or not at all
//! for a splice, which takes it as a slice of that buffer ([`ReadChunks`]). rustls'
//! buffered connection copies each record's plaintext into a fresh `Vec` first and then into the
//! reader's buffer; that first copy alone was a fifth of the edge's CPU samples in a bulk download
//! (docs/performance-log.md, Profiles, T1).
//!
//! The wire format is TLS 1.3's (RFC 8446 §5), so the peer may run any TLS 1.3 stack. Key updates
//! and session tickets still go through rustls, which keeps the secrets. Sealing switches keys
//! before the cipher suite's confidentiality limit, as rustls does.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ring::aead;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{
    ClientConfig, CommonState, ConnectionTrafficSecrets, ProtocolVersion, ServerConfig,
    SupportedCipherSuite,
};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::bufs;
use crate::io::{Chunks, ReadChunks};

/// Largest plaintext in one record (RFC 8446 §5.1).
const MAX_PLAINTEXT: usize = 16 * 1024;
/// Largest encrypted payload a peer may send: plaintext, content type, padding and tag (§5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
const HEADER: usize = 5;
const TAG: usize = 16;
/// Outer record type of every protected record, and the inner type of application data.
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
/// Bytes asked of the socket when the buffer has no room for a whole record: four full records
/// per system call in a bulk transfer.
const READ_CHUNK: usize = 64 * 1024;
/// Plaintext sealed per write call, and the sealed bytes that may wait for the socket before a
/// write call waits too.
const WRITE_BATCH: usize = 64 * 1024;
/// Bound on the handshake's buffered bytes (one flight: a certificate chain is the large part) and
/// on a post-handshake message (a session ticket).
const MAX_HANDSHAKE: usize = 128 * 1024;

fn invalid(reason: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Connects as a TLS 1.3 client over `io`: the handshake, then an [`Outer`] stream.
/// `config` must set `enable_secret_extraction`.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: IO,
) -> io::Result<Outer<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, name).map_err(invalid)?;
    establish(conn, io).await
}

/// Accepts a TLS 1.3 client over `io`: the handshake, then an [`Outer`] stream.
/// `config` must set `enable_secret_extraction`.
pub async fn accept<IO>(config: Arc<ServerConfig>, io: IO) -> io::Result<Outer<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    establish(conn, io).await
}

/// The handshake, then the keys move from rustls to the [`Outer`] stream.
async fn establish<C, IO>(mut conn: C, mut io: IO) -> io::Result<Outer<IO>>
where
    C: Unbuffered,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let rest = drive(&mut conn, &mut io).await?;
    let facts = Facts::of(conn.state());
    let (secrets, kernel) = conn.into_kernel().map_err(invalid)?;
    Outer::new(io, kernel, secrets, rest, facts)
}

/// What the handshake settled, kept for the roles that ask (ALPN, the client's certificate).
struct Facts {
    alpn: Option<Vec<u8>>,
    peer_cert: Option<CertificateDer<'static>>,
}

impl Facts {
    fn of(state: &CommonState) -> Self {
        Self {
            alpn: state.alpn_protocol().map(<[u8]>::to_vec),
            peer_cert: state
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.clone().into_owned()),
        }
    }
}

/// What the handshake leaves behind: bytes read but not processed, and application data that
/// rustls already opened (a client's first bytes can arrive with its Finished).
struct Rest {
    unread: BytesMut,
    opened: Bytes,
}

/// The two unbuffered connection types, for one handshake loop.
trait Unbuffered {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn state(&self) -> &CommonState;
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error>;
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn state(&self) -> &CommonState {
        self
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Client(kernel)))
    }
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn state(&self) -> &CommonState {
        self
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Server(kernel)))
    }
}

/// Runs the handshake to its end. rustls consumes only whole records, and only those up to the
/// point where the handshake is complete and nothing is left to send, so the bytes after them
/// are returned unread.
async fn drive<C, IO>(conn: &mut C, io: &mut IO) -> io::Result<Rest>
where
    C: Unbuffered,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    enum Next {
        Process,
        Read,
        Traffic,
    }
    let mut incoming = vec![0u8; 4096];
    let mut used = 0;
    let mut outgoing = Vec::new();
    let mut opened = BytesMut::new();
    loop {
        let UnbufferedStatus { discard, state } = conn.process(&mut incoming[..used]);
        let state = match state {
            Ok(state) => state,
            Err(e) => {
                incoming.copy_within(discard..used, 0);
                used -= discard;
                send_alert(conn, io, &mut incoming[..used]).await;
                return Err(invalid(e));
            }
        };
        let next = match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(invalid)?;
                    if opened.len() + record.payload.len() > MAX_HANDSHAKE {
                        return Err(invalid("too much application data during the handshake"));
                    }
                    opened.extend_from_slice(record.payload);
                }
                Next::Process
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                let start = outgoing.len();
                let mut room = 4096;
                loop {
                    outgoing.resize(start + room, 0);
                    match encode.encode(&mut outgoing[start..]) {
                        Ok(n) => {
                            outgoing.truncate(start + n);
                            break;
                        }
                        Err(EncodeError::InsufficientSize(need)) => room = need.required_size,
                        Err(e) => return Err(invalid(e.to_string())),
                    }
                }
                Next::Process
            }
            ConnectionState::TransmitTlsData(transmit) => {
                io.write_all(&outgoing).await?;
                io.flush().await?;
                outgoing.clear();
                transmit.done();
                Next::Process
            }
            ConnectionState::BlockedHandshake => Next::Read,
            ConnectionState::WriteTraffic(_) => Next::Traffic,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            other => {
                return Err(invalid(format!("unexpected TLS state {other:?}")));
            }
        };
        incoming.copy_within(discard..used, 0);
        used -= discard;
        match next {
            Next::Process => continue,
            // A server may send application data before the client's Finished; the keys move
            // only once the handshake is over.
            Next::Traffic if !conn.state().is_handshaking() => break,
            Next::Traffic | Next::Read => {}
        }
        if used == incoming.len() {
            if incoming.len() >= MAX_HANDSHAKE {
                return Err(invalid("TLS handshake flight larger than 128 KiB"));
            }
            incoming.resize((incoming.len() * 2).min(MAX_HANDSHAKE), 0);
        }
        let n = io.read(&mut incoming[used..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake",
            ));
        }
        used += n;
    }
    Ok(Rest {
        unread: BytesMut::from(&incoming[..used]),
        opened: opened.freeze(),
    })
}

/// Sends the alert rustls queued when the handshake failed, so the peer learns why (a rejected
/// certificate, no common protocol); best effort, as the connection is being closed anyway.
/// `incoming` holds the bytes rustls has not discarded: it may still point into them. A failed
/// connection is asked once: its queued alert comes first, and asking again would make rustls
/// process the failed input a second time.
async fn send_alert<C, IO>(conn: &mut C, io: &mut IO, incoming: &mut [u8])
where
    C: Unbuffered,
    IO: AsyncWrite + Unpin,
{
    let mut alert = [0u8; 64];
    let n = match conn.process(incoming).state {
        Ok(ConnectionState::EncodeTlsData(mut encode)) => encode.encode(&mut alert).unwrap_or(0),
        _ => 0,
    };
    if n > 0 {
        let _ = io.write_all(&alert[..n]).await;
        let _ = io.flush().await;
    }
}

/// rustls' side of the connection after the handshake: new secrets for key updates, and session
/// tickets for a client.
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }
    fn suite(&self) -> SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        }
    }
    fn version(&self) -> ProtocolVersion {
        match self {
            Kernel::Client(k) => k.protocol_version(),
            Kernel::Server(k) => k.protocol_version(),
        }
    }
    fn session_ticket(&mut self, body: &[u8]) -> io::Result<()> {
        match self {
            Kernel::Client(k) => k.handle_new_session_ticket(body).map_err(invalid),
            Kernel::Server(_) => Err(invalid("a TLS client sent a session ticket")),
        }
    }
}

/// One direction's AEAD key, IV and record sequence number (RFC 8446 §5.3).
struct Cipher {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Cipher {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Self> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(invalid("unsupported TLS cipher suite")),
        };
        let key = aead::UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| invalid("bad TLS traffic key"))?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| invalid("bad TLS traffic IV"))?;
        Ok(Self {
            key: aead::LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The IV with the sequence number XORed into its last 8 bytes; advances the sequence.
    fn next_nonce(&mut self) -> io::Result<aead::Nonce> {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq =
            (self.seq.checked_add(1)).ok_or_else(|| invalid("TLS sequence number wrapped"))?;
        Ok(aead::Nonce::assume_unique_for_key(nonce))
    }
}

/// The plaintext of the record at the front of the read buffer: `pos..end` is still to be read,
/// `len` is the record's size on the wire.
struct Opened {
    pos: usize,
    end: usize,
    len: usize,
}

/// A TLS 1.3 connection past its handshake: `AsyncRead` and `AsyncWrite` of the plaintext.
/// Buffers exist only while bytes are in them, so an idle connection holds none.
pub struct Outer<IO> {
    io: IO,
    kernel: Box<Kernel>,
    rx: Cipher,
    tx: Cipher,
    /// Records sealed under one key before it is updated.
    tx_limit: u64,
    /// Bytes read and not yet consumed; an opened record's plaintext sits at the front.
    rbuf: BytesMut,
    opened: Option<Opened>,
    /// Application data rustls opened during the handshake, read first.
    early: Bytes,
    /// Post-handshake messages not yet complete.
    hs: BytesMut,
    /// Sealed records not yet written.
    wbuf: BytesMut,
    /// The peer asked for a key update; ours goes before our next record.
    update_due: bool,
    peer_closed: bool,
    /// A record that failed after earlier records' plaintext was handed out; the next read gets it.
    failed: Option<io::Error>,
    sent_close: bool,
    alpn: Option<Vec<u8>>,
    peer_cert: Option<CertificateDer<'static>>,
}

impl<IO> Outer<IO> {
    fn new(
        io: IO,
        kernel: Kernel,
        secrets: rustls::ExtractedSecrets,
        rest: Rest,
        facts: Facts,
    ) -> io::Result<Self> {
        let SupportedCipherSuite::Tls13(suite) = kernel.suite() else {
            return Err(invalid("the outer layer needs TLS 1.3"));
        };
        if kernel.version() != ProtocolVersion::TLSv1_3 {
            return Err(invalid("the outer layer needs TLS 1.3"));
        }
        Ok(Self {
            io,
            kernel: Box::new(kernel),
            rx: Cipher::new(secrets.rx)?,
            tx: Cipher::new(secrets.tx)?,
            tx_limit: suite.common.confidentiality_limit.saturating_sub(1),
            rbuf: rest.unread,
            opened: None,
            early: rest.opened,
            hs: BytesMut::new(),
            wbuf: BytesMut::new(),
            update_due: false,
            peer_closed: false,
            failed: None,
            sent_close: false,
            alpn: facts.alpn,
            peer_cert: facts.peer_cert,
        })
    }

    /// The protocol agreed by ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The peer's end-entity certificate, when it presented one (verified by the handshake).
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.peer_cert.as_ref()
    }

    /// The transport underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    #[cfg(test)]
    fn set_tx_limit(&mut self, limit: u64) {
        self.tx_limit = limit;
    }

    /// Opens the record at the front of `rbuf` if all of it is there; `false` if more bytes are
    /// needed.
    fn open_record(&mut self) -> io::Result<bool> {
        let Some(header) = self.rbuf.get(..HEADER) else {
            return Ok(false);
        };
        let header: [u8; HEADER] = [header[0], header[1], header[2], header[3], header[4]];
        if header[0] != APPLICATION_DATA {
            return Err(invalid(format!(
                "TLS record of type {} after the handshake",
                header[0]
            )));
        }
        if header[1..3] != [3, 3] {
            return Err(invalid("TLS record with a wrong version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > MAX_CIPHERTEXT {
            return Err(invalid(format!(
                "TLS record of {len} bytes (record_overflow)"
            )));
        }
        if len <= TAG {
            return Err(invalid(format!(
                "TLS record of {len} bytes, too short to be protected (bad_record_mac)"
            )));
        }
        if self.rbuf.len() < HEADER + len {
            return Ok(false);
        }
        let nonce = self.rx.next_nonce()?;
        let plain = self
            .rx
            .key
            .open_in_place(
                nonce,
                aead::Aad::from(header),
                &mut self.rbuf[HEADER..HEADER + len],
            )
            .map_err(|_| invalid("TLS record failed authentication (bad_record_mac)"))?;
        // Content, content type and padding together stay within 2^14 + 1 bytes (§5.4).
        if plain.len() > MAX_PLAINTEXT + 1 {
            return Err(invalid(format!(
                "TLS record of {} plaintext bytes (record_overflow)",
                plain.len()
            )));
        }
        // The content type is the last byte that is not padding (§5.4).
        let Some(last) = plain.iter().rposition(|&b| b != 0) else {
            return Err(invalid("TLS record without a content type"));
        };
        let content = plain[last];
        let (start, end) = (HEADER, HEADER + last);
        match content {
            APPLICATION_DATA if end > start => {
                self.opened = Some(Opened {
                    pos: start,
                    end,
                    len: HEADER + len,
                });
                return Ok(true);
            }
            APPLICATION_DATA => {}
            ALERT => {
                if end - start != 2 {
                    return Err(invalid("malformed TLS alert"));
                }
                match self.rbuf[start + 1] {
                    0 => self.peer_closed = true,
                    // user_canceled: a close_notify follows.
                    90 => {}
                    code => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!("the peer sent TLS alert {code}"),
                        ));
                    }
                }
            }
            HANDSHAKE => {
                if self.hs.len() + (end - start) > MAX_HANDSHAKE {
                    return Err(invalid("post-handshake message too large"));
                }
                self.hs.extend_from_slice(&self.rbuf[start..end]);
                self.rbuf.advance(HEADER + len);
                return self.handshake_messages().map(|()| true);
            }
            other => {
                return Err(invalid(format!(
                    "TLS content type {other} after the handshake"
                )));
            }
        }
        self.rbuf.advance(HEADER + len);
        Ok(true)
    }

    /// Handles the complete post-handshake messages in `hs`: session tickets and key updates.
    fn handshake_messages(&mut self) -> io::Result<()> {
        while self.hs.len() >= 4 {
            let typ = self.hs[0];
            let len = usize::from(self.hs[1]) << 16
                | usize::from(self.hs[2]) << 8
                | usize::from(self.hs[3]);
            if self.hs.len() < 4 + len {
                break;
            }
            match typ {
                // new_session_ticket
                4 => self.kernel.session_ticket(&self.hs[4..4 + len])?,
                // key_update: it must end its record, as keys change after it (§5.1).
                24 => {
                    if len != 1 || self.hs.len() != 5 {
                        return Err(invalid("malformed TLS key update"));
                    }
                    match self.hs[4] {
                        0 => {}
                        1 => self.update_due = true,
                        _ => return Err(invalid("malformed TLS key update")),
                    }
                    self.rx = Cipher::new(self.kernel.update_rx().map_err(invalid)?)?;
                }
                other => {
                    return Err(invalid(format!(
                        "TLS handshake message {other} after the handshake"
                    )));
                }
            }
            self.hs.advance(4 + len);
        }
        if self.hs.is_empty() {
            self.hs = BytesMut::new();
        }
        Ok(())
    }

    /// Seals our key update under the current key, then switches to the next one.
    fn seal_key_update(&mut self) -> io::Result<()> {
        let start = self.start_record(4);
        // key_update, length 1, update_not_requested
        self.wbuf.extend_from_slice(&[24, 0, 0, 1, 0]);
        self.finish_record(start, HANDSHAKE)?;
        self.tx = Cipher::new(self.kernel.update_tx().map_err(invalid)?)?;
        self.update_due = false;
        Ok(())
    }

    /// Reserves a header's room in `wbuf` and `payload` bytes after it; returns where the
    /// record's plaintext starts.
    fn start_record(&mut self, payload: usize) -> usize {
        bufs::reserve(&mut self.wbuf, HEADER + payload + 1 + TAG);
        self.wbuf.put_bytes(0, HEADER);
        self.wbuf.len()
    }

    /// Seals the plaintext from `start` to the end of `wbuf` as one record of type `content`.
    fn finish_record(&mut self, start: usize, content: u8) -> io::Result<()> {
        self.wbuf.put_u8(content);
        let len = self.wbuf.len() - start + TAG;
        let [hi, lo] = u16::try_from(len)
            .map_err(|_| invalid("TLS record too large"))?
            .to_be_bytes();
        let header = [APPLICATION_DATA, 3, 3, hi, lo];
        self.wbuf[start - HEADER..start].copy_from_slice(&header);
        let nonce = self.tx.next_nonce()?;
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(header), &mut self.wbuf[start..])
            .map_err(|_| invalid("sealing a TLS record failed"))?;
        self.wbuf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals up to [`WRITE_BATCH`] bytes of `bufs` as application data, in records as full as
    /// they allow; returns how many bytes were taken.
    fn seal_data(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(WRITE_BATCH);
        let records = total.div_ceil(MAX_PLAINTEXT);
        bufs::reserve(&mut self.wbuf, total + records * (HEADER + 1 + TAG));
        let mut taken = 0;
        let mut record: Option<usize> = None;
        for buf in bufs {
            let mut buf: &[u8] = buf;
            while !buf.is_empty() && taken < total {
                let start = match record {
                    Some(start) => start,
                    None => {
                        if self.update_due || self.tx.seq >= self.tx_limit {
                            self.seal_key_update()?;
                        }
                        let start = self.start_record((total - taken).min(MAX_PLAINTEXT));
                        record = Some(start);
                        start
                    }
                };
                let room = MAX_PLAINTEXT - (self.wbuf.len() - start);
                let n = room.min(buf.len()).min(total - taken);
                self.wbuf.extend_from_slice(&buf[..n]);
                buf = &buf[n..];
                taken += n;
                if self.wbuf.len() - start == MAX_PLAINTEXT {
                    self.finish_record(start, APPLICATION_DATA)?;
                    record = None;
                }
            }
        }
        if let Some(start) = record {
            self.finish_record(start, APPLICATION_DATA)?;
        }
        Ok(taken)
    }
}

impl<IO: AsyncWrite + Unpin> Outer<IO> {
    /// Writes out every sealed record; `Ready(Ok)` once none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wbuf.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> Outer<IO> {
    /// Makes the next record's plaintext ready in `opened`: `Ready(Ok(true))` when it is. When no
    /// whole record is left, a reader that `filled` something already gets `Ready(Ok(false))` (and a
    /// record that failed is kept for its next read); one that has nothing waits for the socket.
    /// `Ready(Ok(false))` with nothing filled is the end of input (the peer's close_notify).
    fn poll_opened(&mut self, cx: &mut Context<'_>, filled: bool) -> Poll<io::Result<bool>> {
        loop {
            if self.opened.is_some() {
                return Poll::Ready(Ok(true));
            }
            if self.peer_closed {
                return Poll::Ready(Ok(false));
            }
            match self.open_record() {
                Ok(true) => continue,
                Ok(false) if filled => return Poll::Ready(Ok(false)),
                Ok(false) => {}
                Err(e) if filled => {
                    self.failed = Some(e);
                    return Poll::Ready(Ok(false));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Room for at least one whole record; a partial one moves to the front.
            if self.rbuf.capacity() - self.rbuf.len() < HEADER + MAX_CIPHERTEXT {
                bufs::reserve(&mut self.rbuf, READ_CHUNK);
            }
            match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    let what = if self.rbuf.is_empty() {
                        "the peer closed the connection without close_notify"
                    } else {
                        "the peer closed the connection inside a TLS record"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, what)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing in flight: an idle connection holds no read buffer.
                    bufs::give(&mut self.rbuf);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ReadChunks for Outer<IO> {
    /// Like `poll_read`, without the copy: hands over the plaintext of every whole record already
    /// received, while `out` has room, as slices of the buffer the records were opened in.
    /// `Ready(Ok(0))` is the end of input. The buffer is this connection's read buffer, so it is
    /// read into again (not reallocated) once the caller has dropped the slices.
    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Chunks,
    ) -> Poll<io::Result<usize>> {
        if out.is_full() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no room to hand records over",
            )));
        }
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        if !self.early.is_empty() {
            let early = std::mem::take(&mut self.early);
            let n = early.len();
            out.push(early);
            return Poll::Ready(Ok(n));
        }
        let mut n = 0;
        while !out.is_full() && ready!(self.poll_opened(cx, n > 0))? {
            let Some(opened) = self.opened.take() else {
                break;
            };
            let record = self.rbuf.split_to(opened.len).freeze();
            n += opened.end - opened.pos;
            out.push(record.slice(opened.pos..opened.end));
        }
        Poll::Ready(Ok(n))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Outer<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Err(e));
        }
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        // Every whole record already read goes out in this call, so a 64 KiB reader gets up to
        // four full records per call (and writes them on in one system call), not one.
        let mut filled = false;
        while ready!(this.poll_opened(cx, filled))? {
            let Some(opened) = &mut this.opened else {
                break;
            };
            let n = (opened.end - opened.pos).min(buf.remaining());
            buf.put_slice(&this.rbuf[opened.pos..opened.pos + n]);
            opened.pos += n;
            if opened.pos == opened.end {
                this.rbuf.advance(opened.len);
                this.opened = None;
            }
            filled = true;
            if buf.remaining() == 0 {
                break;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Outer<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.sent_close {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after TLS close_notify",
            )));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        if this.wbuf.len() >= WRITE_BATCH {
            ready!(this.poll_drain(cx))?;
        }
        let taken = this.seal_data(bufs)?;
        // Start sending now; what the socket does not take goes with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.update_due && !this.sent_close {
            this.seal_key_update()?;
        }
        ready!(this.poll_drain(cx))?;
        // Nothing in flight: an idle connection holds no write buffer.
        bufs::give(&mut this.wbuf);
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.sent_close {
            if this.update_due {
                this.seal_key_update()?;
            }
            // close_notify, warning level
            let start = this.start_record(2);
            this.wbuf.extend_from_slice(&[1, 0]);
            this.finish_record(start, ALERT)?;
            this.sent_close = true;
        }
        ready!(this.poll_drain(cx))?;
        bufs::give(&mut this.wbuf);
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
