//! The QUIC accept side: connections from local sidecars and peer gateways,
//! and the dispatch of each tunnel stream ([`spawn_stream`], also used by
//! the TCP+TLS listener in [`crate::tcp_tls::server`]) to
//! [`crate::forward`] (sidecar → peer) or [`crate::inbound`] (peer → local
//! endpoint).
//!
//! Every stream is counted in [`InFlight`] from accept to its end, and runs
//! on the config snapshot current when it was accepted.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tracing::{debug, info_span, Instrument};
use trust_bundle::SpiffeId;
use tunnel_proto::{code, Acceptor, RejectReason};

use crate::endpoint;
use crate::handshake;
use crate::metrics::{Direction, Metrics, StreamOutcome};
use crate::peers::PeerPool;
use crate::relay::{SpliceRead, TunnelWrite};
use crate::route::{self, Caller};
use crate::state::{ConfigCell, Health, InFlight, Status};

/// Everything a stream needs, shared by all connections.
pub struct Ctx {
    /// The current config.
    pub config: Arc<ConfigCell>,
    /// Endpoint cool-downs.
    pub health: Health,
    /// Streams in flight.
    pub inflight: Arc<InFlight>,
    /// Ready/draining flags.
    pub status: Arc<Status>,
    /// Metric handles.
    pub metrics: Metrics,
    /// Connections to peer gateways.
    pub pool: PeerPool,
    /// Round-robin counter over endpoints.
    pub round_robin: AtomicUsize,
}

/// Accepts connections until the endpoint closes; refuses new ones while
/// draining.
pub async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<Ctx>) {
    while let Some(incoming) = endpoint.accept().await {
        if ctx.status.is_draining() {
            incoming.refuse();
            continue;
        }
        tokio::spawn(connection(incoming, ctx.clone()));
    }
}

async fn connection(incoming: quinn::Incoming, ctx: Arc<Ctx>) {
    let remote = incoming.remote_address();
    let timeout = ctx.config.load().timeouts.connect;
    let conn = match tokio::time::timeout(timeout, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            ctx.metrics.handshake_failed();
            debug!(%remote, error = %e, "inbound handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.handshake_failed();
            debug!(%remote, "inbound handshake timed out");
            return;
        }
    };
    let Some(id) = endpoint::peer_id(&conn) else {
        // The verifier requires a SPIFFE client certificate; without one
        // there is no caller to route for.
        conn.close(code::CLOSE_NORMAL.into(), b"no client identity");
        return;
    };
    let span = info_span!("conn", %remote, peer_id = %id);
    async move {
        debug!("connection up");
        let mut stream_no = 0u64;
        while let Ok((send, recv)) = conn.accept_bi().await {
            stream_no += 1;
            spawn_stream(&ctx, &id, stream_no, send, recv, Listener::Quic);
        }
        debug!(reason = ?conn.close_reason(), "connection closed");
    }
    .instrument(span)
    .await;
}

/// Which listener a stream arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The QUIC endpoint (`listen`): sidecars and peer gateways.
    Quic,
    /// The TCP+TLS listener (`tcp_listen`): peer gateways only.
    TcpTls,
}

/// Admits stream number `n` of a connection authenticated as `id`, and
/// spawns its handler on the current config: reset with `DRAINING` while
/// draining, rejected as overloaded past `max_streams_in_flight` (before
/// its header is read), else routed by caller: a local sidecar's stream is
/// forwarded to a peer, a peer's stream goes to a local endpoint, anyone
/// else is rejected as unauthorized. The stream counts as in flight until
/// its handler ends.
pub fn spawn_stream<W, R>(
    ctx: &Arc<Ctx>,
    id: &SpiffeId,
    n: u64,
    mut send: W,
    mut recv: R,
    listener: Listener,
) where
    W: TunnelWrite + 'static,
    R: SpliceRead + 'static,
{
    if ctx.status.is_draining() {
        handshake::abort(&mut send, &mut recv, code::DRAINING);
        return;
    }
    let config = ctx.config.load();
    if ctx.inflight.count() >= config.quic.max_streams_in_flight {
        // Refuse before reading the header, so the source can go elsewhere
        // at once (tunnel protocol: reject before payload).
        tokio::spawn(refuse(
            ctx.metrics.clone(),
            send,
            recv,
            RejectReason::Overloaded,
            "too many streams in flight at this gateway",
        ));
        return;
    }
    let guard = ctx.inflight.enter();
    let ctx = ctx.clone();
    let caller = match (listener, route::classify(&config, id)) {
        // Sidecars use QUIC; the TCP listener is for peer gateways.
        (Listener::TcpTls, Some(Caller::Sidecar(_))) => None,
        (_, caller) => caller,
    };
    let span = info_span!("stream", n, traceparent = tracing::field::Empty);
    tokio::spawn(
        async move {
            let _guard = guard;
            match caller {
                Some(Caller::Sidecar(_)) => {
                    crate::forward::outbound(&ctx, config, send, recv).await;
                }
                Some(Caller::Peer { cluster, .. }) => {
                    crate::inbound::inbound(&ctx, config, &cluster, send, recv).await;
                }
                None => {
                    refuse(
                        ctx.metrics.clone(),
                        send,
                        recv,
                        RejectReason::Unauthorized,
                        "caller is not a linked peer or a local workload",
                    )
                    .await;
                }
            }
        }
        .instrument(span),
    );
}

/// Rejects a stream without reading its header: a caller no longer
/// admitted by the config (e.g. its peer was removed by a reload), or a
/// gateway over its stream limit.
async fn refuse<W: TunnelWrite, R: SpliceRead>(
    metrics: Metrics,
    mut send: W,
    mut recv: R,
    reason: RejectReason,
    detail: &'static str,
) {
    let mut acceptor = Acceptor::new(handshake::now(), std::time::Duration::ZERO);
    let _ = handshake::respond(&mut send, &mut recv, &mut acceptor, Some((reason, detail))).await;
    metrics.stream(Direction::Inbound, &StreamOutcome::Rejected(reason));
}
