//! Isthmus's `TrafficPolicy` kind (`isthmus.dev/v1alpha1`, short name `tp`):
//! retries, timeouts and circuit breaking for callers of one service.
//! Stored and validated here; the controller pushes it in CDS (cluster
//! metadata `isthmus.dev/traffic`, route retry policy and timeout) and the
//! sidecars enforce it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::checks;
use crate::error::{FieldError, FieldErrorKind};
use crate::isthmus::DAY_MS;
use crate::meta::{ObjectMeta, META};
use crate::schema::{field_error, opt, req, Shape};

/// `retryOn` values accepted: a connection that cannot be opened, a stream
/// the server refused, a reset before a response, a 503 from a tunnel
/// reject. The default is all of them.
pub const RETRY_ON_VALUES: [&str; 4] = ["connect-failure", "refused-stream", "reset", "reject-503"];

/// Per-service resilience settings of callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Name and namespace of the policy.
    pub metadata: ObjectMeta,
    /// The target service and its settings.
    pub spec: TrafficPolicySpec,
}

/// The spec of a [`TrafficPolicy`]; every section is optional and written
/// out with its defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    /// The service, in the policy's namespace, the policy applies to.
    pub service: String,
    /// When and how often requests are retried.
    #[serde(default)]
    pub retries: RetriesSpec,
    /// Request, idle and connect timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsSpec,
    /// Limits per upstream service.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSpec,
}

/// `spec.retries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetriesSpec {
    /// Retries after the first try, 0..=10 (default 2).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Milliseconds per try (1 ms to 1 day); absent: the request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Conditions that allow a retry, from [`RETRY_ON_VALUES`] (default:
    /// all), no repeats.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<String>,
    /// How many retries may be added on top of requests.
    #[serde(default)]
    pub budget: BudgetSpec,
}

/// `spec.retries.budget` (Linkerd's retry budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Retries as a percentage of requests, 0..=1000 (default 20).
    #[serde(default = "default_budget_percent")]
    pub percent: u32,
    /// Retries per second allowed regardless of the percentage (default 10).
    #[serde(default = "default_min_retries")]
    pub min_retries_per_second: u32,
    /// Seconds a request counts towards the budget, 1..=60 (default 10).
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u32,
}

/// `spec.timeouts`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeoutsSpec {
    /// Whole request, retries included; 0 = none (default 15000).
    #[serde(default = "default_request_ms")]
    pub request_ms: u64,
    /// Idle connection or stream; 0 = none (default 3600000).
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
    /// Opening an upstream connection, at least 1 (default 1000).
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
}

/// `spec.circuitBreaker`: beyond these, requests fail at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// Connections to the service (default 1024).
    #[serde(default = "default_limit")]
    pub max_connections: u32,
    /// Requests waiting for a connection (default 1024).
    #[serde(default = "default_limit")]
    pub max_pending_requests: u32,
    /// Requests in flight (default 1024).
    #[serde(default = "default_limit")]
    pub max_requests: u32,
}

impl Default for RetriesSpec {
    fn default() -> Self {
        RetriesSpec {
            attempts: default_attempts(),
            per_try_timeout_ms: None,
            retry_on: default_retry_on(),
            budget: BudgetSpec::default(),
        }
    }
}

impl Default for BudgetSpec {
    fn default() -> Self {
        BudgetSpec {
            percent: default_budget_percent(),
            min_retries_per_second: default_min_retries(),
            ttl_seconds: default_ttl(),
        }
    }
}

impl Default for TimeoutsSpec {
    fn default() -> Self {
        TimeoutsSpec {
            request_ms: default_request_ms(),
            idle_ms: default_idle_ms(),
            connect_ms: default_connect_ms(),
        }
    }
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        CircuitBreakerSpec {
            max_connections: default_limit(),
            max_pending_requests: default_limit(),
            max_requests: default_limit(),
        }
    }
}

fn default_attempts() -> u32 {
    2
}

fn default_retry_on() -> Vec<String> {
    RETRY_ON_VALUES.iter().map(|s| (*s).to_owned()).collect()
}

fn default_budget_percent() -> u32 {
    20
}

fn default_min_retries() -> u32 {
    10
}

fn default_ttl() -> u32 {
    10
}

fn default_request_ms() -> u64 {
    15_000
}

fn default_idle_ms() -> u64 {
    3_600_000
}

fn default_connect_ms() -> u64 {
    1_000
}

fn default_limit() -> u32 {
    1024
}

const RETRY_ON: Shape = Shape::Enum(&RETRY_ON_VALUES);
const LIMIT: Shape = Shape::Int(1, u32::MAX as i64);

/// The schema of a `TrafficPolicy` (without `apiVersion` and `kind`).
pub(crate) const TRAFFIC_POLICY: Shape = Shape::Obj(&[
    req("metadata", META),
    req(
        "spec",
        Shape::Obj(&[
            req("service", Shape::Check(checks::dns_label)),
            opt(
                "retries",
                Shape::Obj(&[
                    opt("attempts", Shape::Int(0, 10)),
                    opt("perTryTimeoutMs", Shape::Int(1, DAY_MS)),
                    opt("retryOn", Shape::List(&RETRY_ON)),
                    opt(
                        "budget",
                        Shape::Obj(&[
                            opt("percent", Shape::Int(0, 1000)),
                            opt("minRetriesPerSecond", Shape::Int(0, 1_000_000)),
                            opt("ttlSeconds", Shape::Int(1, 60)),
                        ]),
                    ),
                ]),
            ),
            opt(
                "timeouts",
                Shape::Obj(&[
                    opt("requestMs", Shape::Int(0, DAY_MS)),
                    opt("idleMs", Shape::Int(0, DAY_MS)),
                    opt("connectMs", Shape::Int(1, DAY_MS)),
                ]),
            ),
            opt(
                "circuitBreaker",
                Shape::Obj(&[
                    opt("maxConnections", LIMIT),
                    opt("maxPendingRequests", LIMIT),
                    opt("maxRequests", LIMIT),
                ]),
            ),
        ]),
    ),
]);

impl TrafficPolicy {
    /// Checks that span fields: `retryOn` has no repeats.
    pub(crate) fn validate(&self, errors: &mut Vec<FieldError>) {
        let mut seen = BTreeSet::new();
        for (i, r) in self.spec.retries.retry_on.iter().enumerate() {
            if !seen.insert(r.as_str()) {
                errors.push(field_error(
                    &format!("spec.retries.retryOn[{i}]"),
                    FieldErrorKind::Duplicate {
                        value: serde_json::Value::from(r.as_str()).to_string(),
                    },
                ));
            }
        }
    }
}
