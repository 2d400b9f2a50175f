use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use super::*;
use crate::config::Config;

const BASE: &str = r#"
cluster: cluster-a
identity:
  spiffe_id: spiffe://cluster-a.mesh/ns/default/sa/frontend
  ca: { cert: ca.pem, key: ca-key.pem }
  bundles: bundles.json
admin: 127.0.0.1:15000
gateway:
  address: 127.0.0.1:15443
  spiffe_id: spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway
services:
  - service: default/backend
    port: 8080
    endpoints:
      - { address: "127.0.0.1:1001", spiffe_id: "spiffe://cluster-a.mesh/ns/default/sa/backend" }
      - { address: "127.0.0.1:1002", spiffe_id: "spiffe://cluster-a.mesh/ns/default/sa/backend" }
      - { address: "127.0.0.1:1003", spiffe_id: "spiffe://cluster-a.mesh/ns/default/sa/backend" }
    remote:
      - { cluster: cluster-b, spiffe_id: "spiffe://cluster-b.mesh/ns/default/sa/backend" }
      - { cluster: cluster-c, spiffe_id: "spiffe://cluster-c.mesh/ns/default/sa/backend" }
  - service: default/local-only
    port: 80
    endpoints:
      - { address: "127.0.0.1:2001", spiffe_id: "spiffe://cluster-a.mesh/ns/default/sa/lo" }
  - service: default/remote-only
    port: 80
    remote:
      - { cluster: cluster-b, spiffe_id: "spiffe://cluster-b.mesh/ns/default/sa/ro" }
  - service: default/empty
    port: 80
"#;

fn config() -> Config {
    Config::from_yaml(BASE, Path::new(".")).unwrap()
}

