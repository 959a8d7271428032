//! tlsgate's egress policy: pure and deterministic, no I/O but reading the policy file and
//! the secret files it names, no async.
//!
//! - [`fqdn`]: host-name patterns (`matchName`, `matchPattern` with `*` and `**.`).
//! - [`Policy`]: the compiled policy and its two decisions, [`Policy::decide_connection`] (bump,
//!   splice or deny a connection to `host:port`) and [`Policy::decide_request`] (allow with
//!   header edits, or deny with a reason, each HTTP request of a bumped connection).
//! - [`load_file`]: reads tlsgate's policy format or Cilium network policies (detected by
//!   `kind:`), reporting every error with its key path and every ignored field as a [`Notice`].
//!
//! The semantics are in docs/policy.md, with a truth table the tests follow row by row.

pub mod fqdn;

mod cilium;
mod diag;
mod load;
mod model;
mod native;
mod read;
mod yaml;

pub use diag::{Notice, PolicyError, PolicyErrorKind};
pub use fqdn::{FqdnPattern, PatternError};
pub use load::{Format, LoadResult, detect_format, load_file, load_file_with, load_str};
pub use model::{
    ConnectionVerdict, DefaultAction, DenyReason, EditOutcome, ExpectedValue, FullMatch,
    HeaderCondition, HeaderEdit, HttpRule, MismatchAction, Origin, Policy, PortRange, RequestFacts,
    RequestVerdict, Rule, RuleRef, TlsAction, TlsSecretRef,
};
pub use read::LoadOptions;
