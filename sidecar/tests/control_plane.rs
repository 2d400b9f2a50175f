//! A sidecar whose identity and catalog come from a (fake, in-process)
//! controller: first SVID by join token, CDS+EDS for its outbound service,
//! registration with a lease; traffic keeps flowing while the controller is
//! gone, and a changed endpoint is followed after it returns.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mesh_api::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use mesh_api::envoy_types::pb::envoy::config::core::v3::Locality;
use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LocalityLbEndpoints,
};
use mesh_api::envoy_types::pb::google::protobuf::Any;
use mesh_api::fake::{FakeControlPlane, FakeState, FakeTls};
use mesh_api::xds::{self, CLUSTER_TYPE, ENDPOINT_TYPE};
use prost::Message;
use std::time::SystemTime;
use trust_bundle::{
    BundleMap, BundleStore, CertificateAuthority, SpiffeId, SvidRequest, SvidSource, TrustDomain,
};

fn cla(endpoint: SocketAddr, spiffe_id: &str) -> Any {
    let lb = mesh_api::fake::lb_endpoint(endpoint, Some(spiffe_id));

    Any {
        type_url: ENDPOINT_TYPE.into(),
        value: ClusterLoadAssignment {
            cluster_name: xds::service_cluster_name("default", "backend", 8080),
            endpoints: vec![LocalityLbEndpoints {
                locality: Some(Locality {
                    region: "eu-west".into(),
                    zone: "eu-west-1a".into(),
                    sub_zone: "cluster-a".into(),
                }),
                lb_endpoints: vec![lb],
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

/// The CDS resource of default/backend:8080: CDS says the service exists.
fn backend_cluster() -> Any {
    Any {
        type_url: CLUSTER_TYPE.into(),
        value: Cluster {
            name: xds::service_cluster_name("default", "backend", 8080),
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

fn backend_yaml(pki: &Pki, admin: SocketAddr, inbound: SocketAddr, app: SocketAddr) -> String {
    format!(
        "cluster: cluster-a\n{identity}admin: {admin}\ninbound:\n\
  - {{ listen: \"{inbound}\", protocol: http, app: \"{app}\", allow: [\"{front}\"] }}\n",
        identity = pki.identity_yaml("backend"),
        front = id("frontend"),
    )
}

async fn app_of(out: SocketAddr) -> Option<String> {
    let (status, headers, _) = get(out, "/").await;
    if status != 200 {
        return None;
    }
    headers
        .get("x-app")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_from_the_control_plane_survives_its_loss_and_follows_changes() {
    run(false).await;
}

/// The same over SPIFFE TLS: the controller's SVID is checked against the
/// bootstrap bundles, ADS and Register present the SVID it signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_spiffe_tls() {
    run(true).await;
}

async fn run(tls: bool) {
    let pki = Pki::new();
    let (cert, key) = pki.ca_a.to_pem();
    let ca = CertificateAuthority::from_pem(
        TrustDomain::parse(TD).unwrap(),
        cert.as_bytes(),
        key.as_bytes(),
    )
    .unwrap();
    let state = FakeState::new(ca, "join-me", SpiffeId::parse(&id("frontend")).unwrap());
    std::fs::write(pki.path().join("token"), "join-me\n").unwrap();

    let one = start_app("one").await;
    let two = start_app("two").await;
    let [back1_admin, back1_in, back2_admin, back2_in, front_admin, out_http, front_in] =
        std::array::from_fn(|_| free_addr());
    let (_back1, _) = start_sidecar(
        &pki,
        "back1",
        &backend_yaml(&pki, back1_admin, back1_in, one.addr),
    )
    .await;
    let (_back2, _) = start_sidecar(
        &pki,
        "back2",
        &backend_yaml(&pki, back2_admin, back2_in, two.addr),
    )
    .await;

    let fake_tls = tls.then(|| {
        let controller = pki
            .ca_a
            .issue(
                &SvidRequest::new(
                    SpiffeId::parse(&format!("spiffe://{TD}/ns/isthmus-system/sa/controller"))
                        .unwrap(),
                ),
                SystemTime::now(),
            )
            .unwrap();
        let map =
            BundleMap::from_json(&std::fs::read(pki.path().join("bundles.json")).unwrap()).unwrap();
        FakeTls {
            source: SvidSource::new(controller, trust_bundle::crypto_provider()).unwrap(),
            store: BundleStore::from_map(&map),
        }
    });
    state.set_resources(CLUSTER_TYPE, "1", vec![backend_cluster()]);
    state.set_resources(ENDPOINT_TYPE, "1", vec![cla(back1_in, &id("backend"))]);
    let fake = FakeControlPlane::start(
        "127.0.0.1:0".parse().unwrap(),
        state.clone(),
        fake_tls.clone(),
    )
    .await;
    let cp = fake.addr();

    let front_yaml = format!(
        "cluster: cluster-a\n\
identity:\n  spiffe_id: {front}\n  bundles: bundles.json\n\
admin: {front_admin}\n\
control_plane:\n  address: \"{cp}\"\n  join_token_file: token\n  danger_plaintext: {plaintext}\n  initial_backoff_ms: 20\n  max_backoff_ms: 200\n  register: {{ name: frontend-1, service: frontend, ports: [{{ port: 80, target_port: {fport}, protocol: http }}], lease_seconds: 30 }}\n\
outbound:\n  - {{ listen: \"{out_http}\", service: default/backend, port: 8080, protocol: http }}\n\
inbound:\n  - {{ listen: \"{front_in}\", protocol: http, app: \"{app}\", allow: [] }}\n\
timeouts: {{ connect_ms: 2000 }}\n",
        front = id("frontend"),
        fport = front_in.port(),
        plaintext = !tls,
        app = one.addr,
    );
    let (front, front_path) = start_sidecar(&pki, "front", &front_yaml).await;

    // The SVID came from the controller, by join token.
    let signed = state.signed.lock().unwrap().clone();
    assert_eq!(signed.len(), 1);
    assert!(signed[0].0);
    assert_eq!(signed[0].1.as_str(), id("frontend"));

    // CDS+EDS subscription for the outbound service, then traffic.
    assert!(
        eventually(|| async { app_of(out_http).await.as_deref() == Some("one") }).await,
        "the sidecar never routed with the pushed endpoint"
    );
    let subscribed = state.next_request(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        subscribed.resource_names,
        vec![xds::service_cluster_name("default", "backend", 8080)]
    );
    assert!(eventually(|| async { !state.registered.lock().unwrap().is_empty() }).await);
    let reg = state.registered.lock().unwrap()[0].clone();
    assert_eq!(reg.name, "frontend-1");
    assert_eq!(reg.address, front_in.ip().to_string());
    assert_eq!(reg.ports[0].target_port, u32::from(front_in.port()));

    let ads_peer = state.ads_peers.lock().unwrap()[0].clone();
    if tls {
        assert_eq!(
            ads_peer.map(|p| p.to_string()),
            Some(id("frontend")),
            "ADS over mTLS"
        );
    } else {
        assert!(ads_peer.is_none());
    }

    // The controller dies: the last good catalog keeps serving.
    fake.stop().await;
    for _ in 0..5 {
        assert_eq!(app_of(out_http).await.as_deref(), Some("one"));
    }

    // It returns with the endpoint moved: the sidecar reconnects and follows.
    state.set_resources(ENDPOINT_TYPE, "2", vec![cla(back2_in, &id("backend"))]);
    let fake = FakeControlPlane::start(cp, state.clone(), fake_tls).await;
    assert!(
        eventually(|| async { app_of(out_http).await.as_deref() == Some("two") }).await,
        "the sidecar did not follow the changed endpoint"
    );

    // A SIGHUP-style reload of the unchanged file keeps the xDS catalog; a
    // changed control_plane section is refused.
    front.reload().await.expect("reload of the same file");
    assert_eq!(app_of(out_http).await.as_deref(), Some("two"));
    std::fs::write(
        &front_path,
        front_yaml.replace("max_backoff_ms: 200", "max_backoff_ms: 300"),
    )
    .unwrap();
    let refused = front
        .reload()
        .await
        .expect_err("control_plane change accepted");
    assert!(
        refused.to_string().starts_with("control_plane"),
        "{refused}"
    );
    std::fs::write(&front_path, &front_yaml).unwrap();

    // An invalid update is NACKed and changes nothing.
    state.set_resources(ENDPOINT_TYPE, "3", vec![cla(back1_in, "not-a-spiffe-id")]);
    let nack = loop {
        let r = state
            .next_reply(ENDPOINT_TYPE, Duration::from_secs(10))
            .await
            .expect("a NACK for the invalid endpoint");
        if r.error_detail.is_some() {
            break r;
        }
    };
    assert_eq!(nack.version_info, "2");
    assert!(
        nack.error_detail.unwrap().message.contains("spiffe_id"),
        "NACK names the field"
    );
    assert_eq!(app_of(out_http).await.as_deref(), Some("two"));

    // Graceful drain deregisters.
    assert!(front.drain().await);
    assert_eq!(
        *state.deregistered.lock().unwrap(),
        vec!["frontend-1".to_owned()]
    );
    fake.stop().await;
}
