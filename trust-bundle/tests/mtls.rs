//! Mutual TLS over real TCP on loopback between two independent CAs,
//! `cluster-a.mesh` and `cluster-b.mesh`, through our rustls verifiers.
//! Test names carry the SPIFFE-CHECKLIST.md row they cover.

mod common;

use std::time::SystemTime;

use common::{exchange, Pki, DAY};
use rcgen::{KeyUsagePurpose, SanType};
use trust_bundle::tls::{client_config, server_config};
use trust_bundle::{Authorizer, Bundle, BundleStore};

fn store(bundles: &[Bundle]) -> BundleStore {
    let s = BundleStore::new();
    for b in bundles {
        s.set(b.clone());
    }
    s
}

#[tokio::test]
async fn same_domain_mtls_works_and_each_side_sees_the_others_id() {
    let a = Pki::new("cluster-a.mesh");
    let trust = store(&[a.bundle()]);
    let server = server_config(
        a.source("backend"),
        trust.clone(),
        Authorizer::MemberOf(a.td.clone()),
        &[],
    )
    .unwrap();
    let client = client_config(
        Some(a.source("frontend")),
        trust,
        Authorizer::Exact(a.id("backend")),
        &[],
    )
    .unwrap();
    let ex = exchange(server, client).await;
    assert_eq!(ex.server_saw.unwrap(), Some(a.id("frontend")));
    assert_eq!(ex.client_saw.unwrap(), Some(a.id("backend")));
}

#[tokio::test]
async fn f1_cross_domain_mtls_works_only_once_each_side_holds_the_others_bundle() {
    let (a, b) = (Pki::new("cluster-a.mesh"), Pki::new("cluster-b.mesh"));
    let (a_trust, b_trust) = (store(&[a.bundle()]), store(&[b.bundle()]));
    let run = |a_trust: BundleStore, b_trust: BundleStore| {
        let server = server_config(b.source("backend"), b_trust, Authorizer::Any, &[]).unwrap();
        let client =
            client_config(Some(a.source("frontend")), a_trust, Authorizer::Any, &[]).unwrap();
        exchange(server, client)
    };
    let neither = run(a_trust.clone(), b_trust.clone()).await;
    assert!(!neither.ok());
    assert!(
        neither
            .errors()
            .contains("UnknownTrustDomain(TrustDomain(cluster-b.mesh))"),
        "{}",
        neither.errors()
    );

    b_trust.set(a.bundle());
    let one_way = run(a_trust.clone(), b_trust.clone()).await;
    assert!(!one_way.ok(), "A does not hold B's bundle yet");

    a_trust.set(b.bundle());
    let both = run(a_trust, b_trust).await;
    assert_eq!(both.server_saw.unwrap(), Some(a.id("frontend")));
    assert_eq!(both.client_saw.unwrap(), Some(b.id("backend")));
}

#[tokio::test]
async fn x10_svid_verified_only_against_own_trust_domain() {
    let (a, b) = (Pki::new("cluster-a.mesh"), Pki::new("cluster-b.mesh"));
    // A's CA mints an identity in B's trust domain.
    let forged = a.forge("spiffe://cluster-b.mesh/ns/default/sa/admin", |_| {});
    let b_trust = store(&[a.bundle(), b.bundle()]);
    let server = server_config(b.source("backend"), b_trust.clone(), Authorizer::Any, &[]).unwrap();
    let ex = exchange(server, forged.client_config()).await;
    let err = ex.server_saw.unwrap_err();
    assert!(
        err.contains("trust_domain: TrustDomain(cluster-b.mesh), error: UnknownIssuer"),
        "{err}"
    );

    // The same forgery as a server, seen by a client that holds both bundles.
    let client = client_config(Some(b.source("frontend")), b_trust, Authorizer::Any, &[]).unwrap();
    let ex = exchange(forged.server_config(), client).await;
    let err = ex.client_saw.unwrap_err();
    assert!(
        err.contains("trust_domain: TrustDomain(cluster-b.mesh), error: UnknownIssuer"),
        "{err}"
    );
}

/// Presents `forged` to a B server that trusts A and B; returns the error.
async fn refused_by_server(a: &Pki, forged: common::Forged) -> String {
    let b = Pki::new("cluster-b.mesh");
    let server = server_config(
        b.source("backend"),
        store(&[a.bundle(), b.bundle()]),
        Authorizer::Any,
        &[],
    )
    .unwrap();
    let ex = exchange(server, forged.client_config()).await;
    assert!(
        ex.server_saw.is_err(),
        "server accepted a bad certificate: {ex:?}"
    );
    ex.server_saw.unwrap_err()
}

const FRONTEND: &str = "spiffe://cluster-a.mesh/ns/default/sa/frontend";

#[tokio::test]
async fn expired_and_not_yet_valid_svids_are_refused() {
    let a = Pki::new("cluster-a.mesh");
    let expired = a.forge(FRONTEND, |p| {
        p.not_before = (SystemTime::now() - 3 * DAY).into();
        p.not_after = (SystemTime::now() - DAY).into();
    });
    assert!(refused_by_server(&a, expired).await.contains("Expired"));
    let future = a.forge(FRONTEND, |p| {
        p.not_before = (SystemTime::now() + DAY).into();
        p.not_after = (SystemTime::now() + 2 * DAY).into();
    });
    assert!(refused_by_server(&a, future).await.contains("NotValidYet"));
}

#[tokio::test]
async fn x5_ca_as_leaf_is_refused() {
    let a = Pki::new("cluster-a.mesh");
    let ca_leaf = a.forge(FRONTEND, |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    });
    assert!(refused_by_server(&a, ca_leaf).await.contains("LeafIsCa"));
}

