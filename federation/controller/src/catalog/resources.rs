//! Stored resources, their all-or-nothing apply, and the derived views:
//! `ServiceImport`s (MCS conflict resolution via
//! [`mesh_resources::derive_import`] over the local exports and every
//! peer's `ExportSet`), `ServiceExport` status conditions (`Valid`,
//! `Ready`, `Conflict`), `MeshLink`s (one per linked peer) and leased
//! workloads shown as `Workload`s.

use std::collections::{BTreeMap, BTreeSet};

use mesh_resources::{
    derive_import, ClusterExport, Condition, ConditionStatus, ImportOutcome, McsVersion, MeshLink,
    MeshLinkSpec, ObjectMeta, Protocol, Resource, ServiceExportStatus, ServiceImport,
    ServiceImportType, ServicePort, SessionAffinity, Workload, WorkloadProtocol, WorkloadSpec,
};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::workloads::Endpoint;
use super::{Catalog, Response};

/// Annotation on a leased workload's view: when its lease ends (RFC 3339).
pub const LEASE_ANNOTATION: &str = "isthmus.dev/lease-expires";

/// The kinds the admin API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceKind {
    /// `ServiceExport` (stored).
    ServiceExport,
    /// `ServiceImport` (derived, read-only).
    ServiceImport,
    /// `MeshLink` (a view of the linked peers, read-only).
    MeshLink,
    /// `FailoverPolicy` (stored).
    FailoverPolicy,
    /// `Workload` (stored; leased ones shown too).
    Workload,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::ServiceExport,
        Self::ServiceImport,
        Self::MeshLink,
        Self::FailoverPolicy,
        Self::Workload,
    ];

    /// The `kind` string.
    pub fn kind(self) -> &'static str {
        match self {
            Self::ServiceExport => "ServiceExport",
            Self::ServiceImport => "ServiceImport",
            Self::MeshLink => "MeshLink",
            Self::FailoverPolicy => "FailoverPolicy",
            Self::Workload => "Workload",
        }
    }

    /// The lowercase plural of the REST paths, e.g. `serviceexports`.
    pub fn plural(self) -> &'static str {
        match self {
            Self::ServiceExport => "serviceexports",
            Self::ServiceImport => "serviceimports",
            Self::MeshLink => "meshlinks",
            Self::FailoverPolicy => "failoverpolicies",
            Self::Workload => "workloads",
        }
    }

    /// The kind of a plural.
    pub fn from_plural(plural: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.plural() == plural)
    }

    /// The kind of a `kind` string.
    pub fn from_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.kind() == kind)
    }

    /// Whether operators write this kind (others are derived views).
    pub fn is_stored(self) -> bool {
        matches!(
            self,
            Self::ServiceExport | Self::FailoverPolicy | Self::Workload
        )
    }
}

/// One stored resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResource {
    /// Its kind.
    pub kind: ResourceKind,
    /// Server-set `metadata.uid`.
    pub uid: String,
    /// Server-set `metadata.resourceVersion`: the catalog revision of the
    /// last change.
    pub resource_version: u64,
    /// Server-set `metadata.creationTimestamp`, Unix ms.
    pub created_ms: u64,
    /// The document as applied (`apiVersion`, `kind`, `metadata` without
    /// server-set fields, `spec`), without `status`.
    pub document: Value,
}

impl StoredResource {
    /// The typed resource with its server-set metadata; `None` only if the
    /// stored document no longer parses (never for documents this catalog
    /// accepted).
    pub fn resource(&self) -> Option<Resource> {
        let mut r = mesh_resources::parse_json(&self.document.to_string())
            .ok()?
            .pop()?;
        let meta = metadata_mut(&mut r)?;
        meta.creation_timestamp = timestamp(self.created_ms);
        meta.uid = Some(self.uid.clone());
        meta.resource_version = Some(self.resource_version.to_string());
        Some(r)
    }
}

/// What an apply did to one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What happened.
    pub action: ApplyAction,
}

/// What an apply did to one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and is identical.
    Unchanged,
}

