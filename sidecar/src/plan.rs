//! Routing decisions: a pure function from a config snapshot, a target and a
//! health view to an ordered [`Plan`] of candidates (STYLE.md habit 4).
//!
//! Order ([`crate::lb::Levels::order`]; docs/reference/data-path-config.md,
//! "Endpoint choice"): the first candidate is chosen by priority load (the
//! levels' health with the service's overprovisioning factor and panic
//! threshold), then by locality share (locality weights), then round robin
//! inside the locality (rotated by the counter the caller passes); the rest
//! follow in fallback order — the rest of that locality and level, then the
//! other levels by priority — so a retry never picks the same host first;
//! hosts that are down come last, as a last resort. An outbound `cluster:`
//! pin restricts the plan to that cluster. Each candidate names the
//! identity of the next hop and of the final workload separately: the same
//! for a direct hop, the gateway and the remote workload through a tunnel.
//!
//! # Reporting outcomes (the API resilience code calls)
//!
//! Every attempt on a candidate must be reported, once, with
//! [`crate::health::HealthState::report`]:
//!
//! ```ignore
//! shared.health.report(&target, &candidate, Outcome::Status(resp.status().as_u16()), Instant::now());
//! // or, when the attempt failed before a response head:
//! if let Some(o) = Outcome::of_error(&candidate, &err) {
//!     shared.health.report(&target, &candidate, o, Instant::now());
//! }
//! ```
//!
//! [`crate::health::Outcome`] says what counts: 5xx responses and gateway
//! errors feed outlier detection; a connect or TLS failure marks the host
//! down at once; a tunnel reject (except `unauthorized`) or a tunnel open
//! timeout marks that remote cluster down at once.

use std::fmt;
use std::net::SocketAddr;

use trust_bundle::SpiffeId;

use crate::config::{Config, ServiceKey};
use crate::lb::{Host, Levels};

pub use crate::lb::{AllHealthy, HealthView};

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
    if let (false, Some(c)) = (use_local, remote_filter) {
        if !svc.remote.iter().any(|r| r.cluster == c) {
            return Err(PlanError::ClusterUnavailable {
                cluster: c.to_owned(),
                service: svc.service.clone(),
            });
        }
    }
    let gateway = config.gateway.as_ref();
    let levels = Levels::new(svc, health, use_local, |r| {
        gateway.is_some()
            && r.cluster != config.cluster
            && remote_filter.is_none_or(|c| c == r.cluster)
    });
    let mut candidates = Vec::new();
    for host in levels.order(rotation).hosts {
        match host {
            Host::Endpoint(e) => candidates.push(Candidate::Direct {
                addr: e.address,
                identity: e.spiffe_id.clone(),
            }),
            Host::Remote(r) => {
                if let Some(gw) = gateway {
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
        }
    }
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
