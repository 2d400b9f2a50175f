//! One HTTP/2 connection per peer: per direct endpoint, and per
//! (cluster, service, port, identity) through the gateway. Concurrent
//! requests to a peer with no connection wait for one handshake instead of
//! each opening their own; a closed connection is replaced on next use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::Protocol;
use crate::errors::ProxyError;
use crate::http_util::Body;
use crate::plan::Candidate;
use crate::runtime::{Shared, Snapshot};

/// HTTP/2 PING interval on idle pooled connections.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// A PING unanswered this long closes the connection.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

type Slot = Arc<tokio::sync::Mutex<Option<SendRequest<Body>>>>;

/// The pool.
#[derive(Debug, Default)]
pub struct H2Pool {
    slots: Mutex<HashMap<Candidate, Slot>>,
}

impl H2Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sender on the connection to `candidate`, connecting (TCP or tunnel,
    /// TLS with ALPN `h2`, HTTP/2 handshake) if there is none or it closed.
    ///
    /// # Errors
    /// See [`crate::outbound::connect::connect_tls`]; [`ProxyError::Http`]
    /// when the HTTP/2 handshake fails.
    pub async fn sender(
        &self,
        shared: &Arc<Shared>,
        snapshot: &Snapshot,
        candidate: &Candidate,
    ) -> Result<SendRequest<Body>, ProxyError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(candidate.clone()).or_default().clone()
        };
        let mut current = slot.lock().await;
        if let Some(s) = current.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        *current = None;
        let tls = super::connect::connect_tls(shared, snapshot, candidate, Protocol::Http).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .max_header_list_size(
                u32::try_from(snapshot.config.max_header_bytes).unwrap_or(u32::MAX),
            )
            .handshake(TokioIo::new(tls))
            .await
            .map_err(ProxyError::Http)?;
        let peer = candidate.to_string();
        tokio::spawn(async move {
            match conn.await {
                Ok(()) => tracing::debug!(%peer, "upstream http/2 connection closed"),
                Err(e) => tracing::debug!(%peer, error = %e, "upstream http/2 connection failed"),
            }
        });
        *current = Some(sender.clone());
        Ok(sender)
    }

    /// Forgets the connection to `candidate` (it will be re-established on
    /// next use).
    pub fn evict(&self, candidate: &Candidate) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(candidate);
    }

    /// Forgets connections to candidates `keep` rejects (after a reload);
    /// their requests in flight finish.
    pub fn retain(&self, mut keep: impl FnMut(&Candidate) -> bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|c, _| keep(c));
    }
}
