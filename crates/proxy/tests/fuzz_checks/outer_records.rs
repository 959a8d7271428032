//! The checks of the `outer_records` fuzz target (`fuzz/fuzz_targets/outer_records.rs` includes
//! this file), replayed on the committed corpus by `tests/fuzz_corpus.rs` on the stable toolchain.
//!
//! The relay's outer TLS layer (`tlsgate_proxy::outer`) parses every record a peer sends after the
//! handshake, and any client that completes a handshake holds valid keys. So the harness completes
//! a real handshake (a rustls client against `outer::accept` with the relay's own server config),
//! takes the client's traffic keys, and seals what the input scripts: application data of every
//! size and padding, alerts, key updates, raw handshake messages, unknown content types, flipped
//! bits and raw bytes, cut into chunks of one size the input picks.
//!
//! The harness derives its own keys from the client's traffic secret (RFC 8446 §7), so it follows
//! the key updates it sends.
//!
//! Input: `[cut][op…]`. `cut`'s low 3 bits pick the chunk size the peer writes in, bits 3–4 the
//! reader's buffer size, bit 7 set leaves out the closing close_notify. Each op is one byte
//! (`% 9`) and its arguments (layout in `Script::op`).
//!
//! Checked beyond "no panic, no hang": what the reader gets is always a prefix of the application
//! data sealed, in order; while every op so far has an outcome RFC 8446 fixes, it gets exactly the
//! application data before the first closing or fatal record, then a clean end (close_notify) or
//! an error (anything fatal, or the peer closing without close_notify).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ring::{aead, hkdf};
use rustls::{ClientConfig, ConnectionTrafficSecrets, KeyLog, ServerConfig};
use rustls_pki_types::ServerName;
use tlsgate_testkit::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

const NAME: &str = "relay.fuzz.test";
/// Most bytes one input makes the peer send, so one-byte chunks stay fast.
const MAX_SCRIPT: usize = 256 * 1024;
const CHUNKS: [usize; 8] = [1, 2, 5, 64, 1000, 4096, 16_389, 65_536];
const READS: [usize; 4] = [1, 100, 8192, 65_536];
/// RFC 8446 §5.2 and §5.4: the encrypted record and the inner plaintext's bounds.
const MAX_CIPHERTEXT: usize = (1 << 14) + 256;
const MAX_INNER: usize = (1 << 14) + 1;

fn configs() -> &'static (Arc<ClientConfig>, Arc<ServerConfig>) {
    static CONFIGS: OnceLock<(Arc<ClientConfig>, Arc<ServerConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let ca = TestCa::new("outer fuzz CA");
        let leaf = ca.issue(&[NAME]);
        let (client, _) =
            tlsgate_proxy::tls::relay_client_configs(&[ca.cert_der()], None).expect("client");
        let server =
            tlsgate_proxy::tls::relay_server_config(leaf.chain, leaf.key, None).expect("server");
        (client, server)
    })
}

pub fn check(data: &[u8]) {
    let Some((&cut, ops)) = data.split_first() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), run(cut, ops))
            .await
            .expect("the outer layer hung on this input")
    });
}

async fn run(cut: u8, ops: &[u8]) {
    let (client_config, server_config) = configs();
    // The client's traffic secret, so the harness can follow its own key updates (RFC 8446 §7.2).
    let key_log = Arc::new(TrafficSecret::default());
    let mut client_config = ClientConfig::clone(client_config);
    client_config.key_log = key_log.clone();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(NAME).expect("name");
    let (client, server) = tokio::join!(
        TlsConnector::from(Arc::new(client_config)).connect(name, a),
        tlsgate_proxy::outer::accept(server_config.clone(), b)
    );
    let (mut raw, conn) = client.expect("client handshake").into_inner();
    let mut server = server.expect("server handshake");
    let secrets = conn.dangerous_extract_secrets().expect("secrets");
    let secret = key_log
        .0
        .lock()
        .unwrap()
        .take()
        .expect("client traffic secret logged");

    let mut script = Script::new(Sealer::new(secrets.tx, secret), ops);
    while script.op() {}
    if cut & 0x80 == 0 {
        script.record(&[1, 0, 21], Outcome::Close);
    } else {
        // The peer just closes: a truncation the reader must report.
        script.model.settle(Outcome::Fatal);
    }
    let Script { wire, model, .. } = script;
    let chunk = CHUNKS[usize::from(cut & 7)];
    let read_size = READS[usize::from((cut >> 3) & 3)];

    let writer = async {
        for piece in wire.chunks(chunk) {
            if raw.write_all(piece).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let _ = raw.shutdown().await;
    };
    let reader = async {
        let mut got = Vec::new();
        let mut buf = vec![0; read_size];
        let end = loop {
            match server.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        if end.is_ok() {
            // A closed stream stays closed.
            assert_eq!(server.read(&mut buf).await.ok(), Some(0));
        }
        // Writing after whatever happened seals (a key update may be due) or fails cleanly.
        if server.write_all(b"after").await.is_ok() {
            let _ = server.shutdown().await;
        }
        drop(server);
        (got, end)
    };
    let ((), (got, end)) = tokio::join!(writer, reader);

    assert!(
        model.sealed.starts_with(&got),
        "the reader got {} bytes that are not the sealed application data's prefix",
        got.len()
    );
    if let Some(expect) = model.exact() {
        assert_eq!(
            got.len(),
            expect.data.len(),
            "delivered length; end {end:?}"
        );
        assert!(got == expect.data, "delivered bytes differ");
        match expect.end {
            Outcome::Close => assert!(end.is_ok(), "expected a clean end, got {end:?}"),
            Outcome::Fatal => assert!(end.is_err(), "expected an error, got a clean end"),
            Outcome::Data | Outcome::Ignored | Outcome::Unknown => unreachable!(),
        }
    }
}

/// Keeps the client's first application traffic secret.
#[derive(Debug, Default)]
struct TrafficSecret(Mutex<Option<Vec<u8>>>);

impl KeyLog for TrafficSecret {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == "CLIENT_TRAFFIC_SECRET_0" {
            *self.0.lock().unwrap() = Some(secret.to_vec());
        }
    }
}

/// HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
fn expand_label(hash: hkdf::Algorithm, secret: &[u8], label: &[u8], len: usize) -> Vec<u8> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let length = u16::try_from(len).expect("length").to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).expect("label")];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    let mut out = vec![0; len];
    hkdf::Prk::new_less_safe(hash, secret)
        .expand(&info, Len(len))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-Expand-Label");
    out
}