fn target(svc: &str, port: u16, cluster: Option<&str>) -> Target {
    Target {
        service: ServiceKey::parse(svc).unwrap(),
        port,
        cluster: cluster.map(str::to_owned),
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Endpoints listed here are unhealthy.
struct Sick(HashSet<SocketAddr>);

impl HealthView for Sick {
    fn is_healthy(&self, a: SocketAddr) -> bool {
        !self.0.contains(&a)
    }
}

fn sick(ports: &[u16]) -> Sick {
    Sick(ports.iter().map(|p| addr(*p)).collect())
}

/// A compact picture of a plan: `d:<port>` or `g:<cluster>`.
fn shape(p: &Plan) -> Vec<String> {
    p.candidates
        .iter()
        .map(|c| match c {
            Candidate::Direct { addr, .. } => format!("d:{}", addr.port()),
            Candidate::ViaGateway { cluster, .. } => format!("g:{cluster}"),
        })
        .collect()
}

#[test]
fn healthy_locals_first_in_round_robin_then_remotes_in_order() {
    let c = config();
    let t = target("default/backend", 8080, None);
    let p0 = plan(&c, &t, &AllHealthy, 0).unwrap();
    assert_eq!(
        shape(&p0),
        ["d:1001", "d:1002", "d:1003", "g:cluster-b", "g:cluster-c"]
    );
    let p1 = plan(&c, &t, &AllHealthy, 1).unwrap();
    assert_eq!(
        shape(&p1),
        ["d:1002", "d:1003", "d:1001", "g:cluster-b", "g:cluster-c"]
    );
    let p5 = plan(&c, &t, &AllHealthy, 5).unwrap();
    assert_eq!(
        shape(&p5),
        ["d:1003", "d:1001", "d:1002", "g:cluster-b", "g:cluster-c"]
    );
    let wrap = plan(&c, &t, &AllHealthy, usize::MAX).unwrap();
    assert_eq!(wrap.candidates.len(), 5);
}

#[test]
fn unhealthy_locals_go_after_remotes_as_a_last_resort() {
    let c = config();
    let t = target("default/backend", 8080, None);
    let p = plan(&c, &t, &sick(&[1002]), 0).unwrap();
    assert_eq!(
        shape(&p),
        ["d:1001", "d:1003", "g:cluster-b", "g:cluster-c", "d:1002"]
    );
    let p = plan(&c, &t, &sick(&[1001, 1002, 1003]), 0).unwrap();
    assert_eq!(
        shape(&p),
        ["g:cluster-b", "g:cluster-c", "d:1001", "d:1002", "d:1003"]
    );
    let t = target("default/local-only", 80, None);
    let p = plan(&c, &t, &sick(&[2001]), 0).unwrap();
    assert_eq!(shape(&p), ["d:2001"], "a sick endpoint beats a certain 503");
}

#[test]
fn direct_candidates_name_one_identity_for_both_hops() {
    let c = config();
    let p = plan(&c, &target("default/backend", 8080, None), &AllHealthy, 0).unwrap();
    let d = &p.candidates[0];
    assert_eq!(d.next_hop_identity(), d.final_identity());
    assert_eq!(
        d.final_identity().as_str(),
        "spiffe://cluster-a.mesh/ns/default/sa/backend"
    );
}

#[test]
fn gateway_candidates_name_the_gateway_as_next_hop_and_the_workload_as_final() {
    let c = config();
    let p = plan(&c, &target("default/remote-only", 80, None), &AllHealthy, 0).unwrap();
    assert_eq!(p.candidates.len(), 1);
    let Candidate::ViaGateway {
        gateway_addr,
        gateway_identity,
        cluster,
        service,
        port,
        final_identity,
    } = &p.candidates[0]
    else {
        panic!("expected a gateway candidate");
    };
    assert_eq!(*gateway_addr, addr(15443));
    assert_eq!(
        gateway_identity.as_str(),
        "spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway"
    );
    assert_eq!(cluster, "cluster-b");
    assert_eq!(service.to_string(), "default/remote-only");
    assert_eq!(*port, 80);
    assert_eq!(
        final_identity.as_str(),
        "spiffe://cluster-b.mesh/ns/default/sa/ro"
    );
    assert_eq!(p.candidates[0].next_hop_identity(), gateway_identity);
    assert_eq!(p.candidates[0].final_identity(), final_identity);
}

#[test]
fn a_pin_to_our_cluster_keeps_only_local_endpoints() {
    let c = config();
    let t = target("default/backend", 8080, Some("cluster-a"));
    let p = plan(&c, &t, &AllHealthy, 0).unwrap();
    assert_eq!(shape(&p), ["d:1001", "d:1002", "d:1003"]);
    let p = plan(&c, &t, &sick(&[1001, 1002, 1003]), 0).unwrap();
    assert_eq!(shape(&p), ["d:1001", "d:1002", "d:1003"]);
    let t = target("default/remote-only", 80, Some("cluster-a"));
    assert!(matches!(
        plan(&c, &t, &AllHealthy, 0),
        Err(PlanError::NoEndpoint { .. })
    ));
}

#[test]
fn a_pin_to_a_remote_cluster_keeps_only_that_cluster() {
    let c = config();
    let t = target("default/backend", 8080, Some("cluster-c"));
    let p = plan(&c, &t, &AllHealthy, 0).unwrap();
    assert_eq!(shape(&p), ["g:cluster-c"]);
    let t = target("default/local-only", 80, Some("cluster-b"));
    assert_eq!(
        plan(&c, &t, &AllHealthy, 0),
        Err(PlanError::ClusterUnavailable {
            cluster: "cluster-b".into(),
            service: ServiceKey::parse("default/local-only").unwrap(),
        })
    );
}

#[test]
fn unknown_service_port_and_empty_services_are_errors() {
    let c = config();
    assert!(matches!(
        plan(&c, &target("default/nope", 80, None), &AllHealthy, 0),
        Err(PlanError::UnknownService { port: 80, .. })
    ));
    assert!(matches!(
        plan(&c, &target("default/backend", 9999, None), &AllHealthy, 0),
        Err(PlanError::UnknownService { port: 9999, .. })
    ));
    assert!(matches!(
        plan(&c, &target("default/empty", 80, None), &AllHealthy, 0),
        Err(PlanError::NoEndpoint { .. })
    ));
}

#[test]
fn without_a_gateway_remote_entries_are_skipped() {
    // Validation refuses `remote` without `gateway`; a live source might not,
    // and the plan must still never route to a gateway it does not know.
    let mut c = config();
    c.gateway = None;
    let p = plan(&c, &target("default/backend", 8080, None), &AllHealthy, 0).unwrap();
    assert_eq!(shape(&p), ["d:1001", "d:1002", "d:1003"]);
    assert!(matches!(
        plan(&c, &target("default/remote-only", 80, None), &AllHealthy, 0),
        Err(PlanError::NoEndpoint { .. })
    ));
}

#[test]
fn every_rotation_and_health_combination_keeps_every_candidate_once() {
    let c = config();
    let t = target("default/backend", 8080, None);
    let ports = [1001u16, 1002, 1003];
    for mask in 0..8u8 {
        let down: Vec<u16> = ports
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, p)| *p)
            .collect();
        for rotation in 0..6 {
            let p = plan(&c, &t, &sick(&down), rotation).unwrap();
            let s = shape(&p);
            assert_eq!(s.len(), 5, "{s:?}");
            let unique: HashSet<_> = s.iter().collect();
            assert_eq!(unique.len(), 5, "{s:?}");
            // Healthy locals, then gateways, then sick locals.
            let healthy = ports.len() - down.len();
            for (i, c) in s.iter().enumerate() {
                if i < healthy {
                    assert!(c.starts_with("d:") && !down.iter().any(|d| *c == format!("d:{d}")));
                } else if i < healthy + 2 {
                    assert!(c.starts_with("g:"), "{s:?}");
                } else {
                    assert!(down.iter().any(|d| *c == format!("d:{d}")), "{s:?}");
                }
            }
        }
    }
}
