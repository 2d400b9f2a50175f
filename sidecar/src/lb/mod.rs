//! Locality-aware load balancing over one service's hosts, sans-IO (STYLE.md
//! habits 1 and 4): the hosts of a [`Service`] grouped into priority levels
//! and localities with their health as a [`HealthView`] sees it, and the
//! choice of the first host (priority load → locality share → endpoint) with
//! the order of the rest. [`crate::plan::plan`] turns the order into
//! candidates; the admin dump and the metrics report [`Levels::load`].
//!
//! Sources: FAILOVER-REFERENCE §1 (priority load), §2 (locality weights),
//! §3 (panic); the arithmetic itself is `mesh_failover`'s.
//!
//! Grouping: a level holds every host whose priority is that level's;
//! priorities are compacted (a level nobody occupies, e.g. after a
//! `cluster:` pin, is skipped rather than counted as 0% healthy). Inside a
//! level, local endpoints form one locality per (region, zone), weighted by
//! the largest `weight` among them, in order of first appearance; each
//! remote cluster is a locality of its own with its peer-reported counts,
//! after the local ones.

use std::net::SocketAddr;

use mesh_failover::{locality_shares, pick_weighted, priority_load, Health, PriorityLoad};

use crate::config::{Endpoint, Remote, Service};

/// Whether hosts of a service may take traffic, as passive health sees it
/// (outlier ejections, failfast marks, remote marks).
pub trait HealthView {
    /// `false` while the local endpoint at `addr` of `service` is ejected
    /// or failing fast.
    fn endpoint_up(&self, service: &Service, addr: SocketAddr) -> bool;
    /// `false` while the remote cluster entry of `service` is marked down
    /// (tunnel reject or open timeout) or ejected.
    fn remote_up(&self, service: &Service, remote: &Remote) -> bool;
}

/// Every host up (tests, and no health information).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllHealthy;

/// One host of a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A local endpoint.
    Endpoint(&'a Endpoint),
    /// A remote cluster, reached through the gateway.
    Remote(&'a Remote),
}

/// One locality of a level.
#[derive(Debug, Clone)]
pub struct LocalityHosts<'a> {
    /// Its weight (≥ 1).
    pub weight: u32,
    /// Its health: host counts (local), or the peer's counts (remote; 0
    /// healthy while marked down).
    pub health: Health,
    /// Its hosts, each with whether it is up now.
    pub hosts: Vec<(Host<'a>, bool)>,
}

/// One priority level.
#[derive(Debug, Clone)]
pub struct Level<'a> {
    /// The priority the hosts carry (levels are compacted; this is the
    /// source's number).
    pub priority: u32,
    /// Its localities.
    pub localities: Vec<LocalityHosts<'a>>,
}

/// The levels of a service, highest priority first.
#[derive(Debug, Clone)]
pub struct Levels<'a> {
    /// The levels.
    pub levels: Vec<Level<'a>>,
    overprovisioning_factor: u32,
    panic_threshold_percent: u32,
}

/// Hosts in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order<'a> {
    /// The hosts: the chosen one first, then the fallback order.
    pub hosts: Vec<Host<'a>>,
}

