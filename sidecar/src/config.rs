//! The sidecar's config model: typed, validated values built once from the
//! YAML file (docs/reference/data-path-config.md, section `mesh-sidecar`).
//!
//! [`Config::from_yaml`] parses and validates; it reads no file and binds no
//! port (the identity files are read later by the runtime). Every error names
//! the key path at fault, and [`Config::load`] adds the file name. The
//! control-plane issue replaces the file with a live source producing the
//! same [`Config`].

pub mod raw;
pub mod resilience;
mod validate;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_failover::{Health, OutlierConfig};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use trust_bundle::config::IdentityConfig;
use trust_bundle::{SpiffeId, TrustDomain};

use raw::{RawConfig, RawLocality};

/// Default `timeouts.connect_ms`.
pub const DEFAULT_CONNECT_MS: u64 = 3_000;
/// Default `timeouts.header_read_ms`.
pub const DEFAULT_HEADER_READ_MS: u64 = 10_000;
/// Default `timeouts.tls_handshake_ms`.
pub const DEFAULT_TLS_HANDSHAKE_MS: u64 = 10_000;
/// Default `timeouts.drain_ms`.
pub const DEFAULT_DRAIN_MS: u64 = 30_000;
/// Default `max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 65_536;
/// Smallest `max_header_bytes` (hyper's HTTP/1 read buffer floor), bytes.
pub const MIN_MAX_HEADER_BYTES: usize = 8_192;
/// Largest `max_header_bytes`, bytes.
pub const MAX_MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;
/// Default `gateway.keep_alive_ms`.
pub const DEFAULT_GATEWAY_KEEP_ALIVE_MS: u64 = 2_000;
/// Default `gateway.idle_timeout_ms`.
pub const DEFAULT_GATEWAY_IDLE_TIMEOUT_MS: u64 = 10_000;

/// Why a config was refused. Messages start with the key path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not match the schema (unknown key, wrong type, missing
    /// key); serde's message carries the key path and line.
    #[error("{0}")]
    Syntax(serde_yaml_ng::Error),
    /// A value has the right type but is invalid.
    #[error("{key}: {problem}")]
    Invalid {
        /// Key path, e.g. `outbound[1].service`.
        key: String,
        /// What is wrong, lowercase.
        problem: String,
    },
    /// An error in a named file.
    #[error("{}", path.display())]
    InFile {
        /// The config file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<ConfigError>,
    },
}

/// A service name: `namespace/name`, both DNS labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Kubernetes-style namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
}

/// Where a workload runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Locality {
    /// Region, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Zone, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// The effective sidecar config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// This cluster's name.
    pub cluster: String,
    /// Who we are (the identity section's `spiffe_id`).
    pub spiffe_id: SpiffeId,
    /// The identity section, loaded by the runtime (files, not secrets, but
    /// left out of dumps).
    #[serde(skip)]
    pub identity: IdentityConfig,
    /// Directory relative identity paths are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Admin listener (TCP, HTTP/1.1).
    pub admin: SocketAddr,
    /// Where this workload runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// The local east-west gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// Outbound listeners.
    pub outbound: Vec<Outbound>,
    /// Inbound listeners.
    pub inbound: Vec<Inbound>,
    /// The routing catalog, keyed by service and port.
    pub services: Vec<Service>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Largest HTTP request head (HTTP/1 buffer, HTTP/2 header list), bytes.
    pub max_header_bytes: usize,
    /// Tokio worker threads (restart only).
    pub worker_threads: WorkerThreads,
    /// The controller, when the catalog and identity come from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlane>,
}

/// Default `control_plane.initial_backoff_ms`.
pub const DEFAULT_CONTROL_PLANE_INITIAL_BACKOFF_MS: u64 = 200;
/// Default `control_plane.max_backoff_ms`.
pub const DEFAULT_CONTROL_PLANE_MAX_BACKOFF_MS: u64 = 15_000;

/// The `control_plane` section: where the SVID, the catalog (`services`,
/// from CDS+EDS) and the workload registration come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlPlane {
    /// `host:port` of the controller's gRPC listener.
    pub address: String,
    /// The SPIFFE ID the controller must present.
    pub spiffe_id: SpiffeId,
    /// The join token file (relative paths against the config's directory).
    pub join_token_file: PathBuf,
    /// Leased registration of this workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<Registration>,
    /// Plaintext (h2c) to the controller: loopback tests only.
    pub danger_plaintext: bool,
    /// First reconnect delay.
    #[serde(rename = "initial_backoff_ms", serialize_with = "ms")]
    pub initial_backoff: Duration,
    /// Largest reconnect delay.
    #[serde(rename = "max_backoff_ms", serialize_with = "ms")]
    pub max_backoff: Duration,
}

