//! `metadata` of every resource.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::checks;
use crate::schema::{opt, req, Shape};

/// The namespace of a resource that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The subset of Kubernetes `ObjectMeta` that Isthmus accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// A DNS-1123 label.
    pub name: String,
    /// A DNS-1123 label; `default` when absent.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// When the resource was first stored; set by the controller.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub creation_timestamp: Option<OffsetDateTime>,
    /// A unique id of this incarnation of the resource; set by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Opaque version of the stored resource, changed on every write; set by
    /// the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// Metadata with a name and namespace and nothing else.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            creation_timestamp: None,
            uid: None,
            resource_version: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

/// The schema of `metadata`.
pub(crate) const META: Shape = Shape::Obj(&[
    req("name", Shape::Check(checks::dns_label)),
    opt("namespace", Shape::Check(checks::dns_label)),
    opt("creationTimestamp", Shape::Check(checks::rfc3339)),
    opt("uid", Shape::Str),
    opt("resourceVersion", Shape::Str),
    opt("labels", Shape::StrMap),
    opt("annotations", Shape::StrMap),
]);

/// The schema of a Kubernetes `Condition` (`metav1.Condition`).
pub(crate) const CONDITION: Shape = Shape::Obj(&[
    req("type", Shape::Str),
    req("status", Shape::Enum(&["True", "False", "Unknown"])),
    opt("observedGeneration", Shape::Int(0, i64::MAX)),
    opt("lastTransitionTime", Shape::Check(checks::rfc3339)),
    opt("reason", Shape::Str),
    opt("message", Shape::Str),
]);

/// A status condition, as in Kubernetes `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// The condition type, e.g. `Valid`, `Ready`, `Conflict`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_transition_time: Option<OffsetDateTime>,
    /// A CamelCase machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The status of a [`Condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known.
    Unknown,
}
