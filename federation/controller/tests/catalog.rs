//! The catalog state machine and its projections, without I/O: apply is
//! all or nothing, imports are derived from local and peer exports with
//! conflicts, leases expire, CA rotation steps, and the xDS model of a
//! local and an imported service.

mod common;

use std::path::Path;

use mesh_api::peering::{ExportSet, ExportedPort, ExportedService, LocalityHealth};
use mesh_controller::catalog::{
    ca::CaMaterial, export_set, xds_model, ApplyAction, Catalog, Command, LeasedWorkload,
    PeerRecord, ResourceKind, Response,
};
use mesh_controller::store::StateMachine;
use mesh_controller::xds::resources::client_priorities;
use mesh_controller::xds::AppProtocol;
use mesh_failover::{Locality, Target};
use mesh_resources::{WorkloadPort, WorkloadProtocol};
use prost::Message as _;
use serde_json::{json, Value};

const NOW: u64 = 1_700_000_000_000;

fn apply(catalog: &mut Catalog, docs: Vec<Value>) -> Response {
    catalog.apply(&Command::ApplyResources {
        documents: docs,
        now_ms: NOW,
    })
}

fn export(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
           "metadata": {"name": name, "namespace": ns}})
}

fn workload(ns: &str, name: &str, service: &str, address: &str, port: u16) -> Value {
    json!({"apiVersion": "isthmus.dev/v1alpha1", "kind": "Workload",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"service": service, "serviceAccount": service, "address": address,
                    "ports": [{"port": port, "targetPort": 15006, "protocol": "http"}],
                    "locality": {"zone": "z1"}}})
}

fn peer(cluster: &str, linked_ms: u64, exports: &ExportSet) -> PeerRecord {
    PeerRecord {
        cluster: cluster.to_owned(),
        trust_domain: format!("{cluster}.mesh"),
        bundle_json: "{}".to_owned(),
        bundle_sequence: 1,
        bundle_refreshed_ms: linked_ms,
        bundle_endpoint: format!("https://{cluster}.example:15015/"),
        controller_address: "127.0.2.2:15012".to_owned(),
        controller_spiffe_id: format!("spiffe://{cluster}.mesh/ns/isthmus-system/sa/controller"),
        gateway_addresses: vec!["127.0.2.1:15443".to_owned()],
        gateway_spiffe_id: format!(
            "spiffe://{cluster}.mesh/ns/isthmus-system/sa/east-west-gateway"
        ),
        region: "us-east".to_owned(),
        exports: exports.encode_to_vec(),
        linked_ms,
    }
}

fn exported_web(port: u32, created: &str) -> ExportSet {
    ExportSet {
        version: 1,
        services: vec![ExportedService {
            namespace: "shop".to_owned(),
            name: "web".to_owned(),
            ports: vec![ExportedPort {
                name: format!("http-{port}"),
                port,
                protocol: "TCP".to_owned(),
                app_protocol: "http".to_owned(),
            }],
            r#type: "ClusterSetIP".to_owned(),
            localities: vec![LocalityHealth {
                region: "us-east".to_owned(),
                zone: "b1".to_owned(),
                healthy: 3,
                total: 4,
                weight: 0,
            }],
            spiffe_ids: vec!["spiffe://cluster-b.mesh/ns/shop/sa/web".to_owned()],
            export_created: created.to_owned(),
        }],
        gateway_addresses: vec!["127.0.2.1:15443".to_owned()],
    }
}

#[test]
fn apply_is_all_or_nothing_and_refuses_derived_kinds() {
    let mut catalog = Catalog::default();
    let import = json!({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
                        "metadata": {"name": "web"}, "spec": {"type": "ClusterSetIP"}});
    let r = apply(&mut catalog, vec![export("shop", "web"), import]);
    assert!(
        matches!(&r, Response::Refused(why) if why.starts_with("document 2 (ServiceImport default/web)")),
        "{r:?}"
    );
    assert!(catalog.resources.is_empty());

    let r = apply(
        &mut catalog,
        vec![export("shop", "web"), json!({"kind": "Nope"})],
    );
    assert!(matches!(r, Response::Refused(_)), "{r:?}");
    assert!(catalog.resources.is_empty());

    let Response::Applied(results) = apply(&mut catalog, vec![export("shop", "web")]) else {
        panic!("not applied")
    };
    assert_eq!(results[0].action, ApplyAction::Created);
    let stored = catalog.resources.values().next().unwrap();
    assert_eq!(stored.created_ms, NOW);
    assert!(stored.uid.starts_with("00000000-0000-4000-8000-"));
}

