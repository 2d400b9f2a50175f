//! The Identity client against the in-process fake controller over SPIFFE
//! TLS: first SVID with the join token (no client certificate), renewal by
//! mTLS through `SvidIssuer`, the controller's SPIFFE ID enforced, bundle
//! map watch, registration.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_api::ads_client::Backoff;
use mesh_api::fake::{FakeControlPlane, FakeState, FakeTls};
use mesh_api::identity::{RegisterRequest, WorkloadPort};
use mesh_api::identity_client::{IdentityClient, IdentityError};
use mesh_api::transport::{Security, Target};
use tokio::sync::watch;
use trust_bundle::source::SvidIssuer;
use trust_bundle::{
    Bundle, BundleMap, BundleStore, CertificateAuthority, SpiffeId, SvidRequest, SvidSource,
    TrustDomain,
};

const PATIENCE: Duration = Duration::from_secs(10);
const CONTROLLER: &str = "spiffe://cluster-a.mesh/ns/isthmus-system/sa/controller";
const WEB: &str = "spiffe://cluster-a.mesh/ns/default/sa/web";

fn ca(td: &str) -> CertificateAuthority {
    CertificateAuthority::self_signed(
        TrustDomain::parse(td).unwrap(),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .unwrap()
}

fn map(cas: &[&CertificateAuthority]) -> BundleMap {
    let mut m = BundleMap::default();
    for ca in cas {
        m.insert(Bundle::with_x509_authorities(
            ca.trust_domain().clone(),
            [ca.trust_anchor().clone()],
        ));
    }
    m
}

struct Setup {
    fake: FakeControlPlane,
    state: Arc<FakeState>,
    bootstrap: BundleStore,
    ca_b: CertificateAuthority,
}

async fn setup() -> Setup {
    let ca_a = ca("cluster-a.mesh");
    let ca_b = ca("cluster-b.mesh");
    let bootstrap = BundleStore::from_map(&map(&[&ca_a]));
    let controller = ca_a
        .issue(
            &SvidRequest::new(SpiffeId::parse(CONTROLLER).unwrap()),
            SystemTime::now(),
        )
        .unwrap();
    let tls = FakeTls {
        source: SvidSource::new(controller, trust_bundle::crypto_provider()).unwrap(),
        store: bootstrap.clone(),
    };
    let anchors = map(&[&ca_a]);
    let state = FakeState::new(ca_a, "join-secret", SpiffeId::parse(WEB).unwrap());
    state.set_bundles(String::from_utf8(anchors.to_json()).unwrap());
    let fake =
        FakeControlPlane::start("127.0.0.1:0".parse().unwrap(), state.clone(), Some(tls)).await;
    Setup {
        fake,
        state,
        bootstrap,
        ca_b,
    }
}

fn client(s: &Setup, server_id: &str, token: Option<&str>, store: BundleStore) -> IdentityClient {
    let target = Target::new(
        s.fake.addr().to_string(),
        Security::Spiffe {
            client: None,
            store: s.bootstrap.clone(),
            server_id: SpiffeId::parse(server_id).unwrap(),
        },
    );
    IdentityClient::new(
        target,
        SpiffeId::parse(WEB).unwrap(),
        token.map(Into::into),
        store,
    )
}

#[tokio::test]
async fn join_token_then_mtls_renewal_then_bundles_and_registration() {
    let s = setup().await;
    let store = BundleStore::new();
    let c = client(&s, CONTROLLER, Some("join-secret"), store.clone());

    // First SVID: join token, no client certificate.
    let first = c.sign_with_token().await.expect("first SVID");
    assert_eq!(first.id().as_str(), WEB);
    assert!(store
        .get(&TrustDomain::parse("cluster-a.mesh").unwrap())
        .is_some());

    // Renewal through the SvidIssuer trait: mTLS with the current SVID.
    let renewed = SvidIssuer::renew(&c, &first).await.expect("renewal");
    assert_eq!(renewed.id().as_str(), WEB);
    assert_ne!(renewed.chain()[0], first.chain()[0]);
    let signed = s.state.signed.lock().unwrap().clone();
    assert_eq!(signed.len(), 2);
    assert!(signed[0].0, "first by token");
    assert!(!signed[1].0, "renewal by SVID");
    assert_eq!(signed[1].1.as_str(), WEB);

    // Bundle watch: a linked trust domain appears.
    let source = SvidSource::new(renewed, trust_bundle::crypto_provider()).unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let mut applied = c.watch_bundles(
        source.clone(),
        Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
        stop,
    );
    tokio::time::timeout(PATIENCE, applied.wait_for(|v| *v >= 1))
        .await
        .expect("first bundle map")
        .unwrap();
    let fed = map(&[&*s.state.ca, &s.ca_b]);
    s.state
        .set_bundles(String::from_utf8(fed.to_json()).unwrap());
    tokio::time::timeout(PATIENCE, applied.wait_for(|v| *v >= 2))
        .await
        .expect("second bundle map")
        .unwrap();
    assert!(store
        .get(&TrustDomain::parse("cluster-b.mesh").unwrap())
        .is_some());

    // Registration and deregistration, authenticated by the SVID.
    let lease = c
        .register(
            &source,
            RegisterRequest {
                name: "web-1".into(),
                service: "web".into(),
                address: "127.0.0.1".into(),
                ports: vec![WorkloadPort {
                    port: 80,
                    target_port: 15006,
                    protocol: "http".into(),
                }],
                lease_seconds: 9,
                ..Default::default()
            },
        )
        .await
        .expect("register");
    assert_eq!(lease.lease_seconds, 9);
    c.deregister(&source, "web-1").await.expect("deregister");
    assert_eq!(s.state.registered.lock().unwrap()[0].name, "web-1");
    assert_eq!(
        *s.state.deregistered.lock().unwrap(),
        vec!["web-1".to_owned()]
    );
    stop_tx.send_replace(true);
}

#[tokio::test]
async fn wrong_controller_id_and_bad_token_are_refused() {
    let s = setup().await;
    let c = client(
        &s,
        "spiffe://cluster-a.mesh/ns/isthmus-system/sa/impostor",
        Some("join-secret"),
        BundleStore::new(),
    );
    let err = c
        .sign_with_token()
        .await
        .expect_err("wrong server ID accepted");
    assert!(matches!(err, IdentityError::Transport(_)), "{err:?}");
    assert!(s.state.signed.lock().unwrap().is_empty());

    let c = client(&s, CONTROLLER, Some("wrong"), BundleStore::new());
    match c.sign_with_token().await {
        Err(IdentityError::Call { call, status }) => {
            assert_eq!(call, "SignSvid");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    let c = client(&s, CONTROLLER, None, BundleStore::new());
    assert!(matches!(
        c.sign_with_token().await,
        Err(IdentityError::NoJoinToken)
    ));
}
