//! Isthmus's own kinds (`isthmus.dev/v1alpha1`): `MeshLink` and
//! `FailoverPolicy`. They are stored and validated; their semantics belong to
//! the peering and failover modules.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::checks;
use crate::error::{FieldError, FieldErrorKind};
use crate::meta::{ObjectMeta, META};
use crate::schema::{field_error, opt, req, Shape};

/// The `apiVersion` of Isthmus's own kinds.
pub const ISTHMUS_API_VERSION: &str = "isthmus.dev/v1alpha1";

/// Default of [`FailoverPolicySpec::overprovisioning_factor`] (Envoy's).
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

/// Default of [`FailoverPolicySpec::panic_threshold_percent`] (Envoy's).
pub const DEFAULT_PANIC_THRESHOLD_PERCENT: u8 = 50;

/// A link to a peer cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshLink {
    /// Name and namespace of the link.
    pub metadata: ObjectMeta,
    /// The peer.
    pub spec: MeshLinkSpec,
}

/// The spec of a [`MeshLink`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshLinkSpec {
    /// The peer cluster's name (a DNS-1123 label).
    pub peer_cluster: String,
    /// The peer's SPIFFE trust domain.
    pub trust_domain: String,
    /// The peer's SPIFFE bundle endpoint, an `https://` URL.
    pub bundle_endpoint: String,
    /// The peer's east-west gateways, `host:port`, at least one.
    pub gateway_addresses: Vec<String>,
}

/// Where traffic to a service goes when its local endpoints fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverPolicy {
    /// Name and namespace of the policy.
    pub metadata: ObjectMeta,
    /// The target service and its ordered fallbacks.
    pub spec: FailoverPolicySpec,
}

/// The spec of a [`FailoverPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailoverPolicySpec {
    /// The service, in the policy's namespace, the policy applies to.
    pub service: String,
    /// Clusters or regions to fall back to, in order, after the local ones.
    pub targets: Vec<FailoverTarget>,
    /// Envoy's overprovisioning factor in percent (140 = 1.4), at least 100.
    #[serde(default = "default_overprovisioning")]
    pub overprovisioning_factor: u32,
    /// Below this share of healthy endpoints, balance over all of them.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold_percent: u8,
}

/// One fallback of a [`FailoverPolicy`]: exactly one of a cluster or a region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailoverTarget {
    /// A cluster by name.
    Cluster(String),
    /// A region by name.
    Region(String),
}

fn default_overprovisioning() -> u32 {
    DEFAULT_OVERPROVISIONING_FACTOR
}

fn default_panic_threshold() -> u8 {
    DEFAULT_PANIC_THRESHOLD_PERCENT
}

const GATEWAY: Shape = Shape::Check(checks::host_port);
const TARGET: Shape = Shape::Obj(&[
    opt("cluster", Shape::Check(checks::dns_label)),
    opt("region", Shape::Check(checks::dns_label)),
]);

/// The schema of a `MeshLink` (without `apiVersion` and `kind`).
pub(crate) const MESH_LINK: Shape = Shape::Obj(&[
    req("metadata", META),
    req(
        "spec",
        Shape::Obj(&[
            req("peerCluster", Shape::Check(checks::dns_label)),
            req("trustDomain", Shape::Check(checks::trust_domain)),
            req("bundleEndpoint", Shape::Check(checks::https_url)),
            req("gatewayAddresses", Shape::List(&GATEWAY)),
        ]),
    ),
]);

/// The schema of a `FailoverPolicy` (without `apiVersion` and `kind`).
pub(crate) const FAILOVER_POLICY: Shape = Shape::Obj(&[
    req("metadata", META),
    req(
        "spec",
        Shape::Obj(&[
            req("service", Shape::Check(checks::dns_label)),
            req("targets", Shape::List(&TARGET)),
            opt("overprovisioningFactor", Shape::Int(100, 1000)),
            opt("panicThresholdPercent", Shape::Int(0, 100)),
        ]),
    ),
]);

impl MeshLink {
    /// Checks that span fields: at least one gateway.
    pub(crate) fn validate(&self, errors: &mut Vec<FieldError>) {
        if self.spec.gateway_addresses.is_empty() {
            errors.push(field_error(
                "spec.gatewayAddresses",
                FieldErrorKind::Required,
            ));
        }
    }
}

/// Checks a `FailoverPolicy`'s targets, which the schema sees as objects with
/// two optional fields: exactly one must be set, none repeated, at least one.
pub(crate) fn validate_targets(value: &serde_json::Value, errors: &mut Vec<FieldError>) {
    let Some(targets) = value.pointer("/spec/targets").and_then(|t| t.as_array()) else {
        return;
    };
    if targets.is_empty() {
        errors.push(field_error("spec.targets", FieldErrorKind::Required));
    }
    let mut seen = BTreeSet::new();
    for (i, t) in targets.iter().enumerate() {
        let Some(map) = t.as_object() else { continue };
        if map.len() != 1 {
            errors.push(field_error(
                &format!("spec.targets[{i}]"),
                FieldErrorKind::Invalid {
                    value: t.to_string(),
                    detail: "must set exactly one of cluster, region".to_owned(),
                },
            ));
        } else if !seen.insert(t.to_string()) {
            errors.push(field_error(
                &format!("spec.targets[{i}]"),
                FieldErrorKind::Duplicate {
                    value: t.to_string(),
                },
            ));
        }
    }
}