#[test]
fn imports_are_derived_from_local_and_peer_exports_with_conflicts() {
    let mut catalog = Catalog::default();
    apply(
        &mut catalog,
        vec![
            export("shop", "web"),
            workload("shop", "web-1", "web", "10.0.0.1", 80),
        ],
    );
    // An older export in cluster-b with another port number: union of ports.
    let b = exported_web(8080, "2020-01-01T00:00:00Z");
    catalog.apply(&Command::UpsertPeer(peer("cluster-b", NOW, &b)));
    let imports = catalog.service_imports("cluster-a");
    assert_eq!(imports.len(), 1);
    let ports: Vec<u16> = imports[0].spec.ports.iter().map(|p| p.port).collect();
    assert_eq!(ports, [8080, 80]);
    let clusters: Vec<&str> = imports[0]
        .status
        .as_ref()
        .unwrap()
        .clusters
        .iter()
        .map(|c| c.cluster.as_str())
        .collect();
    assert_eq!(clusters, ["cluster-a", "cluster-b"]);

    // cluster-b's older export names port "http-80" as 8080's peer would not:
    // make it claim our port name with another number → we conflict.
    let mut clash = exported_web(8080, "2020-01-01T00:00:00Z");
    clash.services[0].ports[0].name = "http-80".to_owned();
    catalog.apply(&Command::UpdatePeerExports {
        cluster: "cluster-b".to_owned(),
        exports: clash.encode_to_vec(),
    });
    let status = catalog.export_status("cluster-a", "shop", "web");
    let conflict = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Conflict")
        .unwrap();
    assert_eq!(
        conflict.reason.as_deref(),
        Some("PortConflict"),
        "{conflict:?}"
    );

    // Unlinking the peer withdraws its part; deleting our export, the import.
    catalog.apply(&Command::RemovePeer {
        cluster: "cluster-b".to_owned(),
    });
    assert_eq!(catalog.service_imports("cluster-a")[0].spec.ports.len(), 1);
    catalog.apply(&Command::DeleteResource {
        kind: ResourceKind::ServiceExport,
        namespace: "shop".to_owned(),
        name: "web".to_owned(),
    });
    assert!(catalog.service_imports("cluster-a").is_empty());
}

#[test]
fn leases_expire_and_belong_to_their_service_account() {
    let mut catalog = Catalog::default();
    let w = LeasedWorkload {
        namespace: "shop".to_owned(),
        name: "web-1".to_owned(),
        service: "web".to_owned(),
        service_account: "web".to_owned(),
        address: "10.0.0.9".to_owned(),
        ports: vec![WorkloadPort {
            port: 80,
            target_port: None,
            protocol: WorkloadProtocol::Http,
        }],
        region: String::new(),
        zone: String::new(),
        lease_ms: 15_000,
        expires_ms: NOW + 15_000,
    };
    assert_eq!(
        catalog.apply(&Command::RegisterWorkload(w.clone())),
        Response::Ok
    );
    let thief = LeasedWorkload {
        service_account: "db".to_owned(),
        ..w.clone()
    };
    assert!(matches!(
        catalog.apply(&Command::RegisterWorkload(thief)),
        Response::Refused(_)
    ));
    assert_eq!(catalog.next_lease_expiry(), Some(NOW + 15_000));
    catalog.apply(&Command::ExpireLeases {
        now_ms: NOW + 14_999,
    });
    assert_eq!(catalog.endpoints().len(), 1);
    catalog.apply(&Command::ExpireLeases {
        now_ms: NOW + 15_000,
    });
    assert!(catalog.endpoints().is_empty());
}

#[test]
fn ca_rotation_publishes_then_switches_then_drops() {
    let td = trust_bundle::TrustDomain::parse("cluster-a.mesh").unwrap();
    let mut catalog = Catalog::default();
    let first = CaMaterial::generate(&td, std::time::SystemTime::now()).unwrap();
    assert_eq!(
        catalog.apply(&Command::InitCa(first.clone())),
        Response::Sequence(1)
    );
    assert!(matches!(
        catalog.apply(&Command::InitCa(first.clone())),
        Response::Refused(_)
    ));
    let next = CaMaterial::generate(&td, std::time::SystemTime::now()).unwrap();
    let r = catalog.apply(&Command::StartCaRotation {
        next: next.clone(),
        switch_at_ms: NOW + 10,
        drop_at_ms: NOW + 20,
    });
    assert_eq!(r, Response::Sequence(2));
    assert_eq!(catalog.own_bundle(&td).unwrap().x509_authorities().len(), 2);
    assert_eq!(catalog.ca.as_ref().unwrap().active, first);
    catalog.apply(&Command::AdvanceCaRotation { now_ms: NOW + 10 });
    assert_eq!(catalog.ca.as_ref().unwrap().active, next);
    assert_eq!(catalog.own_bundle(&td).unwrap().x509_authorities().len(), 2);
    catalog.apply(&Command::AdvanceCaRotation { now_ms: NOW + 20 });
    let bundle = catalog.own_bundle(&td).unwrap();
    assert_eq!(bundle.x509_authorities().len(), 1);
    assert_eq!(bundle.sequence(), 4);
}

