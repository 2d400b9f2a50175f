//! Outbound streams: a local sidecar's tunnel stream, forwarded on the
//! pooled connection to the peer gateway its header names (a QUIC stream,
//! or an HTTP/2 CONNECT stream when the peer's transport is `tcp-tls`); the
//! peer's response is relayed back, then bytes are spliced both ways.
//!
//! Peer unreachable (no connection, stream not opened, handshake failed)
//! → reject `PeerUnavailable`; unknown target cluster → `UnknownCluster`.

use std::sync::Arc;

use tracing::{debug, info};
use tunnel_proto::{code, Acceptor, OpenHeader, OpenerEvent, RejectReason};

use crate::config::Config;
use crate::handshake;
use crate::metrics::{Direction, StreamOutcome};
use crate::peers::PeerConn;
use crate::relay::{self, SpliceRead, TunnelWrite};
use crate::route::{self, OutboundPlan};
use crate::server::Ctx;

/// The sidecar's side of a stream whose header has been read.
struct Downstream<W, R> {
    send: W,
    recv: R,
    acceptor: Acceptor,
    /// Payload the sidecar pipelined after its header.
    early: Vec<u8>,
    /// `cluster/namespace/service:port`, for logs.
    target: String,
}

/// Handles one stream from a local sidecar on `config`.
pub async fn outbound<W: TunnelWrite, R: SpliceRead>(
    ctx: &Ctx,
    config: Arc<Config>,
    mut send: W,
    mut recv: R,
) {
    let m = &ctx.metrics;
    let mut acceptor = Acceptor::new(handshake::now(), config.timeouts.header);
    let (header, early) = match handshake::read_header(&mut recv, &mut acceptor).await {
        Ok(h) => h,
        Err(e) => {
            debug!(error = %e, "tunnel header failed");
            handshake::abort(&mut send, &mut recv, e.reset_code());
            m.stream(Direction::Outbound, &StreamOutcome::Failed);
            return;
        }
    };
    if let Some(tp) = &header.traceparent {
        // W3C Trace Context from the opener: ties this stream's logs to the
        // same stream at the other gateway and at both sidecars.
        tracing::Span::current().record("traceparent", tp.as_str());
    }
    let mut down = Downstream {
        send,
        recv,
        acceptor,
        early,
        target: format!(
            "{}/{}/{}:{}",
            header.target_cluster, header.namespace, header.service, header.port
        ),
    };
    let peer = match route::route_outbound(&config, &header) {
        OutboundPlan::Forward { peer, .. } => peer,
        OutboundPlan::Reject(r) => return finish_reject(ctx, &mut down, r.reason, &r.detail).await,
    };
    let wait = config.timeouts.connect;
    // A peer we cannot reach or open a stream to is "peer unavailable", so
    // the sidecar can try another cluster.
    let conn = match ctx.pool.connection(&peer, wait).await {
        Ok(c) => c,
        Err(e) => {
            let detail = e.to_string();
            return finish_reject(ctx, &mut down, RejectReason::PeerUnavailable, &detail).await;
        }
    };
    let cannot_open = || format!("cannot open a stream to the gateway of {peer}");
    match conn {
        PeerConn::Quic(c) => match tokio::time::timeout(wait, c.open_bi()).await {
            Ok(Ok((psend, precv))) => {
                to_peer(ctx, &config, &peer, &header, down, psend, precv).await;
            }
            _ => {
                let detail = cannot_open();
                finish_reject(ctx, &mut down, RejectReason::PeerUnavailable, &detail).await;
            }
        },
        PeerConn::TcpTls(c) => match c.open_stream(wait).await {
            Ok((psend, precv)) => {
                to_peer(ctx, &config, &peer, &header, down, psend, precv).await;
            }
            Err(e) => {
                debug!(peer, error = %e, "cannot open a CONNECT stream");
                let detail = cannot_open();
                finish_reject(ctx, &mut down, RejectReason::PeerUnavailable, &detail).await;
            }
        },
    }
}

/// Opens the tunnel on a stream to `peer`'s gateway, relays its answer to
/// the sidecar and, once accepted, splices both streams.
async fn to_peer<W, R, PW, PR>(
    ctx: &Ctx,
    config: &Config,
    peer: &str,
    header: &OpenHeader,
    mut down: Downstream<W, R>,
    mut psend: PW,
    mut precv: PR,
) where
    W: TunnelWrite,
    R: SpliceRead,
    PW: TunnelWrite,
    PR: SpliceRead,
{
    let m = &ctx.metrics;
    let timeout = handshake::open_timeout(config.timeouts.header, config.timeouts.connect);
    match handshake::open(&mut psend, &mut precv, header, timeout).await {
        OpenerEvent::Accepted { early_data } => {
            if handshake::respond(&mut down.send, &mut down.recv, &mut down.acceptor, None)
                .await
                .is_err()
            {
                handshake::abort(&mut psend, &mut precv, code::PEER_RESET);
                m.stream(Direction::Outbound, &StreamOutcome::Failed);
                return;
            }
            let early = std::mem::take(&mut down.early);
            let early_ok = (early.is_empty() || psend.write_all(&early).await.is_ok())
                && (early_data.is_empty() || down.send.write_all(&early_data).await.is_ok());
            if !early_ok {
                handshake::abort(&mut psend, &mut precv, code::PEER_RESET);
                handshake::abort(&mut down.send, &mut down.recv, code::PEER_RESET);
                m.stream(Direction::Outbound, &StreamOutcome::Failed);
                return;
            }
            m.stream(Direction::Outbound, &StreamOutcome::Accepted);
            let target = down.target;
            debug!(%target, "tunnel open");
            let copied = relay::run((down.recv, down.send), (precv, psend)).await;
            let up = copied.to_upstream + early.len() as u64;
            let down = copied.to_downstream + early_data.len() as u64;
            m.bytes(Direction::Outbound, up);
            m.bytes(Direction::Inbound, down);
            debug!(%target, bytes_out = up, bytes_in = down, aborted = copied.aborted, "tunnel closed");
        }
        OpenerEvent::Rejected { reason, detail } => {
            psend.finish_now();
            finish_reject(ctx, &mut down, reason, &detail).await;
        }
        OpenerEvent::Failed(e) => {
            handshake::abort(&mut psend, &mut precv, e.reset_code());
            let detail = format!("gateway of {peer}: {e}");
            finish_reject(ctx, &mut down, RejectReason::PeerUnavailable, &detail).await;
        }
    }
}

async fn finish_reject<W: TunnelWrite, R: SpliceRead>(
    ctx: &Ctx,
    down: &mut Downstream<W, R>,
    reason: RejectReason,
    detail: &str,
) {
    let target = &down.target;
    info!(%target, %reason, detail, "outbound stream rejected");
    let _ = handshake::respond(
        &mut down.send,
        &mut down.recv,
        &mut down.acceptor,
        Some((reason, detail)),
    )
    .await;
    ctx.metrics
        .stream(Direction::Outbound, &StreamOutcome::Rejected(reason));
}
