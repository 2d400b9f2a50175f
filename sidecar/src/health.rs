//! Passive health of hosts, per service: outlier detection
//! ([`mesh_failover::OutlierDetector`], Envoy's semantics with the service's
//! `failover.outlier_detection`) plus marks that take a host down at once.
//!
//! Hosts are local endpoints (by address) and remote clusters (by name),
//! each per (service, port). What moves them:
//! - every attempt's outcome, reported through [`HealthState::report`]
//!   (the outbound HTTP and TCP paths, and the resilience layer for each
//!   retry): 5xx responses and gateway errors count toward ejection;
//!   successes reset the counters and clear a mark;
//! - a connect or TLS failure marks the host down at once for the base
//!   ejection time (Linkerd's failfast; outside `max_ejection_percent`);
//! - a tunnel reject (any reason but `unauthorized`) or a tunnel open
//!   timeout marks that remote cluster down at once, until the base
//!   ejection time passes or its EDS counts change ([`HealthState::sync`]);
//! - a timer calls [`HealthState::handle_interval`] (success-rate pass,
//!   un-ejection) at [`HealthState::poll_timeout`].
//!
//! The plan reads it through [`HealthAt`], a [`HealthView`] at one instant.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_failover::{Health, OutlierConfig, OutlierDetector};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tunnel_proto::RejectReason;

use crate::config::{Config, Remote, Service, ServiceKey};
use crate::errors::ProxyError;
use crate::lb::{HealthView, Levels};
use crate::metrics::OutlierLabels;
use crate::plan::{Candidate, Target};

/// What one attempt on one candidate came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The attempt succeeded without a status to judge (an opaque TCP
    /// connection was established).
    Success,
    /// A response head with this status arrived. 5xx count toward
    /// consecutive-5xx ejection (502, 503 and 504 also as gateway errors);
    /// anything else is a success.
    Status(u16),
    /// TCP connect or the TLS handshake failed or timed out: the host is
    /// marked down at once for the base ejection time.
    ConnectFailed,
    /// The gateway refused the tunnel stream: unless `Unauthorized` (a
    /// policy answer, not a health signal), the remote cluster is marked
    /// down at once.
    Rejected(RejectReason),
    /// The tunnel stream was not accepted or rejected in time: the remote
    /// cluster is marked down at once.
    TunnelTimeout,
    /// The connection or stream failed after the request was sent (reset,
    /// HTTP/2 error, per-try timeout, local gateway connection lost): a
    /// gateway error.
    Reset,
}

/// A host of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKey {
    /// A local endpoint's address.
    Endpoint(SocketAddr),
    /// A remote cluster's name.
    Cluster(String),
}

/// Passive health of every service's hosts.
#[derive(Debug)]
pub struct HealthState {
    services: Mutex<HashMap<(ServiceKey, u16), ServiceHealth>>,
    ejections: Family<OutlierLabels, Counter>,
}

/// A [`HealthView`] of a [`HealthState`] at one instant.
#[derive(Debug)]
pub struct HealthAt<'a> {
    state: &'a HealthState,
    now: Instant,
}

/// One service's health state, for `/config_dump` (stable keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// `namespace/name`.
    pub service: String,
    /// Its port.
    pub port: u16,
    /// Percent of requests per priority level (compacted levels, highest
    /// first).
    pub priority_load: Vec<u32>,
    /// Which levels balance over all their hosts (panic).
    pub panic: Vec<bool>,
    /// Hosts out of rotation now: endpoint addresses and cluster names.
    pub ejected: Vec<String>,
    /// Remote clusters marked down by a tunnel reject or open timeout.
    pub remote_marks: Vec<String>,
}

struct ServiceHealth {
    config: OutlierConfig,
    detector: OutlierDetector<HostKey>,
    /// Failfast and remote marks: down until the instant.
    marks: HashMap<HostKey, Instant>,
    /// Remote counts as of the last [`HealthState::sync`].
    remote_health: HashMap<String, Health>,
    label: OutlierLabels,
}

impl HealthState {
    /// No service known yet; `ejections` counts new ejections and marks
    /// (`isthmus_outlier_ejections_total`).
    pub fn new(ejections: Family<OutlierLabels, Counter>) -> Self {
        HealthState {
            services: Mutex::new(HashMap::new()),
            ejections,
        }
    }