/// Seals TLS 1.3 records as the peer would: AEAD over the inner plaintext, header as AAD. It
/// derives its keys from the traffic secret itself, apart from rustls and from the layer under
/// test, so a key update it sends checks theirs.
struct Sealer {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    secret: Vec<u8>,
    aead: &'static aead::Algorithm,
    hash: hkdf::Algorithm,
}

impl Sealer {
    fn new((seq, extracted): (u64, ConnectionTrafficSecrets), secret: Vec<u8>) -> Self {
        let (aead, hash, key, iv) = match &extracted {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                (&aead::AES_128_GCM, hkdf::HKDF_SHA256, key, iv)
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                (&aead::AES_256_GCM, hkdf::HKDF_SHA384, key, iv)
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, hkdf::HKDF_SHA256, key, iv)
            }
            _ => unreachable!("the relay offers only these TLS 1.3 suites"),
        };
        let sealer = Self::keyed(aead, hash, secret, seq);
        // The derivation agrees with the keys rustls extracted.
        assert_eq!(
            expand_label(hash, &sealer.secret, b"key", aead.key_len()),
            key.as_ref()
        );
        assert_eq!(&sealer.iv[..], iv.as_ref());
        sealer
    }

    fn keyed(
        aead: &'static aead::Algorithm,
        hash: hkdf::Algorithm,
        secret: Vec<u8>,
        seq: u64,
    ) -> Self {
        let key = expand_label(hash, &secret, b"key", aead.key_len());
        let iv = expand_label(hash, &secret, b"iv", aead::NONCE_LEN);
        Self {
            key: aead::LessSafeKey::new(aead::UnboundKey::new(aead, &key).expect("key")),
            iv: iv.try_into().expect("iv"),
            seq,
            secret,
            aead,
            hash,
        }
    }

    /// The next generation of keys, after a key update (RFC 8446 §7.2); sequence numbers restart.
    fn update(&mut self) {
        let len = self.hash.hmac_algorithm().digest_algorithm().output_len();
        let next = expand_label(self.hash, &self.secret, b"traffic upd", len);
        *self = Self::keyed(self.aead, self.hash, next, 0);
    }

    /// One record on the wire for `inner` (content, content type, padding).
    fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
        let len = u16::try_from(inner.len() + 16).expect("record length");
        let [hi, lo] = len.to_be_bytes();
        let header = [23, 3, 3, hi, lo];
        let mut nonce = self.iv;
        for (byte, seq) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq += 1;
        let mut body = inner.to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(header),
                &mut body,
            )
            .expect("seal");
        let mut record = header.to_vec();
        record.extend_from_slice(&body);
        record
    }
}

/// What one record does to the reader, as RFC 8446 fixes it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Outcome {
    /// Application data: its content reaches the reader.
    Data,
    /// Nothing the reader sees (empty application data, a user_canceled alert).
    Ignored,
    /// close_notify: a clean end.
    Close,
    /// The connection must fail here.
    Fatal,
    /// The harness does not predict it (a raw handshake message, raw bytes).
    Unknown,
}

/// The application data every input must be a prefix of, and, while predictable, the exact end.
struct Model {
    /// Every correctly sealed application-data content, in order.
    sealed: Vec<u8>,
    /// Application data before the end, while every record so far was predictable.
    before_end: Vec<u8>,
    end: Option<Outcome>,
    predictable: bool,
}

struct Expect<'a> {
    data: &'a [u8],
    end: Outcome,
}

