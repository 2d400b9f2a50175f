//! Deriving a `ServiceImport` from the exports of one service across the
//! cluster set, with the MCS conflict resolution (KEP-1645): the oldest
//! export wins.
//!
//! Pure: the caller gathers one [`ClusterExport`] per exporting cluster and
//! applies the [`ImportOutcome`] (writes or deletes the `ServiceImport`, sets
//! the `Conflict` condition on each export, stamps transition times).

use time::OffsetDateTime;

use crate::mcs::{
    ClusterStatus, Protocol, ServiceImportSpec, ServiceImportStatus, ServiceImportType,
    ServicePort, SessionAffinity, SessionAffinityConfig,
};
use crate::meta::{Condition, ConditionStatus};

/// The `Conflict` condition type of a `ServiceExport`.
pub const CONFLICT_CONDITION: &str = "Conflict";

/// One cluster's export of the service, as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterExport {
    /// The exporting cluster's name.
    pub cluster: String,
    /// `creationTimestamp` of the `ServiceExport` in that cluster.
    pub created: OffsetDateTime,
    /// `ClusterSetIP` for a Service with a cluster IP, `Headless` otherwise.
    pub type_: ServiceImportType,
    /// The Service's ports.
    pub ports: Vec<ServicePort>,
    /// The Service's session affinity.
    pub session_affinity: SessionAffinity,
    /// The Service's session affinity settings.
    pub session_affinity_config: Option<SessionAffinityConfig>,
}

/// What the exports of one service produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    /// The import's spec (without `ips`, which the controller allocates), or
    /// `None` when no cluster exports the service: the import is deleted.
    pub spec: Option<ServiceImportSpec>,
    /// The import's status: every exporting cluster, sorted by name.
    pub status: ServiceImportStatus,
    /// The conflicts found, one per losing export and reason, oldest first.
    pub conflicts: Vec<ExportConflict>,
}

/// A property of a losing export that differs from the winner's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConflict {
    /// The cluster whose export lost.
    pub cluster: String,
    /// What conflicts.
    pub reason: ConflictReason,
    /// A human-readable description.
    pub message: String,
}

/// Reasons of a `Conflict=True` condition, as mcs-api names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConflictReason {
    /// The export's type differs from the winner's.
    TypeConflict,
    /// A port of the export differs from the winner's port of that name or number.
    PortConflict,
}

impl ConflictReason {
    /// The condition reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TypeConflict => "TypeConflict",
            Self::PortConflict => "PortConflict",
        }
    }
}

/// Derives the import from every cluster's export of one service.
///
/// The exports are ordered by `created`, ties broken by cluster name; the
/// first wins. The import takes the winner's type and session affinity and
/// the union of all ports; a port is keyed by its name, and the first export
/// to declare a name (or a port number and protocol) decides it. Exports
/// whose type or ports disagree with what was decided get a conflict.
pub fn derive_import(exports: &[ClusterExport]) -> ImportOutcome {
    let mut ordered: Vec<&ClusterExport> = exports.iter().collect();
    ordered.sort_by(|a, b| (a.created, &a.cluster).cmp(&(b.created, &b.cluster)));
    let Some(winner) = ordered.first() else {
        return ImportOutcome {
            spec: None,
            status: ServiceImportStatus::default(),
            conflicts: Vec::new(),
        };
    };

    let mut conflicts = Vec::new();
    let mut ports: Vec<ServicePort> = Vec::new();
    for export in &ordered {
        if export.type_ != winner.type_ {
            conflicts.push(ExportConflict {
                cluster: export.cluster.clone(),
                reason: ConflictReason::TypeConflict,
                message: format!(
                    "type {} conflicts with {} of the oldest export, in cluster {}",
                    export.type_.as_str(),
                    winner.type_.as_str(),
                    winner.cluster
                ),
            });
        }
        let clashes: Vec<String> = export
            .ports
            .iter()
            .filter_map(|p| merge_port(&mut ports, p))
            .collect();
        if !clashes.is_empty() {
            conflicts.push(ExportConflict {
                cluster: export.cluster.clone(),
                reason: ConflictReason::PortConflict,
                message: format!("ports conflict with older exports: {}", clashes.join("; ")),
            });
        }
    }

    let mut clusters: Vec<&str> = ordered.iter().map(|e| e.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    ImportOutcome {
        spec: Some(ServiceImportSpec {
            ports,
            ips: Vec::new(),
            type_: winner.type_,
            session_affinity: winner.session_affinity,
            session_affinity_config: winner.session_affinity_config.clone(),
        }),
        status: ServiceImportStatus {
            clusters: clusters
                .into_iter()
                .map(|c| ClusterStatus {
                    cluster: c.to_owned(),
                })
                .collect(),
        },
        conflicts,
    }
}

impl ImportOutcome {
    /// The `Conflict` condition for `cluster`'s export: `True` with the first
    /// reason and every message when it lost, `False`/`NoConflicts` otherwise.
    /// `lastTransitionTime` is left to the caller.
    pub fn conflict_condition(&self, cluster: &str) -> Condition {
        let mine: Vec<&ExportConflict> = self
            .conflicts
            .iter()
            .filter(|c| c.cluster == cluster)
            .collect();
        let (status, reason, message) = match mine.first() {
            Some(first) => (
                ConditionStatus::True,
                first.reason.as_str(),
                mine.iter()
                    .map(|c| c.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            None => (
                ConditionStatus::False,
                "NoConflicts",
                "no conflicts with other exports".to_owned(),
            ),
        };
        Condition {
            type_: CONFLICT_CONDITION.to_owned(),
            status,
            observed_generation: None,
            last_transition_time: None,
            reason: Some(reason.to_owned()),
            message: Some(message),
        }
    }
}

/// Adds `port` to the union unless its name or number is already decided;
/// returns a description of the clash when it differs from what was decided.
fn merge_port(ports: &mut Vec<ServicePort>, port: &ServicePort) -> Option<String> {
    let by_name = ports.iter().find(|p| p.name == port.name);
    let by_number = ports
        .iter()
        .find(|p| (p.port, p.protocol) == (port.port, port.protocol));
    match (by_name, by_number) {
        (None, None) => {
            ports.push(port.clone());
            None
        }
        (Some(decided), _) | (None, Some(decided)) if decided == port => None,
        (Some(decided), _) | (None, Some(decided)) => Some(format!(
            "{} conflicts with {}",
            describe(port),
            describe(decided)
        )),
    }
}

fn describe(p: &ServicePort) -> String {
    let proto = match p.protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    };
    let mut s = format!(
        "port {:?} {}/{proto}",
        p.name.as_deref().unwrap_or(""),
        p.port
    );
    if let Some(app) = &p.app_protocol {
        s.push_str(&format!(" ({app})"));
    }
    s
}
