//! From a [`Model`] and a client's [`NodeInfo`] to the xDS resources that
//! client may see ([`Snapshot`]): pure functions, no I/O (docs/xds.md).
//!
//! Each resource carries a hash of the inputs it was built from (FNV-1a 64
//! over their `Debug` text, stable across processes of one build): the
//! protobuf encoding itself is not deterministic (`Struct` and metadata
//! maps are hash maps), so the hash stands in for the resource's content and
//! is its delta `version`.

use mesh_api::xds_decode::{number_value as number, string_value as string};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Debug, Write as _};
use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers, cluster, CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion,
    ConfigSource, HealthStatus, Locality, Metadata, RoutingPriority, SocketAddress,
    TrafficDirection,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    cluster_load_assignment, lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint,
    LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, ApiListener, Filter, FilterChain, Listener,
};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, RetryPolicy, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options, HttpProtocolOptions,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{
    value::Kind, Any, Duration, ListValue, Struct, UInt32Value, Value,
};
use envoy_types::util::pack_any;
use mesh_api::traffic::{TrafficSettings, TRAFFIC_METADATA};
use mesh_api::xds::{
    clusterset_host, export_cluster_name, listener_name, peer_cluster_name, service_cluster_name,
    CLUSTER_METADATA, CLUSTER_TYPE, ENDPOINT_TYPE, IDENTITY_METADATA, LISTENER_TYPE, ROUTE_TYPE,
    TUNNEL_METADATA,
};
use mesh_failover::{assign_priorities, Locality as FailoverLocality};
use mesh_resources::OutlierDetection;

use super::node::{NodeInfo, NodeRole};
use super::{AppProtocol, ExportModel, LocalityModel, Model, PeerModel, ServiceModel};

/// The resource types the server serves, in push order (make before break:
/// clusters before their endpoints, listeners before their routes).
pub const TYPES: [&str; 4] = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE];

/// Bumped when the generator's output changes for the same inputs, so
/// hashes (versions) change with it.
const GENERATOR: u32 = 2;
/// Envoy's connect timeout for `peer|` clusters (service clusters take
/// the TrafficPolicy's `connectMs`; gRPC ignores both).
const CONNECT_TIMEOUT_SECS: i64 = 5;
const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
const ROUTER_FILTER: &str = "envoy.filters.http.router";
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// One built resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The resource, packed.
    pub any: Any,
    /// Hash of its inputs; its version is [`Resource::version`].
    pub hash: u64,
    /// Whether a wildcard subscription (LDS/CDS) includes it. API listeners
    /// are served by name only: Envoy cannot take them over LDS.
    pub wildcard: bool,
}

impl Resource {
    /// The resource's version string (delta `Resource.version`).
    pub fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// All resources one client may see, per type URL, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    types: BTreeMap<&'static str, BTreeMap<String, Resource>>,
}

impl Snapshot {
    /// Builds the resources of `model` as seen by `node`.
    pub fn build(model: &Model, node: &NodeInfo) -> Snapshot {
        let mut snap = Snapshot::default();
        for t in TYPES {
            snap.types.insert(t, BTreeMap::new());
        }
        let client = node.locality.resolve(&model.cluster, &model.region);
        for svc in &model.services {
            snap.add_service(svc, node, &client);
        }
        for up in &node.upstreams {
            let svc = model
                .services
                .iter()
                .find(|s| s.namespace == up.namespace && s.name == up.service && s.port == up.port);
            match svc {
                Some(svc) => {
                    let name = format!(
                        "{}@{}",
                        listener_name(&svc.namespace, &svc.name, svc.port),
                        up.listen
                    );
                    let hash = hash_of(&("socket-listener", &name, svc.protocol));
                    let l = socket_listener(&name, svc, up.listen);
                    snap.insert(LISTENER_TYPE, name, pack_any(l), hash, true);
                }
                None => tracing::debug!(
                    node = %node.id,
                    "upstream {}/{}:{} is not in the model (yet); no listener",
                    up.namespace,
                    up.service,
                    up.port
                ),
            }
        }
        if node.role == NodeRole::Gateway {
            for peer in &model.peers {
                let name = peer_cluster_name(&peer.cluster);
                let hash = hash_of(&("peer", peer));
                snap.insert(
                    CLUSTER_TYPE,
                    name.clone(),
                    pack_any(peer_cluster(&name, peer)),
                    hash,
                    true,
                );
            }
            for export in &model.exports {
                snap.add_export(export, &model.cluster);
            }
        }
        snap
    }

