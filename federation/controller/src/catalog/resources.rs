//! Stored resources and their all-or-nothing apply. The derived views
//! live in `imports` and `views`.

use mesh_resources::{ObjectMeta, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// `TrafficPolicy` (stored).
    TrafficPolicy,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::ServiceExport,
        Self::ServiceImport,
        Self::MeshLink,
        Self::FailoverPolicy,
        Self::Workload,
        Self::TrafficPolicy,
    ];

    /// The `kind` string.
    pub fn kind(self) -> &'static str {
        match self {
            Self::ServiceExport => "ServiceExport",
            Self::ServiceImport => "ServiceImport",
            Self::MeshLink => "MeshLink",
            Self::FailoverPolicy => "FailoverPolicy",
            Self::Workload => "Workload",
            Self::TrafficPolicy => "TrafficPolicy",
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
            Self::TrafficPolicy => "trafficpolicies",
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
            Self::ServiceExport | Self::FailoverPolicy | Self::Workload | Self::TrafficPolicy
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

pub(super) fn timestamp(ms: u64) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

fn metadata_mut(r: &mut Resource) -> Option<&mut ObjectMeta> {
    match r {
        Resource::ServiceExport(x) => Some(&mut x.metadata),
        Resource::ServiceImport(x) => Some(&mut x.metadata),
        Resource::MeshLink(x) => Some(&mut x.metadata),
        Resource::FailoverPolicy(x) => Some(&mut x.metadata),
        Resource::Workload(x) => Some(&mut x.metadata),
        Resource::TrafficPolicy(x) => Some(&mut x.metadata),
    }
}