/// `control_plane.register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    /// Workload name.
    pub name: String,
    /// The service it backs (in our SVID's namespace).
    pub service: String,
    /// Service ports.
    pub ports: Vec<RegisteredPort>,
    /// Requested lease, seconds (0 = the controller's default).
    pub lease_seconds: u32,
}

/// One registered port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredPort {
    /// Service port.
    pub port: u16,
    /// Port callers connect to on our address.
    pub target_port: u16,
    /// `http`, `grpc` or `tcp`.
    pub protocol: String,
}

/// How many threads run the data path (`worker_threads`; restart only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u64")]
pub enum WorkerThreads {
    /// One per CPU the process may run on (`worker_threads: 0`; honours
    /// `taskset`/cpusets through `std::thread::available_parallelism`).
    PerCpu,
    /// Exactly this many; 1 is a single-threaded (current-thread) runtime,
    /// as linkerd2-proxy runs with one core.
    Fixed(std::num::NonZeroUsize),
}

impl From<WorkerThreads> for u64 {
    fn from(w: WorkerThreads) -> u64 {
        match w {
            WorkerThreads::PerCpu => 0,
            WorkerThreads::Fixed(n) => n.get() as u64,
        }
    }
}

/// Default `worker_threads`: one, a single-threaded runtime. A sidecar
/// serves one workload; one core keeps its CPU and memory small and its
/// tasks free of cross-thread wake-ups.
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// Largest `worker_threads`.
pub const MAX_WORKER_THREADS: u64 = 256;

/// The local east-west gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gateway {
    /// Its QUIC (UDP) address: `gateway.address`, else the first of
    /// `gateway.addresses`.
    pub address: SocketAddr,
    /// Every replica's QUIC address (`gateway.addresses`, or just
    /// `address`); the tunnel client spreads streams over them and fails
    /// over between them (`crate::tunnel`).
    #[serde(rename = "addresses")]
    pub replicas: Vec<SocketAddr>,
    /// The identity it must present.
    pub spiffe_id: SpiffeId,
    /// QUIC keep-alive interval.
    #[serde(rename = "keep_alive_ms", serialize_with = "ms")]
    pub keep_alive: Duration,
    /// QUIC idle timeout: a dead gateway fails in-flight streams after this.
    #[serde(rename = "idle_timeout_ms", serialize_with = "ms")]
    pub idle_timeout: Duration,
}

/// Application protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, HTTP/2 with prior knowledge, gRPC; carried sidecar to
    /// sidecar as HTTP/2 (ALPN `h2`).
    Http,
    /// Opaque bytes (ALPN `isthmus-tcp/1`).
    Tcp,
}

/// How the inbound side talks to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP/1.1 (pooled keep-alive connections).
    Http1,
    /// HTTP/2 with prior knowledge (gRPC apps).
    H2c,
}

/// An outbound listener: one local port per upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outbound {
    /// Where the app connects.
    pub listen: SocketAddr,
    /// The upstream service.
    pub service: ServiceKey,
    /// The upstream service port.
    pub port: u16,
    /// `http` or `tcp`.
    pub protocol: Protocol,
    /// Only this cluster's endpoints (own cluster: local only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// An inbound listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inbound {
    /// Where peer sidecars and gateways connect (mTLS).
    pub listen: SocketAddr,
    /// `http` or `tcp`; must match the callers' outbound protocol.
    pub protocol: Protocol,
    /// The app, on localhost.
    pub app: SocketAddr,
    /// How to speak to the app (`http` only).
    pub app_protocol: AppProtocol,
    /// Which callers are allowed.
    pub allow: AllowList,
}

/// Caller SPIFFE IDs allowed on an inbound listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowEntry>,
}

/// One allow entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// Exactly this ID.
    Id(SpiffeId),
    /// Any ID in this trust domain (`spiffe://td/*`).
    TrustDomain(TrustDomain),
}

/// A service port of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Its name.
    pub service: ServiceKey,
    /// Its port.
    pub port: u16,
    /// Endpoints in this cluster, reached sidecar to sidecar.
    pub endpoints: Vec<Endpoint>,
    /// Other clusters exporting it to us, in failover order.
    pub remote: Vec<Remote>,
    /// Retries, timeouts and circuit breaking (H3, issue 6).
    pub resilience: crate::resilience::Resilience,
    /// Priority load, locality weights and outlier detection (section
    /// `failover`).
    pub failover: FailoverSettings,
}

