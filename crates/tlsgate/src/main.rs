//! The tlsgate binary: see `cli` for the commands and `config` for the file format (both in
//! `lib.rs`, so the config parser can be fuzzed).

/// jemalloc rather than glibc's malloc: measured on the benchmark (docs/performance.md), it cut
/// the h2 tunnel's bulk-transfer CPU by about a fifth and an idle intercepted connection's memory
/// by about 40 %, with the tunnels' idle memory unchanged.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tlsgate::main()
}
