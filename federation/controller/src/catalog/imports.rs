//! Derived `ServiceImport`s and `ServiceExport` conditions: MCS conflict
//! resolution ([`mesh_resources::derive_import`]) over the local exports
//! (ports from the service's workloads) and every peer's `ExportSet`.

use std::collections::BTreeMap;

use mesh_resources::{
    derive_import, ClusterExport, Condition, ConditionStatus, ImportOutcome, McsVersion,
    ObjectMeta, Protocol, ServiceExportStatus, ServiceImport, ServiceImportType, ServicePort,
    SessionAffinity, WorkloadProtocol,
};
use prost::Message as _;

use super::resources::{key, timestamp, ResourceKind};
use super::workloads::Endpoint;
use super::Catalog;

/// The local ports of a service, from its workloads: `port → protocol`
/// (the first workload to declare a port decides its protocol).
pub(crate) fn local_ports(
    endpoints: &[Endpoint],
    namespace: &str,
    service: &str,
) -> BTreeMap<u16, WorkloadProtocol> {
    let mut ports = BTreeMap::new();
    for e in endpoints {
        if e.namespace == namespace && e.service == service {
            for p in &e.ports {
                ports.entry(p.port).or_insert(p.protocol);
            }
        }
    }
    ports
}

/// The MCS port of a service port: named `<protocol>-<port>` so that the
/// same port gets the same name in every cluster.
pub fn service_port(port: u16, protocol: WorkloadProtocol) -> ServicePort {
    ServicePort {
        name: Some(format!("{}-{port}", protocol.as_str())),
        protocol: Protocol::Tcp,
        app_protocol: Some(protocol.as_str().to_owned()),
        port,
    }
}

impl Catalog {
    /// Local `ServiceExport`s: `(namespace, name, created_ms)`.
    pub fn local_exports(&self) -> Vec<(String, String, u64)> {
        self.resources
            .values()
            .filter(|r| r.kind == ResourceKind::ServiceExport)
            .filter_map(|r| {
                let res = r.resource()?;
                Some((
                    res.namespace().to_owned(),
                    res.name().to_owned(),
                    r.created_ms,
                ))
            })
            .collect()
    }

    /// Every cluster's export of every service, local (`cluster`) and
    /// peers', keyed by `(namespace, name)`. A local export of a service
    /// without workloads is not exported (its `Valid` condition is False).
    fn cluster_exports(&self, cluster: &str) -> BTreeMap<(String, String), Vec<ClusterExport>> {
        let mut all: BTreeMap<(String, String), Vec<ClusterExport>> = BTreeMap::new();
        let endpoints = self.endpoints();
        for (ns, name, created_ms) in self.local_exports() {
            let ports = local_ports(&endpoints, &ns, &name);
            if ports.is_empty() {
                continue;
            }
            all.entry((ns, name)).or_default().push(ClusterExport {
                cluster: cluster.to_owned(),
                created: timestamp(created_ms).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                type_: ServiceImportType::ClusterSetIp,
                ports: ports
                    .into_iter()
                    .map(|(p, proto)| service_port(p, proto))
                    .collect(),
                session_affinity: SessionAffinity::None,
                session_affinity_config: None,
            });
        }
        for peer in self.peers.values() {
            for svc in peer_exports(&peer.exports).services {
                let created = time::OffsetDateTime::parse(
                    &svc.export_created,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
                .or_else(|| timestamp(peer.linked_ms))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                let ports = svc
                    .ports
                    .iter()
                    .filter_map(|p| {
                        Some(ServicePort {
                            name: (!p.name.is_empty()).then(|| p.name.clone()),
                            protocol: match p.protocol.as_str() {
                                "UDP" => Protocol::Udp,
                                "SCTP" => Protocol::Sctp,
                                _ => Protocol::Tcp,
                            },
                            app_protocol: (!p.app_protocol.is_empty())
                                .then(|| p.app_protocol.clone()),
                            port: u16::try_from(p.port).ok().filter(|p| *p > 0)?,
                        })
                    })
                    .collect();
                all.entry((svc.namespace.clone(), svc.name.clone()))
                    .or_default()
                    .push(ClusterExport {
                        cluster: peer.cluster.clone(),
                        created,
                        type_: if svc.r#type == "Headless" {
                            ServiceImportType::Headless
                        } else {
                            ServiceImportType::ClusterSetIp
                        },
                        ports,
                        session_affinity: SessionAffinity::None,
                        session_affinity_config: None,
                    });
            }
        }
        all
    }

