//! The ADS server over tonic on loopback, driven by an envoy-types ADS
//! client: state of the world (initial push, ACK, NACK, model change) and
//! delta (subscribe, unsubscribe, removal).
//!
//! "Nothing was pushed" is proven without waiting: after the step under
//! test the client sends a request that must be answered (a new
//! subscription), and the next message on the stream must be that answer,
//! since the server handles one stream's requests in order.

mod xds_support;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use mesh_api::xds::{listener_name, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use mesh_controller::xds::AppProtocol;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use xds_support::*;

const WEB: &str = "outbound|8080||web.default.svc.clusterset.local";
const API: &str = "outbound|9090||api.default.svc.clusterset.local";

fn two_services(web_port: u16) -> mesh_controller::xds::Model {
    model(
        1,
        vec![
            service(
                "default",
                "web",
                8080,
                AppProtocol::Http,
                vec![
                    local_locality(
                        "cluster-a",
                        vec![endpoint(([127, 0, 0, 1], web_port).into(), true)],
                    ),
                    tunnel_locality("cluster-b", ([127, 0, 0, 2], 15443).into()),
                ],
            ),
            service(
                "default",
                "api",
                9090,
                AppProtocol::Grpc,
                vec![local_locality(
                    "cluster-a",
                    vec![endpoint(([127, 0, 0, 1], 9).into(), true)],
                )],
            ),
        ],
    )
}

fn node() -> Node {
    Node {
        id: "test-client".into(),
        ..Default::default()
    }
}

async fn next<T: Message + Default>(s: &mut Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("no response within 10s")
        .expect("stream failed")
        .expect("stream ended")
}

fn names_of<T: Message + Default>(
    resp: &DiscoveryResponse,
    name: impl Fn(&T) -> String,
) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| name(&T::decode(a.value.as_slice()).unwrap()))
        .collect()
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn connect(addr: std::net::SocketAddr) -> Sotw {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Sotw { tx, rx }
    }

    async fn send(
        &self,
        type_url: &str,
        names: &[&str],
        version: &str,
        nonce: &str,
        error: Option<&str>,
    ) {
        self.tx
            .send(DiscoveryRequest {
                node: Some(node()),
                type_url: type_url.into(),
                resource_names: names.iter().map(|s| s.to_string()).collect(),
                version_info: version.into(),
                response_nonce: nonce.into(),
                error_detail: error.map(|m| RpcStatus {
                    code: 3,
                    message: m.into(),
                    details: vec![],
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn next(&mut self) -> DiscoveryResponse {
        next(&mut self.rx).await
    }
}

#[tokio::test]
async fn sotw_initial_push_ack_nack_and_model_change() {
    let (addr, publish, server) = start(two_services(8081)).await;
    let mut c = Sotw::connect(addr).await;

    // Initial CDS wildcard: both service clusters.
    c.send(CLUSTER_TYPE, &[], "", "", None).await;
    let cds = c.next().await;
    assert_eq!(cds.type_url, CLUSTER_TYPE);
    assert!(!cds.version_info.is_empty() && !cds.nonce.is_empty());
    let mut clusters = names_of::<Cluster>(&cds, |c| c.name.clone());
    clusters.sort();
    assert_eq!(clusters, vec![WEB.to_string(), API.to_string()]);

    // ACK CDS, ask EDS for web and a name that does not exist: only web comes.
    c.send(CLUSTER_TYPE, &[], &cds.version_info, &cds.nonce, None)
        .await;
    c.send(
        ENDPOINT_TYPE,
        &[WEB, "outbound|1||nope.default.svc.clusterset.local"],
        "",
        "",
        None,
    )
    .await;
    let eds = c.next().await;
    assert_eq!(
        eds.type_url, ENDPOINT_TYPE,
        "the CDS ACK must not be answered"
    );
    let cla = ClusterLoadAssignment::decode(eds.resources[0].value.as_slice()).unwrap();
    assert_eq!(eds.resources.len(), 1);
    assert_eq!(cla.cluster_name, WEB);
    assert_eq!(cla.endpoints.len(), 2);
    assert_eq!(cla.endpoints[1].priority, 1);
    assert_eq!(
        cla.endpoints[1].locality.as_ref().unwrap().sub_zone,
        "cluster-b"
    );

    // NACK the EDS response: the server keeps quiet about EDS...
    c.send(
        ENDPOINT_TYPE,
        &[WEB, "outbound|1||nope.default.svc.clusterset.local"],
        "",
        &eds.nonce,
        Some("rejected for the test"),
    )
    .await;
    c.send(
        LISTENER_TYPE,
        &[&listener_name("default", "web", 8080)],
        "",
        "",
        None,
    )
    .await;
    let lds = c.next().await;
    assert_eq!(
        lds.type_url, LISTENER_TYPE,
        "a NACK must not make the server re-push the same EDS"
    );
    let stats = server.stats();
    assert_eq!(
        (stats.streams_active, stats.nacks, stats.responses),
        (1, 1, 3)
    );
    let l = Listener::decode(lds.resources[0].value.as_slice()).unwrap();
    assert!(l.api_listener.is_some());

    // ...and a model change that leaves EDS alone pushes nothing for it:
    // only the CDS gets a new version (a service was removed).
    let mut m = two_services(8081);
    m.version = 2;
    m.services.truncate(1);
    publish.send(Arc::new(m)).unwrap();
    let cds2 = c.next().await;
    assert_eq!(cds2.type_url, CLUSTER_TYPE);
    assert_ne!(cds2.version_info, cds.version_info);
    assert_eq!(
        names_of::<Cluster>(&cds2, |c| c.name.clone()),
        vec![WEB.to_string()]
    );

    // A model change to web's endpoints pushes a new EDS version.
    let mut m = two_services(8082);
    m.version = 3;
    m.services.truncate(1);
    publish.send(Arc::new(m)).unwrap();
    let eds2 = c.next().await;
    assert_eq!(eds2.type_url, ENDPOINT_TYPE);
    assert_ne!(eds2.version_info, eds.version_info);
    assert_ne!(eds2.nonce, eds.nonce);

    // ACK it; a stale nonce (the old EDS one) is ignored, even as a NACK.
    c.send(ENDPOINT_TYPE, &[WEB], &eds2.version_info, &eds2.nonce, None)
        .await;
    c.send(ENDPOINT_TYPE, &[WEB, API], "", &eds.nonce, Some("stale"))
        .await;
    c.send(
        ROUTE_TYPE,
        &[&listener_name("default", "web", 8080)],
        "",
        "",
        None,
    )
    .await;
    let rds = c.next().await;
    assert_eq!(rds.type_url, ROUTE_TYPE);
    assert_eq!(rds.resources.len(), 1);
}

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn connect(addr: std::net::SocketAddr) -> Delta {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Delta { tx, rx }
    }

    async fn send(&self, type_url: &str, sub: &[&str], unsub: &[&str], nonce: &str) {
        self.tx
            .send(DeltaDiscoveryRequest {
                node: Some(node()),
                type_url: type_url.into(),
                resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
                resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
                response_nonce: nonce.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        next(&mut self.rx).await
    }
}

fn delta_names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut v: Vec<String> = r.resources.iter().map(|r| r.name.clone()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn delta_subscribe_unsubscribe_and_removal() {
    let (addr, publish) = start_server(two_services(8081)).await;
    let mut c = Delta::connect(addr).await;

    c.send(CLUSTER_TYPE, &[], &[], "").await;
    let cds = c.next().await;
    assert_eq!(delta_names(&cds), vec![WEB.to_string(), API.to_string()]);
    assert!(cds.resources.iter().all(|r| !r.version.is_empty()));
    c.send(CLUSTER_TYPE, &[], &[], &cds.nonce).await;

    let missing = "outbound|1||nope.default.svc.clusterset.local";
    c.send(ENDPOINT_TYPE, &[WEB, API, missing], &[], "").await;
    let eds = c.next().await;
    assert_eq!(eds.type_url, ENDPOINT_TYPE);
    assert_eq!(delta_names(&eds), vec![WEB.to_string(), API.to_string()]);
    assert_eq!(
        eds.removed_resources,
        vec![missing.to_string()],
        "absent names are reported removed"
    );
    c.send(ENDPOINT_TYPE, &[], &[], &eds.nonce).await;

    // Change web's endpoints: only web's CLA is pushed.
    let mut m = two_services(8082);
    m.version = 2;
    publish.send(Arc::new(m)).unwrap();
    let eds2 = c.next().await;
    assert_eq!(eds2.type_url, ENDPOINT_TYPE);
    assert_eq!(delta_names(&eds2), vec![WEB.to_string()]);
    assert!(eds2.removed_resources.is_empty());
    c.send(ENDPOINT_TYPE, &[], &[], &eds2.nonce).await;

    // Unsubscribe web (with a subscription to an absent name, whose
    // removal notice shows the server has handled the request), then change
    // web: no push for it. The next message is the answer to a new LDS
    // subscription.
    let missing2 = "outbound|2||nope.default.svc.clusterset.local";
    c.send(ENDPOINT_TYPE, &[missing2], &[WEB], "").await;
    let r = c.next().await;
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, vec![missing2.to_string()]);
    c.send(ENDPOINT_TYPE, &[], &[], &r.nonce).await;
    let mut m = two_services(8083);
    m.version = 3;
    publish.send(Arc::new(m)).unwrap();
    c.send(
        LISTENER_TYPE,
        &[&listener_name("default", "api", 9090)],
        &[],
        "",
    )
    .await;
    let lds = c.next().await;
    assert_eq!(
        lds.type_url, LISTENER_TYPE,
        "an unsubscribed resource must not be pushed: {lds:?}"
    );
    assert_eq!(
        delta_names(&lds),
        vec![listener_name("default", "api", 9090)]
    );
    c.send(LISTENER_TYPE, &[], &[], &lds.nonce).await;

    // Remove the api service: CDS, EDS and LDS report the removal.
    let mut m = two_services(8083);
    m.version = 4;
    m.services.truncate(1);
    publish.send(Arc::new(m)).unwrap();
    let mut removed = Vec::new();
    for _ in 0..3 {
        let r = c.next().await;
        assert!(
            r.resources.is_empty(),
            "{}: only removals expected",
            r.type_url
        );
        removed.push((r.type_url.clone(), r.removed_resources.clone()));
    }
    assert_eq!(
        removed,
        vec![
            (CLUSTER_TYPE.to_string(), vec![API.to_string()]),
            (ENDPOINT_TYPE.to_string(), vec![API.to_string()]),
            (
                LISTENER_TYPE.to_string(),
                vec![listener_name("default", "api", 9090)]
            ),
        ]
    );
}

#[tokio::test]
async fn tls_mode_refuses_callers_without_an_identity() {
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(two_services(8081)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = mesh_controller::xds::XdsServer::new(rx)
        .require_trust_domain("cluster-a.mesh")
        .into_service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (_reqs, rx) = mpsc::channel::<DiscoveryRequest>(1);
    let err = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("cluster-a.mesh"), "{err}");
}
