//! Helpers for the hostile-input suite: a flow collector, a healthy client whose request rate is
//! measured in windows, attackers' raw tools (ClientHello builder, HTTP/2 frame writer, HTTP/1
//! heads) and a panic counter.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use tlsgate_proxy::flow::FlowRecord;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Where attackers connect from (the default source for 127.0.0.1).
pub const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// Where the healthy client connects from: another source, as on a real network.
pub const HEALTHY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// Where the origins live: the only loopback address the destination guard lets through.
pub const ORIGIN_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// How long any single wait in the suite may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// A TCP connection from `src` to `dst`, within [`WAIT`].
pub async fn tcp_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    let tcp = tokio::time::timeout(WAIT, socket.connect(dst))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Reads and discards until the peer closes (or fails); `false` if still open after [`WAIT`].
pub async fn closed_by_peer<S: AsyncRead + Unpin>(io: &mut S) -> bool {
    let mut sink = vec![0u8; 16 * 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Writes `request`, reads the whole answer (the peer closes: `Connection: close`, at most 4 MiB)
/// and returns the status code.
pub async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    request: &[u8],
) -> Result<u16, String> {
    io.write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::with_capacity(4096);
    let read = tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 8192];
        loop {
            match io.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) if answer.len() + n <= 4 << 20 => answer.extend_from_slice(&chunk[..n]),
                Ok(_) => return Err("answer larger than 4 MiB".to_owned()),
                // A TLS peer closing without close_notify after a complete answer is fine.
                Err(_) if !answer.is_empty() => return Ok(()),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    })
    .await
    .map_err(|_| "no complete answer within 15 s".to_owned())?;
    read?;
    status_of(&answer).ok_or_else(|| format!("no status line in {} bytes", answer.len()))
}

/// Reads a response head (up to 64 KiB) and returns its status; the stream stays usable.
pub async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<u16, String> {
    let mut head = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    tokio::time::timeout(WAIT, async {
        while !head.ends_with(b"\r\n\r\n") {
            match io.read(&mut byte).await {
                Ok(1) if head.len() < 64 * 1024 => head.push(byte[0]),
                Ok(_) => return Err(format!("head ended after {} bytes", head.len())),
                Err(e) => return Err(format!("read head: {e}")),
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| "no response head within 15 s".to_owned())??;
    status_of(&head).ok_or_else(|| "no status line".to_owned())
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `CONNECT authority` to an HTTP proxy on `io` and returns the status of the answer.
pub async fn proxy_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    authority: &str,
) -> Result<u16, String> {
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write CONNECT: {e}"))?;
    read_head(io).await
}

// --- attackers' payloads ---

/// Bytes that are neither TLS nor HTTP (deterministic, high bit set).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as u8) | 0x80
        })
        .collect()
}

/// A ClientHello (one record) with the given extensions: TLS 1.3 cipher suite, no session id.
pub fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend((0u8..32).map(|i| i.wrapping_mul(37)));
    body.push(0);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
    let mut exts = Vec::new();
    for (kind, data) in extensions {
        exts.extend_from_slice(&kind.to_be_bytes());
        exts.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        exts.extend_from_slice(data);
    }
    body.extend_from_slice(&u16::try_from(exts.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&exts);
    let mut message = vec![1];
    message.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&u16::try_from(message.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&message);
    record
}

/// A `server_name` extension holding one host name.
pub fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
    let mut entry = vec![0];
    entry.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
    entry.extend_from_slice(name);
    let mut data = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
    data.extend_from_slice(&entry);
    (0, data)
}

/// A record and handshake header announcing a 1 MiB ClientHello, then 1 MiB of filler.
pub fn one_megabyte_hello() -> Vec<u8> {
    let len: u32 = 1 << 20;
    let mut bytes = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01];
    bytes.extend_from_slice(&len.to_be_bytes()[1..]);
    bytes.resize(len as usize, 0x41);
    bytes
}

