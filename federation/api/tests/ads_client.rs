//! The ADS client against the in-process fake controller (SotW, plaintext):
//! ACK/NACK with error_detail, last good resources kept after a NACK and
//! while the server is gone, reconnect and resubscribe after it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_api::ads_client::{AdsClient, AdsConfig, AdsSnapshot, Subscriptions, Validator};
use mesh_api::envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, Node, SocketAddress,
};
use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use mesh_api::envoy_types::pb::google::protobuf::Any;
use mesh_api::fake::{FakeControlPlane, FakeState};
use mesh_api::transport::{Security, Target};
use mesh_api::xds::ENDPOINT_TYPE;
use prost::Message;
use tokio::sync::watch;
use trust_bundle::{CertificateAuthority, SpiffeId, TrustDomain};

const PATIENCE: Duration = Duration::from_secs(10);

fn cla(name: &str, port: u32) -> Any {
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    Any {
        type_url: ENDPOINT_TYPE.into(),
        value: ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

fn ports(snapshot: &AdsSnapshot, name: &str) -> Vec<u32> {
    let clas = snapshot
        .decode::<ClusterLoadAssignment>(ENDPOINT_TYPE)
        .unwrap();
    let Some(c) = clas.get(name) else {
        return vec![];
    };
    c.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep.address.as_ref(),
            _ => None,
        })
        .filter_map(|a| match &a.address {
            Some(address::Address::SocketAddress(s)) => match s.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => Some(p),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Refuses any endpoint on port 0.
fn validator() -> Validator {
    Arc::new(|_type_url: &str, set: &BTreeMap<String, Any>| {
        for (name, any) in set {
            let s = AdsSnapshot {
                types: [(
                    ENDPOINT_TYPE.to_owned(),
                    mesh_api::ads_client::Resources {
                        version: String::new(),
                        resources: [(name.clone(), any.clone())].into(),
                    },
                )]
                .into(),
                ..Default::default()
            };
            if ports(&s, name).contains(&0) {
                return Err(format!("{name}: endpoint port 0"));
            }
        }
        Ok(())
    })
}

fn state() -> Arc<FakeState> {
    let td = TrustDomain::parse("cluster-a.mesh").unwrap();
    let ca = CertificateAuthority::self_signed(td, Duration::from_secs(3600), SystemTime::now())
        .unwrap();
    FakeState::new(
        ca,
        "token",
        SpiffeId::parse("spiffe://cluster-a.mesh/ns/default/sa/web").unwrap(),
    )
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<AdsSnapshot>>,
    what: &str,
    f: impl Fn(&AdsSnapshot) -> bool,
) -> Arc<AdsSnapshot> {
    let r = tokio::time::timeout(PATIENCE, rx.wait_for(|s| f(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    r.unwrap().clone()
}

#[tokio::test]
async fn ack_nack_last_good_and_reconnect() {
    let state = state();
    state.set_resources(ENDPOINT_TYPE, "1", vec![cla("a", 80)]);
    let fake = FakeControlPlane::start("127.0.0.1:0".parse().unwrap(), state.clone(), None).await;
    let addr: SocketAddr = fake.addr();

    let mut subs = Subscriptions::new();
    subs.insert(
        ENDPOINT_TYPE.to_owned(),
        BTreeSet::from(["a".to_owned(), "b".to_owned()]),
    );
    let client = AdsClient::spawn(
        Target::new(addr.to_string(), Security::DangerPlaintext),
        AdsConfig {
            node: Node {
                id: "sidecar~test".into(),
                ..Default::default()
            },
            subscriptions: subs,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
        validator(),
    );
    let mut rx = client.watch();

    // Subscribe: names, no nonce, the node.
    let first = state.next_request(PATIENCE).await.expect("initial request");
    assert_eq!(first.type_url, ENDPOINT_TYPE);
    assert_eq!(first.resource_names, vec!["a", "b"]);
    assert!(first.response_nonce.is_empty());
    assert_eq!(first.node.as_ref().unwrap().id, "sidecar~test");

    // ACK of version 1.
    let ack = state
        .next_reply(ENDPOINT_TYPE, PATIENCE)
        .await
        .expect("ack");
    assert_eq!(ack.version_info, "1");
    assert!(ack.error_detail.is_none());
    let snap = wait_for(&mut rx, "version 1", |s| {
        s.connected && ports(s, "a") == [80]
    })
    .await;
    assert!(snap.last_nack.is_none());

    // NACK of version 2: previous version, error detail, old resources kept.
    state.set_resources(ENDPOINT_TYPE, "2", vec![cla("a", 0)]);
    let nack = state
        .next_reply(ENDPOINT_TYPE, PATIENCE)
        .await
        .expect("nack");
    assert_eq!(nack.version_info, "1");
    let detail = nack.error_detail.expect("error_detail");
    assert_eq!(detail.code, 3);
    assert!(
        detail.message.contains("a: endpoint port 0"),
        "{}",
        detail.message
    );
    let snap = wait_for(&mut rx, "the nack", |s| s.nacks == 1).await;
    assert_eq!(ports(&snap, "a"), [80]);
    assert_eq!(snap.types[ENDPOINT_TYPE].version, "1");

    // The server goes away: last good kept, disconnected.
    fake.stop().await;
    let snap = wait_for(&mut rx, "disconnect", |s| !s.connected).await;
    assert_eq!(ports(&snap, "a"), [80]);

    // It comes back on the same address with a new version: the client
    // resubscribes with the version it holds and follows.
    state.set_resources(ENDPOINT_TYPE, "3", vec![cla("a", 81), cla("b", 82)]);
    let fake = FakeControlPlane::start(addr, state.clone(), None).await;
    let resub = loop {
        let r = state.next_request(PATIENCE).await.expect("resubscription");
        if r.response_nonce.is_empty() {
            break r;
        }
    };
    assert_eq!(resub.version_info, "1");
    assert_eq!(resub.resource_names, vec!["a", "b"]);
    let snap = wait_for(&mut rx, "version 3", |s| {
        s.connected && ports(s, "a") == [81]
    })
    .await;
    assert_eq!(ports(&snap, "b"), [82]);
    assert!(snap.last_nack.is_none());
    let ack = state
        .next_reply(ENDPOINT_TYPE, PATIENCE)
        .await
        .expect("ack 3");
    assert_eq!(ack.version_info, "3");

    // A narrower subscription is sent on the open stream.
    client.set_subscriptions(Subscriptions::from([(
        ENDPOINT_TYPE.to_owned(),
        BTreeSet::from(["b".to_owned()]),
    )]));
    let narrowed = loop {
        let r = state.next_request(PATIENCE).await.expect("narrowed");
        if r.resource_names == ["b"] {
            break r;
        }
    };
    assert_eq!(narrowed.version_info, "3");
    let snap = wait_for(&mut rx, "a dropped", |s| ports(s, "a").is_empty()).await;
    assert_eq!(ports(&snap, "b"), [82]);
    drop(client);
    fake.stop().await;
}
