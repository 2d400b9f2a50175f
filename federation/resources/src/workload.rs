//! Isthmus's `Workload` kind (`isthmus.dev/v1alpha1`): one instance of a
//! service in universal mode (no Kubernetes), registered statically with
//! `meshctl apply`. Leased, dynamic registration goes through the
//! controller's `Identity.Register` and is not a document.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::checks;
use crate::error::{FieldError, FieldErrorKind};
use crate::meta::{ObjectMeta, META};
use crate::schema::{field_error, opt, req, Shape};

/// One instance of a service: where it listens and which identity it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Name (the instance) and namespace (the service's).
    pub metadata: ObjectMeta,
    /// The service, identity, address and ports.
    pub spec: WorkloadSpec,
}

/// The spec of a [`Workload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// The service it backs, in the workload's namespace (DNS-1123 label).
    pub service: String,
    /// Its service account (DNS-1123 label): the SPIFFE ID is
    /// `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`.
    pub service_account: String,
    /// The IP address callers connect to.
    pub address: String,
    /// The service ports it serves, at least one.
    pub ports: Vec<WorkloadPort>,
    /// Where it runs (defaults: the cluster's region, no zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
}

/// One service port of a [`Workload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadPort {
    /// The service port callers name, 1 to 65535.
    pub port: u16,
    /// Where callers connect on `address` (the sidecar's inbound listener or
    /// the app itself), 1 to 65535; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    /// `http`, `grpc` or `tcp` (default).
    #[serde(default)]
    pub protocol: WorkloadProtocol,
}

impl WorkloadPort {
    /// `targetPort`, or `port` when absent.
    pub fn effective_target_port(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

/// Application protocol of a [`WorkloadPort`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadProtocol {
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC.
    Grpc,
    /// Opaque TCP.
    #[default]
    Tcp,
}

impl WorkloadProtocol {
    /// `http`, `grpc` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }

    /// The protocol named `s` (`http`, `grpc`, `tcp`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Self::Http),
            "grpc" => Some(Self::Grpc),
            "tcp" => Some(Self::Tcp),
            _ => None,
        }
    }
}

/// Where a workload runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// Region (DNS-1123 label).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Zone (DNS-1123 label).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

const PORT: Shape = Shape::Obj(&[
    req("port", Shape::Int(1, 65535)),
    opt("targetPort", Shape::Int(1, 65535)),
    opt("protocol", Shape::Enum(&["http", "grpc", "tcp"])),
]);

/// The schema of a `Workload` (without `apiVersion` and `kind`).
pub(crate) const WORKLOAD: Shape = Shape::Obj(&[
    req("metadata", META),
    req(
        "spec",
        Shape::Obj(&[
            req("service", Shape::Check(checks::dns_label)),
            req("serviceAccount", Shape::Check(checks::dns_label)),
            req("address", Shape::Check(checks::ip)),
            req("ports", Shape::List(&PORT)),
            opt(
                "locality",
                Shape::Obj(&[
                    opt("region", Shape::Check(checks::dns_label)),
                    opt("zone", Shape::Check(checks::dns_label)),
                ]),
            ),
        ]),
    ),
]);

impl Workload {
    /// Checks that span fields: at least one port, port numbers unique.
    pub(crate) fn validate(&self, errors: &mut Vec<FieldError>) {
        if self.spec.ports.is_empty() {
            errors.push(field_error("spec.ports", FieldErrorKind::Required));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.spec.ports.iter().enumerate() {
            if !seen.insert(p.port) {
                errors.push(field_error(
                    &format!("spec.ports[{i}].port"),
                    FieldErrorKind::Duplicate {
                        value: p.port.to_string(),
                    },
                ));
            }
        }
    }
}
