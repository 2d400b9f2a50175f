use std::net::SocketAddr;
use std::path::Path;

use super::*;

const YAML: &str = r#"
cluster: cluster-b
identity: { spiffe_id: "spiffe://cluster-b.mesh/ns/isthmus-system/sa/east-west-gateway", ca: { cert: c, key: k }, bundles: b }
listen: 127.0.0.1:1
admin: 127.0.0.1:2
peers:
  - { cluster: cluster-a, trust_domain: cluster-a.mesh, address: "127.0.1.1:1", spiffe_id: "spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway" }
  - { cluster: cluster-c, trust_domain: cluster-c.mesh, address: "127.0.3.1:1" }
exports:
  - service: default/backend
    port: 8080
    exported_to: [cluster-a]
    endpoints:
      - { address: "10.0.0.1:15006", spiffe_id: "spiffe://cluster-b.mesh/ns/default/sa/backend" }
      - { address: "10.0.0.2:15006", spiffe_id: "spiffe://cluster-b.mesh/ns/default/sa/backend" }
      - { address: "10.0.0.3:15006", spiffe_id: "spiffe://cluster-b.mesh/ns/default/sa/canary" }
  - service: default/private
    port: 8080
    exported_to: [cluster-c]
    endpoints:
      - { address: "10.0.0.9:15006", spiffe_id: "spiffe://cluster-b.mesh/ns/default/sa/private" }
  - service: default/empty
    port: 80
    exported_to: [cluster-a, cluster-c]
"#;

