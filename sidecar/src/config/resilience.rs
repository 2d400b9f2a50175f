//! `services[i].resilience`: the raw YAML shape and its validation into
//! [`crate::resilience::Resilience`] (docs/reference/data-path-config.md,
//! "Resilience"). Defaults: the documented constants of
//! [`crate::resilience`], except that a request or connect timeout set in
//! the file's top-level `timeouts` section is the default of every service
//! that does not set its own (the file's behaviour before per-service
//! timeouts existed).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::RawTimeouts;
use super::ConfigError;
use crate::resilience::retry::RetryClass;
use crate::resilience::{
    BudgetConfig, CircuitBreakerLimits, Resilience, RetryOn, RetryPolicy, ServiceTimeouts,
    MAX_RETRY_ATTEMPTS,
};

/// `services[i].resilience`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawResilience {
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RawRetries>,
    /// Per-service timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RawServiceTimeouts>,
    /// Circuit-breaker limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<RawCircuitBreaker>,
}

/// `services[i].resilience.retries`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Retries after the first sent attempt (default 2, at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Per-attempt deadline to the response head, ms (0 or unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Failure classes retried (default all four).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    /// The retry budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RawBudget>,
}

/// `services[i].resilience.retries.budget`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Retries as a percentage of requests (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Retries per second always allowed (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retries_per_second: Option<u32>,
    /// Window over which requests and retries count, ms (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// `services[i].resilience.timeouts`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceTimeouts {
    /// Request deadline to the response head, ms (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    /// Idle timeout of TCP connections and pooled HTTP/2 connections, ms
    /// (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    /// Connect + TLS / tunnel open, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
}

/// `services[i].resilience.circuit_breaker`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    /// Open connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

/// The policy of `services[i]` (`key` = `services[i].resilience`), with
/// `global` supplying the request and connect defaults it sets.
pub(super) fn resilience(
    key: &str,
    raw: Option<&RawResilience>,
    global: &RawTimeouts,
) -> Result<Resilience, ConfigError> {
    let empty = RawResilience::default();
    let raw = raw.unwrap_or(&empty);
    let d = Resilience::default();

    let r = raw.retries.clone().unwrap_or_default();
    let attempts = r.attempts.unwrap_or(d.retries.attempts);
    if attempts > MAX_RETRY_ATTEMPTS {
        return Err(invalid(
            format!("{key}.retries.attempts"),
            format!("{attempts} is above {MAX_RETRY_ATTEMPTS}"),
        ));
    }
    let retry_on = match &r.retry_on {
        None => d.retries.retry_on,
        Some(words) => {
            let mut classes = Vec::with_capacity(words.len());
            for (j, w) in words.iter().enumerate() {
                classes.push(
                    RetryClass::parse(w)
                        .map_err(|p| invalid(format!("{key}.retries.retry_on[{j}]"), p))?,
                );
            }
            RetryOn::from_classes(classes)
        }
    };
    let b = r.budget.clone().unwrap_or_default();
    let db = d.retries.budget;
    let budget = BudgetConfig::new(
        b.percent.unwrap_or(db.percent()),
        b.min_retries_per_second
            .unwrap_or(db.min_retries_per_second()),
        b.ttl_ms.map_or(db.ttl(), Duration::from_millis),
    )
    .map_err(|e| invalid(format!("{key}.retries.budget"), e.to_string()))?;
    let retries = RetryPolicy {
        attempts,
        per_try_timeout: nonzero_ms(r.per_try_timeout_ms),
        retry_on,
        budget,
    };

    let t = raw.timeouts.clone().unwrap_or_default();
    let request = match t.request_ms.or(global.request_ms) {
        None => d.timeouts.request,
        Some(ms) => nonzero_ms(Some(ms)),
    };
    let idle = match t.idle_ms {
        None => d.timeouts.idle,
        Some(ms) => nonzero_ms(Some(ms)),
    };
    let connect = positive(
        &format!("{key}.timeouts.connect_ms"),
        // A global 0 is reported under its own key.
        t.connect_ms.or(global.connect_ms.filter(|ms| *ms > 0)),
        d.timeouts.connect,
    )?;

    let c = raw.circuit_breaker.clone().unwrap_or_default();
    let dc = d.circuit_breaker;
    let limit = |name: &str, v: Option<u32>, default: u32| match v {
        Some(0) => Err(invalid(
            format!("{key}.circuit_breaker.{name}"),
            "must be greater than 0",
        )),
        v => Ok(v.unwrap_or(default)),
    };
    let circuit_breaker = CircuitBreakerLimits {
        max_connections: limit("max_connections", c.max_connections, dc.max_connections)?,
        max_pending_requests: limit(
            "max_pending_requests",
            c.max_pending_requests,
            dc.max_pending_requests,
        )?,
        max_requests: limit("max_requests", c.max_requests, dc.max_requests)?,
    };
    Ok(Resilience {
        retries,
        timeouts: ServiceTimeouts {
            request,
            idle,
            connect,
        },
        circuit_breaker,
    })
}

