//! SPIFFE Federation end to end on loopback: B serves its bundle at a bundle
//! endpoint, A keeps B's bundle fresh from it, and B rotates its root with no
//! operator step on A's side.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{exchange, Pki, DAY};
use tokio::sync::watch;
use trust_bundle::endpoint::{
    BundleEndpointClient, BundleEndpointServer, EndpointConfig, EndpointError, EndpointProfile,
};
use trust_bundle::tls::{client_config, server_config};
use trust_bundle::{
    Authorizer, Bundle, BundleStore, CertificateAuthority, SpiffeId, SvidRequest, SvidSource,
};

struct Endpoint {
    addr: SocketAddr,
    publish: watch::Sender<Bundle>,
    svid: Arc<SvidSource>,
    _stop: watch::Sender<bool>,
}

async fn serve(svid: Arc<SvidSource>, bundle: Bundle) -> Endpoint {
    let (publish, bundle_rx) = watch::channel(bundle);
    let server = BundleEndpointServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        svid.clone(),
        bundle_rx,
        "/bundle",
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(server.serve(stop_rx));
    Endpoint {
        addr,
        publish,
        svid,
        _stop: stop,
    }
}

/// A bundle endpoint client with the https_spiffe profile.
fn spiffe_client(
    trust_domain: trust_bundle::TrustDomain,
    url: impl Into<String>,
    endpoint_id: SpiffeId,
    store: BundleStore,
) -> BundleEndpointClient {
    BundleEndpointClient::new(
        EndpointConfig {
            trust_domain,
            url: url.into(),
            profile: EndpointProfile::HttpsSpiffe { endpoint_id },
        },
        store,
    )
    .unwrap()
}

fn controller_id(pki: &Pki) -> SpiffeId {
    pki.td
        .workload(&["ns", "isthmus-system", "sa", "controller"])
        .unwrap()
}

