//! Pure routing decisions (decide, then act): from a config snapshot, the
//! caller's authenticated identity, the tunnel header and endpoint health to
//! a plain plan that the I/O drivers carry out.
//!
//! Rules (`docs/reference/data-path-config.md`, "Routing rules"):
//! - a caller in our own trust domain is a local sidecar; its stream goes to
//!   the peer named by `target_cluster`;
//! - a caller admitted by a peer entry is that peer's gateway; its stream
//!   goes only to a service exported to that peer, to a healthy endpoint
//!   whose `spiffe_id` equals the header's expected identity;
//! - anyone else is refused.

use std::net::SocketAddr;

use trust_bundle::{SpiffeId, TrustDomain};
use tunnel_proto::{OpenHeader, RejectReason};

use crate::config::{Config, ServiceKey};

/// Who opened a stream, from its connection's client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A workload of our own trust domain.
    Sidecar(SpiffeId),
    /// The gateway of a linked peer cluster.
    Peer {
        /// The peer's cluster name.
        cluster: String,
        /// The gateway's ID.
        id: SpiffeId,
    },
}

/// Which identity the next hop (a peer gateway) must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopIdentity {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any ID in this trust domain.
    MemberOf(TrustDomain),
}

/// What to do with a stream from a local sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundPlan {
    /// Open a stream to this peer's gateway and relay.
    Forward {
        /// Peer cluster name (the pool key).
        peer: String,
        /// Identity the peer gateway must present (next hop).
        next_hop: HopIdentity,
        /// Identity the destination workload must present (final hop,
        /// checked end to end by the sidecars, not by us).
        final_hop: SpiffeId,
    },
    /// Answer with a reject frame.
    Reject(Rejection),
}

/// What to do with a stream from a peer gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPlan {
    /// Connect to the first of these endpoints that accepts, in order.
    Connect {
        /// Candidate endpoints, healthy ones only, rotated by `pick`.
        endpoints: Vec<SocketAddr>,
        /// The workload identity the caller expects there.
        final_hop: SpiffeId,
    },
    /// Answer with a reject frame.
    Reject(Rejection),
}

/// A reject reason and its human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Wire reason.
    pub reason: RejectReason,
    /// Detail for logs and the `x-isthmus-error` header (at most 255 bytes).
    pub detail: String,
}

impl Rejection {
    fn new(reason: RejectReason, detail: String) -> Self {
        let mut detail = detail;
        if detail.len() > 255 {
            let mut cut = 255;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        Rejection { reason, detail }
    }
}

/// Classifies an authenticated client ID against `config`; `None` if it is
/// neither ours nor an admitted peer's (e.g. a peer removed by a reload).
pub fn classify(config: &Config, id: &SpiffeId) -> Option<Caller> {
    if id.is_member_of(&config.trust_domain) {
        return Some(Caller::Sidecar(id.clone()));
    }
    config.peer_for_id(id).map(|p| Caller::Peer {
        cluster: p.cluster.clone(),
        id: id.clone(),
    })
}

/// Routes a stream from a local sidecar.
pub fn route_outbound(config: &Config, header: &OpenHeader) -> OutboundPlan {
    if header.target_cluster == config.cluster {
        return OutboundPlan::Reject(Rejection::new(
            RejectReason::UnknownCluster,
            format!(
                "{} is the local cluster; the gateway only routes to peers",
                header.target_cluster
            ),
        ));
    }
    let Some(peer) = config.peers.get(&header.target_cluster) else {
        return OutboundPlan::Reject(Rejection::new(
            RejectReason::UnknownCluster,
            format!("cluster {} is not linked", header.target_cluster),
        ));
    };
    if !header.expected_identity.is_member_of(&peer.trust_domain) {
        return OutboundPlan::Reject(Rejection::new(
            RejectReason::Unauthorized,
            format!(
                "expected identity {} is not in {}'s trust domain {}",
                header.expected_identity, peer.cluster, peer.trust_domain
            ),
        ));
    }
    OutboundPlan::Forward {
        peer: peer.cluster.clone(),
        next_hop: match &peer.spiffe_id {
            Some(id) => HopIdentity::Exact(id.clone()),
            None => HopIdentity::MemberOf(peer.trust_domain.clone()),
        },
        final_hop: header.expected_identity.clone(),
    }
}

/// Routes a stream from peer cluster `peer`. `healthy` tells whether an
/// endpoint is out of its failure cool-down; `pick` rotates the candidate
/// list (round robin).
pub fn route_inbound(
    config: &Config,
    peer: &str,
    header: &OpenHeader,
    healthy: impl Fn(SocketAddr) -> bool,
    pick: usize,
) -> InboundPlan {
    let reject = |reason, detail| InboundPlan::Reject(Rejection::new(reason, detail));
    if header.target_cluster != config.cluster {
        return reject(
            RejectReason::UnknownCluster,
            format!(
                "this gateway serves cluster {}, not {}",
                config.cluster, header.target_cluster
            ),
        );
    }
    let key = ServiceKey {
        namespace: header.namespace.clone(),
        service: header.service.clone(),
        port: header.port,
    };
    let Some(export) = config.exports.get(&key) else {
        return reject(
            RejectReason::UnknownService,
            format!("no export {key} in cluster {}", config.cluster),
        );
    };
    if !export.exported_to.contains(peer) {
        return reject(
            RejectReason::NotExported,
            format!("{key} is not exported to cluster {peer}"),
        );
    }
    let with_id: Vec<SocketAddr> = export
        .endpoints
        .iter()
        .filter(|e| e.spiffe_id == header.expected_identity)
        .map(|e| e.address)
        .collect();
    if with_id.is_empty() {
        return reject(
            RejectReason::NoHealthyEndpoint,
            format!(
                "no endpoint of {key} has identity {}",
                header.expected_identity
            ),
        );
    }
    let mut endpoints: Vec<SocketAddr> = with_id.into_iter().filter(|a| healthy(*a)).collect();
    if endpoints.is_empty() {
        return reject(
            RejectReason::NoHealthyEndpoint,
            format!("every endpoint of {key} failed recently"),
        );
    }
    let n = endpoints.len();
    endpoints.rotate_left(pick % n);
    InboundPlan::Connect {
        endpoints,
        final_hop: header.expected_identity.clone(),
    }
}

#[cfg(test)]
mod tests;