    /// The resources of one type URL (`None` for a type not served).
    pub fn resources(&self, type_url: &str) -> Option<&BTreeMap<String, Resource>> {
        self.types.get(type_url)
    }

    fn insert(&mut self, t: &'static str, name: String, any: Any, hash: u64, wildcard: bool) {
        let hash = hash ^ u64::from(GENERATOR).rotate_left(32);
        self.types.entry(t).or_default().insert(
            name,
            Resource {
                any,
                hash,
                wildcard,
            },
        );
    }

    fn add_service(&mut self, svc: &ServiceModel, node: &NodeInfo, client: &FailoverLocality) {
        let cluster = service_cluster_name(&svc.namespace, &svc.name, svc.port);
        let traffic = svc.traffic.clone().unwrap_or_default();
        let hash = hash_of(&(
            "cluster",
            (&svc.namespace, &svc.name, svc.port, svc.protocol),
            (svc.panic_threshold_percent, &svc.outlier, &traffic),
        ));
        let mut md = Struct::default();
        md.fields
            .insert("protocol".into(), string(protocol_name(svc.protocol)));
        md.fields.insert(
            "service".into(),
            string(&format!("{}/{}", svc.namespace, svc.name)),
        );
        md.fields.insert("port".into(), number(f64::from(svc.port)));
        let mut c = eds_cluster(&cluster, md, svc.protocol);
        service_policies(&mut c, svc, &traffic);
        self.insert(CLUSTER_TYPE, cluster.clone(), pack_any(c), hash, true);

        let priorities = client_priorities(svc, client);
        let hash = hash_of(&(
            "cla",
            (&svc.localities, svc.overprovisioning_factor),
            (node.overprovisioning, &priorities),
        ));
        let cla = service_load_assignment(&cluster, svc, node.overprovisioning, &priorities);
        self.insert(ENDPOINT_TYPE, cluster.clone(), pack_any(cla), hash, false);

        if svc.protocol == AppProtocol::Tcp {
            return;
        }
        let name = listener_name(&svc.namespace, &svc.name, svc.port);
        let hash = hash_of(&("api-listener", &name));
        let l = Listener {
            name: name.clone(),
            api_listener: Some(ApiListener {
                api_listener: Some(pack_any(http_connection_manager(&name))),
            }),
            ..Default::default()
        };
        self.insert(LISTENER_TYPE, name.clone(), pack_any(l), hash, false);

        let hash = hash_of(&("route", &name, &cluster, svc.protocol, &svc.traffic));
        let rc = route_configuration(&name, svc, &cluster);
        self.insert(ROUTE_TYPE, name, pack_any(rc), hash, false);
    }

    fn add_export(&mut self, export: &ExportModel, own_cluster: &str) {
        let name = export_cluster_name(&export.namespace, &export.name, export.port);
        let mut md = Struct::default();
        md.fields.insert(
            "service".into(),
            string(&format!("{}/{}", export.namespace, export.name)),
        );
        md.fields
            .insert("port".into(), number(f64::from(export.port)));
        md.fields.insert(
            "exported_to".into(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: export.exported_to.iter().map(|c| string(c)).collect(),
                })),
            },
        );
        let hash = hash_of(&("export-cluster", &name, &export.exported_to));
        let c = eds_cluster(&name, md, AppProtocol::Tcp);
        self.insert(CLUSTER_TYPE, name.clone(), pack_any(c), hash, true);

        let mut by_locality: BTreeMap<(&str, &str), Vec<LbEndpoint>> = BTreeMap::new();
        for (ep, region, zone) in &export.endpoints {
            by_locality
                .entry((region.as_str(), zone.as_str()))
                .or_default()
                .push(lb_endpoint(ep.address, ep.healthy, IDENTITY_METADATA, {
                    let mut s = Struct::default();
                    s.fields.insert("spiffe_id".into(), string(&ep.spiffe_id));
                    s
                }));
        }
        let endpoints = by_locality
            .into_iter()
            .map(|((region, zone), eps)| LocalityLbEndpoints {
                locality: Some(locality(region, zone, own_cluster)),
                load_balancing_weight: Some(UInt32Value {
                    value: u32::try_from(eps.len()).unwrap_or(u32::MAX).max(1),
                }),
                lb_endpoints: eps,
                priority: 0,
                ..Default::default()
            })
            .collect();
        let cla = ClusterLoadAssignment {
            cluster_name: name.clone(),
            endpoints,
            ..Default::default()
        };
        let hash = hash_of(&("export-cla", export, own_cluster));
        self.insert(ENDPOINT_TYPE, name, pack_any(cla), hash, false);
    }
}

