//! `TrafficPolicy` and `FailoverPolicy.spec.outlierDetection`: defaults,
//! every field, errors with field paths, round trip.

use crate::*;

const TRAFFIC_POLICY: &str = "\
apiVersion: isthmus.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: web
  namespace: shop
spec:
  service: web
  retries:
    attempts: 3
    perTryTimeoutMs: 500
    retryOn: [connect-failure, reset]
    budget:
      percent: 50
      minRetriesPerSecond: 5
      ttlSeconds: 20
  timeouts:
    requestMs: 0
    idleMs: 60000
    connectMs: 300
  circuitBreaker:
    maxConnections: 10
    maxPendingRequests: 20
    maxRequests: 30
";

const MINIMAL: &str = "\
apiVersion: isthmus.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: shop}
spec: {service: web}
";

const FAILOVER_WITH_OUTLIER: &str = "\
apiVersion: isthmus.dev/v1alpha1
kind: FailoverPolicy
metadata: {name: web, namespace: shop}
spec:
  service: web
  targets: [{cluster: cluster-b}]
  outlierDetection:
    consecutive5xx: 0
    consecutiveGatewayErrors: 2
    intervalMs: 1000
    baseEjectionTimeMs: 5000
";

fn one(doc: &str) -> Resource {
    let mut rs = parse(doc).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rs.len(), 1);
    rs.remove(0)
}

fn messages(doc: &str) -> Vec<String> {
    match parse(doc) {
        Ok(rs) => panic!("accepted {rs:?}"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

fn round_trips(r: &Resource) {
    let yaml = r.to_yaml().unwrap();
    assert_eq!(&one(&yaml), r, "yaml:\n{yaml}");
    let json = r.to_json().unwrap();
    assert_eq!(&one(&json), r, "json:\n{json}");
}

#[test]
fn minimal_traffic_policy_takes_every_default_and_writes_them_out() {
    let r = one(MINIMAL);
    assert_eq!(
        (r.kind(), r.api_version()),
        ("TrafficPolicy", ISTHMUS_API_VERSION)
    );
    let Resource::TrafficPolicy(tp) = &r else {
        panic!("not a TrafficPolicy: {r:?}");
    };
    let s = &tp.spec;
    assert_eq!(s.service, "web");
    assert_eq!(s.retries.attempts, 2);
    assert_eq!(s.retries.per_try_timeout_ms, None);
    assert_eq!(s.retries.retry_on, RETRY_ON_VALUES);
    assert_eq!(
        (
            s.retries.budget.percent,
            s.retries.budget.min_retries_per_second,
            s.retries.budget.ttl_seconds
        ),
        (20, 10, 10)
    );
    assert_eq!(
        (
            s.timeouts.request_ms,
            s.timeouts.idle_ms,
            s.timeouts.connect_ms
        ),
        (15_000, 3_600_000, 1_000)
    );
    assert_eq!(
        (
            s.circuit_breaker.max_connections,
            s.circuit_breaker.max_pending_requests,
            s.circuit_breaker.max_requests
        ),
        (1024, 1024, 1024)
    );
    let json = r.to_value().unwrap();
    assert_eq!(
        json.pointer("/spec/retries/budget/ttlSeconds"),
        Some(&10.into())
    );
    assert_eq!(
        json.pointer("/spec/timeouts/requestMs"),
        Some(&15_000.into())
    );
    assert_eq!(json.pointer("/spec/retries/perTryTimeoutMs"), None);
    round_trips(&r);
}

#[test]
fn every_traffic_policy_field_parses_and_round_trips() {
    let r = one(TRAFFIC_POLICY);
    let Resource::TrafficPolicy(tp) = &r else {
        panic!("not a TrafficPolicy: {r:?}");
    };
    let want = TrafficPolicySpec {
        service: "web".into(),
        retries: RetriesSpec {
            attempts: 3,
            per_try_timeout_ms: Some(500),
            retry_on: vec!["connect-failure".into(), "reset".into()],
            budget: BudgetSpec {
                percent: 50,
                min_retries_per_second: 5,
                ttl_seconds: 20,
            },
        },
        timeouts: TimeoutsSpec {
            request_ms: 0,
            idle_ms: 60_000,
            connect_ms: 300,
        },
        circuit_breaker: CircuitBreakerSpec {
            max_connections: 10,
            max_pending_requests: 20,
            max_requests: 30,
        },
    };
    assert_eq!(tp.spec, want);
    round_trips(&r);
}

#[test]
fn traffic_policy_errors_name_field_paths() {
    let tp = "document 1 (TrafficPolicy shop/web): ";
    let cases = [
        ("attempts: 3", "attempts: 11",
         format!("{tp}spec.retries.attempts: Invalid value: 11: must be between 0 and 10")),
        ("retryOn: [connect-failure, reset]", "retryOn: [connect-failure, 5xx]",
         format!("{tp}spec.retries.retryOn[1]: Unsupported value: \"5xx\": supported values: \"connect-failure\", \"refused-stream\", \"reset\", \"reject-503\"")),
        ("retryOn: [connect-failure, reset]", "retryOn: [reset, reset]",
         format!("{tp}spec.retries.retryOn[1]: Duplicate value: \"reset\"")),
        ("ttlSeconds: 20", "ttlSeconds: 61",
         format!("{tp}spec.retries.budget.ttlSeconds: Invalid value: 61: must be between 1 and 60")),
        ("connectMs: 300", "connectMs: 0",
         format!("{tp}spec.timeouts.connectMs: Invalid value: 0: must be between 1 and 86400000")),
        ("maxRequests: 30", "maxRequets: 30",
         format!("{tp}spec.circuitBreaker.maxRequets: unknown field \"maxRequets\"")),
        ("  service: web\n", "",
         format!("{tp}spec.service: Required value")),
        ("perTryTimeoutMs: 500", "perTryTimeoutMs: \"500\"",
         format!("{tp}spec.retries.perTryTimeoutMs: Invalid value: \"500\": must be an integer")),
    ];
    for (from, to, want) in cases {
        assert!(TRAFFIC_POLICY.contains(from), "{from}");
        let doc = TRAFFIC_POLICY.replacen(from, to, 1);
        assert_eq!(messages(&doc), [want], "{to}");
    }
}

#[test]
fn outlier_detection_is_optional_and_fills_defaults() {
    let Resource::FailoverPolicy(fp) = one(super::examples::FAILOVER_POLICY) else {
        panic!("not a FailoverPolicy");
    };
    assert_eq!(fp.spec.outlier_detection, None);
    assert_eq!(
        fp.spec.effective_outlier_detection(),
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 5,
            interval_ms: 10_000,
            base_ejection_time_ms: 30_000,
            max_ejection_time_ms: 300_000,
            max_ejection_percent: 10,
        }
    );

    let r = one(FAILOVER_WITH_OUTLIER);
    let Resource::FailoverPolicy(fp) = &r else {
        panic!("not a FailoverPolicy");
    };
    assert_eq!(
        fp.spec.outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 2,
            interval_ms: 1000,
            base_ejection_time_ms: 5000,
            max_ejection_time_ms: DEFAULT_MAX_EJECTION_TIME_MS,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        })
    );
    let json = r.to_value().unwrap();
    assert_eq!(
        json.pointer("/spec/outlierDetection/consecutive5xx"),
        Some(&0.into())
    );
    round_trips(&r);
}

