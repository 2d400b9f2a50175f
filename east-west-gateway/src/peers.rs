//! The peer pool: one QUIC connection per linked peer gateway, kept up by a
//! task per peer that connects eagerly, reconnects with jittered
//! exponential backoff ([`crate::backoff`]), and resolves DNS names with
//! hickory, re-resolving when the answer's TTL ends.
//!
//! A stream asks the pool for a peer's connection: it gets the live one,
//! waits (bounded) while a first attempt is under way, or fails at once
//! while the peer is in backoff, so the sidecar can fail over quickly.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use trust_bundle::{BundleStore, SvidSource};

use crate::backoff::{unit_random, Backoff};
use crate::config::{Config, PeerAddress, PeerConfig, QuicConfig, ReconnectConfig};
use crate::endpoint;
use crate::metrics::Metrics;
use crate::route::HopIdentity;

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

/// State of one peer's pooled connection.
#[derive(Debug, Clone)]
enum PeerState {
    /// A (re)connect attempt is under way.
    Connecting,
    /// Up.
    Connected(quinn::Connection),
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
    resolver: Arc<OnceCell<TokioResolver>>,
}

impl PoolContext {
    /// A context; the DNS resolver is built on first use of a DNS name.
    pub fn new(
        endpoint: quinn::Endpoint,
        source: Arc<SvidSource>,
        store: BundleStore,
        metrics: Metrics,
    ) -> Self {
        PoolContext {
            endpoint,
            source,
            store,
            metrics,
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
    pub async fn connection(
        &self,
        cluster: &str,
        wait: Duration,
    ) -> Result<quinn::Connection, PoolError> {
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
                PeerState::Connected(c) if c.close_reason().is_none() => return Ok(c.clone()),
                PeerState::Backoff => return Err(unavailable()),
                PeerState::Connected(_) | PeerState::Connecting => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(unavailable()),
            }
        }
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

/// Resolved addresses of a DNS peer and when they expire.
struct Resolved {
    addrs: Vec<SocketAddr>,
    valid_until: Option<tokio::time::Instant>,
}

/// The per-peer task: connect, hold, reconnect with backoff.
async fn maintain(ctx: PoolContext, s: PeerSettings, tx: watch::Sender<PeerState>) {
    let cluster = s.peer.cluster.as_str();
    let hop = match &s.peer.spiffe_id {
        Some(id) => HopIdentity::Exact(id.clone()),
        None => HopIdentity::MemberOf(s.peer.trust_domain.clone()),
    };
    let client = match endpoint::client_config(ctx.source.clone(), ctx.store.clone(), &hop, &s.quic)
    {
        Ok(c) => c,
        Err(e) => {
            warn!(peer = cluster, error = %e, "cannot build the client config; peer disabled");
            tx.send_replace(PeerState::Backoff);
            return;
        }
    };
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
            match resolve(&ctx, &s.peer.address).await {
                Ok(r) => resolved = Some(r),
                Err(e) => {
                    warn!(peer = cluster, address = %s.peer.address, error = %e, "peer address does not resolve")
                }
            }
        }
        let addr = resolved
            .as_ref()
            .filter(|r| !r.addrs.is_empty())
            .map(|r| r.addrs[rotate % r.addrs.len()]);
        if let Some(addr) = addr {
            match connect(&ctx, &client, addr, s.connect).await {
                Ok(conn) => {
                    backoff.handle_success();
                    info!(peer = cluster, %addr, "connected to peer gateway");
                    ctx.metrics.peer_connected(cluster, true);
                    tx.send_replace(PeerState::Connected(conn.clone()));
                    let moved = hold(&ctx, &s.peer.address, &conn, &mut resolved).await;
                    ctx.metrics.peer_connected(cluster, false);
                    if moved {
                        // Streams in flight keep the old connection; new
                        // ones wait for the next.
                        info!(peer = cluster, "peer address changed; reconnecting");
                        continue;
                    }
                    warn!(peer = cluster, reason = ?conn.close_reason(), "connection to peer gateway lost");
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

/// Why one connect attempt failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    /// quinn refused to start the attempt.
    #[error("connect")]
    Start(#[source] quinn::ConnectError),
    /// The handshake failed.
    #[error("handshake")]
    Handshake(#[source] quinn::ConnectionError),
    /// The handshake did not finish within `connect_ms`.
    #[error("handshake timed out")]
    TimedOut,
}

async fn connect(
    ctx: &PoolContext,
    client: &quinn::ClientConfig,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<quinn::Connection, ConnectError> {
    let connecting = ctx
        .endpoint
        .connect_with(client.clone(), addr, endpoint::SERVER_NAME)
        .map_err(ConnectError::Start)?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(quinn::ConnectionError::TimedOut)) | Err(_) => Err(ConnectError::TimedOut),
        Ok(Err(e)) => {
            ctx.metrics.handshake_failed();
            Err(ConnectError::Handshake(e))
        }
    }
}

/// Waits until `conn` closes, re-resolving a DNS address whenever its TTL
/// ends. Returns `true` if the peer's addresses no longer include the one we
/// are connected to.
async fn hold(
    ctx: &PoolContext,
    address: &PeerAddress,
    conn: &quinn::Connection,
    resolved: &mut Option<Resolved>,
) -> bool {
    loop {
        let expiry = resolved.as_ref().and_then(|r| r.valid_until);
        tokio::select! {
            _ = conn.closed() => return false,
            () = sleep_until(expiry) => {
                match resolve(ctx, address).await {
                    Ok(r) => {
                        let moved = !r.addrs.contains(&conn.remote_address());
                        *resolved = Some(r);
                        if moved {
                            return true;
                        }
                    }
                    Err(e) => {
                        warn!(address = %address, error = %e, "re-resolving the peer address failed; keeping the connection");
                        // Retry later rather than spin on a failing resolver.
                        if let Some(r) = resolved.as_mut() {
                            r.valid_until = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                        }
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why a peer address did not resolve.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    /// The system resolver configuration could not be loaded.
    #[error("dns resolver setup")]
    Setup(#[source] hickory_resolver::net::NetError),
    /// The lookup failed.
    #[error("dns lookup")]
    Lookup(#[source] hickory_resolver::net::NetError),
}

async fn resolve(ctx: &PoolContext, address: &PeerAddress) -> Result<Resolved, ResolveError> {
    let (host, port) = match address {
        PeerAddress::Ip(a) => {
            return Ok(Resolved {
                addrs: vec![*a],
                valid_until: None,
            })
        }
        PeerAddress::Dns { host, port } => (host, *port),
    };
    let resolver = ctx
        .resolver
        .get_or_try_init(|| async { TokioResolver::builder_tokio()?.build() })
        .await
        .map_err(ResolveError::Setup)?;
    let lookup = resolver
        .lookup_ip(host.as_str())
        .await
        .map_err(ResolveError::Lookup)?;
    // An IPv4 `listen` socket cannot send to an AAAA answer; an IPv6 one
    // may be dual-stack, so it keeps both.
    let v4 = ctx.endpoint.local_addr().map_or(true, |a| a.is_ipv4());
    let addrs: Vec<SocketAddr> = lookup
        .iter()
        .filter(|ip: &IpAddr| !v4 || ip.is_ipv4())
        .map(|ip: IpAddr| SocketAddr::new(ip, port))
        .collect();
    let valid_until = tokio::time::Instant::from_std(lookup.valid_until())
        .max(tokio::time::Instant::now() + Duration::from_secs(1));
    Ok(Resolved {
        addrs,
        valid_until: Some(valid_until),
    })
}
