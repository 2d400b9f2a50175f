//! Pure tests of the resource generator and the two protocol state machines
//! (no sockets; the tonic driver is covered by `tests/xds_ads.rs`).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::value::Kind;
use mesh_api::xds::{
    CLUSTER_METADATA, CLUSTER_TYPE, ENDPOINT_TYPE, IDENTITY_METADATA, LISTENER_TYPE, ROUTE_TYPE,
    TUNNEL_METADATA,
};
use mesh_failover::Target;
use prost::Message;

use super::delta::DeltaStream;
use super::node::{NodeInfo, NodeRole, Upstream};
use super::sotw::{RequestKind, SotwStream};
use super::*;

const WEB: &str = "outbound|8080||web.default.svc.clusterset.local";

fn ep(port: u16, healthy: bool) -> EndpointModel {
    EndpointModel {
        address: ([10, 0, 0, 1], port).into(),
        spiffe_id: format!("spiffe://a.mesh/ns/default/sa/w{port}"),
        healthy,
    }
}

fn loc(cluster: &str, endpoints: Vec<EndpointModel>) -> LocalityModel {
    LocalityModel {
        cluster: cluster.into(),
        region: "r".into(),
        zone: "z".into(),
        weight: 3,
        endpoints,
        tunnel: None,
    }
}

/// A remote locality in region `r-<cluster>` (not the client's region).
fn tunnel(cluster: &str, healthy: u32) -> LocalityModel {
    LocalityModel {
        region: format!("r-{cluster}"),
        tunnel: Some(TunnelModel {
            gateway: ([127, 0, 0, 9], 15443).into(),
            cluster: cluster.into(),
            spiffe_id: format!("spiffe://{cluster}.mesh/ns/default/sa/web"),
            healthy,
            total: 4,
        }),
        ..loc(cluster, vec![])
    }
}

fn svc(
    name: &str,
    port: u16,
    protocol: AppProtocol,
    localities: Vec<LocalityModel>,
) -> ServiceModel {
    ServiceModel {
        namespace: "default".into(),
        name: name.into(),
        port,
        protocol,
        overprovisioning_factor: 140,
        targets: Vec::new(),
        panic_threshold_percent: 50,
        outlier: Default::default(),
        traffic: None,
        localities,
    }
}

fn model() -> Model {
    Model {
        version: 1,
        cluster: "cluster-a".into(),
        region: "r".into(),
        trust_domain: "cluster-a.mesh".into(),
        services: vec![
            ServiceModel {
                targets: vec![
                    Target::Cluster("cluster-b".into()),
                    Target::Cluster("cluster-c".into()),
                ],
                ..svc(
                    "web",
                    8080,
                    AppProtocol::Http,
                    vec![
                        loc("cluster-a", vec![ep(1, false)]),
                        tunnel("cluster-b", 1),
                        tunnel("cluster-c", 0),
                    ],
                )
            },
            svc(
                "db",
                5432,
                AppProtocol::Tcp,
                vec![loc("cluster-a", vec![ep(2, true)])],
            ),
        ],
        peers: vec![PeerModel {
            cluster: "cluster-b".into(),
            trust_domain: "cluster-b.mesh".into(),
            gateway_addresses: vec![
                "127.0.2.1:15443".into(),
                "gw.example:15443".into(),
                "bad".into(),
            ],
            gateway_spiffe_id: "spiffe://cluster-b.mesh/ns/isthmus-system/sa/east-west-gateway"
                .into(),
        }],
        exports: vec![ExportModel {
            namespace: "default".into(),
            name: "web".into(),
            port: 8080,
            exported_to: vec!["cluster-b".into()],
            endpoints: vec![
                (ep(1, true), "r".into(), "z1".into()),
                (ep(3, true), "r".into(), "z2".into()),
            ],
        }],
    }
}

fn decode<T: Message + Default>(snap: &Snapshot, t: &str, name: &str) -> T {
    let r = snap
        .resources(t)
        .unwrap()
        .get(name)
        .unwrap_or_else(|| panic!("no {t} {name}"));
    T::decode(r.any.value.as_slice()).unwrap()
}

