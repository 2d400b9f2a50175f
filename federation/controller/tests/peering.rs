//! Peering between two in-process controllers on loopback: each has its own
//! CA and trust domain, a store (the store stand-in with a test state
//! machine that applies the peering rules), a SPIFFE bundle endpoint, the
//! Peering service on its own TLS 1.3 + h2 listener (the test's stand-in for
//! CORE's gRPC listener, inserting `grpc::PeerIdentity`) and the peer loops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_api::peering::peering_server::{Peering, PeeringServer};
use mesh_api::peering::{ExportSet, ExportedPort, ExportedService, LocalityHealth, RedeemRequest};
use mesh_controller::catalog::{Catalog, Command, Response};
use mesh_controller::grpc::{self, PeerIdentity};
use mesh_controller::peering::{
    self, apply_peering, decode_exports, ExportSource, LocalPeer, PeeringContext, PeeringError,
    PeeringService, PeeringState, PeeringToken,
};
use mesh_controller::store::{StateMachine, Store, StoreConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use trust_bundle::endpoint::BundleEndpointServer;
use trust_bundle::source::Clock;
use trust_bundle::{
    Bundle, BundleStore, CertificateAuthority, SvidRequest, SvidSource, TrustDomain,
};

/// Patience for every eventual condition.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- state machine

/// The catalog with the peering rules applied, as CORE's `Catalog::apply`
/// will do it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TestSm {
    catalog: Catalog,
}

impl StateMachine for TestSm {
    type Command = Command;
    type Response = Response;

    fn apply(&mut self, command: &Command) -> Response {
        self.catalog.revision += 1;
        let c = &mut self.catalog;
        apply_peering(&mut c.peers, &mut c.peering_tokens, command)
    }
}

impl PeeringState for TestSm {
    fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

// ---------------------------------------------------------------- fakes

/// A wall clock with a settable offset (seconds, may be negative).
#[derive(Default)]
struct TestClock(Mutex<i64>);

impl TestClock {
    fn shift(&self, secs: i64) {
        *self.0.lock().unwrap() = secs;
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        let offset = *self.0.lock().unwrap();
        let now = SystemTime::now();
        if offset >= 0 {
            now + Duration::from_secs(offset.unsigned_abs())
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        }
    }
}

/// Exports a settable list of services to every peer.
#[derive(Default)]
struct TestExports(Mutex<Vec<ExportedService>>);

impl ExportSource for TestExports {
    fn export_set(&self, _catalog: &Catalog, _peer: &str) -> ExportSet {
        ExportSet {
            services: self.0.lock().unwrap().clone(),
            ..ExportSet::default()
        }
    }
}

fn service(name: &str, healthy: u32) -> ExportedService {
    ExportedService {
        namespace: "default".into(),
        name: name.into(),
        ports: vec![ExportedPort {
            name: "http".into(),
            port: 8080,
            protocol: "TCP".into(),
            app_protocol: "http".into(),
        }],
        r#type: "ClusterSetIP".into(),
        localities: vec![LocalityHealth {
            region: "eu".into(),
            zone: "eu-1".into(),
            healthy,
            total: 3,
            weight: healthy,
        }],
        spiffe_ids: vec![format!("spiffe://cluster-a.mesh/ns/default/sa/{name}")],
        export_created: "2026-01-01T00:00:00Z".into(),
    }
}

// ---------------------------------------------------------------- a controller

struct Node {
    ctx: Arc<PeeringContext<TestSm>>,
    service: Arc<PeeringService<TestSm>>,
    td: TrustDomain,
    bundle_tx: watch::Sender<Bundle>,
    exports: Arc<TestExports>,
    clock: Arc<TestClock>,
    /// Peering RPCs this node's listener received (any method).
    calls: CountCalls,
    _shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(cluster: &str) -> Node {
        Node::start_in(cluster, &format!("{cluster}.mesh")).await
    }