/// The policy the controller pushed in a CDS cluster's
/// `isthmus.dev/traffic` metadata ([`mesh_api::traffic`]), validated like
/// the static section. Errors name the resource's camelCase path.
///
/// # Errors
/// A lowercase message naming the field at fault.
pub fn from_traffic(t: &mesh_api::traffic::TrafficSettings) -> Result<Resilience, String> {
    let r = &t.retries;
    if r.attempts > MAX_RETRY_ATTEMPTS {
        return Err(format!(
            "retries.attempts: {} is above {MAX_RETRY_ATTEMPTS}",
            r.attempts
        ));
    }
    let mut classes = Vec::with_capacity(r.retry_on.len());
    for (j, w) in r.retry_on.iter().enumerate() {
        classes.push(RetryClass::parse(w).map_err(|p| format!("retries.retryOn[{j}]: {p}"))?);
    }
    let budget = BudgetConfig::new(
        r.budget.percent,
        r.budget.min_retries_per_second,
        Duration::from_secs(u64::from(r.budget.ttl_seconds)),
    )
    .map_err(|e| format!("retries.budget: {e}"))?;
    if t.timeouts.connect_ms == 0 {
        return Err("timeouts.connectMs: must be greater than 0".to_owned());
    }
    let c = &t.circuit_breaker;
    for (name, v) in [
        ("maxConnections", c.max_connections),
        ("maxPendingRequests", c.max_pending_requests),
        ("maxRequests", c.max_requests),
    ] {
        if v == 0 {
            return Err(format!("circuitBreaker.{name}: must be greater than 0"));
        }
    }
    Ok(Resilience {
        retries: RetryPolicy {
            attempts: r.attempts,
            per_try_timeout: nonzero_ms(r.per_try_timeout_ms),
            retry_on: RetryOn::from_classes(classes),
            budget,
        },
        timeouts: ServiceTimeouts {
            request: nonzero_ms(Some(t.timeouts.request_ms)),
            idle: nonzero_ms(Some(t.timeouts.idle_ms)),
            connect: Duration::from_millis(t.timeouts.connect_ms),
        },
        circuit_breaker: CircuitBreakerLimits {
            max_connections: c.max_connections,
            max_pending_requests: c.max_pending_requests,
            max_requests: c.max_requests,
        },
    })
}

fn nonzero_ms(v: Option<u64>) -> Option<Duration> {
    v.filter(|ms| *ms > 0).map(Duration::from_millis)
}

