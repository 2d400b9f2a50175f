//! The peer pool: one connection per replica of each linked peer gateway
//! (`peers[].addresses`; QUIC, or HTTP/2 over TLS/TCP for a peer whose
//! `transport` is `tcp-tls`), each kept up by its own task that connects
//! eagerly, reconnects with jittered exponential backoff
//! ([`crate::backoff`]), and resolves DNS names with hickory, re-resolving
//! when the answer's TTL ends (the `resolve` module).
//!
//! A stream asks the pool for a peer's [`Candidate`]s: the replicas worth
//! trying, in the order of the pure [`select::try_order`] (connected ones
//! round robin, then ones whose first attempt is under way; never one in
//! backoff or re-probing). No candidate at all fails at once, so the
//! sidecar can fail over quickly. [`crate::forward`] tries them in turn and
//! declares a silent replica's connection lost with [`PeerConn::close`]:
//! its streams are reset at once and its task re-probes it with backoff.

mod connect;
mod resolve;
pub mod select;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use trust_bundle::{BundleStore, SvidSource};
use tunnel_proto::code;

use crate::backoff::{unit_random, Backoff};
use crate::config::{Config, PeerAddress, PeerConfig, PeerTransport, QuicConfig, ReconnectConfig};
use crate::metrics::Metrics;
use crate::tcp_tls::client::H2Connection;

use connect::{connect, hold, Dialer};
use resolve::{resolve, Resolved};
use select::ReplicaState;

/// Why no connection to a peer could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The cluster is not (or no longer) a configured peer.
    #[error("cluster {0} is not a configured peer")]
    UnknownPeer(String),
    /// Every replica of the peer's gateway is unreachable now (backoff or
    /// re-probing after a failure).
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

    /// A counter that grows whenever anything arrives from the peer: UDP
    /// datagrams for QUIC (every ACK counts), bytes read from the socket
    /// for TCP+TLS. Unchanged across an interval = the peer sent nothing.
    pub fn rx_progress(&self) -> u64 {
        match self {
            PeerConn::Quic(c) => c.stats().udp_rx.datagrams,
            PeerConn::TcpTls(c) => c.bytes_received(),
        }
    }

    /// Declares the connection lost and closes it now: every stream on it
    /// is reset (QUIC CONNECTION_CLOSE; the TCP connection is dropped), and
    /// the pool's task for the replica notices and re-probes with backoff.
    pub fn close(&self, reason: &'static str) {
        match self {
            PeerConn::Quic(c) => c.close(code::CLOSE_NORMAL.into(), reason.as_bytes()),
            PeerConn::TcpTls(c) => c.close(),
        }
    }
}

/// One row of the admin `GET /peers` answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerStatus {
    /// The peer cluster.
    pub cluster: String,
    /// Whether any replica's pooled connection is up.
    pub connected: bool,
    /// Smoothed round-trip time of the first connected replica, ms (0 when
    /// unknown).
    pub rtt_ms: f64,
    /// Each replica, in config order.
    pub replicas: Vec<ReplicaStatus>,
}

/// One replica in [`PeerStatus`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReplicaStatus {
    /// The address as configured.
    pub address: String,
    /// Whether its pooled connection is up.
    pub connected: bool,
    /// Smoothed round-trip time, ms (0 when unknown or `tcp-tls`).
    pub rtt_ms: f64,
}

/// State of one replica's pooled connection.
#[derive(Debug, Clone)]
enum ReplicaConn {
    /// The first connect attempt is under way.
    Starting,
    /// A re-probe after a failed attempt or a lost connection.
    Probing,
    /// Up.
    Connected(PeerConn),
    /// The last attempt failed or the connection was lost; waiting to retry.
    Backoff,
}

impl ReplicaConn {
    fn health(&self) -> ReplicaState {
        match self {
            ReplicaConn::Connected(c) if c.is_open() => ReplicaState::Up,
            ReplicaConn::Starting => ReplicaState::Starting,
            ReplicaConn::Connected(_) | ReplicaConn::Probing | ReplicaConn::Backoff => {
                ReplicaState::Down
            }
        }
    }
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

/// The settings a peer's tasks run with; a change restarts them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerSettings {
    peer: PeerConfig,
    quic: QuicConfig,
    /// `tcp_congestion`, for `tcp-tls` peers.
    tcp_congestion: Option<String>,
    reconnect: ReconnectConfig,
    connect: Duration,
    /// A connection silent this long is declared lost: the larger of
    /// `peer_open_ms` and two keep-alive intervals (a live peer answers
    /// every keep-alive); `None` without keep-alives.
    silence: Option<Duration>,
}

