//! The sidecar's metric families, registered into a registry passed in
//! (no global registry; STYLE.md habit 12). Served as Prometheus text by
//! the admin listener.

use std::fmt::Write as _;
use std::sync::OnceLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Which way traffic flows through the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the local app to an upstream.
    Outbound,
    /// From a peer sidecar (or gateway) to the local app.
    Inbound,
}

/// Labels of `isthmus_sidecar_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// Direction.
    pub direction: Direction,
    /// `namespace/name` (outbound) or the app address (inbound).
    pub service: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of per-service families without a status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Direction.
    pub direction: Direction,
    /// `namespace/name` (outbound) or the app address (inbound).
    pub service: String,
}

/// Labels of `isthmus_sidecar_inbound_requests_by_caller_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallerLabels {
    /// The caller's SPIFFE ID.
    pub caller: String,
}

/// Kind of upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Sidecar to sidecar in this cluster.
    Direct,
    /// Through the local gateway's tunnel.
    Gateway,
}

/// Labels of `isthmus_sidecar_upstream_connections_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Direct or through the gateway.
    pub route: Route,
    /// `http` (one HTTP/2 connection, many requests) or `tcp`.
    pub protocol: String,
}

/// Labels of `isthmus_sidecar_inbound_tls_handshakes_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `ok`, `failed` or `timeout`.
    pub result: &'static str,
}

/// Labels of `isthmus_sidecar_config_reloads_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Labels of `isthmus_outlier_ejections_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutlierLabels {
    /// `namespace/name` of the upstream service.
    pub service: String,
}

/// Labels of `isthmus_priority_load_percent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PriorityLabels {
    /// `namespace/name` of the upstream service.
    pub service: String,
    /// The level, 0 = highest (levels nobody occupies are skipped).
    pub priority: u32,
}

/// Every family the sidecar reports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `isthmus_sidecar_requests_total{direction,service,status}`: HTTP
    /// requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// `isthmus_sidecar_request_duration_seconds{direction,service}`: time to
    /// the response head, seconds.
    pub request_duration: Family<ServiceLabels, Histogram>,
    /// `isthmus_sidecar_tcp_connections_total{direction,service}`: opaque TCP
    /// connections proxied.
    pub tcp_connections: Family<ServiceLabels, Counter>,
    /// `isthmus_sidecar_inbound_requests_by_caller_total{caller}`.
    pub requests_by_caller: Family<CallerLabels, Counter>,
    /// `isthmus_sidecar_upstream_connections_total{route,protocol}`: new
    /// TLS connections to peer sidecars.
    pub upstream_connections: Family<UpstreamLabels, Counter>,
    /// `isthmus_sidecar_inbound_tls_handshakes_total{result}`.
    pub inbound_handshakes: Family<HandshakeLabels, Counter>,
    /// `isthmus_sidecar_active_connections`: downstream connections open.
    pub active_connections: Gauge,
    /// `isthmus_sidecar_config_reloads_total{result}`.
    pub reloads: Family<ReloadLabels, Counter>,
    /// `isthmus_outlier_ejections_total{service}`: hosts taken out of
    /// rotation (outlier ejections, failfast and remote marks).
    pub outlier_ejections: Family<OutlierLabels, Counter>,
    /// `isthmus_priority_load_percent{service,priority}`: share of new
    /// requests each priority level gets now, percent.
    pub priority_load: Family<PriorityLabels, Gauge>,
}

impl Direction {
    /// The label value: `outbound` or `inbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

impl Route {
    /// The label value: `direct` or `gateway`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Gateway => "gateway",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl Metrics {
    /// Creates the families and registers them into `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            tcp_connections: Family::default(),
            requests_by_caller: Family::default(),
            upstream_connections: Family::default(),
            inbound_handshakes: Family::default(),
            active_connections: Gauge::default(),
            reloads: Family::default(),
            outlier_ejections: Family::default(),
            priority_load: Family::default(),
        };
        registry.register(
            "isthmus_sidecar_requests",
            "HTTP requests answered",
            m.requests.clone(),
        );
        registry.register(
            "isthmus_sidecar_request_duration_seconds",
            "Time to the response head, seconds",
            m.request_duration.clone(),
        );
        registry.register(
            "isthmus_sidecar_tcp_connections",
            "Opaque TCP connections proxied",
            m.tcp_connections.clone(),
        );
        registry.register(
            "isthmus_sidecar_inbound_requests_by_caller",
            "Inbound HTTP requests per authenticated caller SPIFFE ID",
            m.requests_by_caller.clone(),
        );
        registry.register(
            "isthmus_sidecar_upstream_connections",
            "New mTLS connections to peer sidecars",
            m.upstream_connections.clone(),
        );
        registry.register(
            "isthmus_sidecar_inbound_tls_handshakes",
            "Inbound TLS handshakes by result",
            m.inbound_handshakes.clone(),
        );
        registry.register(
            "isthmus_sidecar_active_connections",
            "Downstream connections currently open",
            m.active_connections.clone(),
        );
        registry.register(
            "isthmus_sidecar_config_reloads",
            "Config reloads by result",
            m.reloads.clone(),
        );
        registry.register(
            "isthmus_outlier_ejections",
            "Hosts taken out of rotation by outlier detection, failfast or a remote mark",
            m.outlier_ejections.clone(),
        );
        registry.register(
            "isthmus_priority_load_percent",
            "Share of new requests per priority level, percent",
            m.priority_load.clone(),
        );
        m
    }

    /// Sets `isthmus_priority_load_percent` from `status` (levels of
    /// services no longer listed are dropped).
    pub fn set_priority_load(&self, status: &[crate::health::ServiceStatus]) {
        self.priority_load.clear();
        for s in status {
            for (priority, percent) in s.priority_load.iter().enumerate() {
                self.priority_load
                    .get_or_create(&PriorityLabels {
                        service: s.service.clone(),
                        priority: u32::try_from(priority).unwrap_or(u32::MAX),
                    })
                    .set(i64::from(*percent));
            }
        }
    }

    /// A recorder for requests of one `direction` and `service`, meant to
    /// live as long as a connection: see [`RequestRecorder`].
    pub fn recorder(&self, direction: Direction, service: String) -> RequestRecorder {
        RequestRecorder {
            metrics: self.clone(),
            direction,
            service,
            ok: OnceLock::new(),
            duration: OnceLock::new(),
        }
    }
}

/// Records requests of one (direction, service). The 200 counter and the
/// duration histogram are looked up once, on first use, and kept: the
/// common request records without hashing labels or allocating (the
/// families' label sets own `String`s). Other statuses take the family
/// lookup.
#[derive(Debug)]
pub struct RequestRecorder {
    metrics: Metrics,
    direction: Direction,
    service: String,
    ok: OnceLock<Counter>,
    duration: OnceLock<Histogram>,
}

impl RequestRecorder {
    /// The service label this recorder writes.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Records one answered request: its status and its time to the
    /// response head.
    pub fn record(&self, status: u16, elapsed: std::time::Duration) {
        let labels = || RequestLabels {
            direction: self.direction,
            service: self.service.clone(),
            status,
        };
        if status == 200 {
            self.ok
                .get_or_init(|| self.metrics.requests.get_or_create(&labels()).clone())
                .inc();
        } else {
            self.metrics.requests.get_or_create(&labels()).inc();
        }
        self.duration
            .get_or_init(|| {
                self.metrics
                    .request_duration
                    .get_or_create(&ServiceLabels {
                        direction: self.direction,
                        service: self.service.clone(),
                    })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
    }
}
