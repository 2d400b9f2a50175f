//! CA root rotation through the admin API, watched through the bundle
//! endpoint the way a peer sees it (https_spiffe, authenticated with the
//! bundle it already holds): the new root is published first, then signs
//! (the controller's SVID is re-issued), then the old root is dropped.

mod common;

use std::time::Duration;

use common::{call, eventually, start};
use trust_bundle::endpoint::{BundleEndpointClient, EndpointConfig, EndpointProfile};
use trust_bundle::TrustDomain;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_switches_and_drops_without_breaking_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "").await;
    let td = TrustDomain::parse("cluster-a.mesh").unwrap();

    // A "peer" seeded with our bundle out of band.
    let peer_store = trust_bundle::BundleStore::new();
    peer_store.set(c.bundles().get(&td).unwrap());
    let client = BundleEndpointClient::new(
        EndpointConfig {
            trust_domain: td.clone(),
            url: format!("https://{}/", c.bundle_addr()),
            profile: EndpointProfile::HttpsSpiffe {
                endpoint_id: td.service_account("isthmus-system", "controller").unwrap(),
            },
        },
        peer_store.clone(),
    )
    .unwrap();
    let first = client.refresh().await.expect("first fetch");
    assert_eq!(first.sequence(), 1);
    let old_root = first.x509_authorities().to_vec();
    assert_eq!(old_root.len(), 1);
    let old_leaf = c.svid().svid().chain()[0].clone();

    let body = Some((
        "application/json",
        "{\"switchAfterSeconds\":1,\"dropAfterSeconds\":2}",
    ));
    let (status, v) = call(c.admin_addr(), "POST", "/v1/ca/rotate", body, None).await;
    assert_eq!((status, v["sequence"].as_u64()), (202, Some(2)), "{v}");
    let (status, v) = call(c.admin_addr(), "POST", "/v1/ca/rotate", None, None).await;
    assert_eq!(status, 409, "a second rotation while one runs: {v}");

    // Published first: both roots, the controller still on the old one.
    let both = client.refresh().await.expect("fetch during rotation");
    assert_eq!(both.sequence(), 2);
    assert_eq!(both.x509_authorities().len(), 2);

    // Then the new root signs: the controller's SVID is re-issued.
    let svid = c.svid().clone();
    eventually(Duration::from_secs(10), "controller SVID re-issued", || {
        let leaf = svid.svid().chain()[0].clone();
        let old = old_leaf.clone();
        async move { leaf != old }
    })
    .await;

    // Finally the old root leaves the bundle; the peer follows without help.
    let fetch = &client;
    eventually(Duration::from_secs(10), "old root dropped", || async move {
        match fetch.refresh().await {
            Ok(b) => b.sequence() == 4 && b.x509_authorities().len() == 1,
            Err(e) => panic!("the peer's fetch failed during the rotation: {e}"),
        }
    })
    .await;
    let last = peer_store.get(&td).unwrap();
    assert_ne!(last.x509_authorities(), old_root.as_slice());
    let (_, status) = call(c.admin_addr(), "GET", "/v1/status", None, None).await;
    assert_eq!(status["ca"]["sequence"], 4, "{status}");
    c.stop().await;
}
