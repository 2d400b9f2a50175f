//! Passive outlier detection with Envoy's semantics, sans-IO.
//!
//! Source: Envoy `config.cluster.v3.OutlierDetection` proto comments and
//! `intro/arch_overview/upstream/outlier` (FAILOVER-REFERENCE §7).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Outlier detection settings (FAILOVER-REFERENCE §7); [`Default`] gives
/// Envoy's defaults.
///
/// Unlike Envoy, consecutive gateway failures are enforced by default
/// (Envoy's `enforcing_consecutive_gateway_failure` defaults to 0): a
/// connect failure, reset or tunnel reject is the signal Isthmus fails over
/// on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive [`Outcome::Http5xx`] or [`Outcome::GatewayError`] that
    /// eject a host; default 5, 0 disables.
    pub consecutive_5xx: u32,
    /// Consecutive [`Outcome::GatewayError`] that eject a host; default 5,
    /// 0 disables.
    pub consecutive_gateway_failure: u32,
    /// Time between success-rate evaluations; default 10 s. Zero disables
    /// the periodic pass (success rate and the decay of the ejection
    /// multiplier); ejections still end on time.
    pub interval: Duration,
    /// Ejection time of a first ejection; default 30 s. The n-th ejection in
    /// a row lasts n × this, capped at [`Self::max_ejection_time`].
    pub base_ejection_time: Duration,
    /// Cap of an ejection's duration; default 300 s (a cap below
    /// [`Self::base_ejection_time`] is read as the base).
    pub max_ejection_time: Duration,
    /// At most this percentage of the known hosts is ejected at once, but
    /// always at least one host; default 10.
    pub max_ejection_percent: u32,
    /// Success-rate ejection needs at least this many hosts with enough
    /// requests in the interval; default 5.
    pub success_rate_minimum_hosts: u32,
    /// Requests a host needs in one interval to take part in success-rate
    /// ejection; default 100.
    pub success_rate_request_volume: u32,
    /// A host is ejected when its success rate is below
    /// `mean − stdev × factor / 1000` of the participating hosts; default
    /// 1900 (1.9).
    pub success_rate_stdev_factor: u32,
}

/// What happened to one request (or attempt) sent to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A response that is not a 5xx.
    Success,
    /// A 5xx response from the upstream application (500, 501, …) that is
    /// not a gateway error.
    Http5xx,
    /// A gateway error: connect failure, TLS failure, reset, 502/503/504, a
    /// tunnel reject or a tunnel open timeout. Counts for both consecutive
    /// detectors.
    GatewayError,
}

/// Counters of an [`OutlierDetector`] since it was made, for metrics
/// (`isthmus_outlier_ejections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutlierStats {
    /// Ejections by the consecutive-5xx detector.
    pub ejections_consecutive_5xx: u64,
    /// Ejections by the consecutive-gateway-failure detector.
    pub ejections_consecutive_gateway_failure: u64,
    /// Ejections by the success-rate detector.
    pub ejections_success_rate: u64,
    /// Ejections a detector asked for but the max ejection percent refused.
    pub ejections_overflow: u64,
}

impl OutlierStats {
    /// All ejections that happened.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_consecutive_5xx
            + self.ejections_consecutive_gateway_failure
            + self.ejections_success_rate
    }
}

/// Passive outlier detection (Envoy's OutlierDetection), sans-IO.
///
/// Report every request's [`Outcome`] with [`Self::handle_outcome`]; call
/// [`Self::handle_interval`] whenever [`Self::poll_timeout`] has passed (and
/// at any other time: it does only what is due); ask [`Self::is_ejected`]
/// when choosing hosts. Hosts are keyed by `K`; a host reported but never
/// listed by [`Self::set_hosts`] is added on its first outcome.
///
/// Rules:
/// - consecutive counters: a success resets both; an [`Outcome::Http5xx`]
///   resets the gateway counter; reaching a threshold ejects the host and
///   resets its counters;
/// - success rate, each interval: hosts not ejected with at least
///   `success_rate_request_volume` requests take part when there are at
///   least `success_rate_minimum_hosts` of them; those below
///   `mean − stdev × factor / 1000` (population stdev) are ejected, worst
///   first; request counts restart every interval;
/// - the n-th ejection in a row lasts `min(n × base, max)`; n decreases by
///   one at every interval pass once the host has been back for a whole
///   interval;
/// - an ejection is refused when it would put more than
///   `max_ejection_percent` of the known hosts out, unless none is out;
/// - an ejected host comes back when its time is up; outcomes reported
///   while it is ejected (requests already in flight) are ignored.
#[derive(Debug, Clone)]
pub struct OutlierDetector<K: Eq + Hash + Clone> {
    config: OutlierConfig,
    hosts: HashMap<K, HostState>,
    /// When the next success-rate pass is due; set by the first outcome.
    next_interval: Option<Instant>,
    stats: OutlierStats,
}

