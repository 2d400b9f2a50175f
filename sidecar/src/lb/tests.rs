//! Invariants of [`Levels::order`] over many generated services (a small
//! deterministic generator: no proptest dependency in this crate).

use std::collections::HashSet;
use std::net::SocketAddr;

use mesh_failover::Health;
use trust_bundle::SpiffeId;

use super::*;
use crate::config::{FailoverSettings, Locality, ServiceKey};

/// Hosts listed here are down.
struct Down(HashSet<SocketAddr>, HashSet<String>);

impl HealthView for Down {
    fn endpoint_up(&self, _s: &Service, a: SocketAddr) -> bool {
        !self.0.contains(&a)
    }

    fn remote_up(&self, _s: &Service, r: &Remote) -> bool {
        !self.1.contains(&r.cluster)
    }
}

fn key(h: &Host<'_>) -> String {
    match h {
        Host::Endpoint(e) => e.address.to_string(),
        Host::Remote(r) => r.cluster.clone(),
    }
}

fn generate(seed: u64) -> (Service, Down) {
    let mut r = seed;
    let mut next = |n: u64| {
        r = splitmix64(r);
        r % n
    };
    let id = SpiffeId::parse("spiffe://a.test/ns/x/sa/y").unwrap();
    let zones = ["z1", "z2", "z3"];
    let mut down = Down(HashSet::new(), HashSet::new());
    let endpoints = (0..next(6))
        .map(|i| {
            let address = SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
            if next(3) == 0 {
                down.0.insert(address);
            }
            Endpoint {
                address,
                spiffe_id: id.clone(),
                locality: Some(Locality {
                    region: Some("r".into()),
                    zone: Some(zones[next(3) as usize].into()),
                }),
                priority: next(3) as u32,
                weight: 1 + next(3) as u32,
                healthy: next(5) != 0,
            }
        })
        .collect();
    let remote = (0..next(4))
        .map(|i| {
            let cluster = format!("c{i}");
            if next(4) == 0 {
                down.1.insert(cluster.clone());
            }
            let total = next(5) as u32;
            Remote {
                cluster,
                spiffe_id: id.clone(),
                priority: next(4) as u32,
                weight: 1 + next(3) as u32,
                health: Health {
                    healthy: next(u64::from(total) + 1) as u32,
                    total,
                },
            }
        })
        .collect();
    let failover = FailoverSettings {
        panic_threshold_percent: [0, 50, 100][next(3) as usize],
        ..FailoverSettings::default()
    };
    let svc = Service {
        service: ServiceKey::parse("x/y").unwrap(),
        port: 80,
        endpoints,
        remote,
        failover,
        resilience: crate::resilience::Resilience::default(),
    };
    (svc, down)
}

#[test]
fn every_host_is_listed_once_and_eligible_hosts_come_first() {
    for seed in 0..3_000u64 {
        let (svc, down) = generate(seed);
        let levels = Levels::new(&svc, &down, true, |_| true);
        let all = svc.endpoints.len() + svc.remote.len();
        let load = levels.load();
        assert_eq!(levels.levels.len(), load.percent.len(), "seed {seed}");
        let sum: u32 = load.percent.iter().sum();
        assert!(sum == 100 || sum == 0, "seed {seed}: {load:?}");
        // Which hosts are eligible: up, or in a level in panic.
        let mut eligible = HashSet::new();
        for (li, level) in levels.levels.iter().enumerate() {
            for g in &level.localities {
                for (h, up) in &g.hosts {
                    if *up || load.panic[li] {
                        eligible.insert(key(h));
                    }
                }
            }
        }
        for rotation in [0usize, 1, 7, 1 << 20] {
            let order = levels.order(rotation);
            let keys: Vec<String> = order.hosts.iter().map(key).collect();
            assert_eq!(keys.len(), all, "seed {seed}: {keys:?}");
            assert_eq!(
                keys.iter().collect::<HashSet<_>>().len(),
                all,
                "seed {seed}"
            );
            // Eligible hosts first, then the rest.
            let n = eligible.len();
            assert!(
                keys[..n].iter().all(|k| eligible.contains(k)),
                "seed {seed}: {keys:?}"
            );
            // A level with load never starts behind one without when the
            // first pick exists.
            if sum > 0 {
                assert!(eligible.contains(&keys[0]), "seed {seed}: {keys:?}");
            }
        }
    }
}

#[test]
fn splitmix_spreads_consecutive_counters() {
    let picks: Vec<usize> = (0..10_000u64)
        .filter_map(|i| pick_weighted(&[1, 1, 1, 1], splitmix64(i)))
        .collect();
    for b in 0..4 {
        let n = picks.iter().filter(|p| **p == b).count();
        assert!((2_300..2_700).contains(&n), "bucket {b}: {n}");
    }
}
