//! The running sidecar: identity, the swappable config [`Snapshot`], the
//! listeners, reload and drain.
//!
//! Every accepted connection (and every outbound HTTP request) clones the
//! current `Arc<Snapshot>` when it starts and finishes on it, so a reload
//! never changes a request mid-flight. A listener task only owns its socket
//! and its address; what it serves is looked up in the snapshot per
//! connection, so a reload may change the role of a kept address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;
use trust_bundle::config::IdentityConfigError;
use trust_bundle::rotation::RenewalPolicy;
use trust_bundle::source::SystemClock;
use trust_bundle::SpiffeId;

use crate::config::{Config, ConfigError, ListenerKind};
use crate::drain::Drain;
use crate::health::HealthTracker;
use crate::metrics::{Metrics, ReloadLabels};
use crate::outbound::pool::H2Pool;
use crate::tls::TlsContext;
use crate::tunnel::TunnelClient;
use crate::{admin, inbound, outbound};

/// A config and what is derived from it, swapped as one.
#[derive(Debug)]
pub struct Snapshot {
    /// The config.
    pub config: Config,
    /// Server TLS configs of the inbound listeners, by listen address.
    pub inbound_tls: HashMap<SocketAddr, Arc<ServerConfig>>,
}

/// State shared by every listener and connection task.
#[derive(Debug)]
pub struct Shared {
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// Our SPIFFE ID.
    pub id: SpiffeId,
    /// Inner mTLS material.
    pub tls: TlsContext,
    /// The tunnel to the local gateway.
    pub tunnel: TunnelClient,
    /// Metric families.
    pub metrics: Metrics,
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Passive endpoint health.
    pub health: HealthTracker,
    /// HTTP/2 connections to peer sidecars.
    pub upstreams: H2Pool,
    /// Pooled clients to the local app.
    pub apps: inbound::http::AppClients,
    /// Round-robin counter for plans.
    pub rotation: AtomicUsize,
    /// Drain signal and connection count.
    pub drain: Drain,
    ready: AtomicBool,
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The identity files could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityConfigError),
    /// A TLS config could not be built.
    #[error("tls config")]
    Tls(#[source] rustls::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a reload was refused; the old config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The sidecar was started without a file.
    #[error("no config file to reload")]
    NoFile,
    /// The file did not load or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The identity could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityConfigError),
    /// The identity would change; restart instead.
    #[error("identity.spiffe_id: cannot change from {old} to {new} on reload")]
    IdentityChanged {
        /// The running identity.
        old: SpiffeId,
        /// The file's identity.
        new: SpiffeId,
    },
    /// `worker_threads` would change; it takes effect only at restart.
    #[error("worker_threads: cannot change from {old} to {new} on reload; restart instead")]
    WorkerThreadsChanged {
        /// The running value (0 = one per CPU).
        old: u64,
        /// The file's value.
        new: u64,
    },
    /// A TLS config could not be built.
    #[error("tls config")]
    Tls(#[source] rustls::Error),
    /// A new listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    listeners: Mutex<HashMap<SocketAddr, watch::Sender<bool>>>,
    rotation_stop: watch::Sender<bool>,
}

impl Shared {
    /// The config snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Whether every listener is bound and the SVID is loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.drain.is_draining()
    }
}

impl Snapshot {
    fn build(config: Config, tls: &TlsContext) -> Result<Snapshot, rustls::Error> {
        let mut inbound_tls = HashMap::new();
        for i in &config.inbound {
            inbound_tls.insert(i.listen, tls.server(i)?);
        }
        Ok(Snapshot {
            config,
            inbound_tls,
        })
    }
}

