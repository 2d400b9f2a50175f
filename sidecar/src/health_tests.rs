use std::path::Path;

use super::*;
use crate::plan::plan;

const CONFIG: &str = r#"
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
    remote:
      - { cluster: cluster-b, spiffe_id: "spiffe://cluster-b.mesh/ns/default/sa/backend" }
      - { cluster: cluster-c, spiffe_id: "spiffe://cluster-c.mesh/ns/default/sa/backend" }
    failover:
      outlier_detection:
        consecutive_5xx: 3
        base_ejection_time_ms: 2000
        max_ejection_percent: 50
"#;

const BASE: Duration = Duration::from_millis(2000);

fn config() -> Config {
    Config::from_yaml(CONFIG, Path::new(".")).unwrap()
}

fn target() -> Target {
    Target {
        service: ServiceKey::parse("default/backend").unwrap(),
        port: 8080,
        cluster: None,
    }
}

fn state(c: &Config) -> (HealthState, Family<OutlierLabels, Counter>) {
    let family = Family::<OutlierLabels, Counter>::default();
    let s = HealthState::new(family.clone());
    s.sync(c);
    (s, family)
}

fn ejections(f: &Family<OutlierLabels, Counter>) -> u64 {
    f.get_or_create(&OutlierLabels {
        service: "default/backend".into(),
    })
    .get()
}

fn direct(port: u16) -> Candidate {
    Candidate::Direct {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        identity: trust_bundle::SpiffeId::parse("spiffe://cluster-a.mesh/ns/default/sa/backend")
            .unwrap(),
    }
}

fn via(c: &Config, cluster: &str) -> Candidate {
    let p = plan(
        c,
        &Target {
            cluster: Some(cluster.into()),
            ..target()
        },
        &crate::plan::AllHealthy,
        0,
    )
    .unwrap();
    p.candidates[0].clone()
}

/// The first candidate's shape over the plan (`d:<port>` / `g:<cluster>`).
fn first(c: &Config, s: &HealthState, now: Instant, rotation: usize) -> String {
    match &plan(c, &target(), &s.at(now), rotation).unwrap().candidates[0] {
        Candidate::Direct { addr, .. } => format!("d:{}", addr.port()),
        Candidate::ViaGateway { cluster, .. } => format!("g:{cluster}"),
    }
}

#[test]
fn a_connect_failure_marks_the_endpoint_down_at_once_until_base_ejection_time() {
    let c = config();
    let (s, family) = state(&c);
    let svc = &c.services[0];
    let now = Instant::now();
    let a = SocketAddr::from(([127, 0, 0, 1], 1001));
    s.report(&target(), &direct(1001), Outcome::ConnectFailed, now);
    assert!(!s.at(now).endpoint_up(svc, a));
    assert!(!s
        .at(now + BASE - Duration::from_millis(1))
        .endpoint_up(svc, a));
    assert!(s.at(now + BASE).endpoint_up(svc, a));
    assert_eq!(ejections(&family), 1);
    // Outside the max-ejection cap: the second endpoint goes down too.
    s.report(&target(), &direct(1002), Outcome::ConnectFailed, now);
    s.report(&target(), &direct(1001), Outcome::ConnectFailed, now);
    let view = s.at(now);
    assert!(!view.endpoint_up(svc, a));
    assert!(!view.endpoint_up(svc, SocketAddr::from(([127, 0, 0, 1], 1002))));
    // Both locals down: every plan starts with cluster-b.
    for rotation in 0..20 {
        assert_eq!(first(&c, &s, now, rotation), "g:cluster-b");
    }
    // A success clears the mark.
    s.report(&target(), &direct(1001), Outcome::Status(200), now);
    assert!(s.at(now).endpoint_up(svc, a));
}

