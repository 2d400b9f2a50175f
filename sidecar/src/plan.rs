//! Routing decisions: a pure function from a config snapshot, a target and a
//! health view to an ordered [`Plan`] of candidates (STYLE.md habit 4).
//!
//! Order: healthy endpoints of this cluster (round robin, rotated by the
//! counter the caller passes), then the `remote` clusters in config order
//! through the local gateway, then — as a last resort, when nothing else is
//! left — the local endpoints currently marked unhealthy. An outbound
//! `cluster:` pin restricts the plan to that cluster. Each candidate names
//! the identity of the next hop and of the final workload separately: the
//! same for a direct hop, the gateway and the remote workload through a
//! tunnel.

use std::fmt;
use std::net::SocketAddr;

use trust_bundle::SpiffeId;

use crate::config::{Config, ServiceKey};

/// What an outbound listener wants to reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The service.
    pub service: ServiceKey,
    /// Its port.
    pub port: u16,
    /// Only this cluster (our own: local endpoints only).
    pub cluster: Option<String>,
}

/// Whether a local endpoint is believed healthy.
pub trait HealthView {
    /// `true` unless the endpoint at `addr` is known to be failing.
    fn is_healthy(&self, addr: SocketAddr) -> bool;
}

/// Every endpoint healthy (tests, and no health information).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllHealthy;

/// Candidates in the order to try them; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The candidates.
    pub candidates: Vec<Candidate>,
}

/// One way to reach the target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Candidate {
    /// A sidecar in this cluster, over mTLS TCP: next hop = final hop.
    Direct {
        /// The endpoint sidecar's inbound listener.
        addr: SocketAddr,
        /// Its identity (next and final hop).
        identity: SpiffeId,
    },
    /// A sidecar in another cluster, through the local gateway's tunnel; the
    /// inner TLS runs end to end to `final_identity`.
    ViaGateway {
        /// The local gateway's QUIC address.
        gateway_addr: SocketAddr,
        /// The gateway's identity (next hop, QUIC TLS).
        gateway_identity: SpiffeId,
        /// The target cluster (tunnel header).
        cluster: String,
        /// The service (tunnel header).
        service: ServiceKey,
        /// The port (tunnel header).
        port: u16,
        /// The remote workload's identity (final hop, inner TLS, and the
        /// header's expected identity).
        final_identity: SpiffeId,
    },
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The catalog has no such service port.
    #[error("unknown service {service}:{port}")]
    UnknownService {
        /// The service.
        service: ServiceKey,
        /// The port.
        port: u16,
    },
    /// The pinned cluster does not export the service to us.
    #[error("cluster {cluster} does not export {service} to us")]
    ClusterUnavailable {
        /// The pinned cluster.
        cluster: String,
        /// The service.
        service: ServiceKey,
    },
    /// The service has no endpoint, local or remote (or only remote ones and
    /// no gateway is configured).
    #[error("no endpoint for {service}")]
    NoEndpoint {
        /// The service.
        service: ServiceKey,
    },
}

/// Plans how to reach `target`. `rotation` spreads load over the healthy
/// local endpoints (round robin: pass a counter incremented per request).
///
/// # Errors
/// See [`PlanError`].
pub fn plan(
    config: &Config,
    target: &Target,
    health: &impl HealthView,
    rotation: usize,
) -> Result<Plan, PlanError> {
    let Some(svc) = config.service(&target.service, target.port) else {
        return Err(PlanError::UnknownService {
            service: target.service.clone(),
            port: target.port,
        });
    };
    let (use_local, remote_filter): (bool, Option<&str>) = match target.cluster.as_deref() {
        None => (true, None),
        Some(c) if c == config.cluster => (true, Some(c)),
        Some(c) => (false, Some(c)),
    };

    let mut candidates = Vec::new();
    let mut unhealthy = Vec::new();
    if use_local {
        let (healthy, sick): (Vec<_>, Vec<_>) = svc
            .endpoints
            .iter()
            .partition(|e| health.is_healthy(e.address));
        if !healthy.is_empty() {
            let start = rotation % healthy.len();
            for e in healthy[start..].iter().chain(&healthy[..start]) {
                candidates.push(Candidate::Direct {
                    addr: e.address,
                    identity: e.spiffe_id.clone(),
                });
            }
        }
        unhealthy = sick
            .into_iter()
            .map(|e| Candidate::Direct {
                addr: e.address,
                identity: e.spiffe_id.clone(),
            })
            .collect();
    }

    let local_only = target.cluster.as_deref() == Some(config.cluster.as_str());
    if !local_only {
        let remotes = svc
            .remote
            .iter()
            .filter(|r| r.cluster != config.cluster)
            .filter(|r| remote_filter.is_none_or(|c| c == r.cluster));
        let mut any_remote = false;
        for r in remotes {
            any_remote = true;
            if let Some(gw) = &config.gateway {
                candidates.push(Candidate::ViaGateway {
                    gateway_addr: gw.address,
                    gateway_identity: gw.spiffe_id.clone(),
                    cluster: r.cluster.clone(),
                    service: svc.service.clone(),
                    port: svc.port,
                    final_identity: r.spiffe_id.clone(),
                });
            }
        }
        if let (false, Some(c)) = (any_remote, remote_filter) {
            return Err(PlanError::ClusterUnavailable {
                cluster: c.to_owned(),
                service: svc.service.clone(),
            });
        }
    }

    candidates.extend(unhealthy);
    if candidates.is_empty() {
        return Err(PlanError::NoEndpoint {
            service: svc.service.clone(),
        });
    }
    Ok(Plan { candidates })
}

impl Candidate {
    /// The identity the next hop must present (TLS or QUIC).
    pub fn next_hop_identity(&self) -> &SpiffeId {
        match self {
            Candidate::Direct { identity, .. } => identity,
            Candidate::ViaGateway {
                gateway_identity, ..
            } => gateway_identity,
        }
    }

    /// The identity the final workload must present (inner TLS).
    pub fn final_identity(&self) -> &SpiffeId {
        match self {
            Candidate::Direct { identity, .. } => identity,
            Candidate::ViaGateway { final_identity, .. } => final_identity,
        }
    }
}

impl HealthView for AllHealthy {
    fn is_healthy(&self, _addr: SocketAddr) -> bool {
        true
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Candidate::Direct { addr, identity } => write!(f, "{addr} ({identity})"),
            Candidate::ViaGateway {
                gateway_addr,
                cluster,
                service,
                port,
                final_identity,
                ..
            } => write!(
                f,
                "{service}:{port} in {cluster} via gateway {gateway_addr} ({final_identity})"
            ),
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