impl Sidecar {
    /// Loads the identity, binds every listener and starts serving.
    /// `config_path` is the file [`Sidecar::reload`] re-reads; `registry`
    /// receives the sidecar's metric families. Must run inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
        mut registry: Registry,
    ) -> Result<Sidecar, StartError> {
        let identity = config.identity.load(&config.base_dir)?;
        let tls = TlsContext::new(identity.source.clone(), identity.store.clone());
        let tunnel = TunnelClient::new(
            identity.source.clone(),
            identity.store.clone(),
            tunnel_bind_ip(&config),
        );
        let metrics = Metrics::register(&mut registry);
        let apps = inbound::http::AppClients::new(config.timeouts.connect);
        let snapshot = Snapshot::build(config, &tls).map_err(StartError::Tls)?;
        let mut bound = Vec::new();
        for addr in snapshot.config.listeners().keys() {
            let l = bind(*addr).map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
            bound.push((*addr, l));
        }
        let shared = Arc::new(Shared {
            snapshot: watch::channel(Arc::new(snapshot)).0,
            id: identity.id.clone(),
            tls,
            tunnel,
            metrics,
            registry,
            health: HealthTracker::new(),
            upstreams: H2Pool::new(),
            apps,
            rotation: AtomicUsize::new(0),
            drain: Drain::new(),
            ready: AtomicBool::new(false),
        });
        let mut listeners = HashMap::new();
        for (addr, l) in bound {
            listeners.insert(addr, spawn_listener(shared.clone(), addr, l));
        }
        let (rotation_stop, rotation_rx) = watch::channel(false);
        if let Some(issuer) = identity.issuer.clone() {
            tokio::spawn(trust_bundle::source::run_rotation(
                identity.source.clone(),
                issuer,
                RenewalPolicy::default(),
                Arc::new(SystemClock),
                rotation_rx,
            ));
        }
        shared.ready.store(true, Ordering::Release);
        tracing::info!(id = %shared.id, listeners = listeners.len(), "sidecar started");
        Ok(Sidecar {
            shared,
            config_path,
            listeners: Mutex::new(listeners),
            rotation_stop,
        })
    }

    /// The shared state (metrics, snapshot) for embedding and tests.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the config file and applies it (SIGHUP).
    ///
    /// # Errors
    /// See [`ReloadError`]; nothing changed.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let result = match Config::load(path) {
            Ok(config) => self.apply(config).await,
            Err(e) => Err(e.into()),
        };
        let label = if result.is_ok() { "ok" } else { "failed" };
        self.shared
            .metrics
            .reloads
            .get_or_create(&ReloadLabels { result: label })
            .inc();
        result
    }

    /// Applies a new config atomically: loads its identity files, binds new
    /// listeners (any failure refuses the whole config), then swaps the
    /// snapshot and stops listeners no longer configured (their open
    /// connections finish).
    ///
    /// # Errors
    /// See [`ReloadError`]; nothing changed.
    pub async fn apply(&self, config: Config) -> Result<(), ReloadError> {
        let identity = config.identity.load(&config.base_dir)?;
        if identity.id != self.shared.id {
            return Err(ReloadError::IdentityChanged {
                old: self.shared.id.clone(),
                new: identity.id,
            });
        }
        let running = self.shared.snapshot().config.worker_threads;
        if config.worker_threads != running {
            return Err(ReloadError::WorkerThreadsChanged {
                old: running.into(),
                new: config.worker_threads.into(),
            });
        }
        let snapshot = Snapshot::build(config, &self.shared.tls).map_err(ReloadError::Tls)?;
        let wanted = snapshot.config.listeners();
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = Vec::new();
        for addr in wanted.keys() {
            if !listeners.contains_key(addr) {
                let l = bind(*addr).map_err(|source| ReloadError::Bind {
                    addr: *addr,
                    source,
                })?;
                fresh.push((*addr, l));
            }
        }
        // Commit: nothing below can fail.
        self.shared
            .tls
            .store()
            .replace_all(&identity.store.to_map());
        if let Err(e) = self.shared.tls.source().update(identity.source.svid()) {
            tracing::warn!(error = %e, "reloaded SVID unusable; keeping the current one");
        }
        let reachable = snapshot.config.all_candidates();
        self.shared.snapshot.send_replace(Arc::new(snapshot));
        // Pooled HTTP/2 connections to peers no longer in the catalog close
        // once their requests in flight finish.
        self.shared.upstreams.retain(|c| reachable.contains(c));
        for (addr, l) in fresh {
            listeners.insert(addr, spawn_listener(self.shared.clone(), addr, l));
        }
        listeners.retain(|addr, stop| {
            let keep = wanted.contains_key(addr);
            if !keep {
                stop.send_replace(true);
                tracing::info!(%addr, "listener removed");
            }
            keep
        });
        tracing::info!(listeners = listeners.len(), "config reloaded");
        Ok(())
    }

    /// Stops accepting, asks every connection to finish (HTTP: graceful
    /// shutdown), and waits up to `timeouts.drain_ms`. Returns whether all
    /// connections closed in time.
    pub async fn drain(&self) -> bool {
        let bound = self.shared.snapshot().config.timeouts.drain;
        {
            let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            for stop in listeners.values() {
                stop.send_replace(true);
            }
        }
        self.rotation_stop.send_replace(true);
        let done = self.shared.drain.drain(bound).await;
        self.shared.tunnel.close().await;
        done
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// The IP the QUIC client binds to: the admin IP when both it and the
/// gateway are loopback (loopback test clusters use distinct 127.x
/// addresses), else the unspecified address of the gateway's family.
fn tunnel_bind_ip(config: &Config) -> IpAddr {
    let gw = config.gateway.as_ref().map(|g| g.address.ip());
    match gw {
        Some(ip) if ip.is_loopback() && config.admin.ip().is_loopback() => {
            if ip.is_ipv4() == config.admin.ip().is_ipv4() {
                config.admin.ip()
            } else {
                ip
            }
        }
        Some(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

fn spawn_listener(shared: Arc<Shared>, addr: SocketAddr, l: TcpListener) -> watch::Sender<bool> {
    let (stop, rx) = watch::channel(false);
    tokio::spawn(accept_loop(shared, addr, l, rx));
    stop
}

async fn accept_loop(
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(%addr, "listening");
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                let span = tracing::debug_span!("conn", listener = %addr, %peer);
                tokio::spawn(
                    async move {
                        let _guard = shared.drain.guard();
                        shared.metrics.active_connections.inc();
                        serve_connection(&shared, addr, stream, peer).await;
                        shared.metrics.active_connections.dec();
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                tracing::warn!(%addr, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!(%addr, "stopped listening");
}

async fn serve_connection(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let snapshot = shared.snapshot();
    let kind = snapshot.config.listeners().get(&addr).copied();
    match kind {
        Some(ListenerKind::Admin) => admin::serve(shared.clone(), stream, snapshot).await,
        Some(ListenerKind::Outbound(crate::config::Protocol::Http)) => {
            outbound::http::serve(shared.clone(), addr, stream, snapshot).await
        }
        Some(ListenerKind::Outbound(crate::config::Protocol::Tcp)) => {
            outbound::tcp::serve(shared.clone(), addr, stream, snapshot, peer).await
        }
        Some(ListenerKind::Inbound(_)) => {
            inbound::serve(shared.clone(), addr, stream, snapshot, peer).await
        }
        None => tracing::debug!(%addr, "connection on a listener being removed"),
    }
}