    /// Follows a new catalog: forgets services and hosts that are gone,
    /// restarts detection of a service whose outlier settings changed, and
    /// clears the mark of a remote cluster whose counts changed.
    pub fn sync(&self, config: &Config) {
        let mut map = self.lock();
        map.retain(|(key, port), _| config.service(key, *port).is_some());
        for svc in &config.services {
            let key = (svc.service.clone(), svc.port);
            let entry = map.entry(key).or_insert_with(|| ServiceHealth::new(svc));
            if entry.config != svc.failover.outlier {
                *entry = ServiceHealth::new(svc);
            }
            entry.detector.set_hosts(hosts(svc));
            let mut counts = HashMap::new();
            for r in &svc.remote {
                if entry.remote_health.get(&r.cluster) != Some(&r.health) {
                    entry.marks.remove(&HostKey::Cluster(r.cluster.clone()));
                }
                counts.insert(r.cluster.clone(), r.health);
            }
            entry.remote_health = counts;
            let live: Vec<HostKey> = hosts(svc).collect();
            entry.marks.retain(|k, _| live.contains(k));
        }
    }

    /// Reports the outcome of one attempt on `candidate`, planned for
    /// `target`, at `now`. Call it once per attempt, retries included.
    pub fn report(&self, target: &Target, candidate: &Candidate, outcome: Outcome, now: Instant) {
        let host = host_of(candidate);
        let mut map = self.lock();
        let Some(s) = map.get_mut(&(target.service.clone(), target.port)) else {
            return;
        };
        let was_down = s.is_down(&host, now);
        let base = s.config.base_ejection_time;
        let detector_outcome = match outcome {
            Outcome::Success => {
                s.marks.remove(&host);
                Some(mesh_failover::Outcome::Success)
            }
            Outcome::Status(status) => {
                if status >= 500 {
                    Some(if matches!(status, 502..=504) {
                        mesh_failover::Outcome::GatewayError
                    } else {
                        mesh_failover::Outcome::Http5xx
                    })
                } else {
                    s.marks.remove(&host);
                    Some(mesh_failover::Outcome::Success)
                }
            }
            Outcome::ConnectFailed | Outcome::TunnelTimeout => {
                s.marks.insert(host.clone(), now + base);
                Some(mesh_failover::Outcome::GatewayError)
            }
            Outcome::Rejected(RejectReason::Unauthorized) => None,
            Outcome::Rejected(_) => {
                if matches!(host, HostKey::Cluster(_)) {
                    s.marks.insert(host.clone(), now + base);
                }
                Some(mesh_failover::Outcome::GatewayError)
            }
            Outcome::Reset => Some(mesh_failover::Outcome::GatewayError),
        };
        if let Some(o) = detector_outcome {
            s.detector.handle_outcome(&host, o, now);
        }
        if !was_down && s.is_down(&host, now) {
            tracing::info!(service = %s.label.service, %host, ?outcome, "host ejected");
            self.ejections.get_or_create(&s.label).inc();
        }
    }

    /// Runs each detector's interval work (success-rate pass, un-ejection)
    /// that is due at `now`.
    pub fn handle_interval(&self, now: Instant) {
        let mut map = self.lock();
        for s in map.values_mut() {
            if s.detector.poll_timeout().is_some_and(|t| t <= now) {
                let before = s.detector.ejected(now).len();
                s.detector.handle_interval(now);
                let after = s.detector.ejected(now).len();
                if after > before {
                    self.ejections
                        .get_or_create(&s.label)
                        .inc_by((after - before) as u64);
                }
            }
            s.marks.retain(|_, until| *until > now);
        }
    }

