//! Pure projections of the catalog for other modules: [`xds_model`] (input
//! of the xDS server) and [`export_set`] (what we stream to each peer).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use mesh_api::peering::{ExportSet, ExportedPort, ExportedService, LocalityHealth};
use mesh_api::traffic::{CircuitBreaker, Retries, RetryBudget, Timeouts, TrafficSettings};
use mesh_failover::Target;
use mesh_resources::{
    FailoverPolicySpec, FailoverTarget, Resource, TrafficPolicySpec, WorkloadProtocol,
    DEFAULT_OVERPROVISIONING_FACTOR, DEFAULT_PANIC_THRESHOLD_PERCENT,
};

use super::imports::{local_ports, peer_exports};
use super::resources::ResourceKind;
use super::workloads::Endpoint;
use super::{rfc3339_ms, Catalog, PeerRecord};
use crate::config::Config;
use crate::xds::{
    AppProtocol, EndpointModel, ExportModel, LocalityModel, Model, PeerModel, ServiceModel,
    TunnelModel,
};

/// `(namespace, service, port)`.
type ServiceKey = (String, String, u16);

/// The xDS model of the catalog, as seen from this cluster (`config`):
///
/// - every local service port (from static and leased workloads) with one
///   locality per `{region, zone}` of its endpoints (weight: the number of
///   endpoints; an endpoint without region takes the cluster's);
/// - every port a peer exports, with one locality per peer locality (peers
///   in link order: oldest link first, then by name), weight from the peer
///   (at least 1) and its reported healthy/total counts, reached through
///   our first gateway (no remote localities without a gateway);
/// - per service (same namespace, `spec.service`): the `FailoverPolicy`'s
///   targets, overprovisioning factor, panic threshold and outlier
///   detection (without a policy: every peer in link order as a cluster
///   target, 140, 50 and the defaults), and the `TrafficPolicy` if any.
///   Priorities are computed per client by the xDS server;
/// - linked peers (gateway role) and local exports with their endpoints.
///
/// `version` is the catalog revision.
pub fn xds_model(catalog: &Catalog, config: &Config) -> Model {
    let endpoints = catalog.endpoints();
    let mut services: BTreeMap<ServiceKey, ServiceModel> = BTreeMap::new();
    let policies = Policies::of(catalog);
    let peer_targets: Vec<Target> = peers_in_link_order(catalog)
        .into_iter()
        .map(|p| Target::Cluster(p.cluster.clone()))
        .collect();
    let new_service = |ns: &str, name: &str, port: u16, protocol: AppProtocol| {
        policies.service(ns, name, port, protocol, &peer_targets)
    };

    // Local endpoints: (ns, svc, port) → (region, zone) → endpoints.
    let mut local: BTreeMap<ServiceKey, BTreeMap<(String, String), Vec<EndpointModel>>> =
        BTreeMap::new();
    for e in &endpoints {
        let Some((ip, spiffe_id)) = address_and_id(e, config) else {
            continue;
        };
        let region = region_of(e, config);
        for p in &e.ports {
            let key = (e.namespace.clone(), e.service.clone(), p.port);
            services.entry(key.clone()).or_insert_with(|| {
                new_service(&e.namespace, &e.service, p.port, app_protocol(p.protocol))
            });
            local
                .entry(key)
                .or_default()
                .entry((region.clone(), e.zone.clone()))
                .or_default()
                .push(EndpointModel {
                    address: SocketAddr::new(ip, p.effective_target_port()),
                    spiffe_id: spiffe_id.clone(),
                    healthy: true,
                });
        }
    }
    for (key, localities) in local {
        let Some(svc) = services.get_mut(&key) else {
            continue;
        };
        for ((region, zone), mut eps) in localities {
            eps.sort_by_key(|e| e.address);
            svc.localities.push(LocalityModel {
                cluster: config.cluster.clone(),
                region,
                zone,
                weight: u32::try_from(eps.len()).unwrap_or(u32::MAX).max(1),
                endpoints: eps,
                tunnel: None,
            });
        }
    }

    // Imports, peers in link order.
    let gateway = config.gateways.first().map(|g| g.address);
    for peer in peers_in_link_order(catalog) {
        let Some(gateway) = gateway else { break };
        for svc in peer_exports(&peer.exports).services {
            for port in &svc.ports {
                let Some(number) = u16::try_from(port.port).ok().filter(|p| *p > 0) else {
                    continue;
                };
                let key = (svc.namespace.clone(), svc.name.clone(), number);
                let model = services.entry(key).or_insert_with(|| {
                    let protocol = WorkloadProtocol::parse(&port.app_protocol)
                        .map_or(AppProtocol::Tcp, app_protocol);
                    new_service(&svc.namespace, &svc.name, number, protocol)
                });
                let remote = remote_localities(&svc.localities, peer);
                for loc in remote {
                    model.localities.push(LocalityModel {
                        cluster: peer.cluster.clone(),
                        region: loc.region.clone(),
                        zone: loc.zone.clone(),
                        weight: if loc.weight > 0 {
                            loc.weight
                        } else {
                            loc.healthy
                        }
                        .max(1),
                        endpoints: Vec::new(),
                        tunnel: Some(TunnelModel {
                            gateway,
                            cluster: peer.cluster.clone(),
                            spiffe_id: svc.spiffe_ids.first().cloned().unwrap_or_default(),
                            healthy: loc.healthy,
                            total: loc.total,
                        }),
                    });
                }
            }
        }
    }

    let peers = peers_in_link_order(catalog)
        .into_iter()
        .map(|p| PeerModel {
            cluster: p.cluster.clone(),
            trust_domain: p.trust_domain.clone(),
            gateway_addresses: p.gateway_addresses.clone(),
            gateway_spiffe_id: p.gateway_spiffe_id.clone(),
        })
        .collect();
    let exported_to: Vec<String> = catalog.peers.keys().cloned().collect();
    let mut exports = Vec::new();
    for (ns, name, _) in catalog.local_exports() {
        for (port, _) in local_ports(&endpoints, &ns, &name) {
            let mut eps = Vec::new();
            for e in endpoints
                .iter()
                .filter(|e| e.namespace == ns && e.service == name)
            {
                let Some((ip, spiffe_id)) = address_and_id(e, config) else {
                    continue;
                };
                let Some(p) = e.ports.iter().find(|p| p.port == port) else {
                    continue;
                };
                eps.push((
                    EndpointModel {
                        address: SocketAddr::new(ip, p.effective_target_port()),
                        spiffe_id,
                        healthy: true,
                    },
                    region_of(e, config),
                    e.zone.clone(),
                ));
            }
            exports.push(ExportModel {
                namespace: ns.clone(),
                name: name.clone(),
                port,
                exported_to: exported_to.clone(),
                endpoints: eps,
            });
        }
    }

    Model {
        version: catalog.revision,
        cluster: config.cluster.clone(),
        region: config.region.clone(),
        trust_domain: config.trust_domain.as_str().to_owned(),
        services: services.into_values().collect(),
        peers,
        exports,
    }
}