#[test]
fn outlier_detection_errors_name_field_paths() {
    let fp = "document 1 (FailoverPolicy shop/web): ";
    let cases = [
        ("intervalMs: 1000", "intervalMs: 0",
         format!("{fp}spec.outlierDetection.intervalMs: Invalid value: 0: must be between 1 and 86400000")),
        ("consecutive5xx: 0", "consecutive5xx: -1",
         format!("{fp}spec.outlierDetection.consecutive5xx: Invalid value: -1: must be between 0 and 1000000")),
        ("baseEjectionTimeMs: 5000", "baseEjectionTimeMs: 5000\n    maxEjectionPercent: 101",
         format!("{fp}spec.outlierDetection.maxEjectionPercent: Invalid value: 101: must be between 0 and 100")),
        ("baseEjectionTimeMs: 5000", "baseEjectionTimeMs: 5000\n    maxEjectionTimeMs: 4000",
         format!("{fp}spec.outlierDetection.maxEjectionTimeMs: Invalid value: 4000: must be at least baseEjectionTimeMs (5000)")),
        ("intervalMs: 1000", "interval: 1000",
         format!("{fp}spec.outlierDetection.interval: unknown field \"interval\"")),
    ];
    for (from, to, want) in cases {
        assert!(FAILOVER_WITH_OUTLIER.contains(from), "{from}");
        let doc = FAILOVER_WITH_OUTLIER.replacen(from, to, 1);
        assert_eq!(messages(&doc), [want], "{to}");
    }
}