/// The map key of a stored resource: `<Kind>/<ns>/<name>`.
pub fn key(kind: ResourceKind, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", kind.kind())
}

/// Whether a document of this kind may be applied; the error names why not.
pub fn check_appliable(kind: &str) -> Result<(), String> {
    match ResourceKind::from_kind(kind) {
        Some(k) if k.is_stored() => Ok(()),
        Some(ResourceKind::ServiceImport) => Err(
            "kind: ServiceImport is derived by the controller from the exports; it cannot be applied"
                .to_owned(),
        ),
        Some(_) => Err(format!(
            "kind: {kind} is a read-only view of linked peers; use meshctl link"
        )),
        None => Err(format!("kind: {kind} is not supported")),
    }
}

/// Server-set fields stripped, status dropped: what is compared and stored.
fn normalized(r: &Resource) -> Option<Value> {
    let mut v = r.to_value().ok()?;
    let map = v.as_object_mut()?;
    map.remove("status");
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("creationTimestamp");
        meta.remove("uid");
        meta.remove("resourceVersion");
    }
    Some(v)
}

pub(super) fn apply_documents(catalog: &mut Catalog, documents: &[Value], now_ms: u64) -> Response {
    let text = Value::Array(documents.to_vec()).to_string();
    let parsed = match mesh_resources::parse_json(&text) {
        Ok(p) => p,
        Err(e) => return Response::Refused(e.to_string()),
    };
    let mut staged = Vec::with_capacity(parsed.len());
    for (i, r) in parsed.iter().enumerate() {
        let subject = format!(
            "document {} ({} {}/{})",
            i + 1,
            r.kind(),
            r.namespace(),
            r.name()
        );
        if let Err(e) = check_appliable(r.kind()) {
            return Response::Refused(format!("{subject}: {e}"));
        }
        let Some(kind) = ResourceKind::from_kind(r.kind()) else {
            return Response::Refused(format!("{subject}: kind: not supported"));
        };
        if kind == ResourceKind::Workload
            && catalog
                .leased
                .contains_key(&format!("{}/{}", r.namespace(), r.name()))
        {
            return Response::Refused(format!(
                "{subject}: metadata.name: workload is registered with a lease"
            ));
        }
        let Some(doc) = normalized(r) else {
            return Response::Refused(format!("{subject}: cannot be serialized"));
        };
        staged.push((kind, r.namespace().to_owned(), r.name().to_owned(), doc));
    }
    let mut results = Vec::with_capacity(staged.len());
    for (kind, namespace, name, doc) in staged {
        let k = key(kind, &namespace, &name);
        let action = match catalog.resources.get_mut(&k) {
            Some(old) if old.document == doc => ApplyAction::Unchanged,
            Some(old) => {
                old.document = doc;
                old.resource_version = catalog.revision;
                ApplyAction::Configured
            }
            None => {
                catalog.next_uid += 1;
                catalog.resources.insert(
                    k,
                    StoredResource {
                        kind,
                        uid: uid(catalog.next_uid),
                        resource_version: catalog.revision,
                        created_ms: now_ms,
                        document: doc,
                    },
                );
                ApplyAction::Created
            }
        };
        results.push(ApplyResult {
            kind: kind.kind().to_owned(),
            namespace,
            name,
            action,
        });
    }
    Response::Applied(results)
}

pub(super) fn delete(
    catalog: &mut Catalog,
    kind: ResourceKind,
    namespace: &str,
    name: &str,
) -> Response {
    if kind == ResourceKind::Workload
        && catalog
            .leased
            .remove(&format!("{namespace}/{name}"))
            .is_some()
    {
        return Response::Ok;
    }
    match catalog.resources.remove(&key(kind, namespace, name)) {
        Some(_) => Response::Ok,
        None => Response::NotFound(format!("{} {namespace}/{name} not found", kind.plural())),
    }
}

/// A UUID-shaped (version 4 layout), deterministic uid.
fn uid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

fn timestamp(ms: u64) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

