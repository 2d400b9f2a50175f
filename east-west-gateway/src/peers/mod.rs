//! The peer pool: one connection per linked peer gateway (QUIC, or
//! HTTP/2 over TLS/TCP for a peer whose `transport` is `tcp-tls`), kept up
//! by a task per peer that connects eagerly, reconnects with jittered
//! exponential backoff ([`crate::backoff`]), and resolves DNS names with
//! hickory, re-resolving when the answer's TTL ends (the `resolve` module).
//!
//! A stream asks the pool for a peer's connection: it gets the live one,
//! waits (bounded) while a first attempt is under way, or fails at once
//! while the peer is in backoff, so the sidecar can fail over quickly.

mod connect;
mod resolve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use trust_bundle::{BundleStore, SvidSource};

use crate::backoff::{unit_random, Backoff};
use crate::config::{Config, PeerConfig, PeerTransport, QuicConfig, ReconnectConfig};
use crate::metrics::Metrics;
use crate::tcp_tls::client::H2Connection;

use connect::{connect, hold, Dialer};
use resolve::{resolve, Resolved};

/// Why no connection to a peer could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The cluster is not (or no longer) a configured peer.
    #[error("cluster {0} is not a configured peer")]
    UnknownPeer(String),
    /// The peer's gateway is unreachable now (backoff, or the first
    /// handshake did not finish in time).
    #[error("peer gateway of {0} is unreachable")]
    Unavailable(String),
}

/// A pooled connection to a peer gateway; cheap to clone.
#[derive(Debug, Clone)]
pub enum PeerConn {
    /// `transport: quic`: a QUIC connection from our endpoint.
    Quic(quinn::Connection),
    /// `transport: tcp-tls`: HTTP/2 over TLS/TCP.
    TcpTls(H2Connection),
}

impl PeerConn {
    /// Whether the connection is still up.
    pub fn is_open(&self) -> bool {
        match self {
            PeerConn::Quic(c) => c.close_reason().is_none(),
            PeerConn::TcpTls(c) => c.is_open(),
        }
    }

    /// Resolves when the connection has closed.
    pub async fn closed(&self) {
        match self {
            PeerConn::Quic(c) => {
                c.closed().await;
            }
            PeerConn::TcpTls(c) => c.closed().await,
        }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        match self {
            PeerConn::Quic(c) => c.remote_address(),
            PeerConn::TcpTls(c) => c.remote_address(),
        }
    }
}

/// One row of the admin `GET /peers` answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerStatus {
    /// The peer cluster.
    pub cluster: String,
    /// Whether the pooled connection is up.
    pub connected: bool,
    /// Smoothed round-trip time, ms (0 when unknown).
    pub rtt_ms: f64,
}

/// State of one peer's pooled connection.
#[derive(Debug, Clone)]
enum PeerState {
    /// A (re)connect attempt is under way.
    Connecting,
    /// Up.
    Connected(PeerConn),
    /// The last attempt failed; waiting to retry.
    Backoff,
}

/// What a peer task needs besides its peer's config.
#[derive(Clone)]
pub struct PoolContext {
    /// The shared endpoint (our `listen` address).
    pub endpoint: quinn::Endpoint,
    /// Our SVID.
    pub source: Arc<SvidSource>,
    /// Trusted bundles (own and linked only).
    pub store: BundleStore,
    /// Metric handles.
    pub metrics: Metrics,
    /// Turns true when the gateway stops: TCP+TLS connections close (QUIC
    /// ones close with the endpoint).
    pub shutdown: watch::Receiver<bool>,
    resolver: Arc<OnceCell<TokioResolver>>,
}

impl PoolContext {
    /// A context; the DNS resolver is built on first use of a DNS name.
    pub fn new(
        endpoint: quinn::Endpoint,
        source: Arc<SvidSource>,
        store: BundleStore,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        PoolContext {
            endpoint,
            source,
            store,
            metrics,
            shutdown,
            resolver: Arc::new(OnceCell::new()),
        }
    }
}

/// The settings a peer task runs with; a change restarts the task.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerSettings {
    peer: PeerConfig,
    quic: QuicConfig,
    reconnect: ReconnectConfig,
    connect: Duration,
}

struct Entry {
    settings: PeerSettings,
    state: watch::Receiver<PeerState>,
    task: JoinHandle<()>,
}

/// One connection per peer gateway.
pub struct PeerPool {
    ctx: PoolContext,
    entries: Mutex<HashMap<String, Entry>>,
}

impl PeerPool {
    /// An empty pool; call [`PeerPool::reconcile`] to start peers.
    pub fn new(ctx: PoolContext) -> Self {
        PeerPool {
            ctx,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Starts tasks for new or changed peers and stops removed ones. A
    /// stopped peer's connection stays open until the streams using it end.
    pub fn reconcile(&self, config: &Config) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|cluster, entry| {
            let keep = config.peers.get(cluster).is_some_and(|p| {
                entry.settings
                    == PeerSettings {
                        peer: p.clone(),
                        quic: config.quic.clone(),
                        reconnect: config.reconnect,
                        connect: config.timeouts.connect,
                    }
            });
            if !keep {
                entry.task.abort();
                self.ctx.metrics.peer_connected(cluster, false);
            }
            keep
        });
        for (cluster, peer) in &config.peers {
            if entries.contains_key(cluster) {
                continue;
            }
            let settings = PeerSettings {
                peer: peer.clone(),
                quic: config.quic.clone(),
                reconnect: config.reconnect,
                connect: config.timeouts.connect,
            };
            let (tx, rx) = watch::channel(PeerState::Connecting);
            let task = tokio::spawn(maintain(self.ctx.clone(), settings.clone(), tx));
            entries.insert(
                cluster.clone(),
                Entry {
                    settings,
                    state: rx,
                    task,
                },
            );
        }
    }