#[test]
fn xds_model_of_a_local_and_an_imported_service() {
    let config = common::config(Path::new("/nonexistent"), "");
    let mut catalog = Catalog::default();
    apply(
        &mut catalog,
        vec![
            export("shop", "web"),
            workload("shop", "web-1", "web", "10.0.0.1", 80),
            workload("shop", "web-2", "web", "10.0.0.2", 80),
            json!({"apiVersion": "isthmus.dev/v1alpha1", "kind": "FailoverPolicy",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"service": "web", "targets": [{"cluster": "cluster-b"}],
                            "overprovisioningFactor": 120,
                            "outlierDetection": {"consecutive5xx": 3}}}),
            json!({"apiVersion": "isthmus.dev/v1alpha1", "kind": "TrafficPolicy",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"service": "web", "retries": {"attempts": 1}}}),
        ],
    );
    catalog.apply(&Command::UpsertPeer(peer(
        "cluster-c",
        NOW + 1,
        &exported_web(80, "2020-01-01T00:00:00Z"),
    )));
    catalog.apply(&Command::UpsertPeer(peer(
        "cluster-b",
        NOW,
        &exported_web(80, "2020-01-01T00:00:00Z"),
    )));
    let model = xds_model(&catalog, &config);
    assert_eq!(model.version, catalog.revision);
    assert_eq!(model.cluster, "cluster-a");
    let web = model
        .services
        .iter()
        .find(|s| (s.namespace.as_str(), s.name.as_str(), s.port) == ("shop", "web", 80))
        .expect("shop/web:80 in the model");
    assert_eq!(web.protocol, AppProtocol::Http);
    assert_eq!(web.overprovisioning_factor, 120);
    assert_eq!(web.targets, [Target::Cluster("cluster-b".into())]);
    assert_eq!(web.panic_threshold_percent, 50);
    assert_eq!(web.outlier.consecutive_5xx, 3);
    assert_eq!(web.outlier.consecutive_gateway_errors, 5);
    let traffic = web.traffic.as_ref().expect("web's TrafficPolicy");
    assert_eq!(traffic.retries.attempts, 1);
    assert_eq!(traffic.timeouts.request_ms, 15_000);
    assert_eq!(model.region, "eu-west");
    // Priorities as a client of cluster-a (no zone) sees them: our cluster,
    // then the policy's target, then the other peer.
    let client = Locality {
        region: "eu-west".into(),
        zone: String::new(),
        cluster: "cluster-a".into(),
    };
    let priorities = client_priorities(web, &client);
    let summary: Vec<(String, String, u32, u32, usize, Option<String>)> = web
        .localities
        .iter()
        .zip(priorities)
        .map(|(l, priority)| {
            (
                l.cluster.clone(),
                format!("{}/{}", l.region, l.zone),
                priority,
                l.weight,
                l.endpoints.len(),
                l.tunnel
                    .as_ref()
                    .map(|t| format!("{}→{} ({}/{})", t.gateway, t.cluster, t.healthy, t.total)),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("cluster-a".into(), "eu-west/z1".into(), 0, 2, 2, None),
            // The policy's target; weight defaults to healthy.
            (
                "cluster-b".into(),
                "us-east/b1".into(),
                1,
                3,
                0,
                Some("127.0.0.1:15443→cluster-b (3/4)".into())
            ),
            (
                "cluster-c".into(),
                "us-east/b1".into(),
                2,
                3,
                0,
                Some("127.0.0.1:15443→cluster-c (3/4)".into())
            ),
        ]
    );
    // Without a FailoverPolicy the targets are the peers in link order.
    let mut no_policy = catalog.clone();
    no_policy.apply(&Command::DeleteResource {
        kind: ResourceKind::FailoverPolicy,
        namespace: "shop".into(),
        name: "web".into(),
    });
    let model2 = xds_model(&no_policy, &config);
    let web2 = model2
        .services
        .iter()
        .find(|s| (s.namespace.as_str(), s.name.as_str(), s.port) == ("shop", "web", 80))
        .expect("shop/web:80 in the model");
    assert_eq!(
        web2.targets,
        [
            Target::Cluster("cluster-b".into()),
            Target::Cluster("cluster-c".into())
        ]
    );
    assert_eq!(web2.outlier, mesh_resources::OutlierDetection::default());
    let local = &web.localities[0].endpoints;
    assert_eq!(local[0].address.to_string(), "10.0.0.1:15006");
    assert_eq!(local[0].spiffe_id, "spiffe://cluster-a.mesh/ns/shop/sa/web");
    let tunnel = web.localities[1].tunnel.as_ref().unwrap();
    assert_eq!(tunnel.spiffe_id, "spiffe://cluster-b.mesh/ns/shop/sa/web");

    // Gateway role: peers in link order, our export with its endpoints.
    let peers: Vec<&str> = model.peers.iter().map(|p| p.cluster.as_str()).collect();
    assert_eq!(peers, ["cluster-b", "cluster-c"]);
    assert_eq!(model.exports.len(), 1);
    assert_eq!(model.exports[0].exported_to, ["cluster-b", "cluster-c"]);
    assert_eq!(model.exports[0].endpoints.len(), 2);

    // What we stream to peers: counts, not addresses.
    let set = export_set(&catalog, &config);
    assert_eq!(set.services.len(), 1);
    let svc = &set.services[0];
    assert_eq!(svc.ports[0].name, "http-80");
    assert_eq!(svc.localities[0].healthy, 2);
    assert_eq!(svc.spiffe_ids, ["spiffe://cluster-a.mesh/ns/shop/sa/web"]);
    assert_eq!(set.gateway_addresses, ["127.0.0.1:15443"]);
}
