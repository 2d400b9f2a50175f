//! Pure projections of the catalog for other modules: [`xds_model`] (input
//! of the xDS server) and [`export_set`] (what we stream to each peer).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use mesh_api::peering::{ExportSet, ExportedPort, ExportedService, LocalityHealth};
use mesh_resources::{Resource, WorkloadProtocol, DEFAULT_OVERPROVISIONING_FACTOR};

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
///   priority-0 locality per `{region, zone}` of its endpoints (weight: the
///   number of endpoints; an endpoint without region takes the cluster's);
/// - every port a peer exports, with one locality per peer locality at
///   priority `1 + i`, `i` being the peer's position in link order (oldest
///   link first, then by name), weight from the peer (at least 1), reached
///   through our first gateway (no remote localities without a gateway);
/// - the overprovisioning factor of the service's `FailoverPolicy` (same
///   namespace, `spec.service`), else 140;
/// - linked peers (gateway role) and local exports with their endpoints.
///
/// `version` is the catalog revision.
pub fn xds_model(catalog: &Catalog, config: &Config) -> Model {
    let endpoints = catalog.endpoints();
    let mut services: BTreeMap<ServiceKey, ServiceModel> = BTreeMap::new();
    let overprovisioning = overprovisioning_factors(catalog);

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
            services.entry(key.clone()).or_insert_with(|| ServiceModel {
                namespace: e.namespace.clone(),
                name: e.service.clone(),
                port: p.port,
                protocol: app_protocol(p.protocol),
                overprovisioning_factor: factor(&overprovisioning, &e.namespace, &e.service),
                localities: Vec::new(),
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
                priority: 0,
                weight: u32::try_from(eps.len()).unwrap_or(u32::MAX).max(1),
                endpoints: eps,
                tunnel: None,
            });
        }
    }

    // Imports, one priority level per peer in link order.
    let gateway = config.gateways.first().map(|g| g.address);
    for (i, peer) in peers_in_link_order(catalog).into_iter().enumerate() {
        let priority = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let Some(gateway) = gateway else { break };
        for svc in peer_exports(&peer.exports).services {
            for port in &svc.ports {
                let Some(number) = u16::try_from(port.port).ok().filter(|p| *p > 0) else {
                    continue;
                };
                let key = (svc.namespace.clone(), svc.name.clone(), number);
                let model = services.entry(key).or_insert_with(|| ServiceModel {
                    namespace: svc.namespace.clone(),
                    name: svc.name.clone(),
                    port: number,
                    protocol: WorkloadProtocol::parse(&port.app_protocol)
                        .map_or(AppProtocol::Tcp, app_protocol),
                    overprovisioning_factor: factor(&overprovisioning, &svc.namespace, &svc.name),
                    localities: Vec::new(),
                });
                let remote = remote_localities(&svc.localities, peer);
                for loc in remote {
                    model.localities.push(LocalityModel {
                        cluster: peer.cluster.clone(),
                        region: loc.region.clone(),
                        zone: loc.zone.clone(),
                        priority,
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

/// `(namespace, service) → overprovisioning factor` from FailoverPolicies.
fn overprovisioning_factors(catalog: &Catalog) -> BTreeMap<(String, String), u32> {
    catalog
        .resources
        .values()
        .filter(|r| r.kind == ResourceKind::FailoverPolicy)
        .filter_map(|r| match r.resource()? {
            Resource::FailoverPolicy(fp) => Some((
                (fp.metadata.namespace, fp.spec.service),
                fp.spec.overprovisioning_factor,
            )),
            _ => None,
        })
        .collect()
}

fn factor(factors: &BTreeMap<(String, String), u32>, ns: &str, svc: &str) -> u32 {
    factors
        .get(&(ns.to_owned(), svc.to_owned()))
        .copied()
        .unwrap_or(DEFAULT_OVERPROVISIONING_FACTOR)
}