    /// The live connection to `cluster`'s gateway, waiting at most `wait`
    /// for an attempt under way.
    ///
    /// # Errors
    /// [`PoolError`].
    pub async fn connection(&self, cluster: &str, wait: Duration) -> Result<PeerConn, PoolError> {
        let mut rx = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(cluster) {
                Some(e) => e.state.clone(),
                None => return Err(PoolError::UnknownPeer(cluster.to_owned())),
            }
        };
        let unavailable = || PoolError::Unavailable(cluster.to_owned());
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match &*rx.borrow_and_update() {
                PeerState::Connected(c) if c.is_open() => return Ok(c.clone()),
                PeerState::Backoff => return Err(unavailable()),
                PeerState::Connected(_) | PeerState::Connecting => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(unavailable()),
            }
        }
    }

    /// Every configured peer with whether its pooled connection is up and
    /// its smoothed RTT (QUIC's estimate; 0 for `tcp-tls` peers, whose RTT
    /// is not measured, and for peers not connected), by cluster name.
    pub fn status(&self) -> Vec<PeerStatus> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<PeerStatus> = entries
            .iter()
            .map(|(cluster, e)| {
                let (connected, rtt) = match &*e.state.borrow() {
                    PeerState::Connected(c) if c.is_open() => match c {
                        PeerConn::Quic(q) => (true, q.rtt()),
                        PeerConn::TcpTls(_) => (true, Duration::ZERO),
                    },
                    _ => (false, Duration::ZERO),
                };
                PeerStatus {
                    cluster: cluster.clone(),
                    connected,
                    rtt_ms: rtt.as_secs_f64() * 1000.0,
                }
            })
            .collect();
        out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        out
    }

    /// Stops every peer task (drain); open connections stay until their
    /// streams end or the endpoint closes.
    pub fn shutdown(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for (_, e) in entries.drain() {
            e.task.abort();
        }
    }
}

impl Drop for PeerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The per-peer task: connect, hold, reconnect with backoff.
async fn maintain(ctx: PoolContext, s: PeerSettings, tx: watch::Sender<PeerState>) {
    let cluster = s.peer.cluster.as_str();
    let dialer = match Dialer::new(&ctx, &s.peer, &s.quic) {
        Ok(d) => d,
        Err(e) => {
            warn!(peer = cluster, error = %e, "cannot build the client config; peer disabled");
            tx.send_replace(PeerState::Backoff);
            return;
        }
    };
    let (address, transport) = match &s.peer.transport {
        PeerTransport::Quic => (&s.peer.address, "quic"),
        PeerTransport::TcpTls(a) => (a, "tcp-tls"),
    };
    // An IPv4 QUIC socket cannot send to an AAAA answer (an IPv6 one may be
    // dual-stack); a TCP connection can use either family.
    let v4_only = matches!(dialer, Dialer::Quic(_))
        && ctx.endpoint.local_addr().map_or(true, |a| a.is_ipv4());
    let mut backoff = Backoff::new(s.reconnect.initial_backoff, s.reconnect.max_backoff);
    let mut resolved: Option<Resolved> = None;
    let mut rotate = 0usize;
    loop {
        tx.send_replace(PeerState::Connecting);
        let fresh = resolved.as_ref().is_some_and(|r| {
            r.valid_until
                .is_none_or(|t| tokio::time::Instant::now() < t)
        });
        if !fresh {
            match resolve(&ctx, address, v4_only).await {
                Ok(r) => resolved = Some(r),
                Err(e) => {
                    warn!(peer = cluster, %address, error = %e, "peer address does not resolve")
                }
            }
        }
        let addr = resolved
            .as_ref()
            .filter(|r| !r.addrs.is_empty())
            .map(|r| r.addrs[rotate % r.addrs.len()]);
        if let Some(addr) = addr {
            match connect(&ctx, &dialer, addr, s.connect).await {
                Ok(conn) => {
                    backoff.handle_success();
                    info!(peer = cluster, %addr, transport, "connected to peer gateway");
                    ctx.metrics.peer_connected(cluster, true);
                    tx.send_replace(PeerState::Connected(conn.clone()));
                    let moved = hold(&ctx, address, &conn, &mut resolved, v4_only).await;
                    ctx.metrics.peer_connected(cluster, false);
                    if moved {
                        // Streams in flight keep the old connection; new
                        // ones wait for the next.
                        info!(peer = cluster, "peer address changed; reconnecting");
                        continue;
                    }
                    match &conn {
                        PeerConn::Quic(c) => {
                            warn!(peer = cluster, reason = ?c.close_reason(), "connection to peer gateway lost");
                        }
                        PeerConn::TcpTls(_) => {
                            warn!(peer = cluster, transport, "connection to peer gateway lost");
                        }
                    }
                }
                Err(e) => {
                    rotate = rotate.wrapping_add(1);
                    warn!(peer = cluster, %addr, error = %e, "cannot connect to peer gateway");
                }
            }
        }
        tx.send_replace(PeerState::Backoff);
        let delay = backoff.handle_failure(unit_random());
        debug!(
            peer = cluster,
            delay_ms = delay.as_millis() as u64,
            "reconnect backoff"
        );
        tokio::time::sleep(delay).await;
    }
}