#[tokio::test]
async fn root_rotation_needs_no_operator_step_f2_f7_f9_f10() {
    let a = Pki::new("cluster-a.mesh");
    let b = Pki::new("cluster-b.mesh");
    let old_root = b.ca.trust_anchor().clone();
    let issue = |ca: &CertificateAuthority, id: SpiffeId| {
        ca.issue(&SvidRequest::new(id), SystemTime::now()).unwrap()
    };

    // B publishes its bundle, presenting its controller SVID from the old root.
    let mut b_bundle = b.bundle();
    let endpoint_svid = SvidSource::new(
        issue(&b.ca, controller_id(&b)),
        trust_bundle::crypto_provider(),
    )
    .unwrap();
    let ep = serve(endpoint_svid, b_bundle.clone()).await;

    // A is seeded with B's first bundle out of band (what `meshctl link` does).
    let a_trust = BundleStore::new();
    a_trust.set(a.bundle());
    a_trust.set(b_bundle.clone());
    let client = spiffe_client(
        b.td.clone(),
        format!("https://{}/bundle", ep.addr),
        controller_id(&b),
        a_trust.clone(),
    );
    assert_eq!(
        client.refresh().await.unwrap().sequence(),
        b_bundle.sequence()
    );

    // 1. B publishes a new root beside the old one (F-2: before using it).
    let new_ca =
        CertificateAuthority::self_signed(b.td.clone(), 30 * DAY, SystemTime::now()).unwrap();
    b_bundle.add_x509_authority(new_ca.trust_anchor().clone());
    ep.publish.send_replace(b_bundle.clone());

    // 2. A refreshes, authenticated by the old root it already holds.
    let fetched = client.refresh().await.unwrap();
    assert_eq!(fetched.x509_authorities().len(), 2);
    let status = client.status();
    assert_eq!(
        status.sequence,
        Some(b_bundle.sequence()),
        "F-7: the most recent bundle"
    );
    assert!(status.last_success.is_some() && status.consecutive_failures == 0);

    // 3. B issues from the new root, also for its own bundle endpoint.
    let call_b = |backend: trust_bundle::X509Svid| {
        let b_trust = BundleStore::from_map(&a_trust.to_map());
        let server_src = SvidSource::new(backend, trust_bundle::crypto_provider()).unwrap();
        let server =
            server_config(server_src, b_trust, Authorizer::MemberOf(a.td.clone()), &[]).unwrap();
        let client = client_config(
            Some(a.source("frontend")),
            a_trust.clone(),
            Authorizer::Exact(b.id("backend")),
            &[],
        )
        .unwrap();
        exchange(server, client)
    };
    let from_new = issue(&new_ca, b.id("backend"));
    assert_eq!(
        call_b(from_new.clone()).await.client_saw.unwrap(),
        Some(b.id("backend"))
    );
    ep.svid.update(issue(&new_ca, controller_id(&b))).unwrap();
    // F-10: the endpoint's new SVID verifies with the bundle fetched last.
    client.refresh().await.unwrap();

    // 4. B drops the old root; A refreshes and refuses old-root SVIDs.
    b_bundle.remove_x509_authority(&old_root);
    ep.publish.send_replace(b_bundle.clone());
    let fetched = client.refresh().await.unwrap();
    assert_eq!(fetched.x509_authorities(), &[new_ca.trust_anchor().clone()]);
    assert_eq!(client.status().sequence, Some(b_bundle.sequence()));
    let from_old = issue(&b.ca, b.id("backend"));
    let refused = call_b(from_old).await;
    let err = refused.client_saw.unwrap_err();
    assert!(
        err.contains("cluster-b.mesh") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(call_b(from_new).await.ok(), "new-root SVIDs still work");
}

#[tokio::test]
async fn f9_endpoint_with_wrong_spiffe_id_is_refused_and_last_good_bundle_is_kept() {
    let b = Pki::new("cluster-b.mesh");
    let imposter =
        b.ca.issue(
            &SvidRequest::new(b.id("not-the-controller")),
            SystemTime::now(),
        )
        .unwrap();
    let ep = serve(
        SvidSource::new(imposter, trust_bundle::crypto_provider()).unwrap(),
        b.bundle(),
    )
    .await;
    let store = BundleStore::new();
    let seeded = b.bundle();
    store.set(seeded.clone());
    let client = spiffe_client(
        b.td.clone(),
        format!("https://{}/bundle", ep.addr),
        controller_id(&b),
        store.clone(),
    );
    let err = client.refresh().await.unwrap_err();
    assert!(matches!(err, EndpointError::Tls { .. }), "{err}");
    let status = client.status();
    assert_eq!(status.consecutive_failures, 1);
    assert!(status.last_error.unwrap().contains("Unauthorized"));
    assert_eq!(status.last_success, None);
    assert_eq!(
        store.get(&b.td),
        Some(seeded),
        "the last good bundle is kept"
    );

    // Nothing listening: a connect error, still keeping the bundle.
    drop(ep);
    let dead = spiffe_client(
        b.td.clone(),
        "https://127.0.0.1:1/bundle",
        controller_id(&b),
        store.clone(),
    );
    assert!(matches!(
        dead.refresh().await,
        Err(EndpointError::Connect { .. })
    ));
    assert!(store.get(&b.td).is_some());
}

#[tokio::test]
async fn f3_f5_client_config_is_validated_up_front() {
    let b = Pki::new("cluster-b.mesh");
    for url in [
        "http://127.0.0.1/bundle",
        "https://user@127.0.0.1/bundle",
        "not a url",
    ] {
        let r = BundleEndpointClient::new(
            EndpointConfig {
                trust_domain: b.td.clone(),
                url: url.into(),
                profile: EndpointProfile::HttpsSpiffe {
                    endpoint_id: controller_id(&b),
                },
            },
            BundleStore::new(),
        );
        assert!(matches!(r, Err(EndpointError::Url { .. })), "{url}");
    }
}

#[tokio::test]
async fn f4_f6_f8_https_web_profile_checks_the_host_name() {
    // A server certificate for DNS "localhost" from a CA the client trusts as
    // a Web PKI root; the endpoint asks for no client certificate (F-6).
    let web = Pki::new("web-pki.test");
    let serve_for = |dns: &str| {
        let mut req = SvidRequest::new(web.id("bundle-endpoint"));
        req.dns_names = vec![dns.into()];
        SvidSource::new(
            web.ca.issue(&req, SystemTime::now()).unwrap(),
            trust_bundle::crypto_provider(),
        )
        .unwrap()
    };
    let b = Pki::new("cluster-b.mesh");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(web.ca.trust_anchor().clone()).unwrap();
    let roots = Arc::new(roots);
    let fetch = |addr: SocketAddr, store: BundleStore| {
        let client = BundleEndpointClient::new(
            EndpointConfig {
                trust_domain: b.td.clone(),
                url: format!("https://localhost:{}/bundle", addr.port()),
                profile: EndpointProfile::HttpsWeb {
                    roots: roots.clone(),
                },
            },
            store,
        )
        .unwrap();
        async move { client.refresh().await }
    };

    let good = serve(serve_for("localhost"), b.bundle()).await;
    let store = BundleStore::new();
    let bundle = fetch(good.addr, store.clone()).await.unwrap();
    assert_eq!(bundle.x509_authorities(), b.bundle().x509_authorities());
    assert_eq!(
        store.get(&b.td).unwrap().x509_authorities(),
        b.bundle().x509_authorities()
    );

    let wrong_host = serve(serve_for("wrong.example"), b.bundle()).await;
    let err = fetch(wrong_host.addr, BundleStore::new())
        .await
        .unwrap_err();
    let rendered = format!("{err:?}");
    assert!(rendered.contains("NotValidForName"), "{rendered}");
}

#[tokio::test]
async fn endpoint_serves_only_get_on_its_path() {
    let b = Pki::new("cluster-b.mesh");
    let ep = serve(b.source("controller"), b.bundle()).await;
    let store = BundleStore::from_map(&{
        let mut m = trust_bundle::BundleMap::default();
        m.insert(b.bundle());
        m
    });
    let client = spiffe_client(
        b.td.clone(),
        format!("https://{}/elsewhere", ep.addr),
        b.id("controller"),
        store,
    );
    let err = client.refresh().await.unwrap_err();
    assert!(
        matches!(err, EndpointError::Status(s) if s.as_u16() == 404),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn run_loop_honours_the_refresh_hint() {
    let b = Pki::new("cluster-b.mesh");
    let mut bundle = b.bundle();
    bundle.set_refresh_hint(Some(Duration::from_secs(30)));
    let ep = serve(b.source("controller"), bundle.clone()).await;
    let store = BundleStore::new();
    store.set(b.bundle());
    let client = Arc::new(spiffe_client(
        b.td.clone(),
        format!("https://{}/bundle", ep.addr),
        b.id("controller"),
        store.clone(),
    ));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(client.clone().run(stop_rx));
    let mut polls = 0;
    while client.status().last_success.is_none() {
        polls += 1;
        assert!(polls < 1000, "first fetch never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Publish a change; the loop picks it up one refresh hint later.
    let extra = CertificateAuthority::self_signed(b.td.clone(), DAY, SystemTime::now()).unwrap();
    bundle.add_x509_authority(extra.trust_anchor().clone());
    ep.publish.send_replace(bundle.clone());
    let started = tokio::time::Instant::now();
    let mut polls = 0;
    while store.get(&b.td).map(|x| x.sequence()) != Some(bundle.sequence()) {
        polls += 1;
        assert!(polls < 1000, "bundle never refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(29) && waited <= Duration::from_secs(31),
        "refreshed after {waited:?}, hint is 30 s"
    );
    stop.send_replace(true);
    task.await.unwrap();
}
