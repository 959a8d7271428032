//! A tiny DNS server on loopback UDP whose answers a test can change while it runs: every A query
//! gets the current IPv4 list, every AAAA query the current IPv6 list (any name), with a short TTL.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// The TTL of every answer: short, so resolvers that honour it ask again soon.
pub const TEST_DNS_TTL_SECS: u32 = 1;

/// A running test DNS server; it stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    answers: Arc<Mutex<Vec<IpAddr>>>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    /// Starts a server on `127.0.0.1:0` answering with `ips`.
    pub async fn start(ips: &[IpAddr]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind test DNS");
        let addr = socket.local_addr().expect("test DNS address");
        let answers = Arc::new(Mutex::new(ips.to_vec()));
        let queries = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(socket, answers.clone(), queries.clone()));
        Self {
            addr,
            answers,
            queries,
            task,
        }
    }

    /// Replaces the addresses every later answer carries.
    pub fn set_answers(&self, ips: &[IpAddr]) {
        *self.answers.lock().expect("test DNS answers") = ips.to_vec();
    }

    /// Queries answered so far (A and AAAA).
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, answers: Arc<Mutex<Vec<IpAddr>>>, queries: Arc<AtomicUsize>) {
    let mut buf = [0u8; 512];
    while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
        let ips = answers.lock().map(|a| a.clone()).unwrap_or_default();
        if let Some(reply) = answer(&buf[..n], &ips) {
            queries.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// The reply to one query, or `None` for something that is not a query we can parse.
fn answer(query: &[u8], ips: &[IpAddr]) -> Option<Vec<u8>> {
    let n = query.len();
    if n < 12 {
        return None;
    }
    // Question: labels until a zero byte, then QTYPE and QCLASS.
    let mut i = 12;
    while i < n && query[i] != 0 {
        i += 1 + query[i] as usize;
    }
    let question_end = i + 5;
    if question_end > n {
        return None;
    }
    let qtype = u16::from_be_bytes([query[i + 1], query[i + 2]]);
    let records: Vec<Vec<u8>> = ips
        .iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), 1) => Some(v4.octets().to_vec()),
            (IpAddr::V6(v6), 28) => Some(v6.octets().to_vec()),
            _ => None,
        })
        .collect();
    let mut reply = Vec::with_capacity(64 + records.len() * 28);
    reply.extend_from_slice(&query[..2]); // id
    reply.extend_from_slice(&[0x81, 0x80]); // response, recursion available, no error
    reply.extend_from_slice(&[0, 1]); // one question
    reply.extend_from_slice(&(records.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..question_end]);
    for data in records {
        reply.extend_from_slice(&[0xc0, 0x0c]); // name: pointer to the question
        reply.extend_from_slice(&qtype.to_be_bytes());
        reply.extend_from_slice(&[0, 1]); // class IN
        reply.extend_from_slice(&TEST_DNS_TTL_SECS.to_be_bytes());
        reply.extend_from_slice(&(data.len() as u16).to_be_bytes());
        reply.extend_from_slice(&data);
    }
    Some(reply)
}
