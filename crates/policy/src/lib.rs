//! Pure, deterministic policy building blocks. No I/O, no async.

pub mod fqdn;

pub use fqdn::{FqdnPattern, PatternError};
