//! `ServiceExport` and `ServiceImport` of the Kubernetes Multi-Cluster Services
//! API (`multicluster.x-k8s.io`, schemas of mcs-api v0.5.0, where `v1alpha1`
//! and `v1beta1` are identical).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::checks;
use crate::error::{FieldError, FieldErrorKind};
use crate::meta::{Condition, ObjectMeta, CONDITION, META};
use crate::schema::{field_error, opt, req, Shape};

/// The API group of the MCS kinds.
pub const MCS_GROUP: &str = "multicluster.x-k8s.io";

/// The MCS API version a document was written in; both have one schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum McsVersion {
    /// `multicluster.x-k8s.io/v1alpha1`.
    #[default]
    V1Alpha1,
    /// `multicluster.x-k8s.io/v1beta1`.
    V1Beta1,
}

impl McsVersion {
    /// Every accepted version.
    pub const ALL: [Self; 2] = [Self::V1Alpha1, Self::V1Beta1];

    /// The full `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::V1Alpha1 => "multicluster.x-k8s.io/v1alpha1",
            Self::V1Beta1 => "multicluster.x-k8s.io/v1beta1",
        }
    }

    /// The version for an `apiVersion` string, if it is one of ours.
    pub fn from_api_version(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.api_version() == s)
    }
}

/// Marks a Service of this cluster as exported to the cluster set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceExport {
    /// The API version the document was written in.
    #[serde(skip)]
    pub version: McsVersion,
    /// Name and namespace: those of the exported Service.
    pub metadata: ObjectMeta,
    /// Conditions set by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceExportStatus>,
}

/// The status of a [`ServiceExport`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceExportStatus {
    /// `Valid`, `Ready` and `Conflict` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A service of the cluster set as seen from this cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceImport {
    /// The API version the document was written in.
    #[serde(skip)]
    pub version: McsVersion,
    /// Name and namespace: those of the exported Services.
    pub metadata: ObjectMeta,
    /// Ports, type and addresses of the imported service.
    pub spec: ServiceImportSpec,
    /// Clusters that export the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceImportStatus>,
}

/// The spec of a [`ServiceImport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceImportSpec {
    /// The union of the exported ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Cluster-set virtual IPs (at most one per family); empty when headless.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub type_: ServiceImportType,
    /// `None` (default) or `ClientIP`.
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// Settings of `ClientIP` affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
}

/// One port of a [`ServiceImport`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// Name of the port; required to be unique, and present when there are
    /// several ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Application protocol, e.g. `http`, `kubernetes.io/h2c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Port number, 1 to 65535.
    pub port: u16,
}

/// Transport protocol of a [`ServicePort`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

/// The type of a [`ServiceImport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceImportType {
    /// Reached through cluster-set virtual IPs.
    #[serde(rename = "ClusterSetIP")]
    ClusterSetIp,
    /// Resolved to the endpoints' addresses.
    Headless,
}

impl ServiceImportType {
    /// The name on the wire: `ClusterSetIP` or `Headless`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterSetIp => "ClusterSetIP",
            Self::Headless => "Headless",
        }
    }
}

/// Session affinity of a [`ServiceImport`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionAffinity {
    /// No affinity.
    #[default]
    None,
    /// Requests from one client IP go to one endpoint.
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// `sessionAffinityConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SessionAffinityConfig {
    /// `clientIP` settings.
    #[serde(rename = "clientIP", default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIpConfig>,
}

/// `sessionAffinityConfig.clientIP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientIpConfig {
    /// Affinity lifetime, 1 to 86400 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

/// The status of a [`ServiceImport`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceImportStatus {
    /// The clusters that export the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterStatus>,
}

/// One exporting cluster in [`ServiceImportStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub cluster: String,
}

/// The schema of a `ServiceExport` (without `apiVersion` and `kind`).
pub(crate) const SERVICE_EXPORT: Shape = Shape::Obj(&[
    req("metadata", META),
    opt(
        "status",
        Shape::Obj(&[opt("conditions", Shape::List(&CONDITION))]),
    ),
]);

const PORT: Shape = Shape::Obj(&[
    opt("name", Shape::Check(checks::dns_label)),
    opt("protocol", Shape::Enum(&["TCP", "UDP", "SCTP"])),
    opt("appProtocol", Shape::Str),
    req("port", Shape::Int(1, 65535)),
]);

const IP: Shape = Shape::Check(checks::ip);

/// The schema of a `ServiceImport` (without `apiVersion` and `kind`).
pub(crate) const SERVICE_IMPORT: Shape = Shape::Obj(&[
    req("metadata", META),
    req(
        "spec",
        Shape::Obj(&[
            opt("ports", Shape::List(&PORT)),
            opt("ips", Shape::List(&IP)),
            req("type", Shape::Enum(&["ClusterSetIP", "Headless"])),
            opt("sessionAffinity", Shape::Enum(&["None", "ClientIP"])),
            opt(
                "sessionAffinityConfig",
                Shape::Obj(&[opt(
                    "clientIP",
                    Shape::Obj(&[opt("timeoutSeconds", Shape::Int(1, 86400))]),
                )]),
            ),
        ]),
    ),
    opt(
        "status",
        Shape::Obj(&[opt(
            "clusters",
            Shape::List(&Shape::Obj(&[req(
                "cluster",
                Shape::Check(checks::dns_label),
            )])),
        )]),
    ),
]);

impl ServiceImport {
    /// Checks that span fields: unique port names and numbers, names present
    /// when there are several ports, addresses consistent with the type.
    pub(crate) fn validate(&self, errors: &mut Vec<FieldError>) {
        let spec = &self.spec;
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, p) in spec.ports.iter().enumerate() {
            match &p.name {
                Some(name) if !names.insert(name.as_str()) => errors.push(field_error(
                    &format!("spec.ports[{i}].name"),
                    FieldErrorKind::Duplicate {
                        value: format!("{name:?}"),
                    },
                )),
                None if spec.ports.len() > 1 => errors.push(field_error(
                    &format!("spec.ports[{i}].name"),
                    FieldErrorKind::Required,
                )),
                _ => {}
            }
            if !numbers.insert((p.port, p.protocol)) {
                errors.push(field_error(
                    &format!("spec.ports[{i}]"),
                    FieldErrorKind::Duplicate {
                        value: format!("{{port: {}, protocol: {:?}}}", p.port, p.protocol),
                    },
                ));
            }
        }
        if spec.type_ == ServiceImportType::Headless && !spec.ips.is_empty() {
            errors.push(field_error(
                "spec.ips",
                FieldErrorKind::Invalid {
                    value: format!("{:?}", spec.ips),
                    detail: "must be empty when type is Headless".to_owned(),
                },
            ));
        }
        if spec.ips.len() > 2 {
            errors.push(field_error(
                "spec.ips",
                FieldErrorKind::Invalid {
                    value: format!("{:?}", spec.ips),
                    detail: "must have at most 2 items (one per IP family)".to_owned(),
                },
            ));
        }
    }
}