/// `http`, `grpc` or `tcp`.
fn protocol_name(p: AppProtocol) -> &'static str {
    match p {
        AppProtocol::Http => "http",
        AppProtocol::Grpc => "grpc",
        AppProtocol::Tcp => "tcp",
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn metadata(filter: &str, s: Struct) -> Metadata {
    let mut m = Metadata::default();
    m.filter_metadata.insert(filter.to_owned(), s);
    m
}

fn socket_address(ip: IpAddr, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn locality(region: &str, zone: &str, cluster: &str) -> Locality {
    Locality {
        region: region.to_owned(),
        zone: zone.to_owned(),
        sub_zone: cluster.to_owned(),
    }
}

fn eds_cluster(name: &str, md: Struct, protocol: AppProtocol) -> Cluster {
    let mut c = Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.to_owned(),
        }),
        connect_timeout: Some(Duration {
            seconds: CONNECT_TIMEOUT_SECS,
            nanos: 0,
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        common_lb_config: Some(cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    Default::default(),
                ),
            ),
            ..Default::default()
        }),
        metadata: Some(metadata(CLUSTER_METADATA, md)),
        ..Default::default()
    };
    if protocol == AppProtocol::Grpc {
        // gRPC needs HTTP/2 upstream; Envoy defaults to HTTP/1.1.
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                Default::default(),
                            ),
                        ),
                    },
                ),
            ),
            ..Default::default()
        };
        c.typed_extension_protocol_options
            .insert(HTTP_OPTIONS.to_owned(), pack_any(opts));
    }
    c
}

fn lb_endpoint(addr: SocketAddr, healthy: bool, filter: &str, md: Struct) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(addr.ip(), addr.port())),
            ..Default::default()
        })),
        health_status: if healthy {
            HealthStatus::Healthy as i32
        } else {
            HealthStatus::Unhealthy as i32
        },
        metadata: Some(metadata(filter, md)),
        load_balancing_weight: Some(UInt32Value { value: 1 }),
    }
}

/// Whether a locality has anything to route to.
fn locality_usable(l: &LocalityModel) -> bool {
    match &l.tunnel {
        Some(t) => t.healthy > 0,
        None => l.endpoints.iter().any(|e| e.healthy),
    }
}

/// The priority of each of `svc`'s localities (same order) as seen from
/// `client`: `mesh_failover::assign_priorities` over the service's targets
/// (dense from 0).
pub fn client_priorities(svc: &ServiceModel, client: &FailoverLocality) -> Vec<u32> {
    let localities: Vec<FailoverLocality> = svc
        .localities
        .iter()
        .map(|l| FailoverLocality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            cluster: l.cluster.clone(),
        })
        .collect();
    assign_priorities(client, &svc.targets, &localities)
}