/// An endpoint in this cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The endpoint sidecar's inbound listener.
    pub address: SocketAddr,
    /// The identity it must present.
    pub spiffe_id: SpiffeId,
    /// Where it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// Its priority level (0 = highest; FAILOVER-REFERENCE §1): EDS
    /// `LocalityLbEndpoints.priority`, or from `assign_priorities` in static
    /// mode.
    pub priority: u32,
    /// The weight of its locality (≥ 1; EDS `load_balancing_weight` of the
    /// locality, YAML `weight`); endpoints of one locality share it (the
    /// largest counts).
    pub weight: u32,
    /// Whether the source reports it healthy (EDS `health_status` UNKNOWN or
    /// HEALTHY; always in static mode). Unhealthy endpoints stay in the
    /// model: they count in their level's total.
    pub healthy: bool,
}

/// Another cluster that exports a service to us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remote {
    /// Its name.
    pub cluster: String,
    /// The identity its workloads present (checked end to end by our TLS).
    pub spiffe_id: SpiffeId,
    /// Its priority level (0 = highest).
    pub priority: u32,
    /// Its locality weight (≥ 1).
    pub weight: u32,
    /// Peer-reported healthy and total endpoint counts of that cluster's
    /// locality (EDS `isthmus.dev/tunnel` metadata; 1/1 in static mode).
    #[serde(serialize_with = "health")]
    pub health: Health,
}

// ---- failover settings (H2; issue 6) ----

/// Default `failover.overprovisioning_factor`, percent (Envoy's 1.4).
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = mesh_failover::DEFAULT_OVERPROVISIONING_FACTOR;
/// Default `failover.panic_threshold_percent` (Envoy's 50%).
pub const DEFAULT_PANIC_THRESHOLD_PERCENT: u32 = mesh_failover::DEFAULT_PANIC_THRESHOLD_PERCENT;

/// How one service spreads load over priority levels and localities and
/// ejects failing hosts (FAILOVER-REFERENCE §1–3, §7; YAML
/// `services[i].failover`, or CLA `policy` and CDS in control-plane mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverSettings {
    /// A level or locality counts as fully healthy until its healthy share
    /// times this factor falls under 100; percent (140 = 1.4).
    pub overprovisioning_factor: u32,
    /// A level whose availability is under this balances over all its
    /// hosts (panic); percent, 0 disables.
    pub panic_threshold_percent: u32,
    /// Passive outlier detection of hosts.
    pub outlier: OutlierConfig,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        FailoverSettings {
            overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
            panic_threshold_percent: DEFAULT_PANIC_THRESHOLD_PERCENT,
            outlier: OutlierConfig::default(),
        }
    }
}

impl Serialize for FailoverSettings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = &self.outlier;
        let mut out = s.serialize_struct("FailoverSettings", 3)?;
        out.serialize_field("overprovisioning_factor", &self.overprovisioning_factor)?;
        out.serialize_field("panic_threshold_percent", &self.panic_threshold_percent)?;
        out.serialize_field(
            "outlier_detection",
            &serde_json::json!({
                "consecutive_5xx": o.consecutive_5xx,
                "consecutive_gateway_errors": o.consecutive_gateway_failure,
                "interval_ms": millis(o.interval),
                "base_ejection_time_ms": millis(o.base_ejection_time),
                "max_ejection_time_ms": millis(o.max_ejection_time),
                "max_ejection_percent": o.max_ejection_percent,
            }),
        )?;
        out.end()
    }
}

fn health<S: Serializer>(h: &Health, s: S) -> Result<S::Ok, S::Error> {
    let mut out = s.serialize_struct("Health", 2)?;
    out.serialize_field("healthy", &h.healthy)?;
    out.serialize_field("total", &h.total)?;
    out.end()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---- end failover settings ----

/// Timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// TCP connect + TLS handshake, or tunnel open until accept/reject.
    #[serde(rename = "connect_ms", serialize_with = "ms")]
    pub connect: Duration,
    /// An HTTP request head must arrive within this (slowloris guard).
    #[serde(rename = "header_read_ms", serialize_with = "ms")]
    pub header_read: Duration,
    /// Inbound TLS handshakes must complete within this.
    #[serde(rename = "tls_handshake_ms", serialize_with = "ms")]
    pub tls_handshake: Duration,
    /// Deadline for an outbound response head; `None` = no deadline.
    #[serde(rename = "request_ms", serialize_with = "opt_ms")]
    pub request: Option<Duration>,
    /// SIGTERM drain bound.
    #[serde(rename = "drain_ms", serialize_with = "ms")]
    pub drain: Duration,
}

