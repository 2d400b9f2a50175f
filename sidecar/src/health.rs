//! Passive health of local endpoints: an endpoint whose connect or TLS
//! handshake failed is marked unhealthy for [`EJECTION`], so the plan tries
//! other endpoints (and remote clusters) first. A success clears the mark.
//! Active health checks and outlier detection come with the failover issue.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::plan::HealthView;

/// How long a failed endpoint stays marked unhealthy.
pub const EJECTION: Duration = Duration::from_secs(5);

/// Failure marks per endpoint address.
#[derive(Debug, Default)]
pub struct HealthTracker {
    until: Mutex<HashMap<SocketAddr, Instant>>,
}

/// A [`HealthView`] of a tracker at one instant.
#[derive(Debug)]
pub struct HealthAt<'a> {
    tracker: &'a HealthTracker,
    now: Instant,
}

impl HealthTracker {
    /// A tracker with every endpoint healthy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `addr` failed at `now`.
    pub fn mark_failed(&self, addr: SocketAddr, now: Instant) {
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(addr, now + EJECTION);
    }

    /// Clears any mark on `addr`.
    pub fn mark_ok(&self, addr: SocketAddr) {
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&addr);
    }

    /// The view at `now`.
    pub fn at(&self, now: Instant) -> HealthAt<'_> {
        HealthAt { tracker: self, now }
    }
}

impl HealthView for HealthAt<'_> {
    fn is_healthy(&self, addr: SocketAddr) -> bool {
        let map = self.tracker.until.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&addr).is_none_or(|until| *until <= self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_ejects_until_the_deadline_and_success_clears() {
        let t = HealthTracker::new();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let now = Instant::now();
        assert!(t.at(now).is_healthy(a));
        t.mark_failed(a, now);
        assert!(!t.at(now).is_healthy(a));
        assert!(!t
            .at(now + EJECTION - Duration::from_millis(1))
            .is_healthy(a));
        assert!(t.at(now + EJECTION).is_healthy(a));
        t.mark_failed(a, now);
        t.mark_ok(a);
        assert!(t.at(now).is_healthy(a));
    }
}
