//! Resilience policies of one upstream service: retries with a budget,
//! request/idle/connect timeouts and circuit breaking (issue 6, contract
//! sections B and D; docs/reference/data-path-config.md, "Resilience").
//!
//! What it owns: the typed policy ([`Resilience`], valid by construction,
//! built from the static `services[].resilience` section or from CDS), the
//! pure retry decision ([`retry`]), the retry budget ([`budget`], tower's
//! `TpsBudget`: Linkerd's model) and the circuit-breaker counters with RAII
//! guards ([`circuit`]). What it does not own: the forward loop that acts on
//! the decisions (`outbound::http`, `outbound::tcp`), endpoint choice and
//! health (`plan`, `health`).
//!
//! Driving it: the runtime holds one [`ResilienceState`]; each request asks
//! it for its service's [`ServiceState`], deposits into the budget, takes a
//! [`circuit::RequestGuard`], and for each failed attempt asks
//! [`retry::decide`] whether to go on.

pub mod budget;
pub mod circuit;
pub mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Serialize, Serializer};

use crate::config::ServiceKey;

pub use budget::BudgetConfig;
pub use circuit::{Circuit, CircuitBreakerLimits};
pub use retry::{RetryOn, RetryPolicy, RetryReason};

/// Default retries after the first attempt (contract B: `attempts: 2`).
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// Largest `retries.attempts`.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Default `timeouts.request_ms` of a service: 15 s (Envoy's route timeout).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 15_000;
/// Default `timeouts.idle_ms` of a service: 1 h (Envoy's
/// `common_http_protocol_options.idle_timeout` and TCP proxy idle timeout).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 3_600_000;
/// Default `timeouts.connect_ms` of a service: 1 s (Linkerd's connect
/// timeout; Envoy's is 5 s, too slow to fail over within the 1 s target).
pub const DEFAULT_SERVICE_CONNECT_MS: u64 = 1_000;
/// Largest request body kept for replay, bytes (64 KiB, Linkerd's
/// `ReplayBody` cap). Bodies of unknown or larger size stream through and
/// make the request non-replayable.
pub const REPLAY_BUFFER_BYTES: usize = 64 * 1024;
/// Response header naming how many attempts a request took, set when > 1.
pub const ATTEMPTS_HEADER: &str = "x-isthmus-attempts";

/// The resilience policy of one service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Resilience {
    /// When and how often to retry.
    pub retries: RetryPolicy,
    /// Request, idle and connect timeouts.
    pub timeouts: ServiceTimeouts,
    /// Concurrency limits per upstream service.
    pub circuit_breaker: CircuitBreakerLimits,
}

/// Timeouts of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServiceTimeouts {
    /// Deadline from the request's arrival to the response head, over every
    /// attempt; `None` = no deadline. Answer: 504 `request timeout`.
    #[serde(rename = "request_ms", serialize_with = "opt_ms")]
    pub request: Option<Duration>,
    /// An outbound TCP connection without traffic, or a pooled HTTP/2
    /// connection handed to no request, this long is closed; `None` = never.
    #[serde(rename = "idle_ms", serialize_with = "opt_ms")]
    pub idle: Option<Duration>,
    /// TCP connect + inner TLS handshake, or tunnel open until accept.
    #[serde(rename = "connect_ms", serialize_with = "ms")]
    pub connect: Duration,
}

impl Default for ServiceTimeouts {
    fn default() -> Self {
        ServiceTimeouts {
            request: Some(Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS)),
            idle: Some(Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS)),
            connect: Duration::from_millis(DEFAULT_SERVICE_CONNECT_MS),
        }
    }
}

/// Labels of `isthmus_retries_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetryLabels {
    /// `namespace/name`.
    pub service: String,
    /// What made the attempt fail: a [`RetryReason`] label.
    pub reason: &'static str,
}

/// Labels of `isthmus_retry_budget_exhausted_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BudgetLabels {
    /// `namespace/name`.
    pub service: String,
}

/// Labels of `isthmus_circuit_open_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CircuitLabels {
    /// `namespace/name`.
    pub service: String,
    /// `max_requests`, `max_pending_requests` or `max_connections`.
    pub limit: &'static str,
}