#[tokio::test]
async fn x1_no_uri_san_and_two_uri_sans_are_refused() {
    let a = Pki::new("cluster-a.mesh");
    let none = a.forge(FRONTEND, |p| {
        p.subject_alt_names = vec![SanType::DnsName("frontend".try_into().unwrap())]
    });
    assert!(refused_by_server(&a, none).await.contains("NoUriSan"));
    let two = a.forge(FRONTEND, |p| {
        p.subject_alt_names
            .push(SanType::URI("https://example.com/".try_into().unwrap()))
    });
    assert!(refused_by_server(&a, two)
        .await
        .contains("MultipleUriSans(2)"));
}

#[tokio::test]
async fn x2_leaf_without_path_is_refused() {
    let a = Pki::new("cluster-a.mesh");
    let bare = a.forge("spiffe://cluster-a.mesh", |_| {});
    assert!(refused_by_server(&a, bare)
        .await
        .contains("LeafIdWithoutPath"));
}

#[tokio::test]
async fn x8_leaf_key_usage_rules_are_enforced() {
    let a = Pki::new("cluster-a.mesh");
    let no_ds = a.forge(FRONTEND, |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]
    });
    assert!(refused_by_server(&a, no_ds)
        .await
        .contains("LeafNoDigitalSignature"));
    let cert_sign = a.forge(FRONTEND, |p| {
        p.key_usages.push(KeyUsagePurpose::KeyCertSign)
    });
    assert!(refused_by_server(&a, cert_sign)
        .await
        .contains("LeafKeyCertSign"));
    let crl_sign = a.forge(FRONTEND, |p| p.key_usages.push(KeyUsagePurpose::CrlSign));
    assert!(refused_by_server(&a, crl_sign)
        .await
        .contains("LeafCrlSign"));
}

#[tokio::test]
async fn x4_x5_x7_bad_intermediates_are_refused() {
    let a = Pki::new("cluster-a.mesh");
    let good = a.forge_via_intermediate(FRONTEND, |_| {});
    let b = Pki::new("cluster-b.mesh");
    let server = server_config(
        b.source("backend"),
        store(&[a.bundle()]),
        Authorizer::Any,
        &[],
    )
    .unwrap();
    let ex = exchange(server, good.client_config()).await;
    assert_eq!(
        ex.server_saw.unwrap(),
        Some(a.id("frontend")),
        "a well-formed intermediate is accepted"
    );

    let with_path = a.forge_via_intermediate(FRONTEND, |p| {
        p.subject_alt_names = vec![SanType::URI(
            "spiffe://cluster-a.mesh/x".try_into().unwrap(),
        )];
    });
    assert!(refused_by_server(&a, with_path)
        .await
        .contains("SigningIdWithPath"));
    let not_ca = a.forge_via_intermediate(FRONTEND, |p| p.is_ca = rcgen::IsCa::ExplicitNoCa);
    assert!(refused_by_server(&a, not_ca)
        .await
        .contains("SigningCertNotCa"));
    let no_cert_sign =
        a.forge_via_intermediate(FRONTEND, |p| p.key_usages = vec![KeyUsagePurpose::CrlSign]);
    assert!(refused_by_server(&a, no_cert_sign)
        .await
        .contains("SigningCertNoKeyCertSign"));
}

#[tokio::test]
async fn b3_an_emptied_bundle_revokes_its_trust_domain() {
    let a = Pki::new("cluster-a.mesh");
    let trust = store(&[a.bundle()]);
    let mk = |trust: BundleStore| {
        let server =
            server_config(a.source("backend"), trust.clone(), Authorizer::Any, &[]).unwrap();
        let client =
            client_config(Some(a.source("frontend")), trust, Authorizer::Any, &[]).unwrap();
        exchange(server, client)
    };
    assert!(mk(trust.clone()).await.ok());
    trust.set(Bundle::new(a.td.clone()));
    let ex = mk(trust).await;
    assert!(
        ex.errors()
            .contains("EmptyBundle(TrustDomain(cluster-a.mesh))"),
        "{}",
        ex.errors()
    );
}

#[tokio::test]
async fn authorizer_refuses_valid_but_unexpected_ids() {
    let a = Pki::new("cluster-a.mesh");
    let trust = store(&[a.bundle()]);
    let server = server_config(a.source("backend"), trust.clone(), Authorizer::Any, &[]).unwrap();
    let client = client_config(
        Some(a.source("frontend")),
        trust,
        Authorizer::Exact(a.id("payments")),
        &[],
    )
    .unwrap();
    let ex = exchange(server, client).await;
    let err = ex.client_saw.unwrap_err();
    assert!(
        err.contains("Unauthorized(SpiffeId(spiffe://cluster-a.mesh/ns/default/sa/backend))"),
        "{err}"
    );
}

#[tokio::test]
async fn b3_revocation_applies_to_the_next_connection_of_the_same_config() {
    // The same client and server configs before and after revocation: no
    // session resumption may carry the old verification over.
    let (a, b) = (Pki::new("cluster-a.mesh"), Pki::new("cluster-b.mesh"));
    let a_trust = store(&[a.bundle(), b.bundle()]);
    let b_trust = store(&[a.bundle(), b.bundle()]);
    let server = server_config(b.source("backend"), b_trust, Authorizer::Any, &[]).unwrap();
    let client = client_config(
        Some(a.source("frontend")),
        a_trust.clone(),
        Authorizer::Any,
        &[],
    )
    .unwrap();
    assert!(exchange(server.clone(), client.clone()).await.ok());
    a_trust.set(Bundle::new(b.td.clone()));
    let ex = exchange(server, client).await;
    assert!(
        ex.errors()
            .contains("EmptyBundle(TrustDomain(cluster-b.mesh))"),
        "{}",
        ex.errors()
    );
}