impl Config {
    /// Reads and validates the file at `path`; relative identity paths are
    /// resolved against its directory.
    ///
    /// # Errors
    /// [`ConfigError::Read`], or any validation error wrapped in
    /// [`ConfigError::InFile`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Config::from_yaml(&text, &base_dir).map_err(|e| ConfigError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Parses and validates YAML text; no file is read.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] or [`ConfigError::Invalid`].
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(ConfigError::Syntax)?;
        Config::from_raw(raw, base_dir)
    }

    /// Validates a parsed file.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key at fault.
    pub fn from_raw(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
        validate::validate(raw, base_dir)
    }

    /// The service entry for `service:port`.
    pub fn service(&self, service: &ServiceKey, port: u16) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| &s.service == service && s.port == port)
    }

    /// The outbound listener entry at `listen`.
    pub fn outbound_at(&self, listen: SocketAddr) -> Option<&Outbound> {
        self.outbound.iter().find(|o| o.listen == listen)
    }

    /// The inbound listener entry at `listen`.
    pub fn inbound_at(&self, listen: SocketAddr) -> Option<&Inbound> {
        self.inbound.iter().find(|i| i.listen == listen)
    }

    /// Every address this config listens on, with what listens there.
    pub fn listeners(&self) -> BTreeMap<SocketAddr, ListenerKind> {
        let mut out = BTreeMap::new();
        out.insert(self.admin, ListenerKind::Admin);
        for o in &self.outbound {
            out.insert(o.listen, ListenerKind::Outbound(o.protocol));
        }
        for i in &self.inbound {
            out.insert(i.listen, ListenerKind::Inbound(i.protocol));
        }
        out
    }

    /// Every candidate any plan of this config can produce (for pruning
    /// connection pools after a reload).
    pub fn all_candidates(&self) -> std::collections::HashSet<crate::plan::Candidate> {
        let mut out = std::collections::HashSet::new();
        for s in &self.services {
            let target = crate::plan::Target {
                service: s.service.clone(),
                port: s.port,
                cluster: None,
            };
            if let Ok(p) = crate::plan::plan(self, &target, &crate::plan::AllHealthy, 0) {
                out.extend(p.candidates);
            }
        }
        out
    }

    /// The effective config as pretty JSON for `/config_dump` and the start
    /// log (no key material is part of it).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// What listens on an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// The admin endpoint.
    Admin,
    /// An outbound listener.
    Outbound(Protocol),
    /// An inbound listener.
    Inbound(Protocol),
}

impl ServiceKey {
    /// Parses `namespace/name`.
    ///
    /// # Errors
    /// A lowercase message saying what is wrong.
    pub fn parse(s: &str) -> Result<ServiceKey, String> {
        let Some((ns, name)) = s.split_once('/') else {
            return Err(format!("{s:?} is not namespace/name"));
        };
        for part in [ns, name] {
            if !is_dns_label(part) {
                return Err(format!("{part:?} in {s:?} is not a DNS label"));
            }
        }
        Ok(ServiceKey {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl AllowList {
    /// A list from entries.
    pub fn new(entries: Vec<AllowEntry>) -> Self {
        AllowList { entries }
    }

    /// Whether `id` may call.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        self.entries.iter().any(|e| match e {
            AllowEntry::Id(want) => want == id,
            AllowEntry::TrustDomain(td) => id.is_member_of(td),
        })
    }

    /// The entries.
    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }
}

impl AllowEntry {
    /// Parses a SPIFFE ID or `spiffe://td/*`.
    ///
    /// # Errors
    /// A lowercase message saying what is wrong.
    pub fn parse(s: &str) -> Result<AllowEntry, String> {
        if let Some(td) = s
            .strip_prefix("spiffe://")
            .and_then(|r| r.strip_suffix("/*"))
        {
            return TrustDomain::parse(td)
                .map(AllowEntry::TrustDomain)
                .map_err(|e| format!("{s:?}: {e}"));
        }
        SpiffeId::parse(s)
            .map(AllowEntry::Id)
            .map_err(|e| format!("{s:?}: {e}"))
    }
}

impl Locality {
    pub(crate) fn from_raw(raw: &RawLocality) -> Locality {
        Locality {
            region: raw.region.clone(),
            zone: raw.zone.clone(),
        }
    }
}

/// Whether `s` is an RFC 1123 DNS label: 1–63 of `[a-z0-9-]`, no leading or
/// trailing `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Addresses that appear twice, for validation.
pub(crate) fn first_duplicate<'a, T: std::hash::Hash + Eq + 'a>(
    items: impl IntoIterator<Item = &'a T>,
) -> Option<&'a T> {
    let mut seen = HashSet::new();
    items.into_iter().find(|&i| !seen.insert(i))
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        })
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Id(id) => write!(f, "{id}"),
            AllowEntry::TrustDomain(td) => write!(f, "spiffe://{td}/*"),
        }
    }
}

impl Serialize for ServiceKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for AllowList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.entries.iter().map(ToString::to_string))
    }
}

fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn opt_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    ms(&d.unwrap_or(Duration::ZERO), s)
}

#[cfg(test)]
#[path = "config/tests.rs"]
mod tests;
