//! The Kubernetes-shaped resources of Isthmus, shared by the federation
//! controller and `meshctl apply -f`.
//!
//! This crate owns the resource model: the kinds (`ServiceExport` and
//! `ServiceImport` of the Multi-Cluster Services API, in `v1alpha1` and
//! `v1beta1`; Isthmus's `MeshLink`, `FailoverPolicy`, `TrafficPolicy` and `Workload`), strict parsing from
//! a YAML stream or JSON, validation with kubectl-style field paths, and
//! serialization back to YAML and JSON. It does no I/O and owns no storage,
//! no controller logic and no API server.
//!
//! Drive it with [`parse`] (or [`parse_yaml`] / [`parse_json`]): the result is
//! either every [`Resource`] of the stream or a [`ParseErrors`] listing every
//! problem, each naming its document, the resource and the field path:
//!
//! ```text
//! document 2 (ServiceImport default/web): spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535
//! ```
//!
//! [`derive_import`] is the pure MCS conflict resolution that turns every
//! cluster's export of a service into the `ServiceImport` and the `Conflict`
//! conditions of the exports.
//!
//! `docs/reference/resources.md` describes every field, default and error.

mod checks;
mod error;
mod import;
mod isthmus;
mod mcs;
mod meta;
mod parse;
mod resource;
mod schema;
mod traffic;
mod workload;

pub use error::{DocumentError, FieldError, FieldErrorKind, ParseErrors, Subject, SyntaxError};
pub use import::{
    derive_import, ClusterExport, ConflictReason, ExportConflict, ImportOutcome, CONFLICT_CONDITION,
};
pub use isthmus::{
    FailoverPolicy, FailoverPolicySpec, FailoverTarget, MeshLink, MeshLinkSpec, OutlierDetection,
    DEFAULT_BASE_EJECTION_TIME_MS, DEFAULT_CONSECUTIVE_5XX, DEFAULT_CONSECUTIVE_GATEWAY_ERRORS,
    DEFAULT_MAX_EJECTION_PERCENT, DEFAULT_MAX_EJECTION_TIME_MS, DEFAULT_OUTLIER_INTERVAL_MS,
    DEFAULT_OVERPROVISIONING_FACTOR, DEFAULT_PANIC_THRESHOLD_PERCENT, ISTHMUS_API_VERSION,
};
pub use mcs::{
    ClientIpConfig, ClusterStatus, McsVersion, Protocol, ServiceExport, ServiceExportStatus,
    ServiceImport, ServiceImportSpec, ServiceImportStatus, ServiceImportType, ServicePort,
    SessionAffinity, SessionAffinityConfig, MCS_GROUP,
};
pub use meta::{Condition, ConditionStatus, ObjectMeta, DEFAULT_NAMESPACE};
pub use parse::{parse, parse_json, parse_yaml};
pub use resource::{to_yaml_stream, Resource, SerializeError, KINDS};
pub use traffic::{
    BudgetSpec, CircuitBreakerSpec, RetriesSpec, TimeoutsSpec, TrafficPolicy, TrafficPolicySpec,
    RETRY_ON_VALUES,
};
pub use workload::{Locality, Workload, WorkloadPort, WorkloadProtocol, WorkloadSpec};

#[cfg(test)]
mod tests;