impl<'a> Levels<'a> {
    /// Groups `service`'s hosts: local endpoints if `local`, remote clusters
    /// accepted by `remote` (e.g. a pin, or none without a gateway).
    pub fn new(
        service: &'a Service,
        health: &impl HealthView,
        local: bool,
        remote: impl Fn(&Remote) -> bool,
    ) -> Levels<'a> {
        let mut levels: Vec<Level<'a>> = Vec::new();
        // Local localities: (priority, region, zone) in order of appearance.
        let mut keys: Vec<(u32, Option<&str>, Option<&str>)> = Vec::new();
        let mut groups: Vec<LocalityHosts<'a>> = Vec::new();
        if local {
            for e in &service.endpoints {
                let loc = e.locality.as_ref();
                let key = (
                    e.priority,
                    loc.and_then(|l| l.region.as_deref()),
                    loc.and_then(|l| l.zone.as_deref()),
                );
                let up = e.healthy && health.endpoint_up(service, e.address);
                let idx = match keys.iter().position(|k| *k == key) {
                    Some(i) => i,
                    None => {
                        keys.push(key);
                        groups.push(LocalityHosts {
                            weight: 0,
                            health: Health::default(),
                            hosts: Vec::new(),
                        });
                        groups.len() - 1
                    }
                };
                let g = &mut groups[idx];
                g.weight = g.weight.max(e.weight.max(1));
                g.health.total += 1;
                g.health.healthy += u32::from(up);
                g.hosts.push((Host::Endpoint(e), up));
            }
        }
        for (key, g) in keys.iter().zip(groups) {
            level_mut(&mut levels, key.0).localities.push(g);
        }
        for r in service.remote.iter().filter(|r| remote(r)) {
            let up = health.remote_up(service, r) && r.health.healthy > 0;
            let total = r.health.total.max(1);
            let health = Health {
                healthy: if up { r.health.healthy.min(total) } else { 0 },
                total,
            };
            level_mut(&mut levels, r.priority)
                .localities
                .push(LocalityHosts {
                    weight: r.weight.max(1),
                    health,
                    hosts: vec![(Host::Remote(r), up)],
                });
        }
        levels.sort_by_key(|l| l.priority);
        Levels {
            levels,
            overprovisioning_factor: service.failover.overprovisioning_factor,
            panic_threshold_percent: service.failover.panic_threshold_percent,
        }
    }

    /// Whether there is no host at all.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The priority load over the levels (percent per level, and which
    /// levels are in panic).
    pub fn load(&self) -> PriorityLoad {
        let health: Vec<Health> = self.levels.iter().map(Level::health).collect();
        priority_load(
            &health,
            self.overprovisioning_factor,
            self.panic_threshold_percent,
        )
    }

    /// The hosts in the order to try them. `rotation` is a per-request
    /// counter: it seeds the random picks of level and locality (through
    /// SplitMix64, so consecutive counters spread evenly) and rotates
    /// the endpoints of a locality (round robin).
    ///
    /// First the host chosen by priority load, locality share and round
    /// robin; then the other eligible hosts of its locality, the other
    /// localities of its level, and the other levels in priority order
    /// (eligible: up, or any host of a level in panic); last, every host
    /// not listed yet (down hosts of levels not in panic) in the same
    /// order, so a request never fails for want of a candidate.
    pub fn order(&self, rotation: usize) -> Order<'a> {
        let load = self.load();
        let r1 = splitmix64(rotation as u64);
        let r2 = splitmix64(r1);
        let weights: Vec<u64> = load.percent.iter().map(|p| u64::from(*p)).collect();
        let panic = |li: usize| load.panic.get(li).copied().unwrap_or(false);
        let mut out = Vec::new();
        let mut listed: Vec<Vec<Vec<bool>>> = self
            .levels
            .iter()
            .map(|l| {
                l.localities
                    .iter()
                    .map(|g| vec![false; g.hosts.len()])
                    .collect()
            })
            .collect();
        let mut push_locality = |li: usize, gi: usize, all: bool, out: &mut Vec<Host<'a>>| {
            let g = &self.levels[li].localities[gi];
            let n = g.hosts.len();
            if n == 0 {
                return;
            }
            let eligible: Vec<usize> = (0..n).filter(|&h| all || g.hosts[h].1).collect();
            if eligible.is_empty() {
                return;
            }
            let start = rotation % eligible.len();
            for &h in eligible[start..].iter().chain(&eligible[..start]) {
                if !listed[li][gi][h] {
                    listed[li][gi][h] = true;
                    out.push(g.hosts[h].0);
                }
            }
        };
        let chosen = pick_weighted(&weights, r1);
        if let Some(li) = chosen {
            let level = &self.levels[li];
            let inputs: Vec<(u32, Health)> = level
                .localities
                .iter()
                .map(|g| {
                    let h = if panic(li) {
                        Health {
                            healthy: g.health.total,
                            total: g.health.total,
                        }
                    } else {
                        g.health
                    };
                    (g.weight, h)
                })
                .collect();
            let shares = locality_shares(&inputs, self.overprovisioning_factor);
            let first = pick_weighted(&shares, r2).unwrap_or(0);
            let n = level.localities.len();
            for k in 0..n {
                push_locality(li, (first + k) % n, panic(li), &mut out);
            }
        }
        for li in 0..self.levels.len() {
            if Some(li) != chosen {
                for gi in 0..self.levels[li].localities.len() {
                    push_locality(li, gi, panic(li), &mut out);
                }
            }
        }
        for li in 0..self.levels.len() {
            for gi in 0..self.levels[li].localities.len() {
                push_locality(li, gi, true, &mut out);
            }
        }
        Order { hosts: out }
    }
}

impl Level<'_> {
    /// The level's health: the sum over its localities.
    pub fn health(&self) -> Health {
        self.localities
            .iter()
            .fold(Health::default(), |a, g| Health {
                healthy: a.healthy.saturating_add(g.health.healthy),
                total: a.total.saturating_add(g.health.total),
            })
    }
}

impl HealthView for AllHealthy {
    fn endpoint_up(&self, _service: &Service, _addr: SocketAddr) -> bool {
        true
    }

    fn remote_up(&self, _service: &Service, _remote: &Remote) -> bool {
        true
    }
}

fn level_mut<'a, 'b>(levels: &'b mut Vec<Level<'a>>, priority: u32) -> &'b mut Level<'a> {
    let i = match levels.iter().position(|l| l.priority == priority) {
        Some(i) => i,
        None => {
            levels.push(Level {
                priority,
                localities: Vec::new(),
            });
            levels.len() - 1
        }
    };
    &mut levels[i]
}

/// SplitMix64 (Steele, Lea, Flood 2014): a bijective mixer that turns a
/// counter into well-spread 64-bit values.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
