//! The edge role (the customer side): detect → decide → tunnel.

pub mod http;
pub mod passthrough;
