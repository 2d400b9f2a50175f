//! A service's resilience settings as the controller pushes them in CDS:
//! the cluster metadata filter [`TRAFFIC_METADATA`] (`isthmus.dev/traffic`)
//! carries the `TrafficPolicy` spec (`docs/reference/resources.md`) with
//! every default filled in, in the resource's camelCase keys:
//!
//! ```text
//! {
//!   "retries": {"attempts": 2, "perTryTimeoutMs": 500 /* absent: the request timeout */,
//!               "retryOn": ["connect-failure", "refused-stream", "reset", "reject-503"],
//!               "budget": {"percent": 20, "minRetriesPerSecond": 10, "ttlSeconds": 10}},
//!   "timeouts": {"requestMs": 15000, "idleMs": 3600000, "connectMs": 1000},
//!   "circuitBreaker": {"maxConnections": 1024, "maxPendingRequests": 1024, "maxRequests": 1024}
//! }
//! ```
//!
//! [`TrafficSettings::to_struct`] writes it (controller) and
//! [`TrafficSettings::from_struct`] reads it (sidecar). Reading is lenient
//! about absence (a missing field takes its default, so a controller that
//! does not know a field yet still works) and strict about types (a field
//! of the wrong type or out of range is an error naming its path). Unknown
//! keys are ignored. Pure, no I/O.
//!
//! Numbers travel as protobuf `NumberValue` (f64): integers up to 2^53 are
//! exact, which covers every field here.

use crate::xds_decode::{number_value as number, string_value as string};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};

/// Cluster metadata filter carrying [`TrafficSettings`].
pub const TRAFFIC_METADATA: &str = "isthmus.dev/traffic";

/// `retryOn` conditions Isthmus understands (the resource accepts only
/// these): a connection that cannot be opened, a stream the server refused
/// (HTTP/2 `REFUSED_STREAM`, nothing processed), a reset before any
/// response, and a 503 caused by a tunnel reject (`x-isthmus-error`).
pub const RETRY_ON: [&str; 4] = ["connect-failure", "refused-stream", "reset", "reject-503"];

/// Default `retries.attempts`: retries after the first try.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// Default `retries.budget.percent`: retries may add this share of requests.
pub const DEFAULT_BUDGET_PERCENT: u32 = 20;
/// Default `retries.budget.minRetriesPerSecond` (Linkerd's retry budget).
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
/// Default `retries.budget.ttlSeconds`: the window requests are counted over.
pub const DEFAULT_BUDGET_TTL_SECONDS: u32 = 10;
/// Default `timeouts.requestMs` (15 s, Envoy's route timeout default).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 15_000;
/// Default `timeouts.idleMs` (1 h, Envoy's HTTP connection idle timeout).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 3_600_000;
/// Default `timeouts.connectMs` (1 s).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Default of each circuit-breaker limit (Envoy's: 1024).
pub const DEFAULT_CIRCUIT_LIMIT: u32 = 1024;

/// Everything under [`TRAFFIC_METADATA`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrafficSettings {
    /// `retries`.
    pub retries: Retries,
    /// `timeouts`.
    pub timeouts: Timeouts,
    /// `circuitBreaker`.
    pub circuit_breaker: CircuitBreaker,
}

/// `retries`: when and how often a request is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// `attempts`: retries after the first try (0 = no retries).
    pub attempts: u32,
    /// `perTryTimeoutMs`: milliseconds per try; `None` = the request timeout.
    pub per_try_timeout_ms: Option<u64>,
    /// `retryOn`: conditions, see [`RETRY_ON`]. Unknown strings are kept
    /// (a reader ignores what it does not implement).
    pub retry_on: Vec<String>,
    /// `budget`.
    pub budget: RetryBudget,
}

/// `retries.budget`: retries allowed on top of requests (Linkerd's model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// `percent`: retries as a share of requests, 0..=1000.
    pub percent: u32,
    /// `minRetriesPerSecond`: retries allowed regardless of the share.
    pub min_retries_per_second: u32,
    /// `ttlSeconds`: how long a request counts towards the budget.
    pub ttl_seconds: u32,
}

