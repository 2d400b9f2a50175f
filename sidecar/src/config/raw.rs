//! The YAML schema of `mesh-sidecar`, exactly as written in the file
//! (docs/reference/data-path-config.md, section `mesh-sidecar`). Nothing here
//! is validated beyond its shape; [`super::Config::from_raw`] turns it into
//! typed values.

use serde::{Deserialize, Serialize};
use trust_bundle::config::IdentityConfig;

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This cluster's name (DNS label).
    pub cluster: String,
    /// The workload's identity (`trust_bundle::config::IdentityConfig`).
    #[serde(skip_serializing)]
    pub identity: IdentityConfig,
    /// Admin listener, `ip:port`.
    pub admin: String,
    /// Where this workload runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<RawLocality>,
    /// The local east-west gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<RawGateway>,
    /// One local port per upstream service.
    #[serde(default)]
    pub outbound: Vec<RawOutbound>,
    /// Listeners that terminate mTLS and forward to the app.
    #[serde(default)]
    pub inbound: Vec<RawInbound>,
    /// The catalog this sidecar routes with.
    #[serde(default)]
    pub services: Vec<RawService>,
    /// Timeouts, all optional.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Largest request head accepted on HTTP listeners, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
    /// Runtime worker threads: 1 (default) a single-threaded runtime, `n`
    /// that many, 0 one per CPU the process may run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<u64>,
    /// The controller: identity, catalog (xDS) and registration come from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<RawControlPlane>,
}

/// `control_plane` (shared shape with `mesh-gateway`, plus `register`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawControlPlane {
    /// `host:port` of the controller's gRPC listener.
    pub address: String,
    /// The controller's SPIFFE ID (default
    /// `spiffe://<our td>/ns/isthmus-system/sa/controller`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// File holding the join token for the first SVID.
    pub join_token_file: String,
    /// Register this workload with a lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<RawRegister>,
    /// Plaintext h2c to the controller (loopback test setups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub danger_plaintext: Option<bool>,
    /// First reconnect delay, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_backoff_ms: Option<u64>,
    /// Largest reconnect delay, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
}

/// `control_plane.register`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegister {
    /// Workload name (DNS label), unique in its namespace.
    pub name: String,
    /// The service it backs (DNS label, in our SVID's namespace).
    pub service: String,
    /// Service ports served.
    pub ports: Vec<RawRegisterPort>,
    /// Requested lease, seconds (default: the controller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u32>,
}

/// `control_plane.register.ports[i]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegisterPort {
    /// The service port callers name.
    pub port: u32,
    /// Where callers connect on our address (normally an inbound listener).
    pub target_port: u32,
    /// `http`, `grpc` or `tcp`.
    pub protocol: String,
}

/// `locality`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocality {
    /// Region name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Zone name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// `gateway`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// UDP `ip:port` of the gateway's QUIC listener (one replica).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// UDP `ip:port` of each gateway replica; with `address` too, it must
    /// be one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The gateway's SPIFFE ID.
    pub spiffe_id: String,
    /// QUIC keep-alive interval, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_ms: Option<u64>,
    /// QUIC idle timeout, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

/// `outbound[i]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    /// TCP `ip:port` the app connects to.
    pub listen: String,
    /// `namespace/name`.
    pub service: String,
    /// Service port.
    pub port: u32,
    /// `http` or `tcp`.
    pub protocol: String,
    /// Optional cluster pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// `inbound[i]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawInbound {
    /// TCP `ip:port` for mTLS from other sidecars and gateways.
    pub listen: String,
    /// `http` or `tcp`.
    pub protocol: String,
    /// The app's `ip:port`.
    pub app: String,
    /// `http1` (default) or `h2c`; `http` listeners only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Caller SPIFFE IDs, or `spiffe://<td>/*`.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `services[i]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// `namespace/name`.
    pub service: String,
    /// Service port.
    pub port: u32,
    /// Endpoints in this cluster.
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    /// Other clusters exporting the service to us, in failover order.
    #[serde(default)]
    pub remote: Vec<RawRemote>,
    /// Retries, timeouts and circuit breaking (H3, issue 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resilience: Option<super::resilience::RawResilience>,
    /// Priority load, panic threshold and outlier detection (all optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<RawFailover>,
}

// ---- failover (H2; issue 6) ----

/// `services[i].failover`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    /// Percent, > 0 (default 140).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overprovisioning_factor: Option<u32>,
    /// Percent, 0..=100 (default 50; 0 disables panic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold_percent: Option<u32>,
    /// Passive outlier detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<RawOutlierDetection>,
}

/// `services[i].failover.outlier_detection` (Envoy's defaults).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlierDetection {
    /// Consecutive 5xx responses that eject a host (default 5; 0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway errors (connect failure, reset, tunnel reject,
    /// 502/503/504) that eject a host (default 5; 0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Success-rate evaluation interval, ms (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// First ejection time, ms, times the number of ejections (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time_ms: Option<u64>,
    /// Longest ejection, ms (default 300000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time_ms: Option<u64>,
    /// Most hosts ejected at once, percent (default 10; at least one host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

// ---- end failover ----

/// `services[i].endpoints[j]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    /// The endpoint sidecar's inbound `ip:port`.
    pub address: String,
    /// The endpoint workload's SPIFFE ID.
    pub spiffe_id: String,
    /// Where it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<RawLocality>,
    /// Its locality's weight (≥ 1, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `services[i].remote[k]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    /// The exporting cluster.
    pub cluster: String,
    /// The SPIFFE ID the remote workloads present.
    pub spiffe_id: String,
    /// Its locality weight (≥ 1, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `timeouts`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect + TLS handshake / tunnel open, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    /// Slowloris guard on HTTP listeners, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_read_ms: Option<u64>,
    /// Inbound TLS handshake, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake_ms: Option<u64>,
    /// Per-request deadline, ms (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    /// Graceful drain bound on SIGTERM, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_ms: Option<u64>,
}
