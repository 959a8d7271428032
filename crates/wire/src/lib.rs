//! Pure, bounded parsers over `&[u8]` for the first bytes of a connection.
//!
//! Nothing here consumes bytes: callers keep their buffer and replay it. Every parser returns one of
//! three outcomes — complete, need more bytes, or invalid — and never panics on any input.

pub mod authority;
pub mod client_hello;
pub mod http_head;

pub use authority::host_of;
pub use client_hello::{ClientHelloInfo, HelloError, Peek, peek_client_hello};
pub use http_head::{HttpSniff, looks_like_http_request};
