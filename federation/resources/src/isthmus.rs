//! Isthmus's own kinds (`isthmus.dev/v1alpha1`): `MeshLink` and
//! `FailoverPolicy` (with its `outlierDetection`). They are stored and
//! validated; their semantics belong to the peering and failover modules.

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
    /// Passive outlier detection in the callers' proxies; absent: every
    /// field at its default ([`OutlierDetection::default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

impl FailoverPolicySpec {
    /// `outlierDetection`, or the defaults when absent.
    pub fn effective_outlier_detection(&self) -> OutlierDetection {
        self.outlier_detection.unwrap_or_default()
    }
}

/// Default of [`OutlierDetection::consecutive_5xx`] (Envoy's).
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// Default of [`OutlierDetection::consecutive_gateway_errors`] (Envoy's count).
pub const DEFAULT_CONSECUTIVE_GATEWAY_ERRORS: u32 = 5;
/// Default of [`OutlierDetection::interval_ms`] (Envoy's: 10 s).
pub const DEFAULT_OUTLIER_INTERVAL_MS: u64 = 10_000;
/// Default of [`OutlierDetection::base_ejection_time_ms`] (Envoy's: 30 s).
pub const DEFAULT_BASE_EJECTION_TIME_MS: u64 = 30_000;
/// Default of [`OutlierDetection::max_ejection_time_ms`] (Envoy's: 300 s).
pub const DEFAULT_MAX_EJECTION_TIME_MS: u64 = 300_000;
/// Default of [`OutlierDetection::max_ejection_percent`] (Envoy's).
pub const DEFAULT_MAX_EJECTION_PERCENT: u8 = 10;

/// `FailoverPolicy.spec.outlierDetection`: when a caller's proxy ejects an
/// endpoint (Envoy's `OutlierDetection` semantics and defaults,
/// FAILOVER-REFERENCE §7). Every field is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive 5xx responses that eject an endpoint; 0 disables.
    #[serde(default = "default_consecutive_5xx", rename = "consecutive5xx")]
    pub consecutive_5xx: u32,
    /// Consecutive gateway errors (connect failure, reset, tunnel reject)
    /// that eject an endpoint; 0 disables. Enforced (Envoy's default is
    /// not to enforce this one).
    #[serde(default = "default_consecutive_gateway_errors")]
    pub consecutive_gateway_errors: u32,
    /// Milliseconds between success-rate evaluations, at least 1.
    #[serde(default = "default_outlier_interval")]
    pub interval_ms: u64,
    /// Milliseconds an endpoint stays ejected, times its number of
    /// ejections, at least 1.
    #[serde(default = "default_base_ejection_time")]
    pub base_ejection_time_ms: u64,
    /// Cap of the ejection time in milliseconds, at least
    /// `baseEjectionTimeMs`.
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time_ms: u64,
    /// At most this share of a service's endpoints is ejected (but at least
    /// one endpoint may be), 0..=100.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u8,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            consecutive_gateway_errors: DEFAULT_CONSECUTIVE_GATEWAY_ERRORS,
            interval_ms: DEFAULT_OUTLIER_INTERVAL_MS,
            base_ejection_time_ms: DEFAULT_BASE_EJECTION_TIME_MS,
            max_ejection_time_ms: DEFAULT_MAX_EJECTION_TIME_MS,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

fn default_consecutive_5xx() -> u32 {
    DEFAULT_CONSECUTIVE_5XX
}

fn default_consecutive_gateway_errors() -> u32 {
    DEFAULT_CONSECUTIVE_GATEWAY_ERRORS
}

fn default_outlier_interval() -> u64 {
    DEFAULT_OUTLIER_INTERVAL_MS
}

fn default_base_ejection_time() -> u64 {
    DEFAULT_BASE_EJECTION_TIME_MS
}

fn default_max_ejection_time() -> u64 {
    DEFAULT_MAX_EJECTION_TIME_MS
}

fn default_max_ejection_percent() -> u8 {
    DEFAULT_MAX_EJECTION_PERCENT
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

/// One day in milliseconds: the upper bound of every duration field.
pub(crate) const DAY_MS: i64 = 86_400_000;

const OUTLIER_DETECTION: Shape = Shape::Obj(&[
    opt("consecutive5xx", Shape::Int(0, 1_000_000)),
    opt("consecutiveGatewayErrors", Shape::Int(0, 1_000_000)),
    opt("intervalMs", Shape::Int(1, DAY_MS)),
    opt("baseEjectionTimeMs", Shape::Int(1, DAY_MS)),
    opt("maxEjectionTimeMs", Shape::Int(1, DAY_MS)),
    opt("maxEjectionPercent", Shape::Int(0, 100)),
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
            opt("outlierDetection", OUTLIER_DETECTION),
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

impl FailoverPolicy {
    /// Checks that span fields: `maxEjectionTimeMs` ≥ `baseEjectionTimeMs`.
    pub(crate) fn validate(&self, errors: &mut Vec<FieldError>) {
        if let Some(od) = &self.spec.outlier_detection {
            if od.max_ejection_time_ms < od.base_ejection_time_ms {
                errors.push(field_error(
                    "spec.outlierDetection.maxEjectionTimeMs",
                    FieldErrorKind::Invalid {
                        value: od.max_ejection_time_ms.to_string(),
                        detail: format!(
                            "must be at least baseEjectionTimeMs ({})",
                            od.base_ejection_time_ms
                        ),
                    },
                ));
            }
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