/// The resilience metric families.
#[derive(Debug, Clone, Default)]
pub struct ResilienceMetrics {
    /// `isthmus_retries_total{service,reason}`: attempts made after a failed
    /// one (including moves to the next candidate after a connect failure).
    pub retries: Family<RetryLabels, Counter>,
    /// `isthmus_retry_budget_exhausted_total{service}`: retries refused
    /// because the budget was spent.
    pub budget_exhausted: Family<BudgetLabels, Counter>,
    /// `isthmus_circuit_open_total{service,limit}`: requests or connections
    /// refused by a circuit-breaker limit.
    pub circuit_open: Family<CircuitLabels, Counter>,
}

/// Per-service runtime state: the retry budget and the circuit counters.
#[derive(Debug)]
pub struct ServiceState {
    /// `namespace/name`, the metrics label.
    pub label: String,
    /// The retry budget (rebuilt when its config changes).
    pub budget: budget::RetryBudget,
    /// The circuit-breaker counters.
    pub circuit: Circuit,
}

/// Every service's runtime state, created on first use and kept across
/// reloads (a changed budget config gets a fresh budget).
#[derive(Debug, Default)]
pub struct ResilienceState {
    services: Mutex<HashMap<ServiceKey, HashMap<u16, Arc<ServiceState>>>>,
    /// The metric families.
    pub metrics: ResilienceMetrics,
}

impl ResilienceMetrics {
    /// Creates the families and registers them into `registry`.
    pub fn register(registry: &mut Registry) -> ResilienceMetrics {
        let m = ResilienceMetrics::default();
        registry.register(
            "isthmus_retries",
            "Retried attempts of outbound requests by reason",
            m.retries.clone(),
        );
        registry.register(
            "isthmus_retry_budget_exhausted",
            "Retries refused because the service's retry budget was spent",
            m.budget_exhausted.clone(),
        );
        registry.register(
            "isthmus_circuit_open",
            "Requests or connections refused by a circuit-breaker limit",
            m.circuit_open.clone(),
        );
        m
    }
}

impl ResilienceState {
    /// State whose metrics are registered into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        ResilienceState {
            services: Mutex::new(HashMap::new()),
            metrics: ResilienceMetrics::register(registry),
        }
    }

    /// The policy in force for `outbound`'s service in `config` (the
    /// defaults for a service the catalog does not hold) and its state.
    pub fn for_outbound(
        &self,
        config: &crate::config::Config,
        outbound: &crate::config::Outbound,
    ) -> (Resilience, Arc<ServiceState>) {
        let policy = config
            .service(&outbound.service, outbound.port)
            .map(|s| s.resilience.clone())
            .unwrap_or_default();
        let state = self.service(&outbound.service, outbound.port, &policy);
        (policy, state)
    }

    /// The state of `service:port` under `policy`: created on first use,
    /// its budget replaced when `policy.retries.budget` changed.
    pub fn service(
        &self,
        service: &ServiceKey,
        port: u16,
        policy: &Resilience,
    ) -> Arc<ServiceState> {
        let mut map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        // The hit path (every request) borrows the key: no allocation.
        let known = map.get(service).and_then(|ports| ports.get(&port));
        if let Some(s) = known {
            if *s.budget.config() == policy.retries.budget {
                return s.clone();
            }
        }
        let circuit = known.map_or_else(Circuit::default, |s| s.circuit.clone());
        let state = Arc::new(ServiceState {
            label: service.to_string(),
            budget: budget::RetryBudget::new(policy.retries.budget),
            circuit,
        });
        map.entry(service.clone())
            .or_default()
            .insert(port, state.clone());
        state
    }

    /// Counts one retry of `state`'s service for `reason`.
    pub fn count_retry(&self, state: &ServiceState, reason: RetryReason) {
        self.metrics
            .retries
            .get_or_create(&RetryLabels {
                service: state.label.clone(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts one retry refused by the budget.
    pub fn count_budget_exhausted(&self, state: &ServiceState) {
        self.metrics
            .budget_exhausted
            .get_or_create(&BudgetLabels {
                service: state.label.clone(),
            })
            .inc();
    }

    /// Counts one refusal by the circuit limit `limit`.
    pub fn count_circuit_open(&self, state: &ServiceState, limit: circuit::Limit) {
        self.metrics
            .circuit_open
            .get_or_create(&CircuitLabels {
                service: state.label.clone(),
                limit: limit.as_str(),
            })
            .inc();
    }
}

pub(crate) fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn opt_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    ms(&d.unwrap_or(Duration::ZERO), s)
}