/// Why a host is being ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    SuccessRate,
}

#[derive(Debug, Clone, Default)]
struct HostState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    /// Requests and successes in the current interval.
    requests: u64,
    successes: u64,
    /// Set while ejected (possibly in the past until the next pass clears it).
    ejected_until: Option<Instant>,
    /// When the last ejection ended.
    unejected_at: Option<Instant>,
    /// Ejections in a row: the ejection time multiplier.
    ejections: u32,
}

impl HostState {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }

    /// Ends an ejection whose time is up at `now`.
    fn uneject_if_due(&mut self, now: Instant) {
        if let Some(until) = self.ejected_until.filter(|&until| until <= now) {
            self.ejected_until = None;
            self.unejected_at = Some(until);
        }
    }
}

impl<K: Eq + Hash + Clone> OutlierDetector<K> {
    /// A detector with no hosts.
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            config,
            hosts: HashMap::new(),
            next_interval: None,
            stats: OutlierStats::default(),
        }
    }

    /// The settings this detector runs with.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Replaces the settings (a policy changed), keeping every host's
    /// counters and ejections; new thresholds apply from the next outcome,
    /// a new interval from the next pass.
    pub fn set_config(&mut self, config: OutlierConfig) {
        self.config = config;
    }

    /// Sets the known hosts: keeps the state of hosts still listed, adds new
    /// ones, forgets removed ones (and their ejections).
    pub fn set_hosts(&mut self, hosts: impl IntoIterator<Item = K>) {
        let mut old = std::mem::take(&mut self.hosts);
        for host in hosts {
            let state = old.remove(&host).unwrap_or_default();
            self.hosts.insert(host, state);
        }
    }

    /// Records the outcome of one request to `host` at `now`; may eject it.
    pub fn handle_outcome(&mut self, host: &K, outcome: Outcome, now: Instant) {
        if self.next_interval.is_none() && !self.config.interval.is_zero() {
            self.next_interval = Some(now + self.config.interval);
        }
        let config = self.config;
        if !self.hosts.contains_key(host) {
            self.hosts.insert(host.clone(), HostState::default());
        }
        let Some(state) = self.hosts.get_mut(host) else {
            return; // inserted just above
        };
        if state.is_ejected(now) {
            return;
        }
        state.uneject_if_due(now);
        state.requests += 1;
        match outcome {
            Outcome::Success => {
                state.successes += 1;
                state.consecutive_5xx = 0;
                state.consecutive_gateway = 0;
            }
            Outcome::Http5xx => {
                state.consecutive_5xx += 1;
                state.consecutive_gateway = 0;
            }
            Outcome::GatewayError => {
                state.consecutive_5xx += 1;
                state.consecutive_gateway += 1;
            }
        }
        let reason = if config.consecutive_gateway_failure > 0
            && state.consecutive_gateway >= config.consecutive_gateway_failure
        {
            Some(Reason::ConsecutiveGatewayFailure)
        } else if config.consecutive_5xx > 0 && state.consecutive_5xx >= config.consecutive_5xx {
            Some(Reason::Consecutive5xx)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.try_eject(host, reason, now);
        }
    }

    /// Does what is due at `now`: ends ejections whose time is up and, when
    /// the interval has passed, runs the success-rate pass and starts a new
    /// interval.
    pub fn handle_interval(&mut self, now: Instant) {
        for state in self.hosts.values_mut() {
            state.uneject_if_due(now);
        }
        if self.config.interval.is_zero() {
            return;
        }
        if self.next_interval.is_some_and(|due| due > now) {
            return;
        }
        self.success_rate_pass(now);
        let interval = self.config.interval;
        for state in self.hosts.values_mut() {
            // Envoy: the multiplier decreases once per interval after the
            // host has been back for a whole interval.
            let back_long_enough = state.unejected_at.is_some_and(|at| at + interval <= now);
            if !state.is_ejected(now) && back_long_enough {
                state.ejections = state.ejections.saturating_sub(1);
            }
            state.requests = 0;
            state.successes = 0;
        }
        self.next_interval = Some(now + self.config.interval);
    }

    /// Whether `host` is ejected at `now` (unknown hosts are not).
    pub fn is_ejected(&self, host: &K, now: Instant) -> bool {
        self.hosts.get(host).is_some_and(|s| s.is_ejected(now))
    }

    /// When `host`'s current ejection ends, if it is ejected at `now`.
    pub fn ejected_until(&self, host: &K, now: Instant) -> Option<Instant> {
        self.hosts
            .get(host)
            .filter(|s| s.is_ejected(now))
            .and_then(|s| s.ejected_until)
    }

    /// When [`Self::handle_interval`] should next be called: the next
    /// success-rate pass or the end of the earliest ejection, whichever
    /// comes first; `None` when nothing is pending (no outcome seen yet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.hosts
            .values()
            .filter_map(|s| s.ejected_until)
            .chain(self.next_interval)
            .min()
    }

    /// The hosts ejected at `now`, in no particular order (sort for display).
    pub fn ejected(&self, now: Instant) -> Vec<K> {
        self.hosts
            .iter()
            .filter(|(_, s)| s.is_ejected(now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Ejection counters since this detector was made.
    pub fn stats(&self) -> OutlierStats {
        self.stats
    }

    /// Ejects `host` unless the max ejection percent forbids it.
    fn try_eject(&mut self, host: &K, reason: Reason, now: Instant) -> bool {
        let known = self.hosts.len() as u64;
        let out = self.hosts.values().filter(|s| s.is_ejected(now)).count() as u64;
        let allowed =
            out == 0 || (out + 1) * 100 <= u64::from(self.config.max_ejection_percent) * known;
        if !allowed {
            self.stats.ejections_overflow += 1;
            return false;
        }
        let base = self.config.base_ejection_time;
        let max = self.config.max_ejection_time.max(base);
        let Some(state) = self.hosts.get_mut(host) else {
            return false;
        };
        state.ejections = state.ejections.saturating_add(1);
        let time = base.saturating_mul(state.ejections).min(max);
        state.ejected_until = Some(now + time);
        state.consecutive_5xx = 0;
        state.consecutive_gateway = 0;
        match reason {
            Reason::Consecutive5xx => self.stats.ejections_consecutive_5xx += 1,
            Reason::ConsecutiveGatewayFailure => {
                self.stats.ejections_consecutive_gateway_failure += 1;
            }
            Reason::SuccessRate => self.stats.ejections_success_rate += 1,
        }
        true
    }

    /// Envoy's success-rate ejection over the interval that just ended.
    fn success_rate_pass(&mut self, now: Instant) {
        let volume = u64::from(self.config.success_rate_request_volume.max(1));
        let mut rates: Vec<(K, f64)> = self
            .hosts
            .iter()
            .filter(|(_, s)| !s.is_ejected(now) && s.requests >= volume)
            .map(|(k, s)| (k.clone(), 100.0 * s.successes as f64 / s.requests as f64))
            .collect();
        let minimum = (self.config.success_rate_minimum_hosts as usize).max(1);
        if rates.len() < minimum {
            return;
        }
        let n = rates.len() as f64;
        let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
        let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
        let factor = f64::from(self.config.success_rate_stdev_factor) / 1000.0;
        let threshold = mean - variance.sqrt() * factor;
        rates.retain(|(_, rate)| *rate < threshold);
        rates.sort_by(|a, b| a.1.total_cmp(&b.1));
        for (host, _) in rates {
            self.try_eject(&host, Reason::SuccessRate, now);
        }
    }
}

impl Default for OutlierConfig {
    /// Envoy's defaults (FAILOVER-REFERENCE §7), with consecutive gateway
    /// failures enforced.
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
        }
    }
}

#[cfg(test)]
mod tests;
