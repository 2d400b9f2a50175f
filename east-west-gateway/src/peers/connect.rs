//! One connection attempt to a peer gateway over its transport
//! ([`Dialer`]), and holding a connection until it closes or the peer's
//! DNS answer moves away from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::resolve::{resolve, sleep_until, Resolved};
use super::{PeerConn, PoolContext};
use crate::config::{PeerAddress, PeerConfig, PeerTransport, QuicConfig};
use crate::endpoint::{self, EndpointError};
use crate::route::HopIdentity;
use crate::tcp_tls::client::{DialError, H2Connection};
use crate::tcp_tls::{self, H2Settings};

/// How to reach one peer: its transport's client config.
pub(super) enum Dialer {
    /// QUIC from the shared endpoint.
    Quic(quinn::ClientConfig),
    /// HTTP/2 over TLS/TCP, with the `tcp_congestion` of the config.
    TcpTls(Arc<rustls::ClientConfig>, H2Settings, Option<String>),
}

/// Why a peer's client config could not be built.
#[derive(Debug, thiserror::Error)]
pub(super) enum DialerError {
    /// The QUIC client config.
    #[error("quic client config")]
    Quic(#[source] EndpointError),
    /// The TLS client config of the TCP+TLS transport.
    #[error("tcp+tls client config")]
    Tls(#[source] rustls::Error),
}

impl Dialer {
    /// The dialer for `peer`, which must present its configured identity;
    /// `tcp_congestion` is the config key of that name.
    pub(super) fn new(
        ctx: &PoolContext,
        peer: &PeerConfig,
        quic: &QuicConfig,
        tcp_congestion: Option<&str>,
    ) -> Result<Dialer, DialerError> {
        let hop = match &peer.spiffe_id {
            Some(id) => HopIdentity::Exact(id.clone()),
            None => HopIdentity::MemberOf(peer.trust_domain.clone()),
        };
        Ok(match peer.transport {
            PeerTransport::Quic => Dialer::Quic(
                endpoint::client_config(ctx.source.clone(), ctx.store.clone(), &hop, quic)
                    .map_err(DialerError::Quic)?,
            ),
            PeerTransport::TcpTls(_) => Dialer::TcpTls(
                tcp_tls::tls::client_config(ctx.source.clone(), ctx.store.clone(), &hop)
                    .map_err(DialerError::Tls)?,
                H2Settings::new(quic),
                tcp_congestion.map(str::to_owned),
            ),
        })
    }
}

/// Why one connect attempt failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// quinn refused to start the attempt.
    #[error("connect")]
    Start(#[source] quinn::ConnectError),
    /// The handshake failed.
    #[error("handshake")]
    Handshake(#[source] quinn::ConnectionError),
    /// The handshake did not finish within `connect_ms`.
    #[error("handshake timed out")]
    TimedOut,
    /// The TCP+TLS connection could not be set up.
    #[error("tcp+tls")]
    TcpTls(#[source] DialError),
}

/// One attempt to connect to `addr` within `timeout`; a failed handshake
/// is counted in the metrics.
pub(super) async fn connect(
    ctx: &PoolContext,
    dialer: &Dialer,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<PeerConn, ConnectError> {
    let client = match dialer {
        Dialer::Quic(c) => c,
        Dialer::TcpTls(tls, settings, congestion) => {
            return H2Connection::dial(
                addr,
                tls.clone(),
                *settings,
                congestion.as_deref(),
                timeout,
                &ctx.metrics,
                ctx.shutdown.clone(),
            )
            .await
            .map(PeerConn::TcpTls)
            .map_err(ConnectError::TcpTls);
        }
    };
    let connecting = ctx
        .endpoint
        .connect_with(client.clone(), addr, endpoint::SERVER_NAME)
        .map_err(ConnectError::Start)?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(PeerConn::Quic(conn)),
        Ok(Err(quinn::ConnectionError::TimedOut)) | Err(_) => Err(ConnectError::TimedOut),
        Ok(Err(e)) => {
            ctx.metrics.handshake_failed();
            Err(ConnectError::Handshake(e))
        }
    }
}

/// Waits until `conn` closes, re-resolving a DNS address whenever its TTL
/// ends. Returns `true` if the peer's addresses no longer include the one we
/// are connected to.
pub(super) async fn hold(
    ctx: &PoolContext,
    address: &PeerAddress,
    conn: &PeerConn,
    resolved: &mut Option<Resolved>,
    v4_only: bool,
    silence: Option<Duration>,
) -> bool {
    let watchdog = watchdog(conn, silence);
    tokio::pin!(watchdog);
    loop {
        let expiry = resolved.as_ref().and_then(|r| r.valid_until);
        tokio::select! {
            _ = conn.closed() => return false,
            () = &mut watchdog => {
                warn!(address = %address, silence_ms = silence.map_or(0, |d| d.as_millis() as u64), "nothing heard from the peer gateway replica; connection declared lost");
                conn.close("replica silent");
                return false;
            }
            () = sleep_until(expiry) => {
                match resolve(ctx, address, v4_only).await {
                    Ok(r) => {
                        let moved = !r.addrs.contains(&conn.remote_address());
                        *resolved = Some(r);
                        if moved {
                            return true;
                        }
                    }
                    Err(e) => {
                        warn!(address = %address, error = %e, "re-resolving the peer address failed; keeping the connection");
                        // Retry later rather than spin on a failing resolver.
                        if let Some(r) = resolved.as_mut() {
                            r.valid_until = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                        }
                    }
                }
            }
        }
    }
}

/// Resolves when nothing at all has arrived on `conn` for `silence`
/// ([`PeerConn::rx_progress`]); never without a `silence`. With keep-alives
/// on, a live peer answers at least every keep-alive interval, so
/// `silence` (at least two intervals, see the pool) means it is gone: the
/// connection is declared lost long before the idle timeout, and the
/// streams relayed over it are reset.
async fn watchdog(conn: &PeerConn, silence: Option<Duration>) {
    let Some(silence) = silence else {
        return std::future::pending().await;
    };
    let tick = (silence / 4).max(Duration::from_millis(10));
    let mut last = conn.rx_progress();
    let mut heard_at = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = conn.rx_progress();
        if now != last {
            last = now;
            heard_at = tokio::time::Instant::now();
        } else if heard_at.elapsed() >= silence {
            return;
        }
    }
}
