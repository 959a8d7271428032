//! The tlsgate binary: see `cli` for the commands and `config` for the file format.

mod cli;
mod config;
mod paths;

fn main() -> std::process::ExitCode {
    cli::main()
}
