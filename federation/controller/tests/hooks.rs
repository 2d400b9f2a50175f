//! The plug-in points the lead wires: a peering implementation behind the
//! admin API (statuses passed through), and a plaintext gRPC router whose
//! requests carry `PeerIdentity(None)`.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::call;
use mesh_api::identity::identity_client::IdentityClient;
use mesh_api::identity::identity_server::IdentityServer;
use mesh_api::identity::WatchBundlesRequest;
use mesh_controller::admin::{ApiError, BoxFuture, PeeringApi};
use mesh_controller::catalog::PeerRecord;
use mesh_controller::identity::IdentityService;
use mesh_controller::run::{Controller, Hooks, Runtime};

struct FakePeering {
    cluster: String,
}

impl PeeringApi for FakePeering {
    fn create_token(&self, ttl: Duration) -> BoxFuture<'_, Result<(String, SystemTime), ApiError>> {
        Box::pin(async move {
            Ok((
                format!("token-for-{}s", ttl.as_secs()),
                SystemTime::UNIX_EPOCH,
            ))
        })
    }
    fn redeem(&self, token: String) -> BoxFuture<'_, Result<PeerRecord, ApiError>> {
        Box::pin(async move {
            if token == "used" {
                return Err(ApiError::new(409, "token already used"));
            }
            Ok(PeerRecord {
                cluster: "cluster-b".to_owned(),
                trust_domain: "cluster-b.mesh".to_owned(),
                bundle_json: String::new(),
                bundle_sequence: 0,
                bundle_refreshed_ms: 0,
                bundle_endpoint: String::new(),
                controller_address: String::new(),
                controller_spiffe_id: String::new(),
                gateway_addresses: Vec::new(),
                gateway_spiffe_id: String::new(),
                region: String::new(),
                exports: Vec::new(),
                linked_ms: 0,
            })
        })
    }
    fn unlink(&self, cluster: String) -> BoxFuture<'_, Result<(), ApiError>> {
        let known = cluster == self.cluster;
        Box::pin(async move {
            if known {
                Ok(())
            } else {
                Err(ApiError::new(404, format!("no peer {cluster}")))
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wired_peering_and_plaintext_router() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), "xds_plaintext_listen: 127.0.0.1:0\n");
    let hooks = Hooks {
        peering: Some(Arc::new(|rt: &Runtime| {
            Arc::new(FakePeering {
                cluster: format!("{}-peer", rt.config.cluster),
            }) as Arc<dyn PeeringApi>
        })),
        grpc_services: None,
        xds_plaintext: Some(Arc::new(|rt: &Runtime| {
            tonic::transport::Server::builder().add_service(IdentityServer::new(
                IdentityService::new(rt.store.clone(), rt.config.clone()),
            ))
        })),
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let c = Controller::start(config, hooks, rx).await.unwrap();
    let admin = c.admin_addr();

    let json = |s: &'static str| Some(("application/json", s));
    let (status, v) = call(
        admin,
        "POST",
        "/v1/peering/tokens",
        json("{\"ttlSeconds\":60}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token"], "token-for-60s");
    assert_eq!(v["expiresAt"], "1970-01-01T00:00:00Z");
    let (status, v) = call(
        admin,
        "POST",
        "/v1/peering/redeem",
        json("{\"token\":\"ok\"}"),
        None,
    )
    .await;
    assert_eq!(
        (status, &v["peer"]["trustDomain"]),
        (200, &"cluster-b.mesh".into()),
        "{v}"
    );
    let (status, v) = call(
        admin,
        "POST",
        "/v1/peering/redeem",
        json("{\"token\":\"used\"}"),
        None,
    )
    .await;
    assert_eq!(
        (status, v),
        (409, serde_json::json!({"error": "token already used"}))
    );
    let (status, v) = call(
        admin,
        "POST",
        "/v1/peering/redeem",
        json("{\"tokn\":1}"),
        None,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = call(
        admin,
        "DELETE",
        "/v1/peering/peers/cluster-a-peer",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(admin, "DELETE", "/v1/peering/peers/cluster-x", None, None).await;
    assert_eq!(status, 404);

    // Plaintext gRPC: served, and callers have no identity there.
    let addr = c.xds_plaintext_addr().expect("plaintext listener bound");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = IdentityClient::new(channel)
        .watch_bundles(WatchBundlesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    c.stop().await;
}
