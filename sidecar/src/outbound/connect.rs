//! Carries out one plan candidate: a TCP connection to a sidecar in this
//! cluster, or a tunnel stream through the local gateway, then the inner
//! mTLS handshake checked against the candidate's final identity.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tunnel_proto::OpenHeader;

use crate::config::{Gateway, Protocol};
use crate::errors::ProxyError;
use crate::io::Transport;
use crate::metrics::{Route, UpstreamLabels};
use crate::plan::Candidate;
use crate::runtime::{Shared, Snapshot};

/// Connects to `candidate` and completes the inner TLS handshake (ALPN of
/// `protocol`), all within `connect_timeout` (the service's
/// `resilience.timeouts.connect_ms`). Marks direct endpoints healthy or
/// failed; the caller reports the attempt to
/// [`crate::health::HealthState::report`].
///
/// # Errors
/// [`ProxyError::Connect`], [`ProxyError::ConnectTimeout`],
/// [`ProxyError::Rejected`], [`ProxyError::Tunnel`], [`ProxyError::Tls`].
pub async fn connect_tls(
    shared: &Arc<Shared>,
    snapshot: &Snapshot,
    candidate: &Candidate,
    protocol: Protocol,
    connect_timeout: std::time::Duration,
) -> Result<TlsStream<Transport>, ProxyError> {
    let timeout = connect_timeout;
    let attempt = async {
        let transport = transport(shared, snapshot, candidate, connect_timeout).await?;
        let config = shared
            .tls
            .client(candidate.final_identity(), protocol)
            .map_err(|e| ProxyError::Tls(std::io::Error::other(e)))?;
        TlsConnector::from(config)
            .connect(trust_bundle::tls::spiffe_server_name(), transport)
            .await
            .map_err(ProxyError::Tls)
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::ConnectTimeout),
    };
    let route = match candidate {
        Candidate::Direct { addr, .. } => {
            match &result {
                Ok(_) => shared.health.mark_ok(*addr),
                Err(_) => shared.health.mark_failed(*addr, Instant::now()),
            }
            Route::Direct
        }
        Candidate::ViaGateway { .. } => Route::Gateway,
    };
    if result.is_ok() {
        shared
            .metrics
            .upstream_connections
            .get_or_create(&UpstreamLabels {
                route,
                protocol: protocol.to_string(),
            })
            .inc();
    }
    result
}

async fn transport(
    shared: &Arc<Shared>,
    snapshot: &Snapshot,
    candidate: &Candidate,
    connect_timeout: std::time::Duration,
) -> Result<Transport, ProxyError> {
    match candidate {
        Candidate::Direct { addr, .. } => {
            let s = TcpStream::connect(addr)
                .await
                .map_err(|source| ProxyError::Connect {
                    addr: *addr,
                    source,
                })?;
            let _ = s.set_nodelay(true);
            Ok(Transport::Tcp(s))
        }
        Candidate::ViaGateway {
            gateway_addr,
            gateway_identity,
            cluster,
            service,
            port,
            final_identity,
        } => {
            let gateway = match &snapshot.config.gateway {
                Some(g) if g.address == *gateway_addr => g.clone(),
                _ => Gateway {
                    address: *gateway_addr,
                    replicas: vec![*gateway_addr],
                    spiffe_id: gateway_identity.clone(),
                    keep_alive: std::time::Duration::from_millis(
                        crate::config::DEFAULT_GATEWAY_KEEP_ALIVE_MS,
                    ),
                    idle_timeout: std::time::Duration::from_millis(
                        crate::config::DEFAULT_GATEWAY_IDLE_TIMEOUT_MS,
                    ),
                },
            };
            let header = OpenHeader {
                target_cluster: cluster.clone(),
                namespace: service.namespace.clone(),
                service: service.name.clone(),
                port: *port,
                expected_identity: final_identity.clone(),
                traceparent: new_traceparent(),
                tracestate: None,
            };
            tracing::debug!(traceparent = ?header.traceparent, %cluster, "opening a tunnel stream");
            let stream = shared
                .tunnel
                .open(&gateway, &header, connect_timeout)
                .await
                .map_err(|e| ProxyError::from_open(cluster, e))?;
            Ok(Transport::Tunnel(stream))
        }
    }
}

/// A fresh W3C Trace Context `traceparent` (version 00, random trace and
/// parent IDs, not sampled) for one tunnel stream, so the stream can be
/// followed in both gateways' logs; `None` if the system RNG fails.
fn new_traceparent() -> Option<String> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut ids = [0u8; 24];
    SystemRandom::new().fill(&mut ids).ok()?;
    let hex: String = ids.iter().map(|b| format!("{b:02x}")).collect();
    // All-zero IDs are invalid (W3C Trace Context §3.2.2.3–4); 2^-64 odds.
    if ids[..16].iter().all(|b| *b == 0) || ids[16..].iter().all(|b| *b == 0) {
        return None;
    }
    Some(format!("00-{}-{}-00", &hex[..32], &hex[32..]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn traceparents_are_valid_and_fresh() {
        let a = super::new_traceparent().unwrap();
        let b = super::new_traceparent().unwrap();
        assert_ne!(a, b);
        let header = tunnel_proto::OpenHeader {
            target_cluster: "b".into(),
            namespace: "ns".into(),
            service: "svc".into(),
            port: 1,
            expected_identity: trust_bundle::SpiffeId::parse("spiffe://b.test/x").unwrap(),
            traceparent: Some(a),
            tracestate: None,
        };
        // The tunnel codec enforces the W3C shape.
        let bytes = header.encode().unwrap();
        let (decoded, _) = tunnel_proto::OpenHeader::decode(&bytes).unwrap().unwrap();
        assert_eq!(decoded, header);
    }
}