struct Replica {
    address: PeerAddress,
    state: watch::Receiver<ReplicaConn>,
    task: JoinHandle<()>,
}

struct Entry {
    settings: PeerSettings,
    replicas: Vec<Replica>,
    /// Round-robin cursor over the replicas.
    cursor: AtomicUsize,
}

impl Entry {
    fn stop(&self) {
        for r in &self.replicas {
            r.task.abort();
        }
    }
}

/// One replica a stream may try, from [`PeerPool::candidates`].
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its position in the peer's `addresses`.
    pub index: usize,
    /// Its address as configured (for logs).
    pub address: String,
    state: watch::Receiver<ReplicaConn>,
}

impl Candidate {
    /// The replica's live connection, waiting at most `wait` while its
    /// first attempt is under way; `None` if it has none.
    pub async fn connection(&self, wait: Duration) -> Option<PeerConn> {
        let mut rx = self.state.clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match &*rx.borrow_and_update() {
                ReplicaConn::Connected(c) if c.is_open() => return Some(c.clone()),
                ReplicaConn::Backoff | ReplicaConn::Probing => return None,
                ReplicaConn::Connected(_) | ReplicaConn::Starting => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

/// Connections to every replica of every peer gateway.
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
    /// stopped replica's connection stays open until the streams using it
    /// end.
    pub fn reconcile(&self, config: &Config) {
        let settings_of = |p: &PeerConfig| PeerSettings {
            peer: p.clone(),
            quic: config.quic.clone(),
            tcp_congestion: config.tcp_congestion.clone(),
            reconnect: config.reconnect,
            connect: config.timeouts.connect,
            silence: config
                .quic
                .keep_alive
                .map(|k| config.timeouts.peer_open.max(k.saturating_mul(2))),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|cluster, entry| {
            let keep = config
                .peers
                .get(cluster)
                .is_some_and(|p| entry.settings == settings_of(p));
            if !keep {
                entry.stop();
                self.ctx.metrics.peer_connections(cluster, 0);
            }
            keep
        });
        for (cluster, peer) in &config.peers {
            if entries.contains_key(cluster) {
                continue;
            }
            let settings = settings_of(peer);
            let up = Arc::new(Mutex::new(0usize));
            let replicas = peer
                .dial_addresses()
                .iter()
                .map(|address| {
                    let (tx, rx) = watch::channel(ReplicaConn::Starting);
                    let task = tokio::spawn(maintain(
                        self.ctx.clone(),
                        settings.clone(),
                        address.clone(),
                        up.clone(),
                        tx,
                    ));
                    Replica {
                        address: address.clone(),
                        state: rx,
                        task,
                    }
                })
                .collect();
            entries.insert(
                cluster.clone(),
                Entry {
                    settings,
                    replicas,
                    cursor: AtomicUsize::new(0),
                },
            );
        }
    }

    /// The replicas of `cluster`'s gateway a new stream should try, in
    /// order ([`select::try_order`]; each call advances the round robin).
    ///
    /// # Errors
    /// [`PoolError::UnknownPeer`]; [`PoolError::Unavailable`] when every
    /// replica is down.
    pub fn candidates(&self, cluster: &str) -> Result<Vec<Candidate>, PoolError> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = entries.get(cluster) else {
            return Err(PoolError::UnknownPeer(cluster.to_owned()));
        };
        let states: Vec<ReplicaState> = entry
            .replicas
            .iter()
            .map(|r| r.state.borrow().health())
            .collect();
        let cursor = entry.cursor.fetch_add(1, Ordering::Relaxed);
        let order = select::try_order(&states, cursor);
        if order.is_empty() {
            return Err(PoolError::Unavailable(cluster.to_owned()));
        }
        Ok(order
            .into_iter()
            .map(|i| Candidate {
                index: i,
                address: entry.replicas[i].address.to_string(),
                state: entry.replicas[i].state.clone(),
            })
            .collect())
    }

    /// Every configured peer with whether a replica's pooled connection is
    /// up and its smoothed RTT (QUIC's estimate; 0 for `tcp-tls` peers,
    /// whose RTT is not measured, and for replicas not connected), by
    /// cluster name.
    pub fn status(&self) -> Vec<PeerStatus> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<PeerStatus> = entries
            .iter()
            .map(|(cluster, e)| {
                let replicas: Vec<ReplicaStatus> = e
                    .replicas
                    .iter()
                    .map(|r| {
                        let (connected, rtt) = match &*r.state.borrow() {
                            ReplicaConn::Connected(c) if c.is_open() => match c {
                                PeerConn::Quic(q) => (true, q.rtt()),
                                PeerConn::TcpTls(_) => (true, Duration::ZERO),
                            },
                            _ => (false, Duration::ZERO),
                        };
                        ReplicaStatus {
                            address: r.address.to_string(),
                            connected,
                            rtt_ms: rtt.as_secs_f64() * 1000.0,
                        }
                    })
                    .collect();
                let first = replicas.iter().find(|r| r.connected);
                PeerStatus {
                    cluster: cluster.clone(),
                    connected: first.is_some(),
                    rtt_ms: first.map_or(0.0, |r| r.rtt_ms),
                    replicas,
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
            e.stop();
        }
    }
}

impl Drop for PeerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Counts a replica as connected in the peer's gauge while alive. The
/// count and the gauge change under one lock, so concurrent replicas
/// cannot leave a stale value behind.
struct UpGuard<'a> {
    ctx: &'a PoolContext,
    cluster: &'a str,
    up: &'a Mutex<usize>,
}

impl<'a> UpGuard<'a> {
    fn new(ctx: &'a PoolContext, cluster: &'a str, up: &'a Mutex<usize>) -> Self {
        let mut n = up.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        ctx.metrics.peer_connections(cluster, *n);
        drop(n);
        UpGuard { ctx, cluster, up }
    }
}

impl Drop for UpGuard<'_> {
    fn drop(&mut self) {
        let mut n = self.up.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.ctx.metrics.peer_connections(self.cluster, *n);
    }
}