fn names(snap: &Snapshot, t: &str) -> Vec<String> {
    snap.resources(t).unwrap().keys().cloned().collect()
}

#[test]
fn clusters_endpoints_listeners_routes_of_a_service() {
    let snap = Snapshot::build(&model(), &NodeInfo::default());
    assert_eq!(
        names(&snap, CLUSTER_TYPE),
        vec![
            "outbound|5432||db.default.svc.clusterset.local".to_string(),
            WEB.to_string()
        ]
    );
    let c: Cluster = decode(&snap, CLUSTER_TYPE, WEB);
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    assert_eq!(c.eds_cluster_config.unwrap().service_name, WEB);
    let md = &c.metadata.unwrap().filter_metadata[CLUSTER_METADATA];
    assert_eq!(
        md.fields["protocol"].kind,
        Some(Kind::StringValue("http".into()))
    );

    // Own cluster, then the targets in order; health and metadata per endpoint.
    let cla: ClusterLoadAssignment = decode(&snap, ENDPOINT_TYPE, WEB);
    let prios: Vec<u32> = cla.endpoints.iter().map(|l| l.priority).collect();
    assert_eq!(prios, vec![0, 1, 2]);
    assert_eq!(
        cla.policy.unwrap().overprovisioning_factor.unwrap().value,
        140
    );
    let local = &cla.endpoints[0];
    assert_eq!(local.locality.as_ref().unwrap().sub_zone, "cluster-a");
    assert_eq!(local.load_balancing_weight.unwrap().value, 3);
    let lb = &local.lb_endpoints[0];
    assert_eq!(lb.health_status, HealthStatus::Unhealthy as i32);
    assert!(lb
        .metadata
        .as_ref()
        .unwrap()
        .filter_metadata
        .contains_key(IDENTITY_METADATA));
    let remote = &cla.endpoints[1].lb_endpoints[0];
    assert_eq!(remote.health_status, HealthStatus::Healthy as i32);
    let t = &remote.metadata.as_ref().unwrap().filter_metadata[TUNNEL_METADATA];
    assert_eq!(
        t.fields["cluster"].kind,
        Some(Kind::StringValue("cluster-b".into()))
    );

    // HTTP gets an API listener and a route; TCP gets neither.
    let l: Listener = decode(
        &snap,
        LISTENER_TYPE,
        "web.default.svc.clusterset.local:8080",
    );
    assert!(l.api_listener.is_some() && l.address.is_none());
    assert_eq!(names(&snap, LISTENER_TYPE).len(), 1);
    assert!(!snap
        .resources(LISTENER_TYPE)
        .unwrap()
        .values()
        .any(|r| r.wildcard));
    let rc: RouteConfiguration = decode(&snap, ROUTE_TYPE, "web.default.svc.clusterset.local:8080");
    assert_eq!(
        rc.virtual_hosts[0].domains,
        vec![
            "web.default.svc.clusterset.local",
            "web.default.svc.clusterset.local:8080",
            "*"
        ]
    );
    // Not a gateway: no peer| or export| clusters.
    assert!(!names(&snap, CLUSTER_TYPE)
        .iter()
        .any(|n| n.starts_with("peer|") || n.starts_with("export|")));
}

#[test]
fn grpc_clients_do_not_get_localities_with_nothing_healthy() {
    let node = NodeInfo {
        overprovisioning: false,
        ..NodeInfo::default()
    };
    let snap = Snapshot::build(&model(), &node);
    let cla: ClusterLoadAssignment = decode(&snap, ENDPOINT_TYPE, WEB);
    let subzones: Vec<(String, u32)> = cla
        .endpoints
        .iter()
        .map(|l| (l.locality.clone().unwrap().sub_zone, l.priority))
        .collect();
    assert_eq!(subzones, vec![("cluster-b".to_string(), 0)]);
    // ... and the hash (version) differs from the Envoy view.
    let envoy = Snapshot::build(&model(), &NodeInfo::default());
    assert_ne!(
        snap.resources(ENDPOINT_TYPE).unwrap()[WEB].hash,
        envoy.resources(ENDPOINT_TYPE).unwrap()[WEB].hash
    );
}

