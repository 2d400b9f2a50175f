use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use super::*;
use crate::config::{Config, Remote, Service};

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

/// Endpoints (by port) and remote clusters listed here are down.
struct Sick(HashSet<SocketAddr>, Vec<String>);

impl HealthView for Sick {
    fn endpoint_up(&self, _service: &Service, a: SocketAddr) -> bool {
        !self.0.contains(&a)
    }

    fn remote_up(&self, _service: &Service, r: &Remote) -> bool {
        !self.1.contains(&r.cluster)
    }
}

fn sick(ports: &[u16]) -> Sick {
    Sick(ports.iter().map(|p| addr(*p)).collect(), Vec::new())
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
    // Expectations changed with priority load (issue 6): one sick local of
    // three leaves P0 at 93% (2/3 × 1.4), so 7% of first picks spill to
    // cluster-b; the sick endpoint is still last.
    let c = config();
    let t = target("default/backend", 8080, None);
    let mut spilled = 0;
    for rotation in 0..200 {
        let p = plan(&c, &t, &sick(&[1002]), rotation).unwrap();
        let s = shape(&p);
        assert_eq!(s.last().map(String::as_str), Some("d:1002"), "{s:?}");
        if s[0] == "g:cluster-b" {
            spilled += 1;
            assert_eq!(s[3..], ["g:cluster-c", "d:1002"], "{s:?}");
        } else {
            assert_eq!(s[2..], ["g:cluster-b", "g:cluster-c", "d:1002"], "{s:?}");
        }
    }
    assert!(
        (4..=24).contains(&spilled),
        "{spilled} of 200 spilled, want ~7%"
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
    // Expectations changed with priority load (issue 6): the first
    // candidate may now be cluster-b when locals are sick (spill); sick
    // locals still come after every healthy host.
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
        for rotation in 0..12 {
            let p = plan(&c, &t, &sick(&down), rotation).unwrap();
            let s = shape(&p);
            assert_eq!(s.len(), 5, "{s:?}");
            let unique: HashSet<_> = s.iter().collect();
            assert_eq!(unique.len(), 5, "{s:?}");
            let is_down = |c: &String| down.iter().any(|d| *c == format!("d:{d}"));
            let healthy = 5 - down.len();
            assert!(s[..healthy].iter().all(|c| !is_down(c)), "{s:?}");
            assert!(s[healthy..].iter().all(is_down), "{s:?}");
            assert!(s[0].starts_with("d:") || s[0] == "g:cluster-b", "{s:?}");
            let gateways: Vec<_> = s.iter().filter(|c| c.starts_with("g:")).collect();
            assert_eq!(gateways, ["g:cluster-b", "g:cluster-c"], "{s:?}");
        }
    }
}

/// Share of first candidates per shape entry over `n` rotations, percent.
fn first_pick_percent(c: &Config, t: &Target, h: &impl HealthView, n: usize) -> Vec<(String, f64)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for rotation in 0..n {
        let p = plan(c, t, h, rotation).unwrap();
        *counts.entry(shape(&p)[0].clone()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, v)| (k, v as f64 * 100.0 / n as f64))
        .collect()
}

