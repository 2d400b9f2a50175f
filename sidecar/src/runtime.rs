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
use std::time::Duration;

use mesh_api::ads_client::{AdsSnapshot, Backoff};
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;
use trust_bundle::config::{IdentityConfigError, LoadedIdentity};
use trust_bundle::rotation::RenewalPolicy;
use trust_bundle::source::{SvidIssuer, SystemClock};
use trust_bundle::SpiffeId;

use crate::config::{Config, ConfigError, ListenerKind};
use crate::control::{self, ControlError, ControlHandle};
use crate::drain::Drain;
use crate::health::HealthState;
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
    /// Passive health of hosts (outlier detection, failfast and remote
    /// marks); report attempts with [`HealthState::report`].
    pub health: HealthState,
    /// HTTP/2 connections to peer sidecars.
    pub upstreams: H2Pool,
    /// Retry budgets, circuit counters and their metrics, per service.
    pub resilience: crate::resilience::ResilienceState,
    /// Pooled clients to the local app.
    pub apps: inbound::http::AppClients,
    /// Round-robin counter for plans.
    pub rotation: AtomicUsize,
    /// Drain signal and connection count.
    pub drain: Drain,
    /// The xDS resources the catalog was last built from (control-plane
    /// mode); its lock serializes catalog swaps with reloads.
    xds: Mutex<Arc<AdsSnapshot>>,
    ready: AtomicBool,
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The identity files could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityConfigError),
    /// The identity could not be obtained from the controller.
    #[error(transparent)]
    ControlPlane(#[from] ControlError),
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
    /// `control_plane` was added, removed or changed; restart instead.
    #[error("control_plane: cannot change on reload; restart instead")]
    ControlPlaneChanged,
    /// The held xDS resources do not fit the new config.
    #[error("services from the control plane: {0}")]
    Catalog(String),
}

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    listeners: Mutex<HashMap<SocketAddr, watch::Sender<bool>>>,
    rotation_stop: watch::Sender<bool>,
    control: Option<ControlHandle>,
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

    /// Rebuilds `services` from accepted xDS resources and swaps the
    /// snapshot (control-plane mode). A catalog that does not build keeps
    /// the one in force.
    fn install_xds(&self, xds: Arc<AdsSnapshot>) {
        let mut held = self.xds.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot();
        let mut config = current.config.clone();
        config.services = match control::catalog(&config, &xds) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "xDS catalog refused; keeping the last good one");
                return;
            }
        };
        *held = xds;
        if config.services == current.config.services {
            return;
        }
        let snapshot = match Snapshot::build(config, &self.tls) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "tls config; keeping the last good catalog");
                return;
            }
        };
        let reachable = snapshot.config.all_candidates();
        self.health.sync(&snapshot.config);
        self.snapshot.send_replace(Arc::new(snapshot));
        self.upstreams.retain(|c| reachable.contains(c));
        tracing::info!(
            services = self.snapshot().config.services.len(),
            "catalog updated from the control plane"
        );
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
        let (identity, bootstrapped) = match &config.control_plane {
            None => (config.identity.load(&config.base_dir)?, None),
            Some(cp) => {
                let b = control::bootstrap(&config, cp).await?;
                let issuer: Arc<dyn SvidIssuer> = b.client.clone();
                let loaded = LoadedIdentity {
                    id: config.spiffe_id.clone(),
                    source: b.source.clone(),
                    store: b.store.clone(),
                    issuer: Some(issuer),
                };
                (loaded, Some(b))
            }
        };
        let tls = TlsContext::new(identity.source.clone(), identity.store.clone());
        let tunnel = TunnelClient::new(
            identity.source.clone(),
            identity.store.clone(),
            tunnel_bind_ip(&config),
        );
        let metrics = Metrics::register(&mut registry);
        let resilience = crate::resilience::ResilienceState::new(&mut registry);
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
        let health = HealthState::new(metrics.outlier_ejections.clone());
        health.sync(&snapshot.config);
        let shared = Arc::new(Shared {
            snapshot: watch::channel(Arc::new(snapshot)).0,
            id: identity.id.clone(),
            tls,
            tunnel,
            metrics,
            registry,
            health,
            upstreams: H2Pool::new(),
            resilience,
            apps,
            rotation: AtomicUsize::new(0),
            drain: Drain::new(),
            xds: Mutex::new(Arc::new(AdsSnapshot::default())),
            ready: AtomicBool::new(false),
        });
        let mut listeners = HashMap::new();
        for (addr, l) in bound {
            listeners.insert(addr, spawn_listener(shared.clone(), addr, l));
        }
        let (rotation_stop, rotation_rx) = watch::channel(false);
        tokio::spawn(health_timer(shared.clone(), rotation_stop.subscribe()));
        if let Some(issuer) = identity.issuer.clone() {
            tokio::spawn(trust_bundle::source::run_rotation(
                identity.source.clone(),
                issuer,
                RenewalPolicy::default(),
                Arc::new(SystemClock),
                rotation_rx,
            ));
        }
        let control = bootstrapped.map(|b| {
            let config = &shared.snapshot().config;
            let (stop, stop_rx) = watch::channel(false);
            let cp = config.control_plane.as_ref();
            let backoff = cp.map_or(
                Backoff::new(Duration::from_millis(200), Duration::from_secs(15)),
                |c| Backoff::new(c.initial_backoff, c.max_backoff),
            );
            let _applied = b
                .client
                .watch_bundles(b.source.clone(), backoff, stop_rx.clone());
            let ads = control::start_ads(config, &b.target, b.source.clone());
            tokio::spawn(follow_xds(shared.clone(), ads.watch(), stop_rx.clone()));
            let register = control::register_request(config);
            if let Some(r) = register.clone() {
                tokio::spawn(control::run_registration(
                    b.client.clone(),
                    b.source.clone(),
                    r,
                    stop_rx,
                ));
            }
            ControlHandle {
                ads,
                client: b.client,
                source: b.source,
                register,
                stop,
            }
        });
        shared.ready.store(true, Ordering::Release);
        tracing::info!(id = %shared.id, listeners = listeners.len(), "sidecar started");
        Ok(Sidecar {
            shared,
            config_path,
            listeners: Mutex::new(listeners),
            rotation_stop,
            control,
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
    pub async fn apply(&self, mut config: Config) -> Result<(), ReloadError> {
        let running_cp = self.shared.snapshot().config.control_plane.clone();
        if config.control_plane != running_cp {
            return Err(ReloadError::ControlPlaneChanged);
        }
        // Control-plane mode: the SVID and bundles follow the controller,
        // the identity section is only bootstrap trust.
        let identity = match &config.control_plane {
            None => Some(config.identity.load(&config.base_dir)?),
            Some(_) => None,
        };
        let new_id = identity
            .as_ref()
            .map_or_else(|| config.spiffe_id.clone(), |i| i.id.clone());
        if new_id != self.shared.id {
            return Err(ReloadError::IdentityChanged {
                old: self.shared.id.clone(),
                new: new_id,
            });
        }
        // Held from here to the swap: an xDS update cannot interleave.
        let xds = self.shared.xds.lock().unwrap_or_else(|p| p.into_inner());
        if config.control_plane.is_some() {
            config.services = control::catalog(&config, &xds).map_err(ReloadError::Catalog)?;
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
        if let Some(identity) = identity {
            self.shared
                .tls
                .store()
                .replace_all(&identity.store.to_map());
            if let Err(e) = self.shared.tls.source().update(identity.source.svid()) {
                tracing::warn!(error = %e, "reloaded SVID unusable; keeping the current one");
            }
        }
        if let Some(c) = &self.control {
            c.ads
                .set_subscriptions(control::subscriptions(&snapshot.config));
        }
        let reachable = snapshot.config.all_candidates();
        self.shared.health.sync(&snapshot.config);
        self.shared.snapshot.send_replace(Arc::new(snapshot));
        drop(xds);
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
        if let Some(c) = &self.control {
            c.stop.send_replace(true);
            c.ads.stop();
            if let Some(r) = &c.register {
                let timeout = self.shared.snapshot().config.timeouts.connect;
                match tokio::time::timeout(timeout, c.client.deregister(&c.source, &r.name)).await {
                    Ok(Ok(())) => tracing::info!(name = %r.name, "deregistered"),
                    Ok(Err(e)) => {
                        tracing::warn!(name = %r.name, error = %mesh_api::error_chain(&e), "deregister failed")
                    }
                    Err(_) => tracing::warn!(name = %r.name, "deregister timed out"),
                }
            }
        }
        let done = self.shared.drain.drain(bound).await;
        self.shared.tunnel.close().await;
        done
    }
}

/// Installs every newly accepted xDS generation until `stop`.
async fn follow_xds(
    shared: Arc<Shared>,
    mut rx: watch::Receiver<Arc<AdsSnapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut installed = 0u64;
    loop {
        let snap = rx.borrow_and_update().clone();
        if snap.generation != installed {
            installed = snap.generation;
            shared.install_xds(snap);
        }
        tokio::select! {
            c = rx.changed() => if c.is_err() { return },
            r = stop.wait_for(|s| *s) => { let _ = r; return; }
        }
    }
}

/// Drives the outlier detectors' interval work and keeps the priority-load
/// gauges current, until `stop` (drain).
async fn health_timer(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let now = std::time::Instant::now();
        let next = shared
            .health
            .poll_timeout()
            .map_or(crate::health::MAX_TICK, |t| {
                t.saturating_duration_since(now)
            })
            .min(crate::health::MAX_TICK);
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            r = stop.wait_for(|s| *s) => { let _ = r; return; }
        }
        let now = std::time::Instant::now();
        shared.health.handle_interval(now);
        let status = shared.health.status(&shared.snapshot().config, now);
        shared.metrics.set_priority_load(&status);
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
