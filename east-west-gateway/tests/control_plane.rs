//! A gateway whose SVID, peers and exports come from a (fake, in-process)
//! controller over ADS: it links to a real peer gateway named only by a
//! `peer|` cluster, reports it in `GET /peers` with its RTT, keeps its
//! config while the controller is gone, NACKs a malformed peer, and follows
//! a removal after the controller returns.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mesh_api::envoy_types::pb::envoy::config::cluster::v3::Cluster as XdsCluster;
use mesh_api::envoy_types::pb::envoy::config::core::v3::{Locality, Metadata};
use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints,
};
use mesh_api::envoy_types::pb::google::protobuf::{value, Any, ListValue, Struct, Value};
use mesh_api::fake::{FakeControlPlane, FakeState};
use mesh_api::xds::{self, CLUSTER_METADATA, CLUSTER_TYPE, ENDPOINT_TYPE};
use mesh_api::xds_decode::string_struct;
use prost::Message;
use trust_bundle::{CertificateAuthority, SpiffeId, TrustDomain};
use tunnel_proto::OpenerEvent;

fn lb(addr: SocketAddr, identity: Option<&str>) -> LbEndpoint {
    mesh_api::fake::lb_endpoint(addr, identity)
}

fn cla(name: &str, endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality {
                region: "eu".into(),
                zone: "eu-1".into(),
                sub_zone: "cluster-a".into(),
            }),
            lb_endpoints: endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: m.encode_to_vec(),
    }
}

fn peer_cluster(b: &Cluster, gateway: SocketAddr, with_td: bool) -> Any {
    let name = xds::peer_cluster_name(&b.name);
    let td = b.td();
    let id = b.gateway_id();
    let mut fields = vec![("spiffe_id", id.as_str())];
    if with_td {
        fields.push(("trust_domain", td.as_str()));
    }
    any(
        CLUSTER_TYPE,
        &XdsCluster {
            name: name.clone(),
            metadata: Some(Metadata {
                filter_metadata: [(CLUSTER_METADATA.to_owned(), string_struct(fields))].into(),
                ..Default::default()
            }),
            load_assignment: Some(cla(&name, vec![lb(gateway, None)])),
            ..Default::default()
        },
    )
}

