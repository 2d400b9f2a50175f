//! Inbound: terminates the inner mTLS from peer sidecars (directly or
//! through a gateway tunnel), authorizes the caller's SPIFFE ID against the
//! listener's allow list during the handshake, and forwards to the app on
//! localhost: HTTP ([`http`]) with the caller in
//! `x-forwarded-client-cert`, or opaque TCP ([`tcp`]).

pub mod http;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Protocol;
use crate::metrics::HandshakeLabels;
use crate::runtime::{Shared, Snapshot};

/// Serves one connection on the inbound listener at `listen`.
pub async fn serve(
    shared: Arc<Shared>,
    listen: SocketAddr,
    stream: TcpStream,
    snapshot: Arc<Snapshot>,
    peer: SocketAddr,
) {
    let (Some(entry), Some(tls)) = (
        snapshot.config.inbound_at(listen).cloned(),
        snapshot.inbound_tls.get(&listen).cloned(),
    ) else {
        return;
    };
    let handshake = TlsAcceptor::from(tls).accept(stream);
    let count = |result: &'static str| {
        shared
            .metrics
            .inbound_handshakes
            .get_or_create(&HandshakeLabels { result })
            .inc();
    };
    let tls = match tokio::time::timeout(snapshot.config.timeouts.tls_handshake, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            count("failed");
            tracing::info!(%listen, %peer, error = %e, "inbound tls handshake failed");
            return;
        }
        Err(_) => {
            count("timeout");
            tracing::info!(%listen, %peer, "inbound tls handshake timed out");
            return;
        }
    };
    let Some(caller) = trust_bundle::verify::peer_spiffe_id(tls.get_ref().1.peer_certificates())
    else {
        // Unreachable with a verifier that requires a client SVID; refuse
        // rather than forward an unauthenticated caller.
        count("failed");
        return;
    };
    count("ok");
    tracing::debug!(%listen, %peer, %caller, "inbound connection authenticated");
    match entry.protocol {
        Protocol::Http => http::serve(shared, entry, snapshot, tls, caller).await,
        Protocol::Tcp => tcp::serve(shared, entry, snapshot, tls, caller).await,
    }
}
