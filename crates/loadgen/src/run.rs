//! The run: a plan shared by workers, the worker loop, the hold mode, and the report.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::{Instant, timeout_at};

use crate::cli::{Args, HttpVersion, MAX_CONNECTIONS, Mode};
use crate::dial::{Dialer, Proto, tls_connector};
use crate::report::{Failure, Report, Tally};
use crate::request::{Sender, handshake};

/// What every worker shares.
struct Plan {
    dialer: Dialer,
    scheme: &'static str,
    url_host: String,
    url_port: u16,
    default_port: bool,
    path: String,
    host_override: Option<String>,
    names: Option<(String, u64)>,
    mode: Mode,
    limit: u64,
    deadline: Instant,
    timeout: Duration,
    max_errors: u64,
    next: AtomicU64,
    errors: AtomicU64,
}

impl Plan {
    /// The host of the connection serving request `idx`.
    fn host_for(&self, idx: u64) -> String {
        match &self.names {
            Some((pattern, count)) => pattern.replace("{}", &(idx % count).to_string()),
            None => self.url_host.clone(),
        }
    }

    /// Host header / :authority for a connection to `host`.
    fn authority_for(&self, host: &str) -> String {
        if let Some(h) = &self.host_override {
            return h.clone();
        }
        if self.default_port {
            host.to_owned()
        } else {
            format!("{host}:{}", self.url_port)
        }
    }

    /// The earlier of now + timeout and the run's deadline.
    fn step_deadline(&self) -> Instant {
        (Instant::now() + self.timeout).min(self.deadline)
    }

    fn fail(&self, tally: &mut Tally, failure: Failure) {
        tally.record_err(failure);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        Instant::now() >= self.deadline || self.errors.load(Ordering::Relaxed) >= self.max_errors
    }

    /// Open a connection to `host` and run the HTTP handshake, within one step deadline.
    async fn connect(&self, host: &str) -> Result<Sender, Failure> {
        let fut = async {
            let (io, proto) = self.dialer.open(host).await?;
            handshake(io, proto).await
        };
        timeout_at(self.step_deadline(), fut)
            .await
            .map_err(|_| Failure::Timeout)?
    }

    async fn get(&self, sender: &mut Sender, authority: &str) -> Result<u64, Failure> {
        timeout_at(
            self.step_deadline(),
            sender.get(self.scheme, authority, &self.path),
        )
        .await
        .map_err(|_| Failure::Timeout)?
    }
}

pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    let concurrency = args.concurrency.clamp(1, MAX_CONNECTIONS);
    let plan = Arc::new(plan(&args)?);
    let started = Instant::now();
    if let Some(n) = args.hold {
        return hold(plan, n.min(MAX_CONNECTIONS), concurrency, started, &args).await;
    }
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        workers.push(tokio::spawn(worker(plan.clone())));
    }
    let mut total = Tally::new();
    for w in workers {
        total.merge(&w.await.context("a worker panicked")?);
    }
    let report = Report::new(
        &total,
        started.elapsed(),
        mode_name(args.mode),
        http_name(args.http),
        concurrency,
    );
    print_json(&report)?;
    Ok(if total.ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn plan(args: &Args) -> anyhow::Result<Plan> {
    let scheme = match args.url.scheme_str() {
        Some("https") => "https",
        Some("http") => "http",
        _ => anyhow::bail!("the URL must start with https:// or http://"),
    };
    let url_host = args
        .url
        .host()
        .context("the URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let default_port_number = if scheme == "https" { 443 } else { 80 };
    let url_port = args.url.port_u16().unwrap_or(default_port_number);
    let path = args
        .url
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    if args.proxy.is_some() && scheme != "https" {
        anyhow::bail!("--proxy is for https URLs (CONNECT)");
    }
    if args.names.is_some() && args.name_count == 0 {
        anyhow::bail!("--name-count must be at least 1");
    }
    let addr = match (args.proxy, args.connect) {
        (Some(proxy), _) => proxy,
        (None, Some(addr)) => addr,
        (None, None) => std::net::ToSocketAddrs::to_socket_addrs(&(url_host.as_str(), url_port))
            .with_context(|| format!("resolving {url_host}"))?
            .next()
            .with_context(|| format!("{url_host} has no address"))?,
    };
    let tls = match scheme {
        "https" => Some(tls_connector(&args.cacert, args.http, args.resume)?),
        _ => None,
    };
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).with_context(|| format!("{what}: not a duration: {s}"))
    };
    Ok(Plan {
        dialer: Dialer {
            addr,
            via_proxy: args.proxy.is_some(),
            port: url_port,
            tls,
            sni: args.sni.clone(),
            plain_proto: match args.http {
                HttpVersion::H1 => Proto::H1,
                HttpVersion::H2 => Proto::H2,
            },
        },
        scheme,
        url_host,
        url_port,
        default_port: url_port == default_port_number,
        path,
        host_override: args.host.clone(),
        names: args.names.clone().map(|p| (p, args.name_count)),
        mode: args.mode,
        limit: args.requests,
        deadline: Instant::now() + secs(args.duration, "--duration")?,
        timeout: secs(args.timeout, "--timeout")?,
        max_errors: args.max_errors.max(1),
        next: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    })
}

