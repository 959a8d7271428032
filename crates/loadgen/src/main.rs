//! `tlsgate-load`: the load generator behind `bench/run.sh`.
//!
//! It speaks HTTPS (HTTP/1.1 or HTTP/2 by ALPN), optionally through an HTTP CONNECT proxy, or plain
//! HTTP; reuses connections (`keepalive`) or opens one per request (`new`); stops at a request count
//! or a deadline, whichever comes first; and prints one JSON object with request rate, bytes, error
//! counts and latency percentiles. `--hold N` opens N connections and keeps them idle, for memory
//! measurements. Every wait is bounded by `--timeout` and the deadline.

mod cli;
mod dial;
mod report;
mod request;
mod run;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tlsgate-load: starting the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run::main(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tlsgate-load: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