fn export_cluster(to: &str) -> Any {
    let mut md = string_struct([("service", "default/web")]);
    md.fields.insert(
        "exported_to".into(),
        Value {
            kind: Some(value::Kind::ListValue(ListValue {
                values: vec![Value {
                    kind: Some(value::Kind::StringValue(to.to_owned())),
                }],
            })),
        },
    );
    any(
        CLUSTER_TYPE,
        &XdsCluster {
            name: xds::export_cluster_name("default", "web", 8080),
            metadata: Some(Metadata {
                filter_metadata: [(CLUSTER_METADATA.to_owned(), Struct { ..md })].into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_and_exports_from_the_control_plane() -> anyhow::Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let a = Cluster::new(dir.path(), "cluster-a");
    let b = Cluster::new(dir.path(), "cluster-b");
    let c = Cluster::new(dir.path(), "cluster-c");
    a.write_bundles(&[&a, &b]);
    b.write_bundles(&[&a, &b, &c]);
    let echo = echo_server().await;
    let dead = closed_port().await;
    let gw_b = start(b.config(&b_yaml(&b, &a, &c, echo, dead, ""))).await;

    let (cert, key) = a.ca.to_pem();
    let ca = CertificateAuthority::from_pem(
        TrustDomain::parse(&a.td())?,
        cert.as_bytes(),
        key.as_bytes(),
    )?;
    let state = FakeState::new(ca, "tok", SpiffeId::parse(&a.gateway_id())?);
    let export_name = xds::export_cluster_name("default", "web", 8080);
    state.set_resources(
        CLUSTER_TYPE,
        "1",
        vec![
            peer_cluster(&b, gw_b.quic_addr(), true),
            export_cluster("cluster-b"),
        ],
    );
    state.set_resources(
        ENDPOINT_TYPE,
        "1",
        vec![any(
            ENDPOINT_TYPE,
            &cla(&export_name, vec![lb(echo, Some(&a.workload_id("web")))]),
        )],
    );
    let fake = FakeControlPlane::start("127.0.0.1:0".parse()?, state.clone(), None).await;
    let cp = fake.addr();
    std::fs::write(a.dir.join("token"), "tok")?;
    let yaml = format!(
        "cluster: cluster-a\nidentity:\n  spiffe_id: {id}\n  bundles: bundles.json\n\
listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n\
control_plane: {{ address: '{cp}', join_token_file: token, danger_plaintext: true, initial_backoff_ms: 20, max_backoff_ms: 200 }}\n\
quic: {{ keep_alive_ms: 500, idle_timeout_ms: 5000 }}\n\
reconnect: {{ initial_backoff_ms: 50, max_backoff_ms: 500 }}\n",
        id = a.gateway_id(),
    );
    let gw_a = start(a.config(&yaml)).await;
    assert!(state.signed.lock().unwrap()[0].0, "SVID by join token");

    eventually("peers and exports from xDS", || async {
        let c = gw_a.config();
        c.peers.contains_key("cluster-b")
            && c.exports.values().any(|e| {
                e.exported_to.contains("cluster-b")
                    && e.endpoints.len() == 1
                    && e.endpoints[0].address == echo
            })
    })
    .await?;
    eventually(
        "GET /peers shows cluster-b connected with an RTT",
        || async {
            let Ok((200, body)) = http_get(gw_a.admin_addr(), "/peers").await else {
                return false;
            };
            let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
            rows.as_array().is_some_and(|r| {
                r.len() == 1
                    && r[0]["cluster"] == "cluster-b"
                    && r[0]["connected"] == true
                    && r[0]["rtt_ms"].as_f64().is_some_and(|v| v > 0.0)
            })
        },
    )
    .await?;

    // A local sidecar's stream crosses to cluster-b over the peer that only
    // xDS named.
    let sc = Sidecar::connect(&a, &[&a], gw_a.quic_addr()).await?;
    let (ev, mut send, mut recv) = sc
        .open(&header(
            "cluster-b",
            "default/echo",
            8080,
            &b.workload_id("echo"),
        ))
        .await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    recv.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");

    // Reloading the file keeps the xDS peers and exports; a changed
    // control_plane section needs a restart.
    gw_a.reload(a.config(&yaml))?;
    assert!(gw_a.config().peers.contains_key("cluster-b"));
    assert_eq!(gw_a.config().exports.len(), 1);
    let changed = a.config(&yaml.replace("max_backoff_ms: 200", "max_backoff_ms: 300"));
    let refused = gw_a
        .reload(changed)
        .expect_err("control_plane change accepted");
    assert!(refused.to_string().contains("control_plane"), "{refused}");

    // A malformed peer is NACKed and changes nothing.
    state.set_resources(
        CLUSTER_TYPE,
        "2",
        vec![
            peer_cluster(&b, gw_b.quic_addr(), false),
            export_cluster("cluster-b"),
        ],
    );
    let nack = loop {
        let r = state
            .next_reply(CLUSTER_TYPE, Duration::from_secs(10))
            .await
            .expect("a reply to CDS version 2");
        if r.error_detail.is_some() {
            break r;
        }
    };
    assert_eq!(nack.version_info, "1");
    let msg = nack.error_detail.unwrap().message;
    assert!(
        msg.contains("peer|cluster-b") && msg.contains("trust_domain"),
        "{msg}"
    );
    assert!(gw_a.config().peers.contains_key("cluster-b"));

    // The controller goes away: the config stays.
    fake.stop().await;
    assert!(gw_a.config().peers.contains_key("cluster-b"));
    assert_eq!(gw_a.config().exports.len(), 1);

    // It returns with the peer unlinked: peer and export go.
    state.set_resources(CLUSTER_TYPE, "3", vec![]);
    let fake = FakeControlPlane::start(cp, state.clone(), None).await;
    eventually("peer removed", || async {
        let c = gw_a.config();
        c.peers.is_empty() && c.exports.is_empty()
    })
    .await?;
    let (_, body) = http_get(gw_a.admin_addr(), "/peers").await?;
    assert_eq!(body.trim(), "[]");
    fake.stop().await;
    Ok(())
}