/// What we export to every peer: each local `ServiceExport` whose service
/// has workloads, with its ports (named `<protocol>-<port>`), per-locality
/// healthy/total counts (weight = healthy), the workloads' SPIFFE IDs and
/// the export's `creationTimestamp`; plus our gateways' addresses.
/// `version` is the catalog revision.
pub fn export_set(catalog: &Catalog, config: &Config) -> ExportSet {
    let endpoints = catalog.endpoints();
    let mut services = Vec::new();
    for (ns, name, created_ms) in catalog.local_exports() {
        let ports = local_ports(&endpoints, &ns, &name);
        if ports.is_empty() {
            continue;
        }
        let mut localities: BTreeMap<(String, String), u32> = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for e in endpoints
            .iter()
            .filter(|e| e.namespace == ns && e.service == name)
        {
            let Some((_, id)) = address_and_id(e, config) else {
                continue;
            };
            ids.insert(id);
            *localities
                .entry((region_of(e, config), e.zone.clone()))
                .or_default() += 1;
        }
        services.push(ExportedService {
            namespace: ns,
            name,
            ports: ports
                .into_iter()
                .map(|(port, proto)| ExportedPort {
                    name: format!("{}-{port}", proto.as_str()),
                    port: u32::from(port),
                    protocol: "TCP".to_owned(),
                    app_protocol: proto.as_str().to_owned(),
                })
                .collect(),
            r#type: "ClusterSetIP".to_owned(),
            localities: localities
                .into_iter()
                .map(|((region, zone), n)| LocalityHealth {
                    region,
                    zone,
                    healthy: n,
                    total: n,
                    weight: n,
                })
                .collect(),
            spiffe_ids: ids.into_iter().collect(),
            export_created: rfc3339_ms(created_ms),
        });
    }
    ExportSet {
        version: catalog.revision,
        services,
        gateway_addresses: config
            .gateways
            .iter()
            .map(|g| g.address.to_string())
            .collect(),
    }
}

/// Peers oldest link first, then by name.
pub fn peers_in_link_order(catalog: &Catalog) -> Vec<&PeerRecord> {
    let mut peers: Vec<&PeerRecord> = catalog.peers.values().collect();
    peers.sort_by(|a, b| (a.linked_ms, &a.cluster).cmp(&(b.linked_ms, &b.cluster)));
    peers
}

