//! The typed [`Resource`] enum over every kind, and its serialization.

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::isthmus::{FailoverPolicy, MeshLink, ISTHMUS_API_VERSION};
use crate::mcs::{ServiceExport, ServiceImport};
use crate::meta::ObjectMeta;
use crate::traffic::TrafficPolicy;
use crate::workload::Workload;

/// Every kind Isthmus accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `multicluster.x-k8s.io` `ServiceExport`.
    ServiceExport(ServiceExport),
    /// `multicluster.x-k8s.io` `ServiceImport`.
    ServiceImport(ServiceImport),
    /// `isthmus.dev/v1alpha1` `MeshLink`.
    MeshLink(MeshLink),
    /// `isthmus.dev/v1alpha1` `FailoverPolicy`.
    FailoverPolicy(FailoverPolicy),
    /// `isthmus.dev/v1alpha1` `Workload`.
    Workload(Workload),
    /// `isthmus.dev/v1alpha1` `TrafficPolicy`.
    TrafficPolicy(TrafficPolicy),
}

/// The kinds, with the `apiVersion`s each accepts.
pub const KINDS: &[(&str, &[&str])] = &[
    (
        "ServiceExport",
        &[
            "multicluster.x-k8s.io/v1alpha1",
            "multicluster.x-k8s.io/v1beta1",
        ],
    ),
    (
        "ServiceImport",
        &[
            "multicluster.x-k8s.io/v1alpha1",
            "multicluster.x-k8s.io/v1beta1",
        ],
    ),
    ("MeshLink", &[ISTHMUS_API_VERSION]),
    ("FailoverPolicy", &[ISTHMUS_API_VERSION]),
    ("Workload", &[ISTHMUS_API_VERSION]),
    ("TrafficPolicy", &[ISTHMUS_API_VERSION]),
];

/// Errors of serializing resources.
#[derive(Debug, thiserror::Error)]
pub enum SerializeError {
    /// The YAML emitter failed.
    #[error("cannot write yaml")]
    Yaml(#[source] serde_yaml_ng::Error),
    /// The JSON emitter failed.
    #[error("cannot write json")]
    Json(#[source] serde_json::Error),
}

impl Resource {
    /// The `kind`, e.g. `ServiceImport`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ServiceExport(_) => "ServiceExport",
            Self::ServiceImport(_) => "ServiceImport",
            Self::MeshLink(_) => "MeshLink",
            Self::FailoverPolicy(_) => "FailoverPolicy",
            Self::Workload(_) => "Workload",
            Self::TrafficPolicy(_) => "TrafficPolicy",
        }
    }

    /// The `apiVersion`, e.g. `multicluster.x-k8s.io/v1alpha1`.
    pub fn api_version(&self) -> &'static str {
        match self {
            Self::ServiceExport(r) => r.version.api_version(),
            Self::ServiceImport(r) => r.version.api_version(),
            Self::MeshLink(_)
            | Self::FailoverPolicy(_)
            | Self::Workload(_)
            | Self::TrafficPolicy(_) => ISTHMUS_API_VERSION,
        }
    }

    /// The metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::ServiceExport(r) => &r.metadata,
            Self::ServiceImport(r) => &r.metadata,
            Self::MeshLink(r) => &r.metadata,
            Self::FailoverPolicy(r) => &r.metadata,
            Self::Workload(r) => &r.metadata,
            Self::TrafficPolicy(r) => &r.metadata,
        }
    }

    /// `metadata.namespace`.
    pub fn namespace(&self) -> &str {
        &self.metadata().namespace
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The document as a JSON value, `apiVersion` and `kind` included.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        let mut value = match self {
            Self::ServiceExport(r) => serde_json::to_value(r)?,
            Self::ServiceImport(r) => serde_json::to_value(r)?,
            Self::MeshLink(r) => serde_json::to_value(r)?,
            Self::FailoverPolicy(r) => serde_json::to_value(r)?,
            Self::Workload(r) => serde_json::to_value(r)?,
            Self::TrafficPolicy(r) => serde_json::to_value(r)?,
        };
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".to_owned(), self.api_version().into());
            map.insert("kind".to_owned(), self.kind().into());
        }
        Ok(value)
    }

    /// The document as YAML.
    pub fn to_yaml(&self) -> Result<String, SerializeError> {
        serde_yaml_ng::to_string(self).map_err(SerializeError::Yaml)
    }

    /// The document as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, SerializeError> {
        serde_json::to_string_pretty(self).map_err(SerializeError::Json)
    }
}

/// Several resources as one YAML stream, documents separated by `---`.
pub fn to_yaml_stream(resources: &[Resource]) -> Result<String, SerializeError> {
    let mut out = String::new();
    for r in resources {
        out.push_str("---\n");
        out.push_str(&r.to_yaml()?);
    }
    Ok(out)
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}