/// The task of one replica: connect, hold, reconnect with backoff.
async fn maintain(
    ctx: PoolContext,
    s: PeerSettings,
    address: PeerAddress,
    up: Arc<Mutex<usize>>,
    tx: watch::Sender<ReplicaConn>,
) {
    let cluster = s.peer.cluster.as_str();
    let dialer = match Dialer::new(&ctx, &s.peer, &s.quic, s.tcp_congestion.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            warn!(peer = cluster, error = %e, "cannot build the client config; peer disabled");
            tx.send_replace(ReplicaConn::Backoff);
            return;
        }
    };
    let transport = match &s.peer.transport {
        PeerTransport::Quic => "quic",
        PeerTransport::TcpTls(_) => "tcp-tls",
    };
    // An IPv4 QUIC socket cannot send to an AAAA answer (an IPv6 one may be
    // dual-stack); a TCP connection can use either family.
    let v4_only = matches!(dialer, Dialer::Quic(_))
        && ctx.endpoint.local_addr().map_or(true, |a| a.is_ipv4());
    let mut backoff = Backoff::new(s.reconnect.initial_backoff, s.reconnect.max_backoff);
    let mut resolved: Option<Resolved> = None;
    let mut rotate = 0usize;
    let mut first = true;
    loop {
        tx.send_replace(if first {
            ReplicaConn::Starting
        } else {
            ReplicaConn::Probing
        });
        first = false;
        let fresh = resolved.as_ref().is_some_and(|r| {
            r.valid_until
                .is_none_or(|t| tokio::time::Instant::now() < t)
        });
        if !fresh {
            match resolve(&ctx, &address, v4_only).await {
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
                    let guard = UpGuard::new(&ctx, cluster, &up);
                    tx.send_replace(ReplicaConn::Connected(conn.clone()));
                    let moved =
                        hold(&ctx, &address, &conn, &mut resolved, v4_only, s.silence).await;
                    drop(guard);
                    if moved {
                        // Streams in flight keep the old connection; new
                        // ones wait for the next.
                        info!(peer = cluster, %address, "peer address changed; reconnecting");
                        first = true;
                        continue;
                    }
                    match &conn {
                        PeerConn::Quic(c) => {
                            warn!(peer = cluster, %addr, reason = ?c.close_reason(), "connection to peer gateway lost");
                        }
                        PeerConn::TcpTls(_) => {
                            warn!(peer = cluster, %addr, transport, "connection to peer gateway lost");
                        }
                    }
                }
                Err(e) => {
                    rotate = rotate.wrapping_add(1);
                    warn!(peer = cluster, %addr, error = %e, "cannot connect to peer gateway");
                }
            }
        }
        tx.send_replace(ReplicaConn::Backoff);
        let delay = backoff.handle_failure(unit_random());
        debug!(
            peer = cluster,
            %address,
            delay_ms = delay.as_millis() as u64,
            "reconnect backoff"
        );
        tokio::time::sleep(delay).await;
    }
}
