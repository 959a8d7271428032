//! The relay role (the provider side): accept the outer TLS → detect the inner connection → route by
//! the inner SNI / CONNECT authority / Host → splice or forward. The inner TLS is never terminated.
//!
//! One port serves every transport, told apart by the outer ALPN: `h2` (CONNECT streams and forwarded
//! requests, as tlsgate edges and Envoy's `tunneling_config` send them), `http/1.1` (HTTP/1.1 CONNECT,
//! e.g. `curl --proxy https://relay`), or none (the raw `tls` transport: the inner ClientHello follows).

mod h2;
mod raw;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::admit::{ClientIdentity, Permit, TunnelLimit};
use crate::config::RelayListener;
use crate::context::{ConnCtx, Shared};
use crate::error::ConnError;
use crate::flow::{Mode, Role};
use crate::http_server::serve_http1;
use crate::io::Moved;

pub use service::RelayService;

/// Serves one outer connection to the relay.
pub async fn serve(
    tcp: TcpStream,
    client: SocketAddr,
    listener: Arc<str>,
    relay: &RelayListener,
    shared: Arc<Shared>,
    tunnels: Arc<TunnelLimit>,
) {
    // Boxed: the TLS session (about 1 KiB) then moves by pointer through the layers below
    // instead of being copied into each one's future, which an idle tunnel would hold for its life.
    let tls = match tokio::time::timeout(
        shared.timeouts.handshake,
        crate::outer::accept(relay.tls.clone(), tcp),
    )
    .await
    {
        Ok(Ok(tls)) => Box::new(tls),
        Ok(Err(e)) => {
            let ctx = ConnCtx::new(listener, Role::Relay, Mode::Splice, client);
            ctx.finish(
                &shared,
                Moved::default(),
                &Err(ConnError::ClientHandshake(e)),
            );
            return;
        }
        Err(_) => {
            let ctx = ConnCtx::new(listener, Role::Relay, Mode::Splice, client);
            ctx.finish(
                &shared,
                Moved::default(),
                &Err(ConnError::ClientHandshakeTimeout),
            );
            return;
        }
    };
    let alpn = tls.alpn_protocol().map(<[u8]>::to_vec);
    // The client certificate (verified by the handshake when mTLS is configured) names the client
    // for its tunnel limit; without one, its address does.
    let cert = tls.peer_certificate();
    let identity = ClientIdentity::of(cert.map(|c| c.as_ref()), client.ip());
    let admission = Admission { tunnels, identity };
    let service = RelayService::new(
        listener.clone(),
        client,
        relay.routes.clone(),
        shared.clone(),
        admission.clone(),
    );
    let conn = ConnCtx::new(listener.clone(), Role::Relay, Mode::Splice, client);
    // The HTTP servers are boxed so that a raw tunnel, the common per-connection case, does not
    // carry their (larger) state in its future.
    match alpn.as_deref() {
        Some(crate::tls::ALPN_H2) => {
            let _h2 = shared.flows.metrics().relay_h2_conn();
            Box::pin(h2::serve(tls, service, &shared, conn)).await;
        }
        Some(_) => Box::pin(serve_http1(tls, service, &shared, conn)).await,
        None => {
            raw::serve(
                tls,
                client,
                listener,
                relay,
                service,
                shared.clone(),
                &admission,
            )
            .await
        }
    }
}

/// A relay client's identity and the listener's tunnel counts, checked for each tunnel it opens.
#[derive(Debug, Clone)]
pub struct Admission {
    tunnels: Arc<TunnelLimit>,
    identity: ClientIdentity,
}

impl Admission {
    /// A slot for one more tunnel, or `client_tunnel_limit`.
    fn admit_tunnel(&self) -> Result<Permit<ClientIdentity>, ConnError> {
        self.tunnels
            .try_admit(self.identity.clone())
            .ok_or(ConnError::ClientTunnelLimit)
    }
}
