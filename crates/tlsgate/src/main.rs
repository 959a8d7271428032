//! The tlsgate binary: see `cli` for the commands and `config` for the file format (both in
//! `lib.rs`, so the config parser can be fuzzed).

fn main() -> std::process::ExitCode {
    tlsgate::main()
}
