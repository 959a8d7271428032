//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Upper bound on `--concurrency` and `--hold`: far above what one 2-core machine sustains, low
/// enough that a typo cannot exhaust memory.
pub const MAX_CONNECTIONS: usize = 100_000;
/// Default bound on each connect, handshake and request (seconds).
pub const DEFAULT_TIMEOUT_SECS: f64 = 10.0;
/// Default deadline for the whole run (seconds).
pub const DEFAULT_DURATION_SECS: f64 = 30.0;
/// Default number of failed attempts after which the run stops early.
pub const DEFAULT_MAX_ERRORS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One connection per worker, reused for every request.
    Keepalive,
    /// A new TCP (+ TLS) connection for every request; latency includes the handshakes.
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpVersion {
    /// HTTP/1.1 (ALPN offers only http/1.1).
    #[value(name = "1")]
    H1,
    /// HTTP/2 (ALPN offers only h2; plain http uses prior knowledge).
    #[value(name = "2")]
    H2,
}

/// HTTP(S) load generator: CONNECT proxy, TLS, HTTP/1.1 and HTTP/2, JSON results.
#[derive(Debug, Parser)]
#[command(name = "tlsgate-load", version)]
pub struct Args {
    /// The URL to GET: https://host[:port]/path or http://host[:port]/path.
    pub url: http::Uri,

    /// Dial this address instead of resolving the URL's host (the TLS name and Host stay the URL's).
    #[arg(long, value_name = "IP:PORT")]
    pub connect: Option<SocketAddr>,

    /// Go through this HTTP CONNECT proxy (https URLs only); CONNECT names the URL's host and port.
    #[arg(long, value_name = "IP:PORT")]
    pub proxy: Option<SocketAddr>,

    /// TLS server name to send and verify (default: the URL's host, or the `--names` name).
    #[arg(long)]
    pub sni: Option<String>,

    /// Host header / :authority (default: the URL's authority, or the `--names` name).
    #[arg(long)]
    pub host: Option<String>,

    /// Trust the CA certificates in this PEM file (repeatable). Without it, nothing is trusted.
    #[arg(long, value_name = "FILE")]
    pub cacert: Vec<PathBuf>,

    /// HTTP version to speak.
    #[arg(long, value_enum, default_value = "1")]
    pub http: HttpVersion,

    /// Connection reuse.
    #[arg(long, value_enum, default_value = "keepalive")]
    pub mode: Mode,

    /// Total requests across all workers (0: until the deadline).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub requests: u64,

    /// Deadline for the whole run, seconds.
    #[arg(short = 'd', long, default_value_t = DEFAULT_DURATION_SECS)]
    pub duration: f64,

    /// Concurrent workers (each with its own connection).
    #[arg(short = 'c', long, default_value_t = 1)]
    pub concurrency: usize,

    /// Per-connection host names: `{}` is replaced by the request index modulo `--name-count`. The
    /// name is the CONNECT host, the TLS server name and the Host header of that connection.
    #[arg(long, value_name = "PATTERN")]
    pub names: Option<String>,

    /// How many distinct names `--names` cycles through.
    #[arg(long, default_value_t = 1)]
    pub name_count: u64,

    /// Open this many connections (one request each), report, then keep them idle until the
    /// deadline. For memory-per-connection measurements.
    #[arg(long, value_name = "N")]
    pub hold: Option<usize>,

    /// Bound on each connect, proxy handshake, TLS handshake and request, seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: f64,

    /// Stop early after this many failed attempts.
    #[arg(long, default_value_t = DEFAULT_MAX_ERRORS)]
    pub max_errors: u64,

    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Allow TLS session resumption on new connections (default: every handshake is a full one).
    #[arg(long)]
    pub resume: bool,
}