impl Model {
    fn settle(&mut self, outcome: Outcome) {
        if self.end.is_some() {
            return;
        }
        match outcome {
            Outcome::Data | Outcome::Ignored => {}
            Outcome::Close | Outcome::Fatal => self.end = Some(outcome),
            Outcome::Unknown => self.predictable = false,
        }
    }

    fn exact(&self) -> Option<Expect<'_>> {
        match (self.predictable, self.end) {
            (true, Some(end)) => Some(Expect {
                data: &self.before_end,
                end,
            }),
            _ => None,
        }
    }
}

struct Script<'a> {
    sealer: Sealer,
    input: &'a [u8],
    wire: Vec<u8>,
    model: Model,
    /// Flip this bit of the next sealed record.
    flip: Option<usize>,
}

impl<'a> Script<'a> {
    fn new(sealer: Sealer, input: &'a [u8]) -> Self {
        Self {
            sealer,
            input,
            wire: Vec::new(),
            model: Model {
                sealed: Vec::new(),
                before_end: Vec::new(),
                end: None,
                predictable: true,
            },
            flip: None,
        }
    }

    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.input.split_first() else {
            return 0;
        };
        self.input = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.input.len());
        let (taken, rest) = self.input.split_at(n);
        self.input = rest;
        taken.to_vec()
    }

    /// Reads and appends one op; `false` once the input or the size budget is spent.
    fn op(&mut self) -> bool {
        if self.input.is_empty() || self.wire.len() > MAX_SCRIPT {
            return false;
        }
        match self.byte() % 9 {
            // Application data: [len u16 BE][fill][padding].
            0..=2 => {
                let len = usize::from(u16::from_be_bytes([self.byte(), self.byte()])) % MAX_INNER;
                let fill = self.byte();
                let padding = usize::from(self.byte());
                let content: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                let mut inner = content.clone();
                inner.push(23);
                inner.resize(inner.len() + padding, 0);
                let outcome = if inner.len() > MAX_INNER {
                    Outcome::Fatal
                } else if content.is_empty() {
                    Outcome::Ignored
                } else {
                    Outcome::Data
                };
                self.record_data(&inner, &content, outcome);
            }
            // Alert: [level][description][padding % 4].
            3 => {
                let (level, description) = (self.byte(), self.byte());
                let mut inner = vec![level, description, 21];
                inner.resize(3 + usize::from(self.byte() % 4), 0);
                let outcome = match description {
                    0 => Outcome::Close,
                    90 => Outcome::Ignored,
                    _ => Outcome::Fatal,
                };
                self.record(&inner, outcome);
            }
            // Key update: [request % 3]; 2 is malformed. After a well-formed one, the records
            // that follow are sealed under the next keys.
            4 => {
                let request = self.byte() % 3;
                let outcome = if request < 2 {
                    Outcome::Ignored
                } else {
                    Outcome::Fatal
                };
                self.record(&[24, 0, 0, 1, request, 22], outcome);
                if request < 2 {
                    self.sealer.update();
                }
            }
            // Raw handshake bytes: [n % 64][n bytes].
            5 => {
                let n = usize::from(self.byte() % 64);
                let mut inner = self.bytes(n);
                inner.push(22);
                self.record(&inner, Outcome::Unknown);
            }
            // A content type TLS 1.3 does not carry after the handshake, or none at all:
            // [type][padding % 8].
            6 => {
                let typ = self.byte();
                let padding = usize::from(self.byte() % 8);
                let mut inner = match typ {
                    // No content type: all padding.
                    0 => vec![],
                    21..=23 => vec![24],
                    other => vec![other],
                };
                inner.resize(inner.len() + padding + 1, 0);
                self.record(&inner, Outcome::Fatal);
            }
            // Flip a bit of the next record: [bit u16 BE].
            7 => {
                let bit = usize::from(u16::from_be_bytes([self.byte(), self.byte()]));
                self.flip = Some(bit);
            }
            // Raw bytes: [n][n bytes].
            _ => {
                let n = usize::from(self.byte());
                let raw = self.bytes(n);
                self.wire.extend_from_slice(&raw);
                if !raw.is_empty() {
                    self.model.settle(Outcome::Unknown);
                }
            }
        }
        true
    }

    fn record(&mut self, inner: &[u8], outcome: Outcome) {
        self.record_data(inner, &[], outcome);
    }

    fn record_data(&mut self, inner: &[u8], content: &[u8], mut outcome: Outcome) {
        let mut record = self.sealer.seal(inner);
        assert!(record.len() - 5 <= MAX_CIPHERTEXT + 16);
        if let Some(bit) = self.flip.take() {
            let bit = bit % (record.len() * 8);
            record[bit / 8] ^= 1 << (bit % 8);
            outcome = Outcome::Fatal;
        } else if record.len() - 5 > MAX_CIPHERTEXT {
            outcome = Outcome::Fatal;
        }
        self.wire.extend_from_slice(&record);
        if outcome == Outcome::Data {
            self.model.sealed.extend_from_slice(content);
            if self.model.end.is_none() {
                self.model.before_end.extend_from_slice(content);
            }
        }
        self.model.settle(outcome);
    }
}
