//! The tlsgate runtime.