/// `timeouts`, in milliseconds; 0 means none for `requestMs` and `idleMs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `requestMs`: whole request, all tries included.
    pub request_ms: u64,
    /// `idleMs`: a connection or stream without traffic is closed.
    pub idle_ms: u64,
    /// `connectMs`: opening an upstream connection (or tunnel stream).
    pub connect_ms: u64,
}

/// `circuitBreaker`: limits per upstream service; beyond them requests
/// fail at once (overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// `maxConnections`.
    pub max_connections: u32,
    /// `maxPendingRequests`: requests waiting for a connection.
    pub max_pending_requests: u32,
    /// `maxRequests`: requests in flight.
    pub max_requests: u32,
}

/// A field of the struct has the wrong type or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{TRAFFIC_METADATA}: {path}: {detail}")]
pub struct TrafficError {
    /// Dotted path of the field, e.g. `retries.budget.percent`.
    pub path: String,
    /// What is wrong, lowercase.
    pub detail: String,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            per_try_timeout_ms: None,
            retry_on: RETRY_ON.iter().map(|s| (*s).to_owned()).collect(),
            budget: RetryBudget::default(),
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: DEFAULT_BUDGET_PERCENT,
            min_retries_per_second: DEFAULT_BUDGET_MIN_PER_SECOND,
            ttl_seconds: DEFAULT_BUDGET_TTL_SECONDS,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            idle_ms: DEFAULT_IDLE_TIMEOUT_MS,
            connect_ms: DEFAULT_CONNECT_TIMEOUT_MS,
        }
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            max_connections: DEFAULT_CIRCUIT_LIMIT,
            max_pending_requests: DEFAULT_CIRCUIT_LIMIT,
            max_requests: DEFAULT_CIRCUIT_LIMIT,
        }
    }
}

impl TrafficSettings {
    /// Reads the metadata struct; absent fields take their defaults.
    ///
    /// # Errors
    /// A present field of the wrong type, negative, fractional or too large.
    pub fn from_struct(s: &Struct) -> Result<Self, TrafficError> {
        let d = TrafficSettings::default();
        let retries = match object(s, "retries", "retries")? {
            None => d.retries,
            Some(r) => {
                let budget = match object(r, "budget", "retries.budget")? {
                    None => d.retries.budget,
                    Some(b) => RetryBudget {
                        percent: u32_or(b, "percent", "retries.budget", d.retries.budget.percent)?,
                        min_retries_per_second: u32_or(
                            b,
                            "minRetriesPerSecond",
                            "retries.budget",
                            d.retries.budget.min_retries_per_second,
                        )?,
                        ttl_seconds: u32_or(
                            b,
                            "ttlSeconds",
                            "retries.budget",
                            d.retries.budget.ttl_seconds,
                        )?,
                    },
                };
                Retries {
                    attempts: u32_or(r, "attempts", "retries", d.retries.attempts)?,
                    per_try_timeout_ms: integer(r, "perTryTimeoutMs", "retries")?,
                    retry_on: match strings(r, "retryOn", "retries")? {
                        Some(v) => v,
                        None => d.retries.retry_on,
                    },
                    budget,
                }
            }
        };
        let timeouts = match object(s, "timeouts", "timeouts")? {
            None => d.timeouts,
            Some(t) => Timeouts {
                request_ms: integer(t, "requestMs", "timeouts")?.unwrap_or(d.timeouts.request_ms),
                idle_ms: integer(t, "idleMs", "timeouts")?.unwrap_or(d.timeouts.idle_ms),
                connect_ms: integer(t, "connectMs", "timeouts")?.unwrap_or(d.timeouts.connect_ms),
            },
        };
        let circuit_breaker = match object(s, "circuitBreaker", "circuitBreaker")? {
            None => d.circuit_breaker,
            Some(c) => {
                let cb = d.circuit_breaker;
                CircuitBreaker {
                    max_connections: u32_or(
                        c,
                        "maxConnections",
                        "circuitBreaker",
                        cb.max_connections,
                    )?,
                    max_pending_requests: u32_or(
                        c,
                        "maxPendingRequests",
                        "circuitBreaker",
                        cb.max_pending_requests,
                    )?,
                    max_requests: u32_or(c, "maxRequests", "circuitBreaker", cb.max_requests)?,
                }
            }
        };
        Ok(TrafficSettings {
            retries,
            timeouts,
            circuit_breaker,
        })
    }

