//! One HTTP/2 connection per peer: per direct endpoint, and per
//! (cluster, service, port, identity) through the gateway. Concurrent
//! requests to a peer with no connection wait for one handshake instead of
//! each opening their own; a closed connection is replaced on next use.
//!
//! Resilience (docs/reference/data-path-config.md, "Resilience"):
//! - every connection has an id, so a request that saw its connection fail
//!   (reset, per-try timeout) evicts exactly that one
//!   ([`H2Pool::evict`]) and its retry opens a fresh connection, not one a
//!   concurrent request opened meanwhile;
//! - connections through a tunnel send an HTTP/2 PING every
//!   [`TUNNEL_KEEP_ALIVE_INTERVAL`] (also while idle) and close when one is
//!   not answered within [`TUNNEL_KEEP_ALIVE_TIMEOUT`]: a dead gateway or
//!   WAN path is noticed within ~2 s, not after the QUIC idle timeout, and
//!   its streams fail (and are retried) instead of hanging;
//! - a connection handed to no request for the service's `idle` timeout is
//!   dropped from the pool (its streams in flight finish);
//! - requests waiting for a connection hold a `max_pending_requests` slot,
//!   every connection a `max_connections` slot until it closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use crate::config::Protocol;
use crate::errors::ProxyError;
use crate::http_util::Body;
use crate::plan::Candidate;
use crate::resilience::{Resilience, ServiceState};
use crate::runtime::{Shared, Snapshot};

/// HTTP/2 PING interval on pooled connections to sidecars in this cluster
/// (only while requests are in flight).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// A PING unanswered this long closes a direct connection.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 PING interval on connections through a tunnel, idle or not.
pub const TUNNEL_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// A PING unanswered this long closes a tunnel connection (its streams
/// fail as resets and are retried by the request loop).
pub const TUNNEL_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(1);

type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

#[derive(Debug)]
struct Conn {
    id: u64,
    sender: SendRequest<Body>,
    last_used: Arc<Mutex<Instant>>,
}

/// A sender on a pooled connection and the connection's id.
#[derive(Debug)]
pub struct Pooled {
    /// The sender.
    pub sender: SendRequest<Body>,
    /// The connection's id, for [`H2Pool::evict`].
    pub id: u64,
}

/// The pool.
#[derive(Debug, Default)]
pub struct H2Pool {
    slots: Mutex<HashMap<Candidate, Slot>>,
    next_id: AtomicU64,
}

impl H2Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sender on the connection to `candidate`, connecting (TCP or tunnel,
    /// TLS with ALPN `h2`, HTTP/2 handshake) if there is none or it closed.
    /// `policy` and `state` are those of the service the request is for.
    ///
    /// # Errors
    /// See [`crate::outbound::connect::connect_tls`];
    /// [`ProxyError::Handshake`] when the HTTP/2 handshake fails;
    /// [`ProxyError::Overflow`] over `max_pending_requests` or
    /// `max_connections`.
    pub async fn sender(
        &self,
        shared: &Arc<Shared>,
        snapshot: &Snapshot,
        candidate: &Candidate,
        policy: &Resilience,
        state: &ServiceState,
    ) -> Result<Pooled, ProxyError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(candidate.clone()).or_default().clone()
        };
        // Fast path: an open connection and nobody connecting.
        if let Ok(current) = slot.try_lock() {
            if let Some(c) = ready(&current) {
                return Ok(c);
            }
        }
        let limits = &policy.circuit_breaker;
        let _pending = state.circuit.pending(limits).map_err(|limit| {
            shared.resilience.count_circuit_open(state, limit);
            ProxyError::Overflow(limit)
        })?;
        let mut current = slot.lock().await;
        if let Some(c) = ready(&current) {
            return Ok(c);
        }
        *current = None;
        let conn_guard = state.circuit.connection(limits).map_err(|limit| {
            shared.resilience.count_circuit_open(state, limit);
            ProxyError::Overflow(limit)
        })?;
        let tls = super::connect::connect_tls(
            shared,
            snapshot,
            candidate,
            Protocol::Http,
            policy.timeouts.connect,
        )
        .await?;
        let tunnel = matches!(candidate, Candidate::ViaGateway { .. });
        let (interval, timeout) = if tunnel {
            (TUNNEL_KEEP_ALIVE_INTERVAL, TUNNEL_KEEP_ALIVE_TIMEOUT)
        } else {
            (KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
        };
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(tunnel)
            .max_header_list_size(
                u32::try_from(snapshot.config.max_header_bytes).unwrap_or(u32::MAX),
            )
            .handshake(TokioIo::new(tls))
            .await
            .map_err(ProxyError::Handshake)?;
        let peer = candidate.to_string();
        tokio::spawn(async move {
            let _conn_guard = conn_guard;
            match conn.await {
                Ok(()) => tracing::debug!(%peer, "upstream http/2 connection closed"),
                Err(e) => tracing::debug!(%peer, error = %e, "upstream http/2 connection failed"),
            }
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let last_used = Arc::new(Mutex::new(Instant::now()));
        if let Some(idle) = policy.timeouts.idle {
            spawn_idle_watch(Arc::downgrade(&slot), id, last_used.clone(), idle);
        }
        *current = Some(Conn {
            id,
            sender: sender.clone(),
            last_used,
        });
        Ok(Pooled { sender, id })
    }

    /// Forgets the connection `id` to `candidate` (the next request opens a
    /// new one); a newer connection in its place stays.
    pub fn evict(&self, candidate: &Candidate, id: u64) {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.get(candidate).cloned()
        };
        if let Some(slot) = slot {
            // Someone connecting holds the lock: that is a fresh connection.
            if let Ok(mut current) = slot.try_lock() {
                if current.as_ref().is_some_and(|c| c.id == id) {
                    tracing::debug!(%candidate, id, "evicting the pooled connection");
                    *current = None;
                }
            }
        }
    }

    /// Forgets connections to candidates `keep` rejects (after a reload);
    /// their requests in flight finish.
    pub fn retain(&self, mut keep: impl FnMut(&Candidate) -> bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|c, _| keep(c));
    }
}

/// The open connection in `current`, marked used now.
fn ready(current: &Option<Conn>) -> Option<Pooled> {
    let c = current.as_ref().filter(|c| !c.sender.is_closed())?;
    *c.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    Some(Pooled {
        sender: c.sender.clone(),
        id: c.id,
    })
}

/// Drops connection `id` from `slot` once it was handed to no request for
/// `idle`; stops when the slot or the connection is gone.
fn spawn_idle_watch(
    slot: std::sync::Weak<tokio::sync::Mutex<Option<Conn>>>,
    id: u64,
    last_used: Arc<Mutex<Instant>>,
    idle: Duration,
) {
    tokio::spawn(async move {
        let mut deadline = Instant::now() + idle;
        loop {
            tokio::time::sleep_until(deadline).await;
            let Some(slot) = slot.upgrade() else { return };
            let mut current = slot.lock().await;
            let Some(c) = current.as_ref().filter(|c| c.id == id) else {
                return;
            };
            if c.sender.is_closed() {
                *current = None;
                return;
            }
            let used = *last_used.lock().unwrap_or_else(|p| p.into_inner());
            if used + idle <= Instant::now() {
                tracing::debug!(id, "pooled connection idle; dropping it");
                *current = None;
                return;
            }
            deadline = used + idle;
        }
    });
}
