//! Workloads: static ones (`Workload` documents) and leased ones
//! (`Identity.Register`), seen together as [`Endpoint`]s.
//!
//! A lease is renewed by registering again; the leader proposes
//! [`Command::ExpireLeases`](super::Command::ExpireLeases) periodically and
//! every lease whose `expires_ms` has passed disappears with its endpoint.

use mesh_resources::{Resource, WorkloadPort};
use serde::{Deserialize, Serialize};

use super::resources::{key, ResourceKind};
use super::{Catalog, Response};

/// A workload registered with a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedWorkload {
    /// Namespace (from the caller's SVID).
    pub namespace: String,
    /// Workload (instance) name, unique in the namespace.
    pub name: String,
    /// The service it backs.
    pub service: String,
    /// Service account (from the caller's SVID).
    pub service_account: String,
    /// IP address callers connect to.
    pub address: String,
    /// Service ports.
    pub ports: Vec<WorkloadPort>,
    /// Region (empty: the cluster's).
    pub region: String,
    /// Zone (may be empty).
    pub zone: String,
    /// The granted lease, ms.
    pub lease_ms: u64,
    /// When the lease ends, Unix ms.
    pub expires_ms: u64,
}

/// One workload instance, static or leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Namespace.
    pub namespace: String,
    /// Workload name.
    pub name: String,
    /// Service.
    pub service: String,
    /// Service account.
    pub service_account: String,
    /// IP address.
    pub address: String,
    /// Ports.
    pub ports: Vec<WorkloadPort>,
    /// Region (empty: the cluster's).
    pub region: String,
    /// Zone.
    pub zone: String,
    /// End of the lease, Unix ms; `None` for a static workload.
    pub lease_expires_ms: Option<u64>,
}

impl Catalog {
    /// Every workload instance: static ones first, then leased ones, each
    /// sorted by namespace and name.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for stored in self.resources.values() {
            if stored.kind != ResourceKind::Workload {
                continue;
            }
            let Some(Resource::Workload(w)) = stored.resource() else {
                continue;
            };
            let locality = w.spec.locality.unwrap_or_default();
            out.push(Endpoint {
                namespace: w.metadata.namespace,
                name: w.metadata.name,
                service: w.spec.service,
                service_account: w.spec.service_account,
                address: w.spec.address,
                ports: w.spec.ports,
                region: locality.region,
                zone: locality.zone,
                lease_expires_ms: None,
            });
        }
        for w in self.leased.values() {
            out.push(Endpoint {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                service: w.service.clone(),
                service_account: w.service_account.clone(),
                address: w.address.clone(),
                ports: w.ports.clone(),
                region: w.region.clone(),
                zone: w.zone.clone(),
                lease_expires_ms: Some(w.expires_ms),
            });
        }
        out
    }

    /// The earliest lease end, Unix ms: when the next `ExpireLeases` is due.
    pub fn next_lease_expiry(&self) -> Option<u64> {
        self.leased.values().map(|w| w.expires_ms).min()
    }
}

pub(super) fn register(catalog: &mut Catalog, w: &LeasedWorkload) -> Response {
    let id = format!("{}/{}", w.namespace, w.name);
    if catalog
        .resources
        .contains_key(&key(ResourceKind::Workload, &w.namespace, &w.name))
    {
        return Response::Refused(format!(
            "workload {id} is registered statically (a Workload resource)"
        ));
    }
    if let Some(old) = catalog.leased.get(&id) {
        if old.service_account != w.service_account {
            return Response::Refused(format!(
                "workload {id} belongs to service account {}",
                old.service_account
            ));
        }
    }
    catalog.leased.insert(id, w.clone());
    Response::Ok
}

pub(super) fn deregister(
    catalog: &mut Catalog,
    namespace: &str,
    name: &str,
    service_account: &str,
) -> Response {
    let id = format!("{namespace}/{name}");
    match catalog.leased.get(&id) {
        None => Response::NotFound(format!("workloads {id} not found")),
        Some(w) if w.service_account != service_account => Response::Refused(format!(
            "workload {id} belongs to service account {}",
            w.service_account
        )),
        Some(_) => {
            catalog.leased.remove(&id);
            Response::Ok
        }
    }
}

pub(super) fn expire(catalog: &mut Catalog, now_ms: u64) {
    catalog.leased.retain(|_, w| w.expires_ms > now_ms);
}