/// An HTTP/1.1 request head with one header of `value_len` bytes.
pub fn huge_header_request(target: &str, host: &str, value_len: usize) -> Vec<u8> {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Big: ").into_bytes();
    head.resize(head.len() + value_len, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// An HTTP/1.1 request head with `count` small headers.
pub fn many_headers_request(target: &str, host: &str, count: usize) -> Vec<u8> {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    for i in 0..count {
        head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

// --- a small HTTP/2 frame writer ---

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;

/// One HTTP/2 frame.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes()[1..]);
    frame.push(kind);
    frame.push(flags);
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The client preface and an empty SETTINGS frame.
pub fn h2_start() -> Vec<u8> {
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(FRAME_SETTINGS, 0, 0, &[]));
    out
}

/// HPACK for `GET https://authority/` (static-table indices, literal authority, no Huffman).
pub fn hpack_get(authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84, 0x01];
    block.push(u8::try_from(authority.len()).expect("authority under 127 bytes"));
    block.extend_from_slice(authority.as_bytes());
    block
}

/// Rapid reset (CVE-2023-44487): `streams` requests, each cancelled at once.
pub fn h2_rapid_reset(authority: &str, streams: u32) -> Vec<u8> {
    let mut out = h2_start();
    let block = hpack_get(authority);
    for i in 0..streams {
        let id = 2 * i + 1;
        out.extend(h2_frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            id,
            &block,
        ));
        out.extend(h2_frame(FRAME_RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    out
}

/// CONTINUATION flood (CVE-2024-27316 class): a HEADERS frame without END_HEADERS followed by
/// `frames` CONTINUATION frames, each a small valid HPACK literal, never ending the block.
pub fn h2_continuation_flood(authority: &str, frames: usize) -> Vec<u8> {
    let mut out = h2_start();
    out.extend(h2_frame(FRAME_HEADERS, 0, 1, &hpack_get(authority)));
    // Literal header field without indexing, new name "x-flood", value "a".
    let literal = [0x00, 7, b'x', b'-', b'f', b'l', b'o', b'o', b'd', 1, b'a'];
    for _ in 0..frames {
        out.extend(h2_frame(FRAME_CONTINUATION, 0, 1, &literal));
    }
    out
}

// --- flows ---

/// Every flow record of one gateway, drained from its bus as they come.
#[derive(Clone)]
pub struct Collector {
    records: Arc<Mutex<Vec<Arc<FlowRecord>>>>,
}

impl Collector {
    pub fn start(mut rx: tlsgate_proxy::flow::FlowSubscriber) -> Self {
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(record) => sink.lock().unwrap().push(record),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        panic!("flow collector lagged by {n} records")
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Self { records }
    }

    /// How many records have been collected: a case reads only the records after its mark (a
    /// client port may be reused by a later case).
    pub fn mark(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// The reasons (with the flow's detail) of the flows after `mark` from each of `clients`,
    /// waiting (≤ [`WAIT`]) until every one has at least one flow with a reason.
    pub async fn reasons(
        &self,
        mark: usize,
        clients: &[SocketAddr],
    ) -> HashMap<SocketAddr, Vec<(&'static str, String)>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut found: HashMap<SocketAddr, Vec<(&'static str, String)>> = HashMap::new();
            {
                let records = self.records.lock().unwrap();
                for record in records.iter().skip(mark) {
                    if let Some(reason) = record.reason {
                        let detail = record.detail.clone().unwrap_or_default();
                        found
                            .entry(record.client)
                            .or_default()
                            .push((reason, detail));
                    }
                }
            }
            found.retain(|addr, _| clients.contains(addr));
            if found.len() == clients.len() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// --- the clients' own runtimes ---

/// The runtime the attackers run on, apart from the gateway's: on a real network they are other
/// machines, so their tasks must not queue in the gateway's run queues nor count as its work.
pub fn attackers() -> &'static tokio::runtime::Runtime {
    static ATTACKERS: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    ATTACKERS.get_or_init(|| client_runtime("attackers"))
}

/// The runtime the healthy client runs on, apart from the gateway's and the attackers'.
pub fn healthy_clients() -> &'static tokio::runtime::Runtime {
    static HEALTHY_CLIENTS: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    HEALTHY_CLIENTS.get_or_init(|| client_runtime("healthy"))
}

/// One worker thread: the machine has two cores, which the gateway's runtime (the test's) uses.
/// Held in a static, never dropped (dropping a runtime inside another one panics).
fn client_runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("hostile-{name}"))
        .enable_all()
        .build()
        .expect("building a client runtime")
}

// --- the healthy client ---

/// A client that repeats one request in a loop, counting successes; its rate is measured as the
/// median of short windows.
pub struct Healthy {
    ok: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A loop bound: no healthy client runs more requests than this, nor longer than 10 minutes.
const HEALTHY_MAX_REQUESTS: u64 = 5_000_000;
const HEALTHY_MAX_RUN: Duration = Duration::from_secs(600);

impl Healthy {
    pub fn spawn<F, Fut>(request: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = healthy_clients().spawn({
            let (ok, errors, stop) = (ok.clone(), errors.clone(), stop.clone());
            async move {
                let started = Instant::now();
                for _ in 0..HEALTHY_MAX_REQUESTS {
                    if stop.is_cancelled() || started.elapsed() > HEALTHY_MAX_RUN {
                        return;
                    }
                    match tokio::time::timeout(WAIT, request()).await {
                        Ok(Ok(())) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => push_bounded(&errors, e),
                        Err(_) => push_bounded(&errors, "request timed out".to_owned()),
                    }
                }
            }
        });
        Self {
            ok,
            errors,
            stop,
            task,
        }
    }

    /// Successful requests per second: the median of `windows` windows of `len`, and all of them.
    pub async fn rate(&self, windows: usize, len: Duration) -> (f64, Vec<f64>) {
        let mut rates = Vec::with_capacity(windows);
        for _ in 0..windows {
            let before = self.ok.load(Ordering::Relaxed);
            let started = Instant::now();
            tokio::time::sleep(len).await;
            let done = self.ok.load(Ordering::Relaxed) - before;
            rates.push(done as f64 / started.elapsed().as_secs_f64());
        }
        let mut sorted = rates.clone();
        sorted.sort_by(f64::total_cmp);
        (sorted[sorted.len() / 2], rates)
    }

    /// Errors so far (at most 100 kept).
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    pub fn completed(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

fn push_bounded(errors: &Mutex<Vec<String>>, error: String) {
    let mut errors = errors.lock().unwrap();
    if errors.len() < 100 {
        errors.push(error);
    }
}

// --- panics ---

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: OnceLock<()> = OnceLock::new();

/// Counts every panic in the process from now on (the previous hook still prints it).
pub fn count_panics() {
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

// --- file descriptors ---

/// Makes sure the process may hold `needed` descriptors (500 slow clients hold two each here:
/// the client's and the gateway's side), raising the soft and hard limit with prlimit (root).
pub fn ensure_nofile(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if soft >= needed {
        return;
    }
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={needed}:{needed}"),
        ])
        .status()
        .expect("running prlimit to raise RLIMIT_NOFILE");
    assert!(
        status.success(),
        "raising RLIMIT_NOFILE to {needed} failed (the suite needs root or a higher limit)"
    );
}

// --- a plain HTTP origin on 127.0.0.2 ---

/// Counts the connections a listener on 127.0.0.1 accepts (it must see none).
pub async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ATTACKER, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    (addr, count)
}

/// An HTTP/1.1 origin on 127.0.0.2 answering every request with `ok`.
pub async fn spawn_ok_origin() -> SocketAddr {
    let listener = TcpListener::bind((ORIGIN_IP, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}