/// Claim request indexes until the count, the deadline or the error budget runs out.
async fn worker(plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::new();
    let mut conn: Option<(Sender, String)> = None;
    while !plan.stopped() {
        let idx = plan.next.fetch_add(1, Ordering::Relaxed);
        if plan.limit > 0 && idx >= plan.limit {
            break;
        }
        let started = Instant::now();
        let (mut sender, authority) = match conn.take() {
            Some(open) => open,
            None => {
                let host = plan.host_for(idx);
                match plan.connect(&host).await {
                    Ok(sender) => {
                        tally.alpn_h2 += u64::from(sender.is_h2());
                        let authority = plan.authority_for(&host);
                        (sender, authority)
                    }
                    Err(failure) => {
                        record_failure(&plan, &mut tally, failure);
                        continue;
                    }
                }
            }
        };
        // Keep-alive latency is the request alone; new-connection latency includes the handshakes.
        let request_started = match plan.mode {
            Mode::Keepalive => Instant::now(),
            Mode::New => started,
        };
        match plan.get(&mut sender, &authority).await {
            Ok(bytes) => {
                tally.record_ok(request_started.elapsed(), bytes);
                if plan.mode == Mode::Keepalive {
                    conn = Some((sender, authority));
                }
            }
            Err(failure) => record_failure(&plan, &mut tally, failure),
        }
    }
    tally
}

/// A timeout caused by the run's own deadline is the end of the run, not a failure.
fn record_failure(plan: &Plan, tally: &mut Tally, failure: Failure) {
    if failure == Failure::Timeout && Instant::now() >= plan.deadline {
        return;
    }
    plan.fail(tally, failure);
}

/// Open `n` connections (one request each), print the report, keep them idle until the deadline.
async fn hold(
    plan: Arc<Plan>,
    n: usize,
    concurrency: usize,
    started: Instant,
    args: &Args,
) -> anyhow::Result<ExitCode> {
    let mut openers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let plan = plan.clone();
        openers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut held = Vec::new();
            while !plan.stopped() {
                let idx = plan.next.fetch_add(1, Ordering::Relaxed);
                if idx >= n as u64 {
                    break;
                }
                let host = plan.host_for(idx);
                let authority = plan.authority_for(&host);
                let t = Instant::now();
                let mut sender = match plan.connect(&host).await {
                    Ok(sender) => sender,
                    Err(failure) => {
                        record_failure(&plan, &mut tally, failure);
                        continue;
                    }
                };
                match plan.get(&mut sender, &authority).await {
                    Ok(bytes) => {
                        tally.record_ok(t.elapsed(), bytes);
                        held.push(sender);
                    }
                    Err(failure) => record_failure(&plan, &mut tally, failure),
                }
            }
            (tally, held)
        }));
    }
    let mut total = Tally::new();
    let mut held = Vec::with_capacity(n);
    for opener in openers {
        let (tally, senders) = opener.await.context("an opener panicked")?;
        total.merge(&tally);
        held.extend(senders);
    }
    let mut report = Report::new(
        &total,
        started.elapsed(),
        "hold",
        http_name(args.http),
        concurrency,
    );
    report.held = Some(held.len());
    print_json(&report)?;
    tokio::time::sleep_until(plan.deadline).await;
    drop(held);
    Ok(if total.ok as usize == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_json(report: &Report) -> anyhow::Result<()> {
    let line = serde_json::to_string(report).context("encoding the report")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing the report")?;
    out.flush().context("writing the report")
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Keepalive => "keepalive",
        Mode::New => "new",
    }
}

fn http_name(version: HttpVersion) -> &'static str {
    match version {
        HttpVersion::H1 => "1",
        HttpVersion::H2 => "2",
    }
}