    /// The metadata struct, every field written out (`perTryTimeoutMs`
    /// only when set).
    pub fn to_struct(&self) -> Struct {
        let r = &self.retries;
        let mut retries = vec![
            ("attempts", number(r.attempts.into())),
            (
                "retryOn",
                Value {
                    kind: Some(Kind::ListValue(ListValue {
                        values: r.retry_on.iter().map(|s| string(s)).collect(),
                    })),
                },
            ),
            (
                "budget",
                object_value(vec![
                    ("percent", number(r.budget.percent.into())),
                    (
                        "minRetriesPerSecond",
                        number(r.budget.min_retries_per_second.into()),
                    ),
                    ("ttlSeconds", number(r.budget.ttl_seconds.into())),
                ]),
            ),
        ];
        if let Some(ms) = r.per_try_timeout_ms {
            retries.push(("perTryTimeoutMs", number_u64(ms)));
        }
        let t = &self.timeouts;
        let c = &self.circuit_breaker;
        to_struct(vec![
            ("retries", object_value(retries)),
            (
                "timeouts",
                object_value(vec![
                    ("requestMs", number_u64(t.request_ms)),
                    ("idleMs", number_u64(t.idle_ms)),
                    ("connectMs", number_u64(t.connect_ms)),
                ]),
            ),
            (
                "circuitBreaker",
                object_value(vec![
                    ("maxConnections", number(c.max_connections.into())),
                    ("maxPendingRequests", number(c.max_pending_requests.into())),
                    ("maxRequests", number(c.max_requests.into())),
                ]),
            ),
        ])
    }
}

/// Largest integer an f64 holds exactly (2^53).
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

fn error(path: &str, key: &str, detail: &str) -> TrafficError {
    TrafficError {
        path: if path == key {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        },
        detail: detail.to_owned(),
    }
}

fn present<'a>(s: &'a Struct, key: &str) -> Option<&'a Kind> {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        None | Some(Kind::NullValue(_)) => None,
        Some(k) => Some(k),
    }
}

/// A nested struct; `path` is the field's own path.
fn object<'a>(s: &'a Struct, key: &str, path: &str) -> Result<Option<&'a Struct>, TrafficError> {
    match present(s, key) {
        None => Ok(None),
        Some(Kind::StructValue(v)) => Ok(Some(v)),
        Some(_) => Err(error(path, path, "not an object")),
    }
}

/// A non-negative integer field; `parent` is the path of `s`.
fn integer(s: &Struct, key: &str, parent: &str) -> Result<Option<u64>, TrafficError> {
    match present(s, key) {
        None => Ok(None),
        Some(Kind::NumberValue(n)) => {
            if n.is_finite() && *n >= 0.0 && n.fract() == 0.0 && *n <= MAX_EXACT {
                // Checked above: a whole number in 0..=2^53 converts exactly.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(Some(*n as u64))
            } else {
                Err(error(
                    parent,
                    key,
                    &format!("{n} is not a non-negative integer"),
                ))
            }
        }
        Some(_) => Err(error(parent, key, "not a number")),
    }
}

fn u32_or(s: &Struct, key: &str, parent: &str, default: u32) -> Result<u32, TrafficError> {
    match integer(s, key, parent)? {
        None => Ok(default),
        Some(n) => u32::try_from(n).map_err(|_| error(parent, key, &format!("{n} is too large"))),
    }
}