#[test]
fn tunnel_rejects_and_open_timeouts_mark_the_remote_cluster_down() {
    let mut c = config();
    c.services[0].endpoints.clear();
    let (s, family) = state(&c);
    let now = Instant::now();
    let b = via(&c, "cluster-b");
    assert_eq!(first(&c, &s, now, 0), "g:cluster-b");

    s.report(
        &target(),
        &b,
        Outcome::Rejected(RejectReason::Unauthorized),
        now,
    );
    assert_eq!(
        first(&c, &s, now, 0),
        "g:cluster-b",
        "unauthorized says nothing of health"
    );
    assert_eq!(ejections(&family), 0);

    s.report(
        &target(),
        &b,
        Outcome::Rejected(RejectReason::NoHealthyEndpoint),
        now,
    );
    assert_eq!(first(&c, &s, now, 0), "g:cluster-c");
    assert_eq!(ejections(&family), 1);
    let status = s.status(&c, now);
    assert_eq!(status[0].remote_marks, ["cluster-b"]);
    assert_eq!(status[0].ejected, ["cluster-b"]);
    assert_eq!(status[0].priority_load, [0, 100]);
    assert_eq!(first(&c, &s, now + BASE, 0), "g:cluster-b", "the mark ends");

    // An open timeout marks it too; new EDS counts clear the mark.
    s.report(&target(), &b, Outcome::TunnelTimeout, now);
    assert_eq!(first(&c, &s, now, 0), "g:cluster-c");
    s.sync(&c);
    assert_eq!(
        first(&c, &s, now, 0),
        "g:cluster-c",
        "same counts: still marked"
    );
    c.services[0].remote[0].health = Health {
        healthy: 2,
        total: 2,
    };
    s.sync(&c);
    assert_eq!(
        first(&c, &s, now, 0),
        "g:cluster-b",
        "new counts: the mark is gone"
    );
}

#[test]
fn consecutive_5xx_eject_through_the_detector_within_the_cap() {
    let c = config();
    let (s, family) = state(&c);
    let svc = &c.services[0];
    let now = Instant::now();
    let a = SocketAddr::from(([127, 0, 0, 1], 1001));
    for _ in 0..2 {
        s.report(&target(), &direct(1001), Outcome::Status(500), now);
    }
    assert!(s.at(now).endpoint_up(svc, a), "two of three");
    s.report(&target(), &direct(1001), Outcome::Status(500), now);
    assert!(!s.at(now).endpoint_up(svc, a), "third 5xx ejects");
    assert_eq!(ejections(&family), 1);
    assert_eq!(s.status(&c, now)[0].ejected, ["127.0.0.1:1001"]);
    // 4 hosts, 50%: a second host may go, a third not.
    for _ in 0..3 {
        s.report(&target(), &direct(1002), Outcome::Status(503), now);
    }
    let b = via(&c, "cluster-b");
    for _ in 0..3 {
        s.report(&target(), &b, Outcome::Status(502), now);
    }
    let view = s.at(now);
    assert!(!view.endpoint_up(svc, SocketAddr::from(([127, 0, 0, 1], 1002))));
    assert!(view.remote_up(svc, &svc.remote[0]), "over the 50% cap");
    assert_eq!(ejections(&family), 2);
    // The ejection ends after the base time; the timer work is due then.
    let due = s.poll_timeout().unwrap();
    assert!(due <= now + Duration::from_secs(10), "{due:?}");
    s.handle_interval(now + BASE);
    assert!(s.at(now + BASE).endpoint_up(svc, a));
}

#[test]
fn errors_map_onto_outcomes() {
    let c = config();
    let d = direct(1001);
    let g = via(&c, "cluster-b");
    let refused = || ProxyError::Connect {
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    };
    assert_eq!(
        Outcome::of_error(&d, &refused()),
        Some(Outcome::ConnectFailed)
    );
    assert_eq!(
        Outcome::of_error(&d, &ProxyError::ConnectTimeout),
        Some(Outcome::ConnectFailed)
    );
    assert_eq!(
        Outcome::of_error(&g, &ProxyError::ConnectTimeout),
        Some(Outcome::TunnelTimeout)
    );
    let rejected = ProxyError::Rejected {
        cluster: "cluster-b".into(),
        reason: RejectReason::PeerUnavailable,
        detail: String::new(),
    };
    assert_eq!(
        Outcome::of_error(&g, &rejected),
        Some(Outcome::Rejected(RejectReason::PeerUnavailable))
    );
    assert_eq!(Outcome::of_error(&d, &ProxyError::RequestTimeout), None);
    assert_eq!(Outcome::of_error(&d, &ProxyError::Unsupported("x")), None);
}

#[test]
fn sync_forgets_removed_services_and_hosts() {
    let mut c = config();
    let (s, _) = state(&c);
    let now = Instant::now();
    s.report(&target(), &direct(1001), Outcome::ConnectFailed, now);
    assert_eq!(s.status(&c, now)[0].ejected, ["127.0.0.1:1001"]);
    c.services[0].endpoints.remove(0);
    s.sync(&c);
    assert!(s.status(&c, now)[0].ejected.is_empty());
    c.services.clear();
    s.sync(&c);
    // Reports for an unknown service are ignored.
    s.report(&target(), &direct(1002), Outcome::ConnectFailed, now);
    assert!(s.poll_timeout().is_none());
}
