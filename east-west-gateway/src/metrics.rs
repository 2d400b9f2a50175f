//! The gateway's metric families, registered into a registry passed in by
//! the caller (no global registry).
//!
//! | name | type | labels |
//! |---|---|---|
//! | `isthmus_gateway_streams_total` | counter | `direction` = outbound\|inbound, `result` = accepted\|rejected\|failed |
//! | `isthmus_gateway_stream_rejects_total` | counter | `reason` (e.g. `not_exported`) |
//! | `isthmus_gateway_peer_connections` | gauge | `peer` (cluster): replicas of its gateway with a pooled connection up |
//! | `isthmus_gateway_handshake_failures_total` | counter | — |
//! | `isthmus_gateway_bytes_total` | counter | `direction`: bytes spliced, outbound = toward the peer cluster |

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tunnel_proto::RejectReason;

/// Which way a stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a local sidecar to a peer cluster.
    Outbound,
    /// From a peer cluster to a local endpoint.
    Inbound,
}

/// How a stream ended its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamResult {
    /// Accepted and spliced.
    Accepted,
    /// Answered with a reject frame.
    Rejected,
    /// Reset or timed out before a response.
    Failed,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        };
        EncodeLabelValue::encode(&s, encoder)
    }
}

impl EncodeLabelValue for StreamResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = match self {
            StreamResult::Accepted => "accepted",
            StreamResult::Rejected => "rejected",
            StreamResult::Failed => "failed",
        };
        EncodeLabelValue::encode(&s, encoder)
    }
}

/// Labels of `isthmus_gateway_streams_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StreamLabels {
    /// Direction.
    pub direction: Direction,
    /// Result.
    pub result: StreamResult,
}

/// Labels of `isthmus_gateway_stream_rejects_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RejectLabels {
    /// Reason, snake case.
    pub reason: String,
}

/// Labels of `isthmus_gateway_peer_connections`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PeerLabels {
    /// Peer cluster name.
    pub peer: String,
}

/// Labels of `isthmus_gateway_bytes_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DirectionLabels {
    /// Direction.
    pub direction: Direction,
}

/// Handles on every family; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    streams: Family<StreamLabels, Counter>,
    rejects: Family<RejectLabels, Counter>,
    peer_connections: Family<PeerLabels, Gauge>,
    handshake_failures: Counter,
    bytes: Family<DirectionLabels, Counter>,
}

impl Metrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "isthmus_gateway_streams",
            "Tunnel streams by direction and handshake result",
            m.streams.clone(),
        );
        registry.register(
            "isthmus_gateway_stream_rejects",
            "Tunnel streams rejected, by reason",
            m.rejects.clone(),
        );
        registry.register(
            "isthmus_gateway_peer_connections",
            "Pooled connections to peer gateways (QUIC or TCP+TLS) that are up",
            m.peer_connections.clone(),
        );
        registry.register(
            "isthmus_gateway_handshake_failures",
            "QUIC and TCP+TLS handshakes that failed, inbound and outbound",
            m.handshake_failures.clone(),
        );
        registry.register(
            "isthmus_gateway_bytes",
            "Payload bytes spliced, by direction",
            m.bytes.clone(),
        );
        m
    }

    /// Counts a stream's handshake outcome (and its reason when rejected).
    pub fn stream(&self, direction: Direction, outcome: &StreamOutcome) {
        let result = match outcome {
            StreamOutcome::Accepted => StreamResult::Accepted,
            StreamOutcome::Rejected(reason) => {
                self.rejects
                    .get_or_create(&RejectLabels {
                        reason: reason_label(*reason),
                    })
                    .inc();
                StreamResult::Rejected
            }
            StreamOutcome::Failed => StreamResult::Failed,
        };
        self.streams
            .get_or_create(&StreamLabels { direction, result })
            .inc();
    }

    /// Sets how many of `peer`'s gateway replicas have a pooled
    /// connection up.
    pub fn peer_connections(&self, peer: &str, up: usize) {
        self.peer_connections
            .get_or_create(&PeerLabels {
                peer: peer.to_owned(),
            })
            .set(i64::try_from(up).unwrap_or(i64::MAX));
    }

    /// Counts a failed QUIC or TCP+TLS handshake.
    pub fn handshake_failed(&self) {
        self.handshake_failures.inc();
    }

    /// Counts spliced payload bytes.
    pub fn bytes(&self, direction: Direction, n: u64) {
        self.bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(n);
    }

    /// Handshake failures so far (for tests and logs).
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.get()
    }
}

/// A stream's handshake outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOutcome {
    /// Accepted.
    Accepted,
    /// Rejected with this reason.
    Rejected(RejectReason),
    /// Failed before a response.
    Failed,
}

/// `RejectReason` as a snake-case label value.
pub fn reason_label(reason: RejectReason) -> String {
    match reason {
        RejectReason::UnknownService => "unknown_service".into(),
        RejectReason::NotExported => "not_exported".into(),
        RejectReason::NoHealthyEndpoint => "no_healthy_endpoint".into(),
        RejectReason::Overloaded => "overloaded".into(),
        RejectReason::UnknownCluster => "unknown_cluster".into(),
        RejectReason::PeerUnavailable => "peer_unavailable".into(),
        RejectReason::Unauthorized => "unauthorized".into(),
        RejectReason::Other(c) => format!("other_{c}"),
    }
}
