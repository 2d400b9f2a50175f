//! Inbound streams: a peer gateway's tunnel stream, routed by
//! [`route::route_inbound`] to a local endpoint. Endpoints are tried in the
//! plan's order, each within `connect_ms`; one that fails is skipped for a
//! short cool-down. Then bytes are spliced between the QUIC stream and the
//! TCP connection: FIN ↔ `shutdown(Write)`, reset ↔ RST.
//!
//! The stream may come over QUIC or as an HTTP/2 CONNECT stream from
//! [`crate::tcp_tls`]: the code path is the same.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::{debug, info, warn};
use tunnel_proto::{code, Acceptor, RejectReason};

use crate::config::Config;
use crate::handshake;
use crate::metrics::{Direction, StreamOutcome};
use crate::relay::{self, SpliceRead, TcpRead, TcpWrite, TunnelWrite};
use crate::route::{self, InboundPlan};
use crate::server::Ctx;

/// Handles one stream from the gateway of cluster `peer` on `config`.
pub async fn inbound<W: TunnelWrite, R: SpliceRead>(
    ctx: &Ctx,
    config: Arc<Config>,
    peer: &str,
    mut send: W,
    mut recv: R,
) {
    let m = &ctx.metrics;
    let mut acceptor = Acceptor::new(handshake::now(), config.timeouts.header);
    let (header, early) = match handshake::read_header(&mut recv, &mut acceptor).await {
        Ok(h) => h,
        Err(e) => {
            debug!(peer, error = %e, "tunnel header failed");
            handshake::abort(&mut send, &mut recv, e.reset_code());
            m.stream(Direction::Inbound, &StreamOutcome::Failed);
            return;
        }
    };
    if let Some(tp) = &header.traceparent {
        // W3C Trace Context from the opener: ties this stream's logs to the
        // same stream at the other gateway and at both sidecars.
        tracing::Span::current().record("traceparent", tp.as_str());
    }
    let target = format!("{}/{}:{}", header.namespace, header.service, header.port);
    let pick = ctx.round_robin.fetch_add(1, Ordering::Relaxed);
    let now = tokio::time::Instant::now();
    let plan = route::route_inbound(
        &config,
        peer,
        &header,
        |a| ctx.health.is_healthy(a, now),
        pick,
    );
    let endpoints = match plan {
        InboundPlan::Connect { endpoints, .. } => endpoints,
        InboundPlan::Reject(r) => {
            info!(peer, %target, reason = %r.reason, detail = %r.detail, "inbound stream rejected");
            let _ = handshake::respond(
                &mut send,
                &mut recv,
                &mut acceptor,
                Some((r.reason, &r.detail)),
            )
            .await;
            m.stream(Direction::Inbound, &StreamOutcome::Rejected(r.reason));
            return;
        }
    };
    let mut tcp = None;
    for addr in endpoints {
        match tokio::time::timeout(config.timeouts.connect, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                ctx.health.mark_ok(addr);
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => {
                warn!(%addr, error = %e, "endpoint refused; cooling down");
                ctx.health.mark_failed(addr, tokio::time::Instant::now());
            }
            Err(_) => {
                warn!(%addr, "endpoint connect timed out; cooling down");
                ctx.health.mark_failed(addr, tokio::time::Instant::now());
            }
        }
    }
    let Some(tcp) = tcp else {
        let reason = RejectReason::NoHealthyEndpoint;
        let detail = format!("no endpoint of {target} accepted a connection");
        info!(peer, %target, %reason, "inbound stream rejected");
        let _ =
            handshake::respond(&mut send, &mut recv, &mut acceptor, Some((reason, &detail))).await;
        m.stream(Direction::Inbound, &StreamOutcome::Rejected(reason));
        return;
    };
    let _ = tcp.set_nodelay(true);
    if handshake::respond(&mut send, &mut recv, &mut acceptor, None)
        .await
        .is_err()
    {
        m.stream(Direction::Inbound, &StreamOutcome::Failed);
        return;
    }
    let (r, w) = tcp.into_split();
    let mut w = TcpWrite(Some(w));
    if !early.is_empty() && relay::SpliceWrite::write_all(&mut w, &early).await.is_err() {
        handshake::abort(&mut send, &mut recv, code::PEER_RESET);
        m.stream(Direction::Inbound, &StreamOutcome::Failed);
        return;
    }
    m.stream(Direction::Inbound, &StreamOutcome::Accepted);
    debug!(peer, %target, "tunnel open");
    let copied = relay::run((recv, send), (TcpRead(r), w)).await;
    let to_local = copied.to_upstream + early.len() as u64;
    m.bytes(Direction::Inbound, to_local);
    m.bytes(Direction::Outbound, copied.to_downstream);
    debug!(peer, %target, bytes_in = to_local, bytes_out = copied.to_downstream, aborted = copied.aborted, "tunnel closed");
}