    async fn start_in(cluster: &str, trust_domain: &str) -> Node {
        let td = TrustDomain::parse(trust_domain).unwrap();
        let now = SystemTime::now();
        let ca = CertificateAuthority::self_signed(td.clone(), Duration::from_secs(86_400), now)
            .unwrap();
        let mut bundle = Bundle::with_x509_authorities(td.clone(), [ca.trust_anchor().clone()]);
        bundle.set_refresh_hint(Some(Duration::from_secs(1)));
        let controller_id = td.service_account("isthmus-system", "controller").unwrap();
        let svid = ca.issue(&SvidRequest::new(controller_id), now).unwrap();
        let svid = SvidSource::new(svid, trust_bundle::crypto_provider()).unwrap();
        let bundles = BundleStore::new();
        bundles.set(bundle.clone());
        let (bundle_tx, bundle_rx) = watch::channel(bundle);
        let (shutdown_tx, shutdown) = watch::channel(false);

        let endpoint = BundleEndpointServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            svid.clone(),
            bundle_rx.clone(),
            "/bundle",
        )
        .await
        .unwrap();
        let endpoint_url = format!("https://{}/bundle", endpoint.local_addr().unwrap());
        tokio::spawn(endpoint.serve(shutdown.clone()));

        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap().to_string();

        let dir = tempfile::tempdir().unwrap();
        let store = Store::<TestSm>::open(StoreConfig {
            node_id: 1,
            data_dir: dir.path().to_owned(),
            raft_listen: "127.0.0.1:0".parse().unwrap(),
            advertise: "127.0.0.1:0".into(),
            join: None,
            snapshot_every: 1000,
        })
        .await
        .unwrap();

        let mut local = LocalPeer::new(cluster, td.clone(), bundle_rx, endpoint_url, grpc_addr);
        local.gateway_addresses = vec![format!("127.0.0.1:{}", 15443)];
        local.region = "eu".into();
        let clock = Arc::new(TestClock::default());
        let mut ctx = PeeringContext::new(local, store, svid.clone(), bundles.clone());
        ctx.clock = clock.clone();
        let ctx = Arc::new(ctx);
        let exports = Arc::new(TestExports::default());
        let service = Arc::new(PeeringService::new(ctx.clone(), exports.clone()));
        let calls = CountCalls::default();
        let server =
            InterceptedService::new(PeeringServer::from_arc(service.clone()), calls.clone());
        tokio::spawn(serve_peering(grpc, svid, bundles, server, shutdown.clone()));
        tokio::spawn(peering::run_peer_loops(ctx.clone(), shutdown));
        Node {
            ctx,
            service,
            td,
            bundle_tx,
            exports,
            clock,
            calls,
            _shutdown: shutdown_tx,
            _dir: dir,
        }
    }

    fn catalog(&self) -> Catalog {
        self.ctx.store.watch().borrow().catalog.clone()
    }

    /// Waits (bounded) until the applied catalog satisfies `pred`.
    async fn until(&self, what: &str, pred: impl Fn(&Catalog) -> bool) {
        let mut rx = self.ctx.store.watch();
        let waited = tokio::time::timeout(PATIENCE, rx.wait_for(|s| pred(&s.catalog))).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "{}: timed out waiting until {what}; catalog: {:#?}",
            self.ctx.local.cluster,
            self.catalog()
        );
    }

    async fn token(&self) -> String {
        peering::create_token(&self.ctx, Duration::from_secs(600))
            .await
            .unwrap()
            .0
    }
}

