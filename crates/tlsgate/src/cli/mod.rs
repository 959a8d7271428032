//! Command line: `run`, `check`, `demo` and `ca`. Each command returns an exit code; errors are
//! printed with their whole context chain.

mod ca;
mod check;
mod demo;
mod observe;
mod policy;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

const LONG_ABOUT: &str = "\
tlsgate is a TLS-aware egress gateway. One binary, one YAML config, three jobs:

  1. Tunnel through an SNI firewall (edge / relay).
     The edge (customer side) accepts TLS (listener kind tls-passthrough) and plain HTTP (kind
     http), reads the ClientHello or request head without terminating anything, and carries the
     exact bytes to a relay inside an outer TLS 1.3 connection named for the relay (HTTP/2 CONNECT
     streams by default). The relay (provider side, kind relay) terminates that outer TLS,
     optionally requiring client certificates, and routes each inner connection by SNI / CONNECT
     authority / Host to an upstream listed in its routes.
  2. TLS interception (kind intercept): a forward proxy, explicit (HTTP CONNECT, absolute-form
     requests) or transparent (iptables REDIRECT, original destination), that per connection
     bumps (mints a certificate from a local CA, or mimics the verified origin's, and re-encrypts
     to the origin), splices (bytes untouched, SNI logged) or denies. Origins are verified; what
     is wrong with a bad origin certificate is said in the 502 body.
  3. L7 policy and flows: one flow record per connection and per HTTP request (logged at info).
     Cilium-style HTTP rules are not configurable yet.

A config file may hold listeners of any kind; the format is in docs/config.md.
`tlsgate check` reports every problem in a file at once, each with its key path.";

const EXAMPLES: &str = "\
EXAMPLES:
  Validate configs without binding sockets (parses, loads certificates and keys, builds TLS):
    tlsgate check --config examples/firewall-tunnel/edge.yaml
    tlsgate check --config examples/firewall-tunnel/relay.yaml

  Run the relay on the provider side, then the edge on the customer side:
    tlsgate run --config examples/firewall-tunnel/relay.yaml
    tlsgate run --config examples/firewall-tunnel/edge.yaml --log-level debug

  Try an edge and a relay together on this machine (two origins, both transports, checks printed):
    tlsgate demo tunnel

  An intercepting proxy on 127.0.0.1:8080 with a CA made on first use (prints how to trust it):
    tlsgate run
    curl --cacert ~/.local/share/tlsgate/ca/ca.pem -x http://127.0.0.1:8080 https://example.com/

  The interception CA: create it explicitly, inspect it, issue a leaf offline:
    tlsgate ca init --algorithm ecdsa-p256
    tlsgate ca show
    tlsgate ca issue www.example.com --ip 192.0.2.10

  Watch a running tlsgate's flows (its config says admin: {listen: 127.0.0.1:9901}):
    tlsgate observe --last 50 --http-status 4+
    tlsgate observe -f -o json

Logging: RUST_LOG (e.g. RUST_LOG=tlsgate_proxy=debug) unless --log-level is given.
Stop `run` with SIGINT or SIGTERM: listeners close, in-flight work gets timeouts.shutdown_grace;
a second signal exits at once.";

#[derive(Debug, Parser)]
#[command(name = "tlsgate", version, about, long_about = LONG_ABOUT, after_long_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the listeners of a config file (or, without one, an intercepting proxy) until
    /// SIGINT/SIGTERM.
    Run(RunArgs),
    /// Validate a config file without binding sockets; report every problem with its key path.
    Check(ConfigArg),
    /// Self-contained demonstrations on this machine.
    #[command(subcommand)]
    Demo(DemoCommand),
    /// Create, show and issue from the interception CA.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Check a policy file (tlsgate's or Cilium's) and dry-run requests against it.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Show flows from a running tlsgate's admin API, like `hubble observe`.
    Observe(observe::ObserveArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The YAML config file (see docs/config.md).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The YAML config file (see docs/config.md). Without it: an explicit intercepting proxy on
    /// --listen that bumps everything with a CA created on first use in the data directory.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Without --config: the proxy's address.
    #[arg(long, value_name = "ADDR", conflicts_with = "config", default_value_t = run::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Log filter, e.g. `info` or `tlsgate_proxy=debug,info`. Overrides RUST_LOG; default `info`.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Threads that serve connections (named tlsgate-worker); default one per CPU core. Each
    /// connection stays on the thread that accepted it, with the origin connections it opens, so
    /// its requests are not handed between threads; the main thread runs the admin API and reloads.
    /// --placement says which worker takes a new connection.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Which worker takes a new connection (a connection never moves once taken).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = Placement::Fill)]
    placement: Placement,
}

/// `--placement` (tlsgate_proxy::workers::Placement).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Placement {
    /// The first worker with room (idle, or busy under 80 % of the last 10 ms): a light load or
    /// a burst of keep-alive connections stays on one thread, more spills onto the next. Cheapest
    /// where clients and origins share the cores
    Fill,
    /// The worker with the fewest open connections: long-lived connections opened in a burst are
    /// spread evenly. For machines with cores to spare
    Balance,
}

impl From<Placement> for tlsgate_proxy::workers::Placement {
    fn from(placement: Placement) -> Self {
        match placement {
            Placement::Fill => Self::Fill,
            Placement::Balance => Self::Balance,
        }
    }
}

#[derive(Debug, Subcommand)]
enum DemoCommand {
    /// An edge and a relay tunnelling to a local origin, with a client going through them.
    Tunnel,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(
            args.config.as_deref(),
            args.listen,
            args.log_level.as_deref(),
            args.workers,
            args.placement.into(),
        ),
        Command::Check(args) => check::check(&args.config),
        Command::Demo(DemoCommand::Tunnel) => demo::tunnel(),
        Command::Ca(command) => ca::run(command),
        Command::Policy(command) => policy::run(command),
        Command::Observe(args) => observe::run(args),
    }
}

/// Prints an error with its context chain and returns the failure exit code.
fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