    /// When [`HealthState::handle_interval`] has work next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let map = self.lock();
        map.values()
            .filter_map(|s| {
                let mark = s.marks.values().min().copied();
                match (s.detector.poll_timeout(), mark) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// The view at `now`.
    pub fn at(&self, now: Instant) -> HealthAt<'_> {
        HealthAt { state: self, now }
    }

    /// Per-service priority load, ejected hosts and remote marks of
    /// `config`'s services at `now` (`/config_dump`, metrics).
    pub fn status(&self, config: &Config, now: Instant) -> Vec<ServiceStatus> {
        let view = self.at(now);
        let mut out = Vec::with_capacity(config.services.len());
        for svc in &config.services {
            let has_gateway = config.gateway.is_some();
            let levels = Levels::new(svc, &view, true, |_| has_gateway);
            let load = levels.load();
            let (ejected, remote_marks) = {
                let map = self.lock();
                match map.get(&(svc.service.clone(), svc.port)) {
                    None => (Vec::new(), Vec::new()),
                    Some(s) => {
                        let mut ejected: Vec<HostKey> = s.detector.ejected(now);
                        ejected.extend(
                            s.marks
                                .iter()
                                .filter(|(_, u)| **u > now)
                                .map(|(k, _)| k.clone()),
                        );
                        ejected.sort();
                        ejected.dedup();
                        let mut marks: Vec<String> = s
                            .marks
                            .iter()
                            .filter(|(k, u)| **u > now && matches!(k, HostKey::Cluster(_)))
                            .map(|(k, _)| k.to_string())
                            .collect();
                        marks.sort();
                        (ejected.iter().map(ToString::to_string).collect(), marks)
                    }
                }
            };
            out.push(ServiceStatus {
                service: svc.service.to_string(),
                port: svc.port,
                priority_load: load.percent,
                panic: load.panic,
                ejected,
                remote_marks,
            });
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ServiceKey, u16), ServiceHealth>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_down(&self, service: &Service, host: &HostKey, now: Instant) -> bool {
        self.lock()
            .get(&(service.service.clone(), service.port))
            .is_some_and(|s| s.is_down(host, now))
    }
}

impl Outcome {
    /// The outcome of an attempt on `candidate` that failed with `e` before
    /// a response head; `None` for errors that say nothing about the host
    /// (no plan, unsupported request, the overall request deadline).
    pub fn of_error(candidate: &Candidate, e: &ProxyError) -> Option<Outcome> {
        let via_gateway = matches!(candidate, Candidate::ViaGateway { .. });
        match e {
            ProxyError::Connect { .. } | ProxyError::Tls(_) => Some(Outcome::ConnectFailed),
            ProxyError::ConnectTimeout if via_gateway => Some(Outcome::TunnelTimeout),
            ProxyError::ConnectTimeout => Some(Outcome::ConnectFailed),
            ProxyError::Rejected { reason, .. } => Some(Outcome::Rejected(*reason)),
            ProxyError::Tunnel(_) | ProxyError::Http(_) => Some(Outcome::Reset),
            // H3's variants (resilience): a failed HTTP/2 handshake or a
            // per-try timeout is a gateway error; an overflow or a bad
            // request body says nothing about the host.
            ProxyError::Handshake(_) | ProxyError::PerTryTimeout => Some(Outcome::Reset),
            ProxyError::Overflow(_) | ProxyError::RequestBody(_) => None,
            ProxyError::Plan(_) | ProxyError::RequestTimeout | ProxyError::Unsupported(_) => None,
        }
    }
}

impl ServiceHealth {
    fn new(svc: &Service) -> Self {
        let mut detector = OutlierDetector::new(svc.failover.outlier);
        detector.set_hosts(hosts(svc));
        ServiceHealth {
            config: svc.failover.outlier,
            detector,
            marks: HashMap::new(),
            remote_health: svc
                .remote
                .iter()
                .map(|r| (r.cluster.clone(), r.health))
                .collect(),
            label: OutlierLabels {
                service: svc.service.to_string(),
            },
        }
    }

    fn is_down(&self, host: &HostKey, now: Instant) -> bool {
        self.marks.get(host).is_some_and(|until| *until > now)
            || self.detector.is_ejected(host, now)
    }
}

impl HealthView for HealthAt<'_> {
    fn endpoint_up(&self, service: &Service, addr: SocketAddr) -> bool {
        !self
            .state
            .is_down(service, &HostKey::Endpoint(addr), self.now)
    }

    fn remote_up(&self, service: &Service, remote: &Remote) -> bool {
        !self
            .state
            .is_down(service, &HostKey::Cluster(remote.cluster.clone()), self.now)
    }
}

impl fmt::Debug for ServiceHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHealth")
            .field("marks", &self.marks)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKey::Endpoint(a) => write!(f, "{a}"),
            HostKey::Cluster(c) => f.write_str(c),
        }
    }
}

fn hosts(svc: &Service) -> impl Iterator<Item = HostKey> + '_ {
    svc.endpoints
        .iter()
        .map(|e| HostKey::Endpoint(e.address))
        .chain(
            svc.remote
                .iter()
                .map(|r| HostKey::Cluster(r.cluster.clone())),
        )
}

fn host_of(candidate: &Candidate) -> HostKey {
    match candidate {
        Candidate::Direct { addr, .. } => HostKey::Endpoint(*addr),
        Candidate::ViaGateway { cluster, .. } => HostKey::Cluster(cluster.clone()),
    }
}

/// How often the runtime's timer wakes at the latest, to keep marks and
/// gauges fresh even when no detector asks for an earlier wake-up.
pub const MAX_TICK: Duration = Duration::from_secs(1);

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