#[test]
fn envoy_upstreams_get_socket_listeners() {
    let node = NodeInfo {
        upstreams: vec![
            Upstream {
                namespace: "default".into(),
                service: "web".into(),
                port: 8080,
                listen: "127.0.0.1:15001".parse().unwrap(),
            },
            Upstream {
                namespace: "default".into(),
                service: "db".into(),
                port: 5432,
                listen: "127.0.0.1:15002".parse().unwrap(),
            },
            Upstream {
                namespace: "default".into(),
                service: "gone".into(),
                port: 1,
                listen: "127.0.0.1:15003".parse().unwrap(),
            },
        ],
        ..NodeInfo::default()
    };
    let snap = Snapshot::build(&model(), &node);
    let wild: Vec<&String> = snap
        .resources(LISTENER_TYPE)
        .unwrap()
        .iter()
        .filter(|(_, r)| r.wildcard)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        wild,
        vec![
            "db.default.svc.clusterset.local:5432@127.0.0.1:15002",
            "web.default.svc.clusterset.local:8080@127.0.0.1:15001"
        ]
    );
    let l: Listener = decode(&snap, LISTENER_TYPE, wild[1]);
    let f = &l.filter_chains[0].filters[0];
    assert_eq!(f.name, "envoy.filters.network.http_connection_manager");
    let l: Listener = decode(&snap, LISTENER_TYPE, wild[0]);
    assert_eq!(
        l.filter_chains[0].filters[0].name,
        "envoy.filters.network.tcp_proxy"
    );
}

#[test]
fn gateways_get_peer_and_export_clusters() {
    let node = NodeInfo {
        role: NodeRole::Gateway,
        ..NodeInfo::default()
    };
    let snap = Snapshot::build(&model(), &node);
    let peer: Cluster = decode(&snap, CLUSTER_TYPE, "peer|cluster-b");
    // A host name among the addresses makes it STRICT_DNS; "bad" is skipped.
    assert_eq!(
        peer.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32
        ))
    );
    assert_eq!(
        peer.load_assignment.unwrap().endpoints[0]
            .lb_endpoints
            .len(),
        2
    );
    let md = &peer.metadata.unwrap().filter_metadata[CLUSTER_METADATA];
    assert_eq!(
        md.fields["trust_domain"].kind,
        Some(Kind::StringValue("cluster-b.mesh".into()))
    );

    let export = "export|8080||web.default";
    let c: Cluster = decode(&snap, CLUSTER_TYPE, export);
    let md = &c.metadata.unwrap().filter_metadata[CLUSTER_METADATA];
    assert!(
        matches!(&md.fields["exported_to"].kind, Some(Kind::ListValue(l)) if l.values.len() == 1)
    );
    let cla: ClusterLoadAssignment = decode(&snap, ENDPOINT_TYPE, export);
    let zones: Vec<(String, String)> = cla
        .endpoints
        .iter()
        .map(|l| {
            let l = l.locality.clone().unwrap();
            (l.zone, l.sub_zone)
        })
        .collect();
    assert_eq!(
        zones,
        vec![
            ("z1".into(), "cluster-a".into()),
            ("z2".into(), "cluster-a".into())
        ]
    );
}

/// (type, name, hash) of every resource.
fn hashes(snap: &Snapshot) -> Vec<(String, String, u64)> {
    super::resources::TYPES
        .iter()
        .flat_map(|t| {
            snap.resources(t)
                .unwrap()
                .iter()
                .map(|(n, r)| (t.to_string(), n.clone(), r.hash))
        })
        .collect()
}

