//! Outbound streams: a local sidecar's tunnel stream, forwarded on the
//! pooled connection to the peer gateway its header names (a QUIC stream,
//! or an HTTP/2 CONNECT stream when the peer's transport is `tcp-tls`); the
//! peer's response is relayed back, then bytes are spliced both ways.
//!
//! With several replicas of the peer's gateway (`peers[].addresses`) the
//! stream tries them in the pool's order ([`crate::peers::select`]): a
//! replica that sends nothing at all within `timeouts.peer_open_ms` after
//! the OPEN header, or whose connection refuses the stream, has its
//! connection declared lost (closed, which resets its other streams at
//! once) and the same header goes to the next replica. This is legal
//! because no payload has been relayed yet: what the sidecar pipelined
//! stays here until an accept.
//!
//! Peer unreachable (every replica down or failed) → reject
//! `PeerUnavailable`; unknown target cluster → `UnknownCluster`.

use std::sync::Arc;

use tracing::{debug, info, warn};
use tunnel_proto::{code, Acceptor, HandshakeError, OpenHeader, OpenerEvent, RejectReason};

use crate::config::Config;
use crate::handshake;
use crate::metrics::{Direction, StreamOutcome};
use crate::peers::select::{self, AttemptFailure, Disposition};
use crate::peers::PeerConn;
use crate::relay::{self, SpliceRead, TunnelWrite};
use crate::route::{self, OutboundPlan};
use crate::server::Ctx;
use crate::tcp_tls::client::OpenError;

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
    let candidates = match ctx.pool.candidates(&peer) {
        Ok(c) => c,
        Err(e) => {
            let detail = e.to_string();
            return finish_reject(ctx, &mut down, RejectReason::PeerUnavailable, &detail).await;
        }
    };
    let mut detail = format!("no replica of the gateway of {peer} answered");
    for cand in candidates {
        let failure = match cand.connection(wait).await {
            None => AttemptFailure::NoConnection,
            Some(conn) => {
                let attempt = match &conn {
                    PeerConn::Quic(c) => match tokio::time::timeout(wait, c.open_bi()).await {
                        Ok(Ok((psend, precv))) => {
                            to_peer(ctx, &config, &peer, &header, down, &conn, psend, precv).await
                        }
                        Ok(Err(_)) => Err((down, AttemptFailure::StreamRefused)),
                        Err(_) => Err((down, AttemptFailure::StreamLimit)),
                    },
                    PeerConn::TcpTls(c) => match c.open_stream(wait).await {
                        Ok((psend, precv)) => {
                            to_peer(ctx, &config, &peer, &header, down, &conn, psend, precv).await
                        }
                        Err(OpenError::TimedOut) => Err((down, AttemptFailure::StreamLimit)),
                        Err(e) => {
                            debug!(peer, error = %e, "cannot open a CONNECT stream");
                            Err((down, AttemptFailure::StreamRefused))
                        }
                    },
                };
                match attempt {
                    Ok(()) => return,
                    Err((d, failure)) => {
                        down = d;
                        if select::dispose(failure) == Disposition::MarkDownAndNext {
                            warn!(peer, replica = %cand.address, ?failure, "peer gateway replica declared lost; its streams are reset");
                            conn.close("replica unresponsive");
                        }
                        failure
                    }
                }
            }
        };
        debug!(peer, replica = %cand.address, ?failure, "replica attempt failed");
        detail = format!("gateway of {peer}, replica {}: {failure:?}", cand.address);
        if select::dispose(failure) == Disposition::GiveUp {
            break;
        }
    }
    finish_reject(ctx, &mut down, RejectReason::PeerUnavailable, &detail).await;
}

/// Opens the tunnel on a stream to a replica of `peer`'s gateway on
/// `conn`, relays its answer to the sidecar and, once accepted, splices
/// both streams. Without an answer the stream to the replica is reset and
/// the sidecar's side comes back with why, for the next replica.
#[allow(clippy::too_many_arguments)]
async fn to_peer<W, R, PW, PR>(
    ctx: &Ctx,
    config: &Config,
    peer: &str,
    header: &OpenHeader,
    mut down: Downstream<W, R>,
    conn: &PeerConn,
    mut psend: PW,
    mut precv: PR,
) -> Result<(), (Downstream<W, R>, AttemptFailure)>
where
    W: TunnelWrite,
    R: SpliceRead,
    PW: TunnelWrite,
    PR: SpliceRead,
{
    let m = &ctx.metrics;
    let timeout = handshake::open_timeout(config.timeouts.header, config.timeouts.connect);
    let heard = conn.rx_progress();
    let event = {
        let open = handshake::open(&mut psend, &mut precv, header, timeout);
        tokio::pin!(open);
        let first = tokio::select! {
            ev = &mut open => Some(ev),
            () = tokio::time::sleep(config.timeouts.peer_open) => None,
        };
        match first {
            Some(ev) => Some(ev),
            // Not a packet (not even an ACK of the header) since the header
            // went out: the replica is gone.
            None if conn.rx_progress() == heard => None,
            // Alive, just slow (still trying its endpoints): keep waiting.
            None => Some(open.await),
        }
    };
    let Some(event) = event else {
        handshake::abort(&mut psend, &mut precv, code::CANCELLED);
        return Err((down, AttemptFailure::Silent));
    };
    match event {
        OpenerEvent::Accepted { early_data } => {
            if handshake::respond(&mut down.send, &mut down.recv, &mut down.acceptor, None)
                .await
                .is_err()
            {
                handshake::abort(&mut psend, &mut precv, code::PEER_RESET);
                m.stream(Direction::Outbound, &StreamOutcome::Failed);
                return Ok(());
            }
            let early = std::mem::take(&mut down.early);
            let early_ok = (early.is_empty() || psend.write_all(&early).await.is_ok())
                && (early_data.is_empty() || down.send.write_all(&early_data).await.is_ok());
            if !early_ok {
                handshake::abort(&mut psend, &mut precv, code::PEER_RESET);
                handshake::abort(&mut down.send, &mut down.recv, code::PEER_RESET);
                m.stream(Direction::Outbound, &StreamOutcome::Failed);
                return Ok(());
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
            Ok(())
        }
        OpenerEvent::Rejected { reason, detail } => {
            psend.finish_now();
            finish_reject(ctx, &mut down, reason, &detail).await;
            Ok(())
        }
        OpenerEvent::Failed(e) => {
            handshake::abort(&mut psend, &mut precv, e.reset_code());
            debug!(peer, error = %e, "no answer from a replica of the peer gateway");
            let failure = match e {
                HandshakeError::TimedOut => AttemptFailure::Slow,
                HandshakeError::Reset(_) | HandshakeError::Closed => AttemptFailure::Reset,
                HandshakeError::Header(_) | HandshakeError::Response(_) => AttemptFailure::Protocol,
            };
            Err((down, failure))
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
