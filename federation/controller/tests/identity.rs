//! The Identity service over the real TLS listener: join token scoping,
//! expired tokens, SVID-authenticated renewal, bundle watch, leased
//! registration and lease expiry.

mod common;

use std::time::{Duration, SystemTime};

use common::{call, channel, eventually, start};
use mesh_api::identity::identity_client::IdentityClient;
use mesh_api::identity::{
    DeregisterRequest, RegisterRequest, SignSvidRequest, WatchBundlesRequest, WorkloadPort,
};
use mesh_controller::catalog::{unix_ms, Command, JoinTokenRecord};
use mesh_controller::run::Controller;
use rustls::pki_types::PrivatePkcs8KeyDer;
use trust_bundle::{SpiffeId, SvidSource, X509Svid};

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster-a.mesh/ns/{ns}/sa/{sa}")).unwrap()
}

/// A CSR for `id`: `(key, csr)`.
fn csr(id: &SpiffeId) -> (PrivatePkcs8KeyDer<'static>, Vec<u8>) {
    let (key, csr) = trust_bundle::svid::new_csr(id).unwrap();
    (key, csr.to_vec())
}

async fn join_token(c: &Controller, ns: &str, sa: &str) -> String {
    let body = format!("{{\"namespace\":\"{ns}\",\"serviceAccount\":\"{sa}\",\"ttlSeconds\":600}}");
    let (status, v) = call(
        c.admin_addr(),
        "POST",
        "/v1/tokens/join",
        Some(("application/json", &body)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["expiresAt"].is_string(), "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// Signs a CSR for `want` with a join token and returns the SVID.
async fn svid_with_token(c: &Controller, token: &str, want: &SpiffeId) -> X509Svid {
    let mut client = IdentityClient::new(channel(c, None).await);
    let (key, csr_der) = csr(want);
    let resp = client
        .sign_svid(SignSvidRequest {
            csr_der,
            join_token: token.to_owned(),
        })
        .await
        .expect("signed")
        .into_inner();
    assert!(
        resp.bundles_json.contains("cluster-a.mesh"),
        "{}",
        resp.bundles_json
    );
    let chain = resp.chain_der.into_iter().map(Into::into).collect();
    X509Svid::from_der(chain, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_signs_only_its_namespace_and_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "").await;
    let token = join_token(&c, "default", "web").await;

    let svid = svid_with_token(&c, &token, &id("default", "web")).await;
    assert_eq!(svid.id(), &id("default", "web"));
    // The token stays usable until it expires.
    svid_with_token(&c, &token, &id("default", "web")).await;

    let mut client = IdentityClient::new(channel(&c, None).await);
    for other in [id("default", "db"), id("kube-system", "web")] {
        let (_, csr_der) = csr(&other);
        let err = client
            .sign_svid(SignSvidRequest {
                csr_der,
                join_token: token.clone(),
            })
            .await
            .expect_err("another identity must be refused");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(
            err.message().contains(other.as_str())
                && err
                    .message()
                    .contains("spiffe://cluster-a.mesh/ns/default/sa/web"),
            "{}",
            err.message()
        );
    }

    // The controllers' own identity cannot be handed out.
    let body = "{\"namespace\":\"isthmus-system\",\"serviceAccount\":\"controller\"}";
    let (status, v) = call(
        c.admin_addr(),
        "POST",
        "/v1/tokens/join",
        Some(("application/json", body)),
        None,
    )
    .await;
    assert_eq!(status, 422, "{v}");

    // A wrong secret and no credentials at all are refused too.
    let (_, csr_der) = csr(&id("default", "web"));
    let forged = format!("{}.AAAA", token.split_once('.').unwrap().0);
    let err = client
        .sign_svid(SignSvidRequest {
            csr_der: csr_der.clone(),
            join_token: forged,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let err = client
        .sign_svid(SignSvidRequest {
            csr_der,
            join_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_join_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "").await;
    let (token, mut record) =
        mesh_controller::catalog::tokens::new_join_token("default", "web", 0).unwrap();
    record.expires_ms = unix_ms(SystemTime::now()) - 1;
    let record: JoinTokenRecord = record;
    c.store()
        .write(Command::CreateJoinToken(record))
        .await
        .unwrap();

    let mut client = IdentityClient::new(channel(&c, None).await);
    let (_, csr_der) = csr(&id("default", "web"));
    let err = client
        .sign_svid(SignSvidRequest {
            csr_der,
            join_token: token,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("expired"), "{}", err.message());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_is_limited_to_the_callers_own_spiffe_id() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "").await;
    let token = join_token(&c, "default", "web").await;
    let svid = svid_with_token(&c, &token, &id("default", "web")).await;
    let source = SvidSource::new(svid, trust_bundle::crypto_provider()).unwrap();
    let mut client = IdentityClient::new(channel(&c, Some(source)).await);

    let (_, csr_der) = csr(&id("default", "web"));
    let renewed = client
        .sign_svid(SignSvidRequest {
            csr_der,
            join_token: String::new(),
        })
        .await
        .expect("renewal of the same ID");
    assert!(!renewed.into_inner().chain_der.is_empty());

    let (_, csr_der) = csr(&id("default", "admin"));
    let err = client
        .sign_svid(SignSvidRequest {
            csr_der,
            join_token: String::new(),
        })
        .await
        .expect_err("renewal as another ID");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("asks for spiffe://cluster-a.mesh/ns/default/sa/admin"),
        "{}",
        err.message()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_registration_expires_and_bundles_stream() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "").await;
    let token = join_token(&c, "shop", "web").await;
    let svid = svid_with_token(&c, &token, &id("shop", "web")).await;
    let source = SvidSource::new(svid, trust_bundle::crypto_provider()).unwrap();
    let mut client = IdentityClient::new(channel(&c, Some(source)).await);

    // WatchBundles answers at once with our trust domain.
    let mut stream = client
        .watch_bundles(WatchBundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.bundles_json.contains("cluster-a.mesh"));
    assert_eq!(first.version, 1);

    let register = |name: &str, lease_seconds| RegisterRequest {
        name: name.to_owned(),
        service: "web".to_owned(),
        address: "127.0.0.20".to_owned(),
        ports: vec![WorkloadPort {
            port: 80,
            target_port: 15006,
            protocol: "http".to_owned(),
        }],
        region: String::new(),
        zone: "z1".to_owned(),
        lease_seconds,
    };
    let granted = client
        .register(register("web-1", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.lease_seconds, 1);
    client.register(register("web-2", 600)).await.unwrap();

    let model = c.model();
    let endpoints = |m: &mesh_controller::xds::Model| -> Vec<String> {
        m.services
            .iter()
            .filter(|s| s.namespace == "shop" && s.name == "web" && s.port == 80)
            .flat_map(|s| s.localities.iter())
            .flat_map(|l| l.endpoints.iter())
            .map(|e| format!("{} {}", e.address, e.spiffe_id))
            .collect()
    };
    eventually(
        Duration::from_secs(5),
        "both endpoints in the model",
        || {
            let n = endpoints(&model.borrow()).len();
            async move { n == 2 }
        },
    )
    .await;
    let both = endpoints(&model.borrow());
    assert_eq!(
        both,
        [
            "127.0.0.20:15006 spiffe://cluster-a.mesh/ns/shop/sa/web",
            "127.0.0.20:15006 spiffe://cluster-a.mesh/ns/shop/sa/web"
        ]
    );

    // web-1's one-second lease runs out; the leader expires it.
    let store = c.store().clone();
    eventually(Duration::from_secs(10), "lease expiry", || {
        let store = store.clone();
        async move {
            let catalog = store.watch().borrow().clone();
            !catalog.leased.contains_key("shop/web-1") && catalog.leased.contains_key("shop/web-2")
        }
    })
    .await;
    eventually(Duration::from_secs(5), "model update", || {
        let remaining = endpoints(&model.borrow());
        async move { remaining.len() == 1 }
    })
    .await;

    // Deregister removes the other one at once.
    client
        .deregister(DeregisterRequest {
            name: "web-2".to_owned(),
        })
        .await
        .unwrap();
    assert!(!c.store().watch().borrow().leased.contains_key("shop/web-2"));
    let err = client
        .deregister(DeregisterRequest {
            name: "web-2".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Without a client SVID, Register is refused.
    let mut anonymous = IdentityClient::new(channel(&c, None).await);
    let err = anonymous.register(register("web-3", 5)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // A graceful stop ends open bundle streams instead of waiting for them.
    tokio::time::timeout(Duration::from_secs(4), c.stop())
        .await
        .expect("stop with an open WatchBundles stream");
    assert!(
        matches!(stream.message().await, Ok(None) | Err(_)),
        "the stream ended"
    );
}
