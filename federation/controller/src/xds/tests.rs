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

fn loc(cluster: &str, priority: u32, endpoints: Vec<EndpointModel>) -> LocalityModel {
    LocalityModel {
        cluster: cluster.into(),
        region: "r".into(),
        zone: "z".into(),
        priority,
        weight: 3,
        endpoints,
        tunnel: None,
    }
}

fn tunnel(cluster: &str, priority: u32, healthy: u32) -> LocalityModel {
    LocalityModel {
        tunnel: Some(TunnelModel {
            gateway: ([127, 0, 0, 9], 15443).into(),
            cluster: cluster.into(),
            spiffe_id: format!("spiffe://{cluster}.mesh/ns/default/sa/web"),
            healthy,
        }),
        ..loc(cluster, priority, vec![])
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
        localities,
    }
}

fn model() -> Model {
    Model {
        version: 1,
        cluster: "cluster-a".into(),
        trust_domain: "cluster-a.mesh".into(),
        services: vec![
            svc(
                "web",
                8080,
                AppProtocol::Http,
                vec![
                    loc("cluster-a", 0, vec![ep(1, false)]),
                    tunnel("cluster-b", 2, 1),
                    tunnel("cluster-c", 5, 0),
                ],
            ),
            svc(
                "db",
                5432,
                AppProtocol::Tcp,
                vec![loc("cluster-a", 0, vec![ep(2, true)])],
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

    // Priorities 0, 2, 5 become 0, 1, 2; health and metadata per endpoint.
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