fn positive(key: &str, v: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(0) => Err(invalid(key, "must be greater than 0")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    fn yaml(service_extra: &str, timeouts: &str) -> String {
        format!(
            r#"
cluster: cluster-a
identity:
  spiffe_id: spiffe://cluster-a.mesh/ns/default/sa/frontend
  ca: {{ cert: ca.pem, key: ca-key.pem }}
  bundles: bundles.json
admin: 127.0.1.20:15000
services:
  - service: default/backend
    port: 8080
    endpoints:
      - {{ address: "127.0.1.30:15006", spiffe_id: "spiffe://cluster-a.mesh/ns/default/sa/backend" }}
{service_extra}
{timeouts}
"#
        )
    }

    fn parse(service_extra: &str, timeouts: &str) -> Result<Resilience, String> {
        Config::from_yaml(&yaml(service_extra, timeouts), Path::new("/"))
            .map(|c| c.services[0].resilience.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn without_a_section_the_documented_defaults_apply() {
        let r = parse("", "").unwrap();
        assert_eq!(r, Resilience::default());
        assert_eq!(r.retries.attempts, 2);
        assert_eq!(r.retries.per_try_timeout, None);
        assert_eq!(r.retries.retry_on, RetryOn::default());
        assert_eq!(r.retries.budget.percent(), 20);
        assert_eq!(r.retries.budget.min_retries_per_second(), 10);
        assert_eq!(r.retries.budget.ttl(), Duration::from_secs(10));
        assert_eq!(r.timeouts.request, Some(Duration::from_secs(15)));
        assert_eq!(r.timeouts.idle, Some(Duration::from_secs(3600)));
        assert_eq!(r.timeouts.connect, Duration::from_secs(1));
        assert_eq!(r.circuit_breaker.max_connections, 1024);
        assert_eq!(r.circuit_breaker.max_pending_requests, 1024);
        assert_eq!(r.circuit_breaker.max_requests, 1024);
    }

    #[test]
    fn every_key_is_read() {
        let r = parse(
            "    resilience:
      retries:
        attempts: 3
        per_try_timeout_ms: 250
        retry_on: [reset, reject-503]
        budget: { percent: 50, min_retries_per_second: 1, ttl_ms: 2000 }
      timeouts: { request_ms: 0, idle_ms: 60000, connect_ms: 300 }
      circuit_breaker: { max_connections: 4, max_pending_requests: 5, max_requests: 6 }",
            "",
        )
        .unwrap();
        assert_eq!(r.retries.attempts, 3);
        assert_eq!(r.retries.per_try_timeout, Some(Duration::from_millis(250)));
        assert!(r.retries.retry_on.contains(RetryClass::Reset));
        assert!(!r.retries.retry_on.contains(RetryClass::ConnectFailure));
        assert_eq!(r.retries.budget.percent(), 50);
        assert_eq!(r.retries.budget.ttl(), Duration::from_secs(2));
        assert_eq!(r.timeouts.request, None, "0 = no deadline");
        assert_eq!(r.timeouts.idle, Some(Duration::from_secs(60)));
        assert_eq!(r.timeouts.connect, Duration::from_millis(300));
        assert_eq!(
            r.circuit_breaker,
            CircuitBreakerLimits {
                max_connections: 4,
                max_pending_requests: 5,
                max_requests: 6
            }
        );
    }

    #[test]
    fn the_top_level_timeouts_are_the_services_defaults() {
        let r = parse("", "timeouts: { request_ms: 2500, connect_ms: 700 }").unwrap();
        assert_eq!(r.timeouts.request, Some(Duration::from_millis(2500)));
        assert_eq!(r.timeouts.connect, Duration::from_millis(700));
        let r = parse(
            "    resilience: { timeouts: { connect_ms: 100 } }",
            "timeouts: { request_ms: 0, connect_ms: 700 }",
        )
        .unwrap();
        assert_eq!(r.timeouts.request, None);
        assert_eq!(r.timeouts.connect, Duration::from_millis(100));
    }

    #[test]
    fn the_controllers_defaults_are_ours() {
        let t = mesh_api::traffic::TrafficSettings::default();
        assert_eq!(from_traffic(&t).unwrap(), Resilience::default());
        let mut t = t;
        t.timeouts.idle_ms = 0;
        t.retries.per_try_timeout_ms = Some(200);
        let r = from_traffic(&t).unwrap();
        assert_eq!(r.timeouts.idle, None, "0 = never");
        assert_eq!(r.retries.per_try_timeout, Some(Duration::from_millis(200)));
        t.retries.retry_on.push("5xx".into());
        assert!(from_traffic(&t)
            .unwrap_err()
            .starts_with("retries.retryOn[4]"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (extra, want) in [
            (
                "    resilience: { retries: { attempts: 11 } }",
                "services[0].resilience.retries.attempts: 11 is above 10",
            ),
            (
                "    resilience: { retries: { retry_on: [reset, 5xx] } }",
                "services[0].resilience.retries.retry_on[1]",
            ),
            (
                "    resilience: { retries: { budget: { ttl_ms: 500 } } }",
                "services[0].resilience.retries.budget: ttl",
            ),
            (
                "    resilience: { retries: { budget: { percent: 5000 } } }",
                "services[0].resilience.retries.budget: percent 5000",
            ),
            (
                "    resilience: { timeouts: { connect_ms: 0 } }",
                "services[0].resilience.timeouts.connect_ms: must be greater than 0",
            ),
            (
                "    resilience: { circuit_breaker: { max_requests: 0 } }",
                "services[0].resilience.circuit_breaker.max_requests",
            ),
            ("    resilience: { retry: {} }", "unknown field `retry`"),
        ] {
            let e = parse(extra, "").unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }
}