fn metadata_mut(r: &mut Resource) -> Option<&mut ObjectMeta> {
    match r {
        Resource::ServiceExport(x) => Some(&mut x.metadata),
        Resource::ServiceImport(x) => Some(&mut x.metadata),
        Resource::MeshLink(x) => Some(&mut x.metadata),
        Resource::FailoverPolicy(x) => Some(&mut x.metadata),
        Resource::Workload(x) => Some(&mut x.metadata),
    }
}

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

    fn export_status_with(
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

    /// Every resource of `kind` as k8s-style JSON (server-set metadata and
    /// derived status included), optionally in one namespace, sorted by
    /// namespace and name.
    pub fn list(&self, cluster: &str, kind: ResourceKind, namespace: Option<&str>) -> Vec<Value> {
        let mut out: Vec<(String, String, Value)> = Vec::new();
        let mut push = |r: Resource| {
            if namespace.is_none_or(|ns| ns == r.namespace()) {
                if let Ok(v) = r.to_value() {
                    out.push((r.namespace().to_owned(), r.name().to_owned(), v));
                }
            }
        };
        match kind {
            ResourceKind::ServiceImport => {
                for si in self.service_imports(cluster) {
                    push(Resource::ServiceImport(si));
                }
            }
            ResourceKind::MeshLink => {
                for peer in self.peers.values() {
                    let mut metadata =
                        ObjectMeta::new(crate::config::SYSTEM_NAMESPACE, &peer.cluster);
                    metadata.creation_timestamp = timestamp(peer.linked_ms);
                    push(Resource::MeshLink(MeshLink {
                        metadata,
                        spec: MeshLinkSpec {
                            peer_cluster: peer.cluster.clone(),
                            trust_domain: peer.trust_domain.clone(),
                            bundle_endpoint: peer.bundle_endpoint.clone(),
                            gateway_addresses: peer.gateway_addresses.clone(),
                        },
                    }));
                }
            }
            _ => {
                let (endpoints, outcomes) = if kind == ResourceKind::ServiceExport {
                    (self.endpoints(), self.import_outcomes(cluster))
                } else {
                    (Vec::new(), BTreeMap::new())
                };
                for stored in self.resources.values().filter(|r| r.kind == kind) {
                    let Some(mut r) = stored.resource() else {
                        continue;
                    };
                    if let Resource::ServiceExport(se) = &mut r {
                        se.status = Some(self.export_status_with(
                            &endpoints,
                            &outcomes,
                            cluster,
                            &se.metadata.namespace,
                            &se.metadata.name,
                        ));
                    }
                    push(r);
                }
                if kind == ResourceKind::Workload {
                    for w in self.leased.values() {
                        let mut metadata = ObjectMeta::new(&w.namespace, &w.name);
                        metadata
                            .annotations
                            .insert(LEASE_ANNOTATION.to_owned(), super::rfc3339_ms(w.expires_ms));
                        push(Resource::Workload(Workload {
                            metadata,
                            spec: WorkloadSpec {
                                service: w.service.clone(),
                                service_account: w.service_account.clone(),
                                address: w.address.clone(),
                                ports: w.ports.clone(),
                                locality: Some(mesh_resources::Locality {
                                    region: w.region.clone(),
                                    zone: w.zone.clone(),
                                }),
                            },
                        }));
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out.into_iter().map(|(_, _, v)| v).collect()
    }

    /// One resource as k8s-style JSON.
    pub fn get(
        &self,
        cluster: &str,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        self.list(cluster, kind, Some(namespace))
            .into_iter()
            .find(|v| v.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
    }

    /// Services a peer exports to us: `ns/name` of each.
    pub fn peer_export_names(&self, cluster: &str) -> Vec<String> {
        let Some(peer) = self.peers.get(cluster) else {
            return Vec::new();
        };
        let names: BTreeSet<String> = peer_exports(&peer.exports)
            .services
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect();
        names.into_iter().collect()
    }
}

/// Decodes a peer's `ExportSet`; an undecodable one counts as empty.
pub fn peer_exports(bytes: &[u8]) -> mesh_api::peering::ExportSet {
    mesh_api::peering::ExportSet::decode(bytes).unwrap_or_default()
}
