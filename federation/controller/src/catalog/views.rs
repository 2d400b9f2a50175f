//! Read views of the catalog as Kubernetes-style JSON: stored resources
//! with server-set metadata and derived status, derived `ServiceImport`s,
//! `MeshLink`s (one per linked peer) and leased workloads as `Workload`s.

use std::collections::{BTreeMap, BTreeSet};

use mesh_resources::{MeshLink, MeshLinkSpec, ObjectMeta, Resource, Workload, WorkloadSpec};
use serde_json::Value;

use super::imports::peer_exports;
use super::resources::{timestamp, ResourceKind, LEASE_ANNOTATION};
use super::Catalog;

impl Catalog {
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
