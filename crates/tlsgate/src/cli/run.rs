//! `tlsgate run`: load, bind, serve until a signal, drain.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use tlsgate_proxy::Gateway;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use super::fail;
use crate::config;

pub fn run(path: &Path, log_level: Option<&str>) -> ExitCode {
    if let Err(err) = init_tracing(log_level) {
        return fail(&err);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime");
    let result = runtime.and_then(|rt| rt.block_on(serve(path)));
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

async fn serve(path: &Path) -> anyhow::Result<()> {
    let config = config::load(path).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow!(
            "invalid config {} (`tlsgate check` reports the same):\n  {}",
            path.display(),
            lines.join("\n  ")
        )
    })?;
    let grace = config.timeouts.shutdown_grace;
    // Before announcing the listeners: a supervisor may signal as soon as it sees them.
    let mut signals = Signals::new()?;
    let gateway = Gateway::bind(config).await.context("binding listeners")?;
    for (name, addr) in gateway.local_addrs() {
        println!("listening: {name} {addr}");
        tracing::info!(listener = %name, %addr, "listening");
    }

    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let first = signals.next().await;
        tracing::info!(signal = first, grace = ?grace, "shutting down; a second signal exits at once");
        token.cancel();
        let second = signals.next().await;
        tracing::warn!(signal = second, "second signal, exiting without draining");
        std::process::exit(1);
    });
    gateway.run(shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