/// The ClusterLoadAssignment of a service port, `priorities` being one per
/// locality ([`client_priorities`]). Priorities are renumbered densely from
/// 0 over the localities sent (Envoy and gRPC both require no gaps). For
/// clients without overprovisioning (gRPC) localities with nothing healthy
/// are left out, so failover to the next priority does not wait for
/// connection failures.
fn service_load_assignment(
    name: &str,
    svc: &ServiceModel,
    overprovisioning: bool,
    priorities: &[u32],
) -> ClusterLoadAssignment {
    let localities: Vec<(&LocalityModel, u32)> = svc
        .localities
        .iter()
        .zip(
            priorities
                .iter()
                .copied()
                .chain(std::iter::repeat(u32::MAX)),
        )
        .filter(|(l, _)| overprovisioning || locality_usable(l))
        .collect();
    let levels: BTreeSet<u32> = localities.iter().map(|(_, p)| *p).collect();
    let dense: BTreeMap<u32, u32> = levels.into_iter().zip(0u32..).collect();
    let endpoints = localities
        .iter()
        .map(|(l, priority)| {
            let lb_endpoints = match &l.tunnel {
                Some(t) => {
                    let mut s = Struct::default();
                    s.fields.insert("cluster".into(), string(&t.cluster));
                    s.fields.insert("spiffe_id".into(), string(&t.spiffe_id));
                    s.fields
                        .insert("healthy".into(), number(f64::from(t.healthy)));
                    s.fields.insert("total".into(), number(f64::from(t.total)));
                    vec![lb_endpoint(t.gateway, t.healthy > 0, TUNNEL_METADATA, s)]
                }
                None => l
                    .endpoints
                    .iter()
                    .map(|e| {
                        let mut s = Struct::default();
                        s.fields.insert("spiffe_id".into(), string(&e.spiffe_id));
                        lb_endpoint(e.address, e.healthy, IDENTITY_METADATA, s)
                    })
                    .collect(),
            };
            LocalityLbEndpoints {
                locality: Some(locality(&l.region, &l.zone, &l.cluster)),
                lb_endpoints,
                load_balancing_weight: Some(UInt32Value {
                    value: l.weight.max(1),
                }),
                priority: dense.get(priority).copied().unwrap_or(0),
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints,
        policy: Some(cluster_load_assignment::Policy {
            overprovisioning_factor: Some(UInt32Value {
                value: svc.overprovisioning_factor.max(100),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_connection_manager(route_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: route_name.replace([':', '.'], "_"),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.to_owned(),
        })),
        http_filters: vec![HttpFilter {
            name: ROUTER_FILTER.to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A real listener for an Envoy client: HCM + RDS + router for HTTP and
/// gRPC ports, tcp_proxy for TCP ports.
fn socket_listener(name: &str, svc: &ServiceModel, listen: SocketAddr) -> Listener {
    let route = listener_name(&svc.namespace, &svc.name, svc.port);
    let filter = match svc.protocol {
        AppProtocol::Tcp => Filter {
            name: TCP_PROXY_FILTER.to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(TcpProxy {
                stat_prefix: route.replace([':', '.'], "_"),
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                    service_cluster_name(&svc.namespace, &svc.name, svc.port),
                )),
                ..Default::default()
            }))),
        },
        AppProtocol::Http | AppProtocol::Grpc => Filter {
            name: HCM_FILTER.to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(
                http_connection_manager(&route),
            ))),
        },
    };
    Listener {
        name: name.to_owned(),
        address: Some(socket_address(listen.ip(), listen.port())),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// The route's retry policy and timeout from the service's TrafficPolicy
/// (defaults without one). `retryOn` maps to Envoy's conditions
/// (`reject-503` → `retriable-status-codes` with 503); gRPC ports add
/// `unavailable` (the status a proxyless gRPC client sees for all of them).
/// No retry policy when `attempts` is 0. gRPC ports without a
/// TrafficPolicy keep no route timeout (streams may be long-lived).
fn route_policies(svc: &ServiceModel) -> (Option<RetryPolicy>, Option<Duration>) {
    let t = svc.traffic.clone().unwrap_or_default();
    let timeout = match (svc.protocol, &svc.traffic) {
        (AppProtocol::Grpc, None) => Some(duration_ms(0)),
        _ => Some(duration_ms(t.timeouts.request_ms)),
    };
    let r = &t.retries;
    if r.attempts == 0 || r.retry_on.is_empty() {
        return (None, timeout);
    }
    let mut on: Vec<&str> = Vec::new();
    let mut codes = Vec::new();
    for c in &r.retry_on {
        match c.as_str() {
            "reject-503" => {
                on.push("retriable-status-codes");
                codes.push(503);
            }
            "connect-failure" | "refused-stream" | "reset" => on.push(c.as_str()),
            other => tracing::debug!(
                condition = other,
                "retryOn condition without an Envoy equivalent; left out"
            ),
        }
    }
    if svc.protocol == AppProtocol::Grpc {
        on.push("unavailable");
    }
    let policy = RetryPolicy {
        retry_on: on.join(","),
        num_retries: Some(UInt32Value { value: r.attempts }),
        per_try_timeout: r.per_try_timeout_ms.map(duration_ms),
        retriable_status_codes: codes,
        ..Default::default()
    };
    (Some(policy), timeout)
}

fn route_configuration(name: &str, svc: &ServiceModel, cluster: &str) -> RouteConfiguration {
    let host = clusterset_host(&svc.namespace, &svc.name);
    let (retry_policy, timeout) = route_policies(svc);
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_owned(),
            domains: vec![host.clone(), format!("{host}:{}", svc.port), "*".to_owned()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_owned(),
                    )),
                    retry_policy,
                    timeout,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A duration of `ms` milliseconds.
fn duration_ms(ms: u64) -> Duration {
    Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        // Below 1e9: fits.
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

fn percent(value: u32) -> Percent {
    Percent {
        value: f64::from(value.min(100)),
    }
}

fn uint32(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// Envoy's outlier detection from the policy's (or default) settings, every
/// field explicit. Detectors set to 0 are not enforced; the gateway-error
/// detector is enforced (Envoy's default is not to).
fn outlier_detection(o: &OutlierDetection) -> EnvoyOutlierDetection {
    let enforce = |n: u32| uint32(if n == 0 { 0 } else { 100 });
    EnvoyOutlierDetection {
        consecutive_5xx: uint32(o.consecutive_5xx),
        enforcing_consecutive_5xx: enforce(o.consecutive_5xx),
        consecutive_gateway_failure: uint32(o.consecutive_gateway_errors),
        enforcing_consecutive_gateway_failure: enforce(o.consecutive_gateway_errors),
        interval: Some(duration_ms(o.interval_ms)),
        base_ejection_time: Some(duration_ms(o.base_ejection_time_ms)),
        max_ejection_time: Some(duration_ms(o.max_ejection_time_ms)),
        max_ejection_percent: uint32(u32::from(o.max_ejection_percent)),
        enforcing_success_rate: uint32(100),
        success_rate_minimum_hosts: uint32(5),
        success_rate_request_volume: uint32(100),
        success_rate_stdev_factor: uint32(1900),
        ..Default::default()
    }
}

/// The per-service policies of a service cluster (docs/xds.md, Cluster):
/// panic threshold, outlier detection, circuit breakers with the retry
/// budget, connect timeout and the TrafficPolicy under
/// [`TRAFFIC_METADATA`]. Envoy's `budget_percent` is capped at 100 (the
/// metadata keeps the policy's value).
fn service_policies(c: &mut Cluster, svc: &ServiceModel, t: &TrafficSettings) {
    c.connect_timeout = Some(duration_ms(t.timeouts.connect_ms));
    if let Some(lb) = c.common_lb_config.as_mut() {
        lb.healthy_panic_threshold = Some(percent(svc.panic_threshold_percent));
    }
    c.outlier_detection = Some(outlier_detection(&svc.outlier));
    let cb = &t.circuit_breaker;
    let budget = &t.retries.budget;
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: uint32(cb.max_connections),
            max_pending_requests: uint32(cb.max_pending_requests),
            max_requests: uint32(cb.max_requests),
            retry_budget: Some(circuit_breakers::thresholds::RetryBudget {
                budget_percent: Some(percent(budget.percent)),
                min_retry_concurrency: uint32(budget.min_retries_per_second),
                budget_interval: Some(duration_ms(u64::from(budget.ttl_seconds) * 1000)),
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    c.metadata
        .get_or_insert_with(Metadata::default)
        .filter_metadata
        .insert(TRAFFIC_METADATA.to_owned(), t.to_struct());
}

/// `peer|<cluster>`: the peer's gateways, STATIC (STRICT_DNS when a gateway
/// address is a host name). Malformed addresses are skipped with a warning.
fn peer_cluster(name: &str, peer: &PeerModel) -> Cluster {
    let mut eps = Vec::new();
    let mut dns = false;
    for a in &peer.gateway_addresses {
        let Some((host, port)) = a.rsplit_once(':') else {
            tracing::warn!(peer = %peer.cluster, address = %a, "gateway address has no port; skipped");
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            tracing::warn!(peer = %peer.cluster, address = %a, "gateway address port is not a number; skipped");
            continue;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let address = match host.parse::<IpAddr>() {
            Ok(ip) => socket_address(ip, port),
            Err(_) => {
                dns = true;
                Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: host.to_owned(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                            port,
                        ))),
                        ..Default::default()
                    })),
                }
            }
        };
        eps.push(LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(address),
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    let mut md = Struct::default();
    md.fields.insert("protocol".into(), string("tcp"));
    md.fields
        .insert("trust_domain".into(), string(&peer.trust_domain));
    md.fields
        .insert("spiffe_id".into(), string(&peer.gateway_spiffe_id));
    md.fields.insert("transport".into(), string("quic"));
    let kind = if dns {
        cluster::DiscoveryType::StrictDns
    } else {
        cluster::DiscoveryType::Static
    };
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: Some(Duration {
            seconds: CONNECT_TIMEOUT_SECS,
            nanos: 0,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                locality: Some(locality("", "", &peer.cluster)),
                lb_endpoints: eps,
                ..Default::default()
            }],
            ..Default::default()
        }),
        metadata: Some(metadata(CLUSTER_METADATA, md)),
        ..Default::default()
    }
}

/// FNV-1a 64 over `Debug` text.
pub(crate) fn hash_of(x: &impl Debug) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    // Writing into Fnv never fails.
    let _ = write!(h, "{x:?}");
    h.0
}

struct Fnv(u64);

impl fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(())
    }
}
