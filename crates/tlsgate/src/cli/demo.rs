//! `tlsgate demo ...`: reserved. Nothing here pretends to work yet.

use std::process::ExitCode;

pub fn tunnel() -> ExitCode {
    eprintln!("tlsgate demo tunnel: not yet implemented");
    ExitCode::from(2)
}
