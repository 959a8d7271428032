//! The tlsgate runtime: listeners, detection, edge, relay, tunnel transports, upstream connect, flows.

pub mod config;
pub mod gateway;
pub mod tls;
pub use gateway::{BindError, Gateway};
pub mod admin;
pub mod admit;
pub mod bufs;
pub mod context;
pub mod detect;
pub mod edge;
pub mod error;
pub mod flow;
pub mod forward;
pub mod h2io;
pub mod http_server;
pub mod http_util;
pub mod intercept;
pub mod io;
pub mod metrics;
pub mod outer;
pub mod policy;
pub mod relay;
pub mod reload;
pub mod route;
pub mod transport;
pub mod upstream;
pub mod workers;