fn strings(s: &Struct, key: &str, parent: &str) -> Result<Option<Vec<String>>, TrafficError> {
    match present(s, key) {
        None => Ok(None),
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| match &v.kind {
                Some(Kind::StringValue(s)) => Ok(s.clone()),
                _ => Err(error(parent, &format!("{key}[{i}]"), "not a string")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(error(parent, key, "not a list")),
    }
}

/// Exact up to 2^53 (every value here is far below).
#[allow(clippy::cast_precision_loss)]
fn number_u64(n: u64) -> Value {
    number(n as f64)
}

fn to_struct(fields: Vec<(&str, Value)>) -> Struct {
    Struct {
        fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

fn object_value(fields: Vec<(&str, Value)>) -> Value {
    Value {
        kind: Some(Kind::StructValue(to_struct(fields))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_empty_struct_reads_as_defaults() {
        let d = TrafficSettings::default();
        assert_eq!(d.retries.attempts, 2);
        assert_eq!(d.retries.retry_on, RETRY_ON);
        assert_eq!(d.timeouts.request_ms, 15_000);
        assert_eq!(d.circuit_breaker.max_requests, 1024);
        assert_eq!(TrafficSettings::from_struct(&d.to_struct()), Ok(d.clone()));
        assert_eq!(TrafficSettings::from_struct(&Struct::default()), Ok(d));
    }

    #[test]
    fn every_field_round_trips() {
        let t = TrafficSettings {
            retries: Retries {
                attempts: 5,
                per_try_timeout_ms: Some(250),
                retry_on: vec!["reset".into()],
                budget: RetryBudget {
                    percent: 50,
                    min_retries_per_second: 3,
                    ttl_seconds: 7,
                },
            },
            timeouts: Timeouts {
                request_ms: 0,
                idle_ms: 60_000,
                connect_ms: 300,
            },
            circuit_breaker: CircuitBreaker {
                max_connections: 1,
                max_pending_requests: 2,
                max_requests: 3,
            },
        };
        let s = t.to_struct();
        let Some(Kind::StructValue(r)) = s.fields["retries"].kind.as_ref() else {
            panic!("retries is not a struct: {s:?}");
        };
        assert_eq!(
            r.fields["perTryTimeoutMs"].kind,
            Some(Kind::NumberValue(250.0))
        );
        assert_eq!(TrafficSettings::from_struct(&s), Ok(t));
    }

    #[test]
    fn partial_structs_fill_defaults_and_bad_types_name_the_path() {
        let s = to_struct(vec![(
            "retries",
            object_value(vec![(
                "budget",
                object_value(vec![("percent", number(30.0))]),
            )]),
        )]);
        let t = TrafficSettings::from_struct(&s).unwrap();
        assert_eq!(t.retries.budget.percent, 30);
        assert_eq!(t.retries.budget.ttl_seconds, DEFAULT_BUDGET_TTL_SECONDS);
        assert_eq!(t.retries.attempts, DEFAULT_RETRY_ATTEMPTS);

        let bad = to_struct(vec![(
            "retries",
            object_value(vec![(
                "budget",
                object_value(vec![("percent", number(-1.0))]),
            )]),
        )]);
        let e = TrafficSettings::from_struct(&bad).unwrap_err();
        assert_eq!(e.path, "retries.budget.percent");
        let bad = to_struct(vec![("timeouts", string("soon"))]);
        assert_eq!(
            TrafficSettings::from_struct(&bad).unwrap_err().path,
            "timeouts"
        );
        let bad = to_struct(vec![(
            "retries",
            object_value(vec![(
                "retryOn",
                Value {
                    kind: Some(Kind::ListValue(ListValue {
                        values: vec![number(1.0)],
                    })),
                },
            )]),
        )]);
        assert_eq!(
            TrafficSettings::from_struct(&bad).unwrap_err().path,
            "retries.retryOn[0]"
        );
        let big = to_struct(vec![(
            "circuitBreaker",
            object_value(vec![("maxRequests", number(5e9))]),
        )]);
        assert!(TrafficSettings::from_struct(&big)
            .unwrap_err()
            .detail
            .contains("too large"));
        let frac = to_struct(vec![(
            "timeouts",
            object_value(vec![("requestMs", number(1.5))]),
        )]);
        assert!(TrafficSettings::from_struct(&frac).is_err());
    }
}