    /// The derived import outcomes per service, `cluster` being ours.
    pub fn import_outcomes(&self, cluster: &str) -> BTreeMap<(String, String), ImportOutcome> {
        self.cluster_exports(cluster)
            .into_iter()
            .map(|(k, exports)| (k, derive_import(&exports)))
            .collect()
    }

    /// The derived `ServiceImport`s: one per service that at least one
    /// cluster (this one included) exports.
    pub fn service_imports(&self, cluster: &str) -> Vec<ServiceImport> {
        let exports = self.cluster_exports(cluster);
        exports
            .into_iter()
            .filter_map(|((ns, name), list)| {
                let oldest = list.iter().map(|e| e.created).min();
                let outcome = derive_import(&list);
                let mut metadata = ObjectMeta::new(ns, name);
                metadata.creation_timestamp = oldest;
                Some(ServiceImport {
                    version: McsVersion::V1Alpha1,
                    metadata,
                    spec: outcome.spec?,
                    status: Some(outcome.status),
                })
            })
            .collect()
    }

    /// The status of the local `ServiceExport` `namespace/name`.
    pub fn export_status(&self, cluster: &str, namespace: &str, name: &str) -> ServiceExportStatus {
        self.export_status_with(
            &self.endpoints(),
            &self.import_outcomes(cluster),
            cluster,
            namespace,
            name,
        )
    }

    pub(super) fn export_status_with(
        &self,
        endpoints: &[Endpoint],
        outcomes: &BTreeMap<(String, String), ImportOutcome>,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> ServiceExportStatus {
        let created = self
            .resources
            .get(&key(ResourceKind::ServiceExport, namespace, name))
            .and_then(|r| timestamp(r.created_ms));
        let cond = |type_: &str, ok: bool, reason: &str, message: String| Condition {
            type_: type_.to_owned(),
            status: if ok {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            observed_generation: None,
            last_transition_time: created,
            reason: Some(reason.to_owned()),
            message: Some(message),
        };
        let valid = !local_ports(endpoints, namespace, name).is_empty();
        if !valid {
            return ServiceExportStatus {
                conditions: vec![
                    cond(
                        "Valid",
                        false,
                        "NoService",
                        format!("no workload serves service {namespace}/{name} in this cluster"),
                    ),
                    cond(
                        "Ready",
                        false,
                        "Pending",
                        "waiting for the export to become valid".to_owned(),
                    ),
                ],
            };
        }
        let outcome = outcomes.get(&(namespace.to_owned(), name.to_owned()));
        let mut conflict = outcome
            .map(|o| o.conflict_condition(cluster))
            .unwrap_or_else(|| cond("Conflict", false, "NoConflicts", "no conflicts".to_owned()));
        conflict.last_transition_time = created;
        ServiceExportStatus {
            conditions: vec![
                cond(
                    "Valid",
                    true,
                    "Valid",
                    "the service is exportable".to_owned(),
                ),
                cond(
                    "Ready",
                    true,
                    "Ready",
                    "the service is exported to the cluster set".to_owned(),
                ),
                conflict,
            ],
        }
    }
}

/// Decodes a peer's `ExportSet`; an undecodable one counts as empty.
pub fn peer_exports(bytes: &[u8]) -> mesh_api::peering::ExportSet {
    mesh_api::peering::ExportSet::decode(bytes).unwrap_or_default()
}
