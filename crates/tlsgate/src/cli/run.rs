//! `tlsgate run`: load (or, without a config, make the default intercepting proxy), bind, serve
//! until a signal, drain. SIGHUP re-reads the config and swaps it in (see docs/config.md, Reload).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use tlsgate_ca::{Algorithm, CaParams, CertAuthority};
use tlsgate_proxy::Gateway;
use tlsgate_proxy::config::Config;
use tlsgate_proxy::reload::ConfigSource;
use tlsgate_proxy::workers::{Placement, Workers};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use super::fail;
use crate::{config, paths};

/// Where `tlsgate run` without `--config` listens: loopback only, so the machine's own
/// clients can use it without exposing a bumping proxy to the network; 8080 is the customary
/// proxy port.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Common name of the CA `run` creates on first use.
const DEFAULT_CA_NAME: &str = "tlsgate local interception CA";
/// Validity of that CA: ten years, so a CA users have trusted does not expire under them.
const DEFAULT_CA_DAYS: u32 = 3650;
/// The URL in the printed trust line.
const TRY_URL: &str = "https://example.com/";

/// `config`: the file to run; `None` runs the default intercepting proxy on `listen`.
/// `workers`: the threads that serve connections; `None`: one per CPU core. `placement`: which of
/// them takes a new connection.
pub fn run(
    config: Option<&Path>,
    listen: SocketAddr,
    log_level: Option<&str>,
    workers: Option<u16>,
    placement: Placement,
) -> ExitCode {
    if let Err(err) = init_tracing(log_level) {
        return fail(&err);
    }
    crate::heap::keep_freed_buffers();
    let workers = workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    // This thread runs the admin API, signals and reloads; the workers accept and serve the
    // connections, each on its own single-threaded runtime (tlsgate_proxy::workers).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime");
    let result = runtime.and_then(|rt| {
        let workers =
            Arc::new(Workers::start(workers, placement).context("starting the worker threads")?);
        rt.block_on(async {
            match config {
                Some(path) => serve(load_file(path)?, None, file_source(path), workers).await,
                None => {
                    let (config, ca_cert, dir) = default_proxy(listen)?;
                    serve(config, Some(ca_cert), default_source(listen, dir), workers).await
                }
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// `--log-level` wins over RUST_LOG; without either, `info`.
fn init_tracing(log_level: Option<&str>) -> anyhow::Result<()> {
    // The filter error's Display already includes its source; keep it out of the chain.
    let filter = match log_level {
        Some(level) => {
            EnvFilter::try_new(level).map_err(|err| anyhow!("--log-level {level:?}: {err}"))?
        }
        None => match std::env::var("RUST_LOG") {
            Ok(spec) => {
                EnvFilter::try_new(&spec).map_err(|err| anyhow!("RUST_LOG={spec:?}: {err}"))?
            }
            Err(_) => EnvFilter::new("info"),
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|err| anyhow!("setting up logging: {err}"))
}

fn load_file(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow!(
            "invalid config {} (`tlsgate check` reports the same):\n  {}",
            path.display(),
            lines.join("\n  ")
        )
    })
}

/// Reloads re-read `path` and validate it fully, every problem one line with its key path.
fn file_source(path: &Path) -> ConfigSource {
    let path = path.to_path_buf();
    std::sync::Arc::new(move || {
        config::load(&path).map_err(|problems| problems.iter().map(ToString::to_string).collect())
    })
}

/// Reloads of the default proxy re-load its CA from `dir` (e.g. after `tlsgate ca init --force`).
fn default_source(listen: SocketAddr, dir: PathBuf) -> ConfigSource {
    std::sync::Arc::new(move || {
        config::default_intercept(listen, &dir)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect())
    })
}

/// The config of `run` without `--config`, the path of its CA certificate and the CA directory.
/// Creates the CA in the default directory if there is none yet.
fn default_proxy(listen: SocketAddr) -> anyhow::Result<(Config, PathBuf, PathBuf)> {
    let dir = paths::default_ca_dir().map_err(|e| anyhow!("finding the CA directory: {e}"))?;
    let cert = dir.join(tlsgate_ca::CA_CERT_PEM);
    if !cert.exists() {
        create_ca(&dir)?;
        say(format_args!(
            "created a new interception CA in {}",
            dir.display()
        ));
    }
    let config = config::default_intercept(listen, &dir).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow!(
            "the default intercepting proxy cannot start:\n  {}",
            lines.join("\n  ")
        )
    })?;
    Ok((config, cert, dir))
}

fn create_ca(dir: &Path) -> anyhow::Result<()> {
    let params = CaParams {
        common_name: DEFAULT_CA_NAME.to_owned(),
        algorithm: Algorithm::EcdsaP256,
        days: DEFAULT_CA_DAYS,
    };
    let ca = CertAuthority::generate(&params).context("generating the interception CA")?;
    ca.save(dir)
        .with_context(|| format!("saving the interception CA to {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "created interception CA");
    Ok(())
}

/// Serves `config` until a signal; `ca_cert` (the default proxy's CA) adds the line that shows
/// how to trust it; SIGHUP reloads from `source`.
async fn serve(
    config: Config,
    ca_cert: Option<PathBuf>,
    source: ConfigSource,
    workers: Arc<Workers>,
) -> anyhow::Result<()> {
    let grace = config.timeouts.shutdown_grace;
    // Before announcing the listeners: a supervisor may signal as soon as it sees them.
    let mut signals = Signals::new()?;
    let gateway = Gateway::bind(config)
        .await
        .context("binding listeners")?
        .with_workers(workers);
    let reloader = gateway.reloader();
    reloader.set_source(source);
    let addrs = gateway.local_addrs();
    for (name, addr) in &addrs {
        say(format_args!("listening: {name} {addr}"));
        tracing::info!(listener = %name, %addr, "listening");
    }
    if let (Some(cert), Some((_, addr))) = (ca_cert, addrs.first()) {
        let proxy = reachable(*addr);
        say(format_args!("CA certificate: {}", cert.display()));
        say(format_args!(
            "trust it per request, e.g.: curl --cacert {} -x http://{proxy} {TRY_URL}",
            shell_quote(&cert.display().to_string())
        ));
        tracing::info!(ca_cert = %cert.display(), "bumping with this CA; clients must trust it");
    }

    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        loop {
            match signals.next().await {
                // Off the signal loop, so a SIGTERM during a slow reload is seen at once.
                Signal::Hangup if !token.is_cancelled() => {
                    let reloader = reloader.clone();
                    tokio::spawn(async move {
                        let _ = reloader.reload("SIGHUP").await;
                    });
                }
                Signal::Hangup => tracing::info!("SIGHUP while shutting down: not reloading"),
                Signal::Stop(name) if !token.is_cancelled() => {
                    tracing::info!(signal = name, grace = ?grace, "shutting down; a second signal exits at once");
                    token.cancel();
                }
                Signal::Stop(name) => {
                    tracing::warn!(signal = name, "second signal, exiting without draining");
                    std::process::exit(1);
                }
            }
        }
    });
    gateway.run(shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// One line on stdout for whoever started us. A closed stdout (the supervisor went away) must not
/// stop the gateway, so write errors are ignored; the same facts are logged.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `text` as one shell word: unchanged when it is plainly safe, else single-quoted.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// An address a local client can connect to: the loopback address for a wildcard listener.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// SIGINT, SIGTERM and SIGHUP as one stream.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

/// What a signal asks for.
enum Signal {
    /// SIGINT or SIGTERM (named): drain and stop; the second one exits at once.
    Stop(&'static str),
    /// SIGHUP: reload the config.
    Hangup,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        // SIGUSR1 reopens the access log (flow/access_log.rs). Without one configured it must not
        // fall back to the default action, which ends the process: logrotate's `postrotate kill
        // -USR1` or a stray signal would take the gateway down. Registering a handler (kept for
        // the process's life by tokio) makes it a no-op here.
        drop(signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?);
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// The next signal received.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Stop("SIGINT"),
            _ = self.terminate.recv() => Signal::Stop("SIGTERM"),
            _ = self.hangup.recv() => Signal::Hangup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_paths_that_need_it() {
        assert_eq!(
            shell_quote("/home/a/.local/ca.pem"),
            "/home/a/.local/ca.pem"
        );
        assert_eq!(shell_quote("/home/a b/ca.pem"), "'/home/a b/ca.pem'");
        assert_eq!(shell_quote("/it's/ca.pem"), r"'/it'\''s/ca.pem'");
    }

    #[test]
    fn points_clients_at_loopback_for_wildcard_listeners() {
        let v4: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(reachable(v4).to_string(), "127.0.0.1:8080");
        let v6: SocketAddr = "[::]:3128".parse().expect("addr");
        assert_eq!(reachable(v6).to_string(), "[::1]:3128");
        let fixed: SocketAddr = "192.0.2.1:8080".parse().expect("addr");
        assert_eq!(reachable(fixed), fixed);
    }
}
