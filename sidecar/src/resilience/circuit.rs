//! Circuit breaking per upstream service (Envoy's cluster
//! `circuit_breakers.thresholds`): counters of requests in flight, requests
//! waiting for a connection, and open connections, each taken through an
//! RAII guard so nothing leaks on an early return, a cancelled future or a
//! panic. Over a limit, the request is answered at once with 503
//! `x-isthmus-error: overflow` (no queueing).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::Serialize;

/// Default of each limit (Envoy's default thresholds, contract B).
pub const DEFAULT_CIRCUIT_LIMIT: u32 = 1024;

/// The limits of one service; 0 is refused by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CircuitBreakerLimits {
    /// Open connections (pooled HTTP/2 and opaque TCP) opened for the
    /// service.
    pub max_connections: u32,
    /// Requests waiting for a connection to be established.
    pub max_pending_requests: u32,
    /// Requests in flight (from arrival to the end of the response body).
    pub max_requests: u32,
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `max_requests`.
    Requests,
    /// `max_pending_requests`.
    PendingRequests,
    /// `max_connections`.
    Connections,
}

/// The counters of one service; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Circuit {
    requests: Arc<AtomicU32>,
    pending: Arc<AtomicU32>,
    connections: Arc<AtomicU32>,
}

/// Holds one unit of a counter; gives it back on drop.
#[derive(Debug)]
#[must_use = "the unit is given back when the guard drops"]
pub struct Guard {
    counter: Arc<AtomicU32>,
}

impl Circuit {
    /// Takes a request slot.
    ///
    /// # Errors
    /// [`Limit::Requests`] when `max_requests` are in flight.
    pub fn request(&self, limits: &CircuitBreakerLimits) -> Result<Guard, Limit> {
        take(&self.requests, limits.max_requests).ok_or(Limit::Requests)
    }

    /// Takes a slot for a request waiting on a connection.
    ///
    /// # Errors
    /// [`Limit::PendingRequests`] when `max_pending_requests` wait.
    pub fn pending(&self, limits: &CircuitBreakerLimits) -> Result<Guard, Limit> {
        take(&self.pending, limits.max_pending_requests).ok_or(Limit::PendingRequests)
    }

    /// Takes a connection slot (keep the guard as long as the connection).
    ///
    /// # Errors
    /// [`Limit::Connections`] when `max_connections` are open.
    pub fn connection(&self, limits: &CircuitBreakerLimits) -> Result<Guard, Limit> {
        take(&self.connections, limits.max_connections).ok_or(Limit::Connections)
    }

    /// Requests in flight, waiting requests and open connections now.
    pub fn counts(&self) -> (u32, u32, u32) {
        (
            self.requests.load(Ordering::Acquire),
            self.pending.load(Ordering::Acquire),
            self.connections.load(Ordering::Acquire),
        )
    }
}

fn take(counter: &Arc<AtomicU32>, max: u32) -> Option<Guard> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Guard {
            counter: counter.clone(),
        })
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for CircuitBreakerLimits {
    fn default() -> Self {
        CircuitBreakerLimits {
            max_connections: DEFAULT_CIRCUIT_LIMIT,
            max_pending_requests: DEFAULT_CIRCUIT_LIMIT,
            max_requests: DEFAULT_CIRCUIT_LIMIT,
        }
    }
}

impl Limit {
    /// The `limit` label and config key.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Requests => "max_requests",
            Limit::PendingRequests => "max_pending_requests",
            Limit::Connections => "max_connections",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_up_to_the_limit_and_give_back_on_drop() {
        let limits = CircuitBreakerLimits {
            max_connections: 1,
            max_pending_requests: 0,
            max_requests: 2,
        };
        let c = Circuit::default();
        let a = c.request(&limits).unwrap();
        let b = c.request(&limits).unwrap();
        assert_eq!(c.request(&limits).unwrap_err(), Limit::Requests);
        drop(a);
        let _c2 = c.request(&limits).unwrap();
        assert_eq!(c.counts().0, 2);
        drop(b);
        assert_eq!(c.counts().0, 1);
        assert_eq!(c.pending(&limits).unwrap_err(), Limit::PendingRequests);
        let conn = c.connection(&limits).unwrap();
        assert_eq!(c.connection(&limits).unwrap_err(), Limit::Connections);
        drop(conn);
        assert_eq!(c.counts().2, 0);
    }

    #[test]
    fn clones_share_the_counters() {
        let limits = CircuitBreakerLimits {
            max_requests: 1,
            ..CircuitBreakerLimits::default()
        };
        let c = Circuit::default();
        let _g = c.request(&limits).unwrap();
        assert!(c.clone().request(&limits).is_err());
    }
}
