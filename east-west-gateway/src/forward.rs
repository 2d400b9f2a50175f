//! Outbound streams: a local sidecar's tunnel stream, forwarded on the
//! pooled connection to the peer gateway its header names; the peer's
//! response is relayed back, then bytes are spliced both ways.
//!
//! Peer unreachable (no connection, stream not opened, handshake failed)
//! → reject `PeerUnavailable`; unknown target cluster → `UnknownCluster`.

use std::sync::Arc;

use quinn::{RecvStream, SendStream};
use tracing::{debug, info};
use tunnel_proto::{code, Acceptor, OpenerEvent, RejectReason};

use crate::config::Config;
use crate::handshake;
use crate::metrics::{Direction, StreamOutcome};
use crate::relay::{self, QuicRead, QuicWrite};
use crate::route::{self, OutboundPlan};
use crate::server::Ctx;

/// Handles one stream from a local sidecar on `config`.
pub async fn outbound(ctx: &Ctx, config: Arc<Config>, mut send: SendStream, mut recv: RecvStream) {
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
    let target = format!(
        "{}/{}/{}:{}",
        header.target_cluster, header.namespace, header.service, header.port
    );
    let peer = match route::route_outbound(&config, &header) {
        OutboundPlan::Forward { peer, .. } => peer,
        OutboundPlan::Reject(r) => {
            return finish_reject(
                ctx,
                &mut send,
                &mut recv,
                &mut acceptor,
                r.reason,
                &r.detail,
                &target,
            )
            .await;
        }
    };
    let wait = config.timeouts.connect;
    // A peer we cannot reach or open a stream to is "peer unavailable", so
    // the sidecar can try another cluster.
    let opened = async {
        let conn = ctx
            .pool
            .connection(&peer, wait)
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(wait, conn.open_bi()).await {
            Ok(Ok(streams)) => Ok(streams),
            _ => Err(format!("cannot open a stream to the gateway of {peer}")),
        }
    }
    .await;
    let (mut psend, mut precv) = match opened {
        Ok(streams) => streams,
        Err(detail) => {
            return finish_reject(
                ctx,
                &mut send,
                &mut recv,
                &mut acceptor,
                RejectReason::PeerUnavailable,
                &detail,
                &target,
            )
            .await;
        }
    };
    let timeout = handshake::open_timeout(config.timeouts.header, config.timeouts.connect);
    match handshake::open(&mut psend, &mut precv, &header, timeout).await {
        OpenerEvent::Accepted { early_data } => {
            if handshake::respond(&mut send, &mut recv, &mut acceptor, None)
                .await
                .is_err()
            {
                handshake::abort(&mut psend, &mut precv, code::PEER_RESET);
                m.stream(Direction::Outbound, &StreamOutcome::Failed);
                return;
            }
            let early_ok = (early.is_empty() || psend.write_all(&early).await.is_ok())
                && (early_data.is_empty() || send.write_all(&early_data).await.is_ok());
            if !early_ok {
                handshake::abort(&mut psend, &mut precv, code::PEER_RESET);
                handshake::abort(&mut send, &mut recv, code::PEER_RESET);
                m.stream(Direction::Outbound, &StreamOutcome::Failed);
                return;
            }
            m.stream(Direction::Outbound, &StreamOutcome::Accepted);
            debug!(%target, "tunnel open");
            let copied = relay::run(
                (QuicRead(recv), QuicWrite(send)),
                (QuicRead(precv), QuicWrite(psend)),
            )
            .await;
            let up = copied.to_upstream + early.len() as u64;
            let down = copied.to_downstream + early_data.len() as u64;
            m.bytes(Direction::Outbound, up);
            m.bytes(Direction::Inbound, down);
            debug!(%target, bytes_out = up, bytes_in = down, aborted = copied.aborted, "tunnel closed");
        }
        OpenerEvent::Rejected { reason, detail } => {
            let _ = psend.finish();
            finish_reject(
                ctx,
                &mut send,
                &mut recv,
                &mut acceptor,
                reason,
                &detail,
                &target,
            )
            .await;
        }
        OpenerEvent::Failed(e) => {
            handshake::abort(&mut psend, &mut precv, e.reset_code());
            let detail = format!("gateway of {peer}: {e}");
            finish_reject(
                ctx,
                &mut send,
                &mut recv,
                &mut acceptor,
                RejectReason::PeerUnavailable,
                &detail,
                &target,
            )
            .await;
        }
    }
}

async fn finish_reject(
    ctx: &Ctx,
    send: &mut SendStream,
    recv: &mut RecvStream,
    acceptor: &mut Acceptor,
    reason: RejectReason,
    detail: &str,
    target: &str,
) {
    info!(%target, %reason, detail, "outbound stream rejected");
    let _ = handshake::respond(send, recv, acceptor, Some((reason, detail))).await;
    ctx.metrics
        .stream(Direction::Outbound, &StreamOutcome::Rejected(reason));
}
