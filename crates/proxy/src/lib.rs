//! The tlsgate runtime: listeners, detection, edge, relay, tunnel transports, upstream connect, flows.

pub mod config;
pub mod gateway;
pub mod tls;
pub use gateway::{BindError, Gateway};