#[test]
fn hashes_are_stable_and_follow_content() {
    // The encodings may differ (metadata maps are hash maps); the hashes
    // may not.
    let a = Snapshot::build(&model(), &NodeInfo::default());
    let b = Snapshot::build(&model(), &NodeInfo::default());
    assert_eq!(hashes(&a), hashes(&b));
    let mut m = model();
    m.version = 2;
    let c = Snapshot::build(&m, &NodeInfo::default());
    assert_eq!(
        hashes(&a),
        hashes(&c),
        "model.version alone changes nothing"
    );
    m.services[0].localities[0].endpoints[0].healthy = true;
    let d = Snapshot::build(&m, &NodeInfo::default());
    let changed: Vec<_> = hashes(&a)
        .into_iter()
        .zip(hashes(&d))
        .filter(|(x, y)| x != y)
        .map(|(x, _)| (x.0, x.1))
        .collect();
    assert_eq!(changed, vec![(ENDPOINT_TYPE.to_string(), WEB.to_string())]);
}

fn sotw_req(t: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: t.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[test]
fn sotw_wildcard_names_and_unsupported_types() {
    let snap = Snapshot::build(&model(), &NodeInfo::default());
    let mut s = SotwStream::default();
    let (kind, r) = s.handle_request(
        &sotw_req("type.googleapis.com/x.Secret", &[], "", ""),
        &snap,
    );
    assert_eq!((kind, r), (RequestKind::Unsupported, None));

    // RDS with no names: nothing (no wildcard for RDS), but still answered.
    let (_, r) = s.handle_request(&sotw_req(ROUTE_TYPE, &[], "", ""), &snap);
    assert!(r.unwrap().resources.is_empty());

    // CDS "*" plus a name: wildcard.
    let (kind, r) = s.handle_request(&sotw_req(CLUSTER_TYPE, &["*", "x"], "", ""), &snap);
    assert_eq!(kind, RequestKind::Initial);
    let r = r.unwrap();
    assert_eq!(r.resources.len(), 2);
    // ACK, then an explicit name list without "*": no longer wildcard.
    let (kind, none) = s.handle_request(
        &sotw_req(CLUSTER_TYPE, &["*", "x"], &r.version_info, &r.nonce),
        &snap,
    );
    assert_eq!(
        kind,
        RequestKind::Ack {
            version: r.version_info.clone()
        }
    );
    assert!(none.is_none());
    assert_eq!(s.acked_version(CLUSTER_TYPE), Some(r.version_info.as_str()));
    let (_, r2) = s.handle_request(
        &sotw_req(CLUSTER_TYPE, &[WEB], &r.version_info, &r.nonce),
        &snap,
    );
    let r2 = r2.unwrap();
    assert_eq!(r2.resources.len(), 1);
    assert_ne!(r2.version_info, r.version_info);
    // The same snapshot again pushes nothing.
    assert!(s.handle_snapshot(&snap).is_empty());
}

#[test]
fn delta_initial_versions_and_wildcard_toggle() {
    let snap = Snapshot::build(&model(), &NodeInfo::default());
    let web_version = snap.resources(CLUSTER_TYPE).unwrap()[WEB].version();
    let mut d = DeltaStream::default();
    // Reconnect: the client already holds web at the current version and a
    // cluster that no longer exists.
    let req = DeltaDiscoveryRequest {
        type_url: CLUSTER_TYPE.into(),
        initial_resource_versions: HashMap::from([
            (WEB.to_string(), web_version),
            (
                "outbound|1||old.default.svc.clusterset.local".to_string(),
                "x".to_string(),
            ),
        ]),
        ..Default::default()
    };
    let (_, r) = d.handle_request(&req, &snap);
    let r = r.unwrap();
    let sent: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(sent, vec!["outbound|5432||db.default.svc.clusterset.local"]);
    assert_eq!(
        r.removed_resources,
        vec!["outbound|1||old.default.svc.clusterset.local"]
    );

    // Wildcard off: the clusters held only through it are removed.
    let req = DeltaDiscoveryRequest {
        type_url: CLUSTER_TYPE.into(),
        resource_names_subscribe: vec![WEB.into()],
        resource_names_unsubscribe: vec!["*".into()],
        ..Default::default()
    };
    let (_, r) = d.handle_request(&req, &snap);
    let r = r.unwrap();
    assert!(r.resources.is_empty(), "web is held at its version already");
    assert_eq!(
        r.removed_resources,
        vec!["outbound|5432||db.default.svc.clusterset.local"]
    );
    assert!(d.handle_snapshot(&snap).is_empty());
}

/// cluster-a has zones z1 and z2 in region r; cluster-b is in region r too;
/// cluster-c (region eu) is the policy's target; cluster-d (region us) is
/// not named anywhere.
fn failover_model() -> Model {
    let zoned = |cluster: &str, zone: &str, port: u16| LocalityModel {
        zone: zone.into(),
        ..loc(cluster, vec![ep(port, true)])
    };
    let remote = |cluster: &str, region: &str| LocalityModel {
        region: region.into(),
        ..tunnel(cluster, 2)
    };
    Model {
        services: vec![ServiceModel {
            targets: vec![Target::Cluster("cluster-c".into())],
            ..svc(
                "web",
                8080,
                AppProtocol::Http,
                vec![
                    remote("cluster-d", "us"),
                    zoned("cluster-a", "z2", 2),
                    remote("cluster-c", "eu"),
                    remote("cluster-b", "r"),
                    zoned("cluster-a", "z1", 1),
                ],
            )
        }],
        ..model()
    }
}

fn node_in(region: &str, zone: &str, sub_zone: &str) -> NodeInfo {
    NodeInfo {
        locality: super::node::NodeLocality {
            region: region.into(),
            zone: zone.into(),
            sub_zone: sub_zone.into(),
        },
        ..NodeInfo::default()
    }
}

/// (sub_zone/zone, priority) of every locality of web's CLA.
fn priorities_of(snap: &Snapshot) -> Vec<(String, u32)> {
    let cla: ClusterLoadAssignment = decode(snap, ENDPOINT_TYPE, WEB);
    let mut v: Vec<(String, u32)> = cla
        .endpoints
        .iter()
        .map(|l| {
            let loc = l.locality.clone().unwrap();
            (format!("{}/{}", loc.sub_zone, loc.zone), l.priority)
        })
        .collect();
    v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    v
}

#[test]
fn priorities_follow_the_client_locality() {
    let m = failover_model();
    // A client in zone z1 of cluster-a (region r).
    let z1 = Snapshot::build(&m, &node_in("r", "z1", "cluster-a"));
    assert_eq!(
        priorities_of(&z1),
        [
            ("cluster-a/z1".to_string(), 0),
            ("cluster-a/z2".to_string(), 1),
            ("cluster-b/z".to_string(), 2),
            ("cluster-c/z".to_string(), 3),
            ("cluster-d/z".to_string(), 4),
        ]
    );
    // A client in z2 swaps the two local zones: different content, version.
    let z2 = Snapshot::build(&m, &node_in("r", "z2", "cluster-a"));
    assert_eq!(
        priorities_of(&z2)[..2],
        [
            ("cluster-a/z2".to_string(), 0),
            ("cluster-a/z1".to_string(), 1)
        ]
    );
    assert_ne!(
        z1.resources(ENDPOINT_TYPE).unwrap()[WEB].hash,
        z2.resources(ENDPOINT_TYPE).unwrap()[WEB].hash
    );
    // Clusters, listeners and routes do not depend on the locality.
    for t in [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE] {
        assert_eq!(
            z1.resources(t).unwrap()[match t {
                CLUSTER_TYPE => WEB,
                _ => "web.default.svc.clusterset.local:8080",
            }]
            .hash,
            z2.resources(t).unwrap()[match t {
                CLUSTER_TYPE => WEB,
                _ => "web.default.svc.clusterset.local:8080",
            }]
            .hash,
            "{t}"
        );
    }
    // No locality in the node: our cluster and region, no zone; both local
    // zones share the first level, the levels stay dense.
    let anywhere = Snapshot::build(&m, &NodeInfo::default());
    assert_eq!(
        priorities_of(&anywhere),
        [
            ("cluster-a/z1".to_string(), 0),
            ("cluster-a/z2".to_string(), 0),
            ("cluster-b/z".to_string(), 1),
            ("cluster-c/z".to_string(), 2),
            ("cluster-d/z".to_string(), 3),
        ]
    );
    // A client of another cluster in region eu: cluster-c shares its
    // region, so it comes first (nothing is in the client's own cluster).
    let eu = Snapshot::build(&m, &node_in("eu", "", "cluster-x"));
    assert_eq!(priorities_of(&eu)[0], ("cluster-c/z".to_string(), 0));
}

#[test]
fn tunnel_metadata_carries_peer_counts() {
    let snap = Snapshot::build(&model(), &NodeInfo::default());
    let cla: ClusterLoadAssignment = decode(&snap, ENDPOINT_TYPE, WEB);
    let counts: Vec<(String, Option<Kind>, Option<Kind>, i32)> = cla
        .endpoints
        .iter()
        .filter_map(|l| {
            let lb = &l.lb_endpoints[0];
            let t = lb.metadata.as_ref()?.filter_metadata.get(TUNNEL_METADATA)?;
            Some((
                l.locality.clone().unwrap().sub_zone,
                t.fields["healthy"].kind.clone(),
                t.fields["total"].kind.clone(),
                lb.health_status,
            ))
        })
        .collect();
    assert_eq!(
        counts,
        [
            (
                "cluster-b".to_string(),
                Some(Kind::NumberValue(1.0)),
                Some(Kind::NumberValue(4.0)),
                HealthStatus::Healthy as i32
            ),
            (
                "cluster-c".to_string(),
                Some(Kind::NumberValue(0.0)),
                Some(Kind::NumberValue(4.0)),
                HealthStatus::Unhealthy as i32
            ),
        ]
    );
}

#[test]
fn clusters_carry_failover_and_traffic_policies() {
    use envoy_types::pb::envoy::config::route::v3::route;
    use mesh_api::traffic::{TrafficSettings, TRAFFIC_METADATA};

    // Without policies: the defaults, explicit.
    let snap = Snapshot::build(&model(), &NodeInfo::default());
    let c: Cluster = decode(&snap, CLUSTER_TYPE, WEB);
    let lb = c.common_lb_config.as_ref().unwrap();
    assert_eq!(lb.healthy_panic_threshold.as_ref().unwrap().value, 50.0);
    let od = c.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx.unwrap().value, 5);
    assert_eq!(od.consecutive_gateway_failure.unwrap().value, 5);
    assert_eq!(od.enforcing_consecutive_gateway_failure.unwrap().value, 100);
    assert_eq!(od.interval.unwrap().seconds, 10);
    assert_eq!(od.base_ejection_time.unwrap().seconds, 30);
    assert_eq!(od.max_ejection_time.unwrap().seconds, 300);
    assert_eq!(od.max_ejection_percent.unwrap().value, 10);
    let th = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(
        (
            th.max_connections.unwrap().value,
            th.max_pending_requests.unwrap().value,
            th.max_requests.unwrap().value
        ),
        (1024, 1024, 1024)
    );
    let budget = th.retry_budget.unwrap();
    assert_eq!(budget.budget_percent.unwrap().value, 20.0);
    assert_eq!(budget.min_retry_concurrency.unwrap().value, 10);
    assert_eq!(c.connect_timeout.unwrap().seconds, 1);
    let md = &c.metadata.as_ref().unwrap().filter_metadata[TRAFFIC_METADATA];
    assert_eq!(
        TrafficSettings::from_struct(md).unwrap(),
        TrafficSettings::default()
    );
    let rc: RouteConfiguration = decode(&snap, ROUTE_TYPE, "web.default.svc.clusterset.local:8080");
    let Some(route::Action::Route(action)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("not a route action");
    };
    let rp = action.retry_policy.as_ref().unwrap();
    assert_eq!(
        rp.retry_on,
        "connect-failure,refused-stream,reset,retriable-status-codes"
    );
    assert_eq!(rp.retriable_status_codes, [503]);
    assert_eq!(rp.num_retries.unwrap().value, 2);
    assert_eq!(rp.per_try_timeout, None);
    assert_eq!(action.timeout.unwrap().seconds, 15);

    // With policies: their values; a gRPC port gets `unavailable` and the
    // policy's request timeout.
    let mut m = model();
    let mut t = TrafficSettings::default();
    t.retries.attempts = 4;
    t.retries.per_try_timeout_ms = Some(1500);
    t.retries.retry_on = vec!["connect-failure".into()];
    t.retries.budget.percent = 300;
    t.timeouts.connect_ms = 250;
    t.timeouts.request_ms = 2000;
    t.circuit_breaker.max_requests = 7;
    let web = &mut m.services[0];
    web.protocol = AppProtocol::Grpc;
    web.panic_threshold_percent = 0;
    web.outlier.consecutive_5xx = 0;
    web.outlier.base_ejection_time_ms = 1500;
    web.traffic = Some(t.clone());
    let snap = Snapshot::build(&m, &NodeInfo::default());
    let c: Cluster = decode(&snap, CLUSTER_TYPE, WEB);
    assert_eq!(
        c.common_lb_config
            .unwrap()
            .healthy_panic_threshold
            .unwrap()
            .value,
        0.0
    );
    let od = c.outlier_detection.unwrap();
    assert_eq!(od.consecutive_5xx.unwrap().value, 0);
    assert_eq!(od.enforcing_consecutive_5xx.unwrap().value, 0);
    let bet = od.base_ejection_time.unwrap();
    assert_eq!((bet.seconds, bet.nanos), (1, 500_000_000));
    let th = &c.circuit_breakers.unwrap().thresholds[0];
    assert_eq!(th.max_requests.unwrap().value, 7);
    // Envoy's Percent is at most 100; the metadata keeps 300.
    assert_eq!(
        th.retry_budget.unwrap().budget_percent.unwrap().value,
        100.0
    );
    let ct = c.connect_timeout.unwrap();
    assert_eq!((ct.seconds, ct.nanos), (0, 250_000_000));
    let md = &c.metadata.unwrap().filter_metadata[TRAFFIC_METADATA];
    assert_eq!(TrafficSettings::from_struct(md).unwrap(), t);
    let rc: RouteConfiguration = decode(&snap, ROUTE_TYPE, "web.default.svc.clusterset.local:8080");
    let Some(route::Action::Route(action)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("not a route action");
    };
    let rp = action.retry_policy.as_ref().unwrap();
    assert_eq!(rp.retry_on, "connect-failure,unavailable");
    assert_eq!(rp.num_retries.unwrap().value, 4);
    let ptt = rp.per_try_timeout.unwrap();
    assert_eq!((ptt.seconds, ptt.nanos), (1, 500_000_000));
    assert_eq!(action.timeout.unwrap().seconds, 2);

    // A gRPC port without a TrafficPolicy keeps no route timeout; no
    // retries means no retry policy.
    let api = &mut m.services[0];
    let mut t0 = TrafficSettings::default();
    t0.retries.attempts = 0;
    api.traffic = None;
    let snap = Snapshot::build(&m, &NodeInfo::default());
    let rc: RouteConfiguration = decode(&snap, ROUTE_TYPE, "web.default.svc.clusterset.local:8080");
    let Some(route::Action::Route(action)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("not a route action");
    };
    assert_eq!(action.timeout.unwrap().seconds, 0);
    m.services[0].traffic = Some(t0);
    let snap = Snapshot::build(&m, &NodeInfo::default());
    let rc: RouteConfiguration = decode(&snap, ROUTE_TYPE, "web.default.svc.clusterset.local:8080");
    let Some(route::Action::Route(action)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("not a route action");
    };
    assert!(action.retry_policy.is_none());
}