fn share(picks: &[(String, f64)], prefix: &str) -> f64 {
    picks
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

const TWO_LEVELS: &str = r#"
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
      - { address: "127.0.0.1:1004", spiffe_id: "spiffe://cluster-a.mesh/ns/default/sa/backend" }
    remote:
      - { cluster: cluster-b, spiffe_id: "spiffe://cluster-b.mesh/ns/default/sa/backend" }
      - { cluster: cluster-c, spiffe_id: "spiffe://cluster-c.mesh/ns/default/sa/backend" }
"#;

#[test]
fn golden_priority_spill_through_the_plan_pick_distribution() {
    // FAILOVER-REFERENCE §1: P0 50% healthy, P1 100% → 70/30; P0 25% →
    // 35/65; P0 0% → 0/100; P0 75% (≥ 72%) → 100/0.
    let c = Config::from_yaml(TWO_LEVELS, Path::new(".")).unwrap();
    let t = target("default/backend", 8080, None);
    let n = 20_000;
    for (down, want_local) in [
        (&[1001u16, 1002][..], 70.0),
        (&[1001, 1002, 1003][..], 35.0),
        (&[1001, 1002, 1003, 1004][..], 0.0),
        (&[1001][..], 100.0),
        (&[][..], 100.0),
    ] {
        let picks = first_pick_percent(&c, &t, &sick(down), n);
        let local = share(&picks, "d:");
        assert!(
            (local - want_local).abs() < 1.5,
            "down {down:?}: {local:.1}% local, want {want_local}% ({picks:?})"
        );
        assert_eq!(share(&picks, "g:cluster-c"), 0.0, "P2 untouched: {picks:?}");
        // Sick hosts are never picked first outside panic.
        for d in down {
            assert_eq!(share(&picks, &format!("d:{d}")), 0.0, "{picks:?}");
        }
    }
    // Healthy locals share P0's part evenly (round robin).
    let picks = first_pick_percent(&c, &t, &sick(&[1001, 1002]), n);
    let (a, b) = (share(&picks, "d:1003"), share(&picks, "d:1004"));
    assert!((a - b).abs() < 2.0, "{picks:?}");
}

#[test]
fn golden_three_levels_and_remote_marks() {
    // FAILOVER-REFERENCE §1: 25% / 25% / 100% → 35/35/30, with P1 and P2
    // remote clusters whose health is peer-reported.
    let mut c = Config::from_yaml(TWO_LEVELS, Path::new(".")).unwrap();
    c.services[0].remote[0].health = mesh_failover::Health {
        healthy: 1,
        total: 4,
    };
    let t = target("default/backend", 8080, None);
    let picks = first_pick_percent(&c, &t, &sick(&[1001, 1002, 1003]), 20_000);
    for (prefix, want) in [("d:", 35.0), ("g:cluster-b", 35.0), ("g:cluster-c", 30.0)] {
        let got = share(&picks, prefix);
        assert!((got - want).abs() < 1.5, "{prefix}: {got:.1}% ({picks:?})");
    }
    // A mark on cluster-b (tunnel reject) takes its share at once: P0 35,
    // P2 65.
    let mut h = sick(&[1001, 1002, 1003]);
    h.1.push("cluster-b".into());
    let picks = first_pick_percent(&c, &t, &h, 20_000);
    assert_eq!(share(&picks, "g:cluster-b"), 0.0, "{picks:?}");
    assert!((share(&picks, "d:") - 35.0).abs() < 1.5, "{picks:?}");
    let p = plan(&c, &t, &h, 0).unwrap();
    assert_eq!(
        shape(&p).last().map(String::as_str),
        Some("g:cluster-b"),
        "marked: last resort"
    );
}

#[test]
fn locality_weights_split_a_level() {
    // FAILOVER-REFERENCE §2: X weight 1, Y weight 2 in one level: 33/67;
    // X at 50% healthy: 26/74.
    let mut c = Config::from_yaml(TWO_LEVELS, Path::new(".")).unwrap();
    let svc = &mut c.services[0];
    svc.endpoints.clear();
    svc.remote[0].priority = 0;
    svc.remote[1].priority = 0;
    svc.remote[1].weight = 2;
    let t = target("default/backend", 8080, None);
    let picks = first_pick_percent(&c, &t, &AllHealthy, 20_000);
    assert!(
        (share(&picks, "g:cluster-b") - 33.3).abs() < 1.5,
        "{picks:?}"
    );
    c.services[0].remote[0].health = mesh_failover::Health {
        healthy: 1,
        total: 2,
    };
    let picks = first_pick_percent(&c, &t, &AllHealthy, 20_000);
    assert!(
        (share(&picks, "g:cluster-b") - 26.0).abs() < 1.5,
        "{picks:?}"
    );
    // The rest of the level follows the pick: the other locality is second.
    let p = plan(&c, &t, &AllHealthy, 3).unwrap();
    assert_eq!(p.candidates.len(), 2);
}

#[test]
fn panic_levels_balance_over_all_their_hosts() {
    // FAILOVER-REFERENCE §3: P0 25% and P1 25% → 50/50, both in panic, so
    // P0's first picks spread over all four endpoints, sick ones included.
    let mut c = Config::from_yaml(TWO_LEVELS, Path::new(".")).unwrap();
    c.services[0].remote.truncate(1);
    c.services[0].remote[0].health = mesh_failover::Health {
        healthy: 1,
        total: 4,
    };
    let t = target("default/backend", 8080, None);
    let picks = first_pick_percent(&c, &t, &sick(&[1001, 1002, 1003]), 20_000);
    assert!((share(&picks, "g:") - 50.0).abs() < 1.5, "{picks:?}");
    for port in [1001, 1002, 1003, 1004] {
        let got = share(&picks, &format!("d:{port}"));
        assert!((got - 12.5).abs() < 1.5, "d:{port}: {got:.1}% ({picks:?})");
    }
    // Threshold 0 disables panic: sick hosts are never first.
    c.services[0].failover.panic_threshold_percent = 0;
    let picks = first_pick_percent(&c, &t, &sick(&[1001, 1002, 1003]), 2_000);
    for port in [1001, 1002, 1003] {
        assert_eq!(share(&picks, &format!("d:{port}")), 0.0, "{picks:?}");
    }
}

#[test]
fn a_retry_never_starts_on_the_first_host() {
    let c = Config::from_yaml(TWO_LEVELS, Path::new(".")).unwrap();
    let t = target("default/backend", 8080, None);
    for down in [&[][..], &[1001u16, 1002][..], &[1001, 1002, 1003, 1004][..]] {
        for rotation in 0..500 {
            let p = plan(&c, &t, &sick(down), rotation).unwrap();
            let s = shape(&p);
            assert_eq!(s.len(), 6, "{s:?}");
            assert_eq!(s.iter().collect::<HashSet<_>>().len(), 6, "{s:?}");
        }
    }
}