/// Links `b` to `a` with a token from `a`, waiting until both sides store
/// the link.
async fn link(a: &Node, b: &Node) {
    let token = a.token().await;
    peering::redeem(&b.ctx, &token).await.unwrap();
    let (ac, bc) = (a.ctx.local.cluster.clone(), b.ctx.local.cluster.clone());
    a.until("the redeemer is a peer", |c| c.peers.contains_key(&bc))
        .await;
    b.until("the issuer is a peer", |c| c.peers.contains_key(&ac))
        .await;
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_stores_both_sides_with_their_bundles_and_refuses_reuse() {
    let (a, b) = (
        Node::start("cluster-a").await,
        Node::start("cluster-b").await,
    );
    let token = a.token().await;
    let record = peering::redeem(&b.ctx, &token).await.unwrap();
    assert_eq!(record.cluster, "cluster-a");
    assert_eq!(record.trust_domain, "cluster-a.mesh");
    assert_eq!(
        record.controller_spiffe_id,
        "spiffe://cluster-a.mesh/ns/isthmus-system/sa/controller"
    );
    assert_eq!(record.gateway_addresses, vec!["127.0.0.1:15443".to_owned()]);
    assert_eq!(record.region, "eu");

    // Both catalogs hold the other's record with the other's current bundle.
    let a_bundle = a.bundle_tx.borrow().clone();
    let b_bundle = b.bundle_tx.borrow().clone();
    let held_by_b = &b.catalog().peers["cluster-a"];
    let held_by_a = &a.catalog().peers["cluster-b"];
    let parse =
        |td: &TrustDomain, json: &str| Bundle::from_jwks(td.clone(), json.as_bytes()).unwrap();
    assert_eq!(
        parse(&a.td, &held_by_b.bundle_json).x509_authorities(),
        a_bundle.x509_authorities()
    );
    assert_eq!(
        parse(&b.td, &held_by_a.bundle_json).x509_authorities(),
        b_bundle.x509_authorities()
    );
    assert_eq!(held_by_a.bundle_sequence, b_bundle.sequence());
    assert_eq!(held_by_a.controller_address, b.ctx.local.controller_address);
    // ... and both processes trust each other's trust domain now.
    assert!(b.ctx.bundles.get(&a.td).is_some());
    assert!(a.ctx.bundles.get(&b.td).is_some());
    // The token is spent, by cluster-b.
    let tokens = a.catalog().peering_tokens;
    assert_eq!(tokens.len(), 1);
    let spent = tokens.values().next().unwrap();
    assert_eq!(spent.redeemed_by.as_deref(), Some("cluster-b"));
    assert!(!spent.secret_sha256.is_empty() && !token.contains(&spent.secret_sha256));

    // Reuse is refused by the issuer: 409.
    let c = Node::start("cluster-c").await;
    let err = peering::redeem(&c.ctx, &token).await.unwrap_err();
    assert!(matches!(err, PeeringError::Reused), "{err:?}");
    assert_eq!(err.http_status(), 409);
    assert!(!a.catalog().peers.contains_key("cluster-c"));
    assert!(c.catalog().peers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused_locally_and_by_the_issuer() {
    let (a, b) = (
        Node::start("cluster-a").await,
        Node::start("cluster-b").await,
    );
    let (token, expires) = peering::create_token(&a.ctx, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(expires > time::OffsetDateTime::now_utc() + Duration::from_secs(55));

    // The redeemer's clock says expired: refused before any call.
    b.clock.shift(120);
    let err = peering::redeem(&b.ctx, &token).await.unwrap_err();
    assert!(
        matches!(&err, PeeringError::Expired { detail } if detail.contains("local clock")),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 410);
    assert!(a
        .catalog()
        .peering_tokens
        .values()
        .all(|t| t.redeemed_by.is_none()));

    // The redeemer's clock lags, the issuer's says expired: the issuer refuses.
    b.clock.shift(0);
    a.clock.shift(120);
    let err = peering::redeem(&b.ctx, &token).await.unwrap_err();
    assert!(
        matches!(&err, PeeringError::Expired { detail } if detail.contains("issuer")),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 410);
    assert!(a.catalog().peers.is_empty() && b.catalog().peers.is_empty());

    // The issuer's Redeem directly: FAILED_PRECONDITION "peering token expired".
    let decoded = PeeringToken::decode(&token).unwrap();
    let request = |id: &str, secret: &str| {
        tonic::Request::new(RedeemRequest {
            token_id: id.into(),
            secret: secret.into(),
            redeemer: Some(b.ctx.local.peer_info()),
        })
    };
    let status = a
        .service
        .redeem(request(&decoded.id, &decoded.secret))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), "peering token expired");
    let status = a
        .service
        .redeem(request("nope", &decoded.secret))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    a.clock.shift(0);
    let status = a
        .service
        .redeem(request(&decoded.id, "wrong"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    a.service
        .redeem(request(&decoded.id, &decoded.secret))
        .await
        .unwrap();
    let status = a
        .service
        .redeem(request(&decoded.id, &decoded.secret))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_unauthentic_issuers_are_refused() {
    let (a, b) = (
        Node::start("cluster-a").await,
        Node::start("cluster-b").await,
    );
    let err = peering::redeem(&b.ctx, "definitely not a token")
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 400, "{err:?}");
    // A token of our own cannot link us with ourselves.
    let own = b.token().await;
    let err = peering::redeem(&b.ctx, &own).await.unwrap_err();
    assert!(matches!(err, PeeringError::SelfLink(_)), "{err:?}");

    // The token's bundle does not authenticate the issuer's controller (an
    // impostor CA for the same trust domain): the TLS handshake fails, 502,
    // and the token stays unused.
    let token = a.token().await;
    let mut forged = PeeringToken::decode(&token).unwrap();
    let impostor = CertificateAuthority::self_signed(
        a.td.clone(),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .unwrap();
    let impostor_bundle =
        Bundle::with_x509_authorities(a.td.clone(), [impostor.trust_anchor().clone()]);
    forged.issuer.bundle_json = String::from_utf8(impostor_bundle.to_jwks()).unwrap();
    let err = peering::redeem(&b.ctx, &forged.encode()).await.unwrap_err();
    assert!(
        matches!(err, PeeringError::IssuerUnreachable { .. }),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 502);
    assert!(a
        .catalog()
        .peering_tokens
        .values()
        .all(|t| t.redeemed_by.is_none()));

    // Nobody listening at the issuer's address: 502.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut moved = PeeringToken::decode(&token).unwrap();
    moved.issuer.controller_address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let err = peering::redeem(&b.ctx, &moved.encode()).await.unwrap_err();
    assert!(
        matches!(err, PeeringError::IssuerUnreachable { .. }),
        "{err:?}"
    );

    // The genuine token still works.
    peering::redeem(&b.ctx, &token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_name_or_trust_domain_cannot_be_taken_over() {
    let (a, b) = (
        Node::start("cluster-a").await,
        Node::start("cluster-b").await,
    );
    link(&a, &b).await;
    // Who is linked with which trust domain (exports may still arrive).
    let links = |n: &Node| -> Vec<(String, String)> {
        n.catalog()
            .peers
            .values()
            .map(|p| (p.cluster.clone(), p.trust_domain.clone()))
            .collect()
    };
    let before = (links(&a), links(&b));

    // Redeemer side: a token from another "cluster-a" (another trust domain).
    let impostor = Node::start_in("cluster-a", "impostor.mesh").await;
    let token = impostor.token().await;
    let err = peering::redeem(&b.ctx, &token).await.unwrap_err();
    assert!(matches!(err, PeeringError::Conflict(_)), "{err:?}");
    assert_eq!(err.http_status(), 409);
    assert!(impostor
        .catalog()
        .peering_tokens
        .values()
        .all(|t| t.redeemed_by.is_none()));

    // Issuer side: someone calling itself cluster-b with another trust
    // domain redeems a's token: refused before the token is spent.
    let fake_b = Node::start_in("cluster-b", "fake-b.mesh").await;
    let token = PeeringToken::decode(&a.token().await).unwrap();
    let status = a
        .service
        .redeem(tonic::Request::new(RedeemRequest {
            token_id: token.id.clone(),
            secret: token.secret.clone(),
            redeemer: Some(fake_b.ctx.local.peer_info()),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("already linked"),
        "{}",
        status.message()
    );
    assert!(a.catalog().peering_tokens[&token.id].redeemed_by.is_none());
    assert_eq!((links(&a), links(&b)), before);
    assert_eq!(
        before.1,
        vec![("cluster-a".into(), "cluster-a.mesh".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_refresh_picks_up_a_rotated_root() {
    let (a, b) = (
        Node::start("cluster-a").await,
        Node::start("cluster-b").await,
    );
    link(&a, &b).await;
    let before = b.catalog().peers["cluster-a"].bundle_sequence;

    // cluster-a publishes a second root (the first step of a rotation).
    let new_root = CertificateAuthority::self_signed(
        a.td.clone(),
        Duration::from_secs(86_400),
        SystemTime::now(),
    )
    .unwrap();
    let mut rotated = a.bundle_tx.borrow().clone();
    assert!(rotated.add_x509_authority(new_root.trust_anchor().clone()));
    let sequence = rotated.sequence();
    assert!(sequence > before);
    a.bundle_tx.send_replace(rotated);

    b.until("cluster-a's new bundle sequence is stored", |c| {
        c.peers["cluster-a"].bundle_sequence == sequence
    })
    .await;
    let stored = &b.catalog().peers["cluster-a"];
    let parsed = Bundle::from_jwks(a.td.clone(), stored.bundle_json.as_bytes()).unwrap();
    assert!(parsed.x509_authorities().contains(new_root.trust_anchor()));
    assert_eq!(parsed.x509_authorities().len(), 2);
    let live = b.ctx.bundles.get(&a.td).unwrap();
    assert_eq!(live.sequence(), sequence);
    assert!(live.x509_authorities().contains(new_root.trust_anchor()));

    // cluster-a's controller switches to an SVID of the new root; cluster-b
    // still authenticates it (the unlink call goes through: a drops b).
    let id =
        a.td.service_account("isthmus-system", "controller")
            .unwrap();
    let svid = new_root
        .issue(&SvidRequest::new(id), SystemTime::now())
        .unwrap();
    a.ctx.svid.update(svid).unwrap();
    peering::unlink(&b.ctx, "cluster-a").await.unwrap();
    assert!(!a.catalog().peers.contains_key("cluster-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_streamed_and_updated_on_change() {
    let (a, b) = (
        Node::start("cluster-a").await,
        Node::start("cluster-b").await,
    );
    *a.exports.0.lock().unwrap() = vec![service("web", 2)];
    link(&a, &b).await;

    let names = |c: &Catalog| {
        c.peers
            .get("cluster-a")
            .and_then(decode_exports)
            .map(|set| {
                set.services
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
            })
    };
    b.until("cluster-a's export of web arrived", |c| {
        names(c) == Some(vec!["web".into()])
    })
    .await;
    let set = decode_exports(&b.catalog().peers["cluster-a"]).unwrap();
    assert_eq!(set.services[0], service("web", 2));
    assert_eq!(set.gateway_addresses, vec!["127.0.0.1:15443".to_owned()]);
    // b exports nothing; a stored that as an empty set from b.
    a.until("cluster-b's (empty) export set arrived", |c| {
        c.peers
            .get("cluster-b")
            .and_then(decode_exports)
            .is_some_and(|s| s.services.is_empty() && !s.gateway_addresses.is_empty())
    })
    .await;

    // A change on a's side (a new export and web's health) reaches b.
    *a.exports.0.lock().unwrap() = vec![service("web", 1), service("api", 3)];
    a.ctx
        .store
        .write(Command::UpdatePeerExports {
            cluster: "nobody".into(),
            exports: vec![],
        })
        .await
        .unwrap();
    b.until("cluster-a's updated exports arrived", |c| {
        names(c) == Some(vec!["api".into(), "web".into()])
    })
    .await;
    let set = decode_exports(&b.catalog().peers["cluster-a"]).unwrap();
    assert_eq!(set.services[1], service("web", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_exports_stream_keeps_the_last_export_set() {
    let (a, b) = (
        Node::start("cluster-a").await,
        Node::start("cluster-b").await,
    );
    *a.exports.0.lock().unwrap() = vec![service("web", 2)];
    link(&a, &b).await;
    let web = |c: &Catalog| {
        c.peers
            .get("cluster-a")
            .and_then(decode_exports)
            .is_some_and(|set| set.services == [service("web", 2)])
    };
    b.until("cluster-a's export of web arrived", web).await;
    let before = b.catalog().peers["cluster-a"].exports.clone();

    // a stops serving b: its record of b now names another controller, so
    // a ends b's WatchExports stream and refuses b's reconnects
    // (PermissionDenied).
    let mut record = a.catalog().peers["cluster-b"].clone();
    record.controller_spiffe_id = "spiffe://cluster-b.mesh/ns/isthmus-system/sa/impostor".into();
    let calls = a.calls.count();
    a.ctx
        .store
        .write(Command::UpsertPeer(record))
        .await
        .unwrap();
    // b noticed: it reconnected (and was refused) at least once since.
    let waited = tokio::time::timeout(PATIENCE, async {
        while a.calls.count() <= calls {
            a.calls.wait().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "b never reconnected to a");
    let after = b.catalog();
    assert!(web(&after), "b lost cluster-a's exports: {after:#?}");
    assert_eq!(after.peers["cluster-a"].exports, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_removes_both_sides() {
    let (a, b) = (
        Node::start("cluster-a").await,
        Node::start("cluster-b").await,
    );
    link(&a, &b).await;
    peering::unlink(&b.ctx, "cluster-a").await.unwrap();
    assert!(!b.catalog().peers.contains_key("cluster-a"));
    a.until("cluster-b is gone", |c| c.peers.is_empty()).await;
    assert!(b.ctx.bundles.get(&a.td).is_none(), "b still trusts a");
    assert!(a.ctx.bundles.get(&b.td).is_none(), "a still trusts b");
    assert!(
        b.ctx.bundles.get(&b.td).is_some(),
        "b forgot its own bundle"
    );

    let err = peering::unlink(&b.ctx, "cluster-a").await.unwrap_err();
    assert!(matches!(err, PeeringError::UnknownPeer(_)), "{err:?}");
    assert_eq!(err.http_status(), 404);

    // A caller that is no linked peer's controller cannot unlink anyone.
    link(&a, &b).await;
    let status = a
        .service
        .unlink(tonic::Request::new(mesh_api::peering::UnlinkRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(mesh_api::peering::UnlinkRequest {});
    let stranger = TrustDomain::parse("cluster-z.mesh")
        .unwrap()
        .service_account("isthmus-system", "controller")
        .unwrap();
    request
        .extensions_mut()
        .insert(PeerIdentity(Some(stranger)));
    let status = a.service.unlink(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let mut request = tonic::Request::new(mesh_api::peering::WatchExportsRequest {});
    let stranger = TrustDomain::parse("cluster-z.mesh").unwrap().id();
    request
        .extensions_mut()
        .insert(PeerIdentity(Some(stranger)));
    let status = a.service.watch_exports(request).await.err().unwrap();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(a.catalog().peers.contains_key("cluster-b"));
}

// ---------------------------------------------------------------- TLS listener

/// Counts the RPCs a node's Peering listener receives.
#[derive(Clone, Default)]
struct CountCalls(Arc<(AtomicUsize, tokio::sync::Notify)>);

impl CountCalls {
    fn count(&self) -> usize {
        self.0 .0.load(Ordering::SeqCst)
    }

    /// Until the next call.
    async fn wait(&self) {
        self.0 .1.notified().await;
    }
}

impl tonic::service::Interceptor for CountCalls {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.0 .0.fetch_add(1, Ordering::SeqCst);
        self.0 .1.notify_one();
        Ok(request)
    }
}

/// Serves `server` through the controller's own gRPC listener
/// (`grpc::server_config` + `grpc::serve`): TLS 1.3 + h2, optional client
/// SVIDs verified against `bundles`, `PeerIdentity` on every request.
async fn serve_peering<S: Peering>(
    listener: TcpListener,
    svid: Arc<SvidSource>,
    bundles: BundleStore,
    server: InterceptedService<PeeringServer<S>, CountCalls>,
    shutdown: watch::Receiver<bool>,
) {
    let tls = Arc::new(grpc::server_config(svid, bundles).expect("TLS 1.3 server config"));
    let router = tonic::transport::Server::builder().add_service(server);
    grpc::serve(listener, tls, router, shutdown)
        .await
        .expect("the gRPC listener");
}