fn remote_localities(localities: &[LocalityHealth], peer: &PeerRecord) -> Vec<LocalityHealth> {
    if localities.is_empty() {
        // A peer that sent no locality: one locality in its region, unknown health.
        vec![LocalityHealth {
            region: peer.region.clone(),
            zone: String::new(),
            healthy: 0,
            total: 0,
            weight: 1,
        }]
    } else {
        localities.to_vec()
    }
}

fn address_and_id(e: &Endpoint, config: &Config) -> Option<(IpAddr, String)> {
    let ip: IpAddr = e.address.parse().ok()?;
    let id = config
        .trust_domain
        .service_account(&e.namespace, &e.service_account)
        .ok()?;
    Some((ip, id.as_str().to_owned()))
}

fn region_of(e: &Endpoint, config: &Config) -> String {
    if e.region.is_empty() {
        config.region.clone()
    } else {
        e.region.clone()
    }
}

fn app_protocol(p: WorkloadProtocol) -> AppProtocol {
    match p {
        WorkloadProtocol::Http => AppProtocol::Http,
        WorkloadProtocol::Grpc => AppProtocol::Grpc,
        WorkloadProtocol::Tcp => AppProtocol::Tcp,
    }
}

/// The stored policies by `(namespace, service)`.
struct Policies {
    failover: BTreeMap<(String, String), FailoverPolicySpec>,
    traffic: BTreeMap<(String, String), TrafficPolicySpec>,
}

impl Policies {
    fn of(catalog: &Catalog) -> Policies {
        let mut p = Policies {
            failover: BTreeMap::new(),
            traffic: BTreeMap::new(),
        };
        for r in catalog.resources.values() {
            if !matches!(
                r.kind,
                ResourceKind::FailoverPolicy | ResourceKind::TrafficPolicy
            ) {
                continue;
            }
            match r.resource() {
                Some(Resource::FailoverPolicy(fp)) => {
                    let key = (fp.metadata.namespace, fp.spec.service.clone());
                    p.failover.insert(key, fp.spec);
                }
                Some(Resource::TrafficPolicy(tp)) => {
                    let key = (tp.metadata.namespace, tp.spec.service.clone());
                    p.traffic.insert(key, tp.spec);
                }
                _ => {}
            }
        }
        p
    }

    /// A service port without localities, with its policies.
    fn service(
        &self,
        ns: &str,
        name: &str,
        port: u16,
        protocol: AppProtocol,
        peer_targets: &[Target],
    ) -> ServiceModel {
        let key = (ns.to_owned(), name.to_owned());
        let failover = self.failover.get(&key);
        ServiceModel {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            port,
            protocol,
            overprovisioning_factor: failover.map_or(DEFAULT_OVERPROVISIONING_FACTOR, |f| {
                f.overprovisioning_factor
            }),
            targets: failover.map_or_else(
                || peer_targets.to_vec(),
                |f| f.targets.iter().map(target).collect(),
            ),
            panic_threshold_percent: u32::from(
                failover.map_or(DEFAULT_PANIC_THRESHOLD_PERCENT, |f| {
                    f.panic_threshold_percent
                }),
            ),
            outlier: failover
                .map(FailoverPolicySpec::effective_outlier_detection)
                .unwrap_or_default(),
            traffic: self.traffic.get(&key).map(traffic_settings),
            localities: Vec::new(),
        }
    }
}

fn target(t: &FailoverTarget) -> Target {
    match t {
        FailoverTarget::Cluster(c) => Target::Cluster(c.clone()),
        FailoverTarget::Region(r) => Target::Region(r.clone()),
    }
}

/// The CDS form of a TrafficPolicy spec (`mesh_api::traffic`).
pub fn traffic_settings(spec: &TrafficPolicySpec) -> TrafficSettings {
    let r = &spec.retries;
    TrafficSettings {
        retries: Retries {
            attempts: r.attempts,
            per_try_timeout_ms: r.per_try_timeout_ms,
            retry_on: r.retry_on.clone(),
            budget: RetryBudget {
                percent: r.budget.percent,
                min_retries_per_second: r.budget.min_retries_per_second,
                ttl_seconds: r.budget.ttl_seconds,
            },
        },
        timeouts: Timeouts {
            request_ms: spec.timeouts.request_ms,
            idle_ms: spec.timeouts.idle_ms,
            connect_ms: spec.timeouts.connect_ms,
        },
        circuit_breaker: CircuitBreaker {
            max_connections: spec.circuit_breaker.max_connections,
            max_pending_requests: spec.circuit_breaker.max_pending_requests,
            max_requests: spec.circuit_breaker.max_requests,
        },
    }
}