fn config() -> Config {
    Config::from_yaml(YAML, Path::new(".")).unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn header(cluster: &str, svc: &str, port: u16, expected: &str) -> OpenHeader {
    let (namespace, service) = svc.split_once('/').unwrap();
    OpenHeader {
        target_cluster: cluster.into(),
        namespace: namespace.into(),
        service: service.into(),
        port,
        expected_identity: id(expected),
        traceparent: None,
        tracestate: None,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const BACKEND: &str = "spiffe://cluster-b.mesh/ns/default/sa/backend";

fn reason(plan: &InboundPlan) -> Option<RejectReason> {
    match plan {
        InboundPlan::Reject(r) => Some(r.reason),
        InboundPlan::Connect { .. } => None,
    }
}

#[test]
fn classify_callers() {
    let c = config();
    let own = id("spiffe://cluster-b.mesh/ns/default/sa/frontend");
    assert_eq!(classify(&c, &own), Some(Caller::Sidecar(own.clone())));
    let a_gw = id("spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway");
    assert_eq!(
        classify(&c, &a_gw),
        Some(Caller::Peer {
            cluster: "cluster-a".into(),
            id: a_gw
        })
    );
    // cluster-a is pinned to its gateway ID: its workloads are not peers.
    assert_eq!(
        classify(&c, &id("spiffe://cluster-a.mesh/ns/default/sa/web")),
        None
    );
    // cluster-c is not pinned: any ID of its trust domain.
    assert!(matches!(
        classify(&c, &id("spiffe://cluster-c.mesh/anything")),
        Some(Caller::Peer { cluster, .. }) if cluster == "cluster-c"
    ));
    assert_eq!(classify(&c, &id("spiffe://cluster-x.mesh/gw")), None);
}

#[test]
fn inbound_accepts_exported_service_with_matching_identity() {
    let c = config();
    let h = header("cluster-b", "default/backend", 8080, BACKEND);
    let plan = route_inbound(&c, "cluster-a", &h, |_| true, 0);
    assert_eq!(
        plan,
        InboundPlan::Connect {
            endpoints: vec![addr("10.0.0.1:15006"), addr("10.0.0.2:15006")],
            final_hop: id(BACKEND),
        }
    );
    // Round robin rotates the order; the canary (other ID) never appears.
    let InboundPlan::Connect { endpoints, .. } = route_inbound(&c, "cluster-a", &h, |_| true, 1)
    else {
        panic!("rejected")
    };
    assert_eq!(
        endpoints,
        vec![addr("10.0.0.2:15006"), addr("10.0.0.1:15006")]
    );
    let canary = header(
        "cluster-b",
        "default/backend",
        8080,
        "spiffe://cluster-b.mesh/ns/default/sa/canary",
    );
    let InboundPlan::Connect { endpoints, .. } =
        route_inbound(&c, "cluster-a", &canary, |_| true, 7)
    else {
        panic!("rejected")
    };
    assert_eq!(endpoints, vec![addr("10.0.0.3:15006")]);
}

#[test]
fn inbound_skips_unhealthy_endpoints() {
    let c = config();
    let h = header("cluster-b", "default/backend", 8080, BACKEND);
    let down = addr("10.0.0.1:15006");
    let InboundPlan::Connect { endpoints, .. } =
        route_inbound(&c, "cluster-a", &h, |a| a != down, 0)
    else {
        panic!("rejected")
    };
    assert_eq!(endpoints, vec![addr("10.0.0.2:15006")]);
    let plan = route_inbound(&c, "cluster-a", &h, |_| false, 0);
    assert_eq!(reason(&plan), Some(RejectReason::NoHealthyEndpoint));
}

#[test]
fn inbound_reject_reasons() {
    let c = config();
    let cases = [
        // (peer, header, expected)
        (
            "cluster-a",
            header("cluster-b", "default/private", 8080, BACKEND),
            RejectReason::NotExported,
        ),
        (
            "cluster-c",
            header("cluster-b", "default/backend", 8080, BACKEND),
            RejectReason::NotExported,
        ),
        (
            "cluster-a",
            header("cluster-b", "default/nope", 8080, BACKEND),
            RejectReason::UnknownService,
        ),
        (
            "cluster-a",
            header("cluster-b", "other/backend", 8080, BACKEND),
            RejectReason::UnknownService,
        ),
        (
            "cluster-a",
            header("cluster-b", "default/backend", 8081, BACKEND),
            RejectReason::UnknownService,
        ),
        (
            "cluster-a",
            header("cluster-c", "default/backend", 8080, BACKEND),
            RejectReason::UnknownCluster,
        ),
        (
            "cluster-a",
            header(
                "cluster-b",
                "default/backend",
                8080,
                "spiffe://cluster-b.mesh/ns/default/sa/evil",
            ),
            RejectReason::NoHealthyEndpoint,
        ),
        (
            "cluster-a",
            header("cluster-b", "default/empty", 80, BACKEND),
            RejectReason::NoHealthyEndpoint,
        ),
    ];
    for (peer, h, want) in cases {
        let plan = route_inbound(&c, peer, &h, |_| true, 0);
        assert_eq!(reason(&plan), Some(want), "{peer} {h:?}");
        let InboundPlan::Reject(r) = plan else {
            unreachable!()
        };
        assert!(!r.detail.is_empty() && r.detail.len() <= 255);
    }
    // The private export is reachable by the peer it is exported to.
    let h = header(
        "cluster-b",
        "default/private",
        8080,
        "spiffe://cluster-b.mesh/ns/default/sa/private",
    );
    assert_eq!(
        reason(&route_inbound(&c, "cluster-c", &h, |_| true, 0)),
        None
    );
}

#[test]
fn outbound_plans() {
    let c = config();
    let a_id = "spiffe://cluster-a.mesh/ns/default/sa/web";
    assert_eq!(
        route_outbound(&c, &header("cluster-a", "default/web", 80, a_id)),
        OutboundPlan::Forward {
            peer: "cluster-a".into(),
            next_hop: HopIdentity::Exact(id(
                "spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway"
            )),
            final_hop: id(a_id),
        }
    );
    let c_id = "spiffe://cluster-c.mesh/ns/default/sa/web";
    assert_eq!(
        route_outbound(&c, &header("cluster-c", "default/web", 80, c_id)),
        OutboundPlan::Forward {
            peer: "cluster-c".into(),
            next_hop: HopIdentity::MemberOf(TrustDomain::parse("cluster-c.mesh").unwrap()),
            final_hop: id(c_id),
        }
    );
    let rejected = |h: OpenHeader| match route_outbound(&c, &h) {
        OutboundPlan::Reject(r) => Some(r.reason),
        OutboundPlan::Forward { .. } => None,
    };
    assert_eq!(
        rejected(header("cluster-z", "default/web", 80, a_id)),
        Some(RejectReason::UnknownCluster)
    );
    assert_eq!(
        rejected(header("cluster-b", "default/web", 80, BACKEND)),
        Some(RejectReason::UnknownCluster)
    );
    // The final hop must live in the target cluster's trust domain.
    assert_eq!(
        rejected(header("cluster-a", "default/web", 80, c_id)),
        Some(RejectReason::Unauthorized)
    );
}

#[test]
fn long_details_are_cut_on_a_char_boundary() {
    let r = Rejection::new(RejectReason::Other(9), "é".repeat(200));
    assert!(r.detail.len() <= 255);
    assert!(r.detail.chars().all(|c| c == 'é'));
}
