//! The gateway as a running component: [`Gateway::start`] loads the
//! identity, binds the QUIC, TCP+TLS (if `tcp_listen`) and admin listeners
//! and starts the peer pool;
//! [`Gateway::reload`] swaps config atomically; [`Gateway::drain`] stops
//! gracefully. With a `control_plane` section the SVID comes from the
//! controller and `peers`/`exports` from its xDS ([`crate::control`]),
//! applied through the same swap as a reload.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_api::ads_client::{AdsClient, AdsConfig, AdsSnapshot, Backoff, Subscriptions};
use mesh_api::envoy_types::pb::envoy::config::core::v3::Node;
use mesh_api::envoy_types::pb::google::protobuf::{value, Struct, Value};
use mesh_api::identity_client::{self, BootstrapConfig, BootstrapError};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use trust_bundle::config::{IdentityConfigError, LoadedIdentity};
use trust_bundle::rotation::RenewalPolicy;
use trust_bundle::source::{SvidIssuer, SystemClock};
use trust_bundle::{BundleStore, SpiffeId, SvidSource};
use tunnel_proto::code;

use crate::admin::{self, AdminState};
use crate::config::{Config, RawExport, RawPeer};
use crate::control;
use crate::endpoint::{self, EndpointError};
use crate::metrics::Metrics;
use crate::peers::{PeerPool, PoolContext};
use crate::server::{self, Ctx};
use crate::state::{ConfigCell, Health, InFlight, Status};
use crate::tcp_tls;
use crate::tcp_tls::server::ListenError;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The identity section could not be loaded (a config error).
    #[error("loading the identity")]
    Identity(#[source] IdentityConfigError),
    /// The QUIC endpoint could not be set up or bound.
    #[error("quic listener")]
    Endpoint(#[source] EndpointError),
    /// The TCP+TLS listener (`tcp_listen`) could not be set up or bound.
    #[error("tcp+tls listener")]
    TcpListen(#[source] ListenError),
    /// The SVID could not be obtained from the controller.
    #[error("identity from the control plane")]
    ControlPlane(#[source] BootstrapError),
    /// The admin listener could not be bound.
    #[error("cannot bind admin tcp {addr}")]
    Admin {
        /// The `admin` address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl StartError {
    /// Whether the config is at fault (exit status 2) rather than the
    /// environment.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            StartError::Identity(_)
                | StartError::ControlPlane(
                    BootstrapError::Read { .. }
                        | BootstrapError::Bundles { .. }
                        | BootstrapError::OwnBundleMissing { .. }
                        | BootstrapError::EmptyToken(_)
                )
        )
    }
}

/// Why a reload was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A key that only takes effect at start changed.
    #[error("{key} changed; restart mesh-gateway to apply it")]
    RestartRequired {
        /// The key, e.g. `listen`.
        key: &'static str,
    },
    /// The new identity section does not load.
    #[error("loading the identity")]
    Identity(#[source] IdentityConfigError),
    /// The new QUIC settings do not make a server config.
    #[error("quic settings")]
    Endpoint(#[source] EndpointError),
    /// The peers and exports from the control plane do not validate.
    #[error("peers and exports from the control plane")]
    Dynamic(#[source] crate::config::ConfigError),
}

/// What a drain left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Streams still open when `drain_ms` ran out (closed abruptly).
    pub abandoned: usize,
}

/// A running gateway.
pub struct Gateway {
    ctx: Arc<Ctx>,
    endpoint: quinn::Endpoint,
    live: Arc<Live>,
    quic_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    ads: Option<Arc<AdsClient>>,
}

/// What a reload touches; shared with the control-plane tasks.
struct Live {
    ctx: Arc<Ctx>,
    endpoint: quinn::Endpoint,
    source: Arc<SvidSource>,
    /// The verification store: own and linked trust domains only.
    store: BundleStore,
    /// Control-plane mode: the controller's bundles, the file's config and
    /// the last peers/exports from xDS. Its lock serializes swaps.
    control: Option<Mutex<ControlState>>,
}

struct ControlState {
    /// Every bundle the controller sent (filtered into `Live::store`).
    bundles: BundleStore,
    /// The file's config (no peers/exports).
    file: Config,
    /// The last peers and exports from xDS.
    dynamic: (Vec<RawPeer>, Vec<RawExport>),
}

impl Gateway {
    /// Loads the identity, binds `listen` (UDP), `tcp_listen` (TCP, if set)
    /// and `admin` (TCP), starts the peer pool, SVID rotation and admin
    /// server, and registers the metric families into `registry`.
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn start(config: Config, mut registry: Registry) -> Result<Gateway, StartError> {
        let (identity, bootstrapped) = match &config.control_plane {
            None => (
                config
                    .identity
                    .load(&config.base_dir)
                    .map_err(StartError::Identity)?,
                None,
            ),
            Some(cp) => {
                let id = SpiffeId::parse(&config.identity.spiffe_id)
                    .map_err(|e| StartError::Identity(IdentityConfigError::Id(e)))?;
                let b = identity_client::bootstrap(&BootstrapConfig {
                    id: id.clone(),
                    address: cp.address.clone(),
                    server_id: cp.spiffe_id.clone(),
                    danger_plaintext: cp.danger_plaintext,
                    bundles_file: config.base_dir.join(&config.identity.bundles),
                    join_token_file: config.base_dir.join(&cp.join_token_file),
                    connect_timeout: config.timeouts.connect,
                    initial_backoff: cp.initial_backoff,
                    max_backoff: cp.max_backoff,
                    patience: BOOTSTRAP_PATIENCE,
                })
                .await
                .map_err(StartError::ControlPlane)?;
                let issuer: Arc<dyn SvidIssuer> = b.client.clone();
                let loaded = LoadedIdentity {
                    id,
                    source: b.source.clone(),
                    store: b.store.clone(),
                    issuer: Some(issuer),
                };
                (loaded, Some(b))
            }
        };
        let store = BundleStore::from_map(&endpoint::trusted_map(&identity.store, &config));
        let cell = Arc::new(ConfigCell::new(config.clone()));
        let server = endpoint::server_config(
            identity.source.clone(),
            store.clone(),
            cell.clone(),
            &config.quic,
        )
        .map_err(StartError::Endpoint)?;
        let quic = endpoint::bind(config.listen, server).map_err(StartError::Endpoint)?;
        let quic_addr = quic.local_addr().map_err(|source| {
            StartError::Endpoint(EndpointError::Bind {
                addr: config.listen,
                source,
            })
        })?;
        let tcp_listener = match config.tcp_listen {
            Some(addr) => {
                let (l, bound) = tcp_tls::server::bind(addr, config.tcp_congestion.as_deref())
                    .map_err(StartError::TcpListen)?;
                let tls = tcp_tls::tls::server_config(
                    identity.source.clone(),
                    store.clone(),
                    cell.clone(),
                )
                .map_err(|e| StartError::TcpListen(ListenError::Tls(e)))?;
                Some((l, bound, tls))
            }
            None => None,
        };
        let admin_listener =
            tokio::net::TcpListener::bind(config.admin)
                .await
                .map_err(|source| StartError::Admin {
                    addr: config.admin,
                    source,
                })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Admin {
                addr: config.admin,
                source,
            })?;

        let metrics = Metrics::register(&mut registry);
        let status = Arc::new(Status::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let pool = PeerPool::new(PoolContext::new(
            quic.clone(),
            identity.source.clone(),
            store.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        ));
        pool.reconcile(&config);
        let ctx = Arc::new(Ctx {
            config: cell,
            health: Health::default(),
            inflight: Arc::new(InFlight::default()),
            status: status.clone(),
            metrics,
            pool,
            round_robin: AtomicUsize::new(0),
        });
        let live = Arc::new(Live {
            ctx: ctx.clone(),
            endpoint: quic.clone(),
            source: identity.source.clone(),
            store: store.clone(),
            control: bootstrapped.as_ref().map(|b| {
                Mutex::new(ControlState {
                    bundles: b.store.clone(),
                    file: config.clone(),
                    dynamic: (Vec::new(), Vec::new()),
                })
            }),
        });
        let peers_ctx = ctx.clone();
        let mut tasks = vec![
            tokio::spawn(server::accept_loop(quic.clone(), ctx.clone())),
            tokio::spawn(admin::serve(
                admin_listener,
                AdminState {
                    status: status.clone(),
                    registry: Arc::new(registry),
                    peers: Arc::new(move || peers_ctx.pool.status()),
                },
                config.timeouts.header,
                shutdown_rx.clone(),
            )),
        ];
        let tcp_addr = tcp_listener.as_ref().map(|(_, bound, _)| *bound);
        if let Some((listener, _, tls)) = tcp_listener {
            tasks.push(tokio::spawn(tcp_tls::server::accept_loop(
                listener,
                tls,
                ctx.clone(),
                shutdown_rx.clone(),
            )));
        }
        let ads = match (&bootstrapped, &config.control_plane) {
            (Some(b), Some(cp)) => {
                let backoff = || Backoff::new(cp.initial_backoff, cp.max_backoff);
                let versions =
                    b.client
                        .watch_bundles(b.source.clone(), backoff(), shutdown_rx.clone());
                tasks.push(tokio::spawn(follow_bundles(
                    live.clone(),
                    versions,
                    shutdown_rx.clone(),
                )));
                let ads = Arc::new(AdsClient::spawn(
                    b.target.with_client(b.source.clone()),
                    AdsConfig {
                        node: node(&config, &identity.id),
                        subscriptions: control::subscriptions(&AdsSnapshot::default()),
                        initial_backoff: cp.initial_backoff,
                        max_backoff: cp.max_backoff,
                    },
                    control::validator(),
                ));
                tasks.push(tokio::spawn(follow_xds(
                    live.clone(),
                    ads.clone(),
                    shutdown_rx.clone(),
                )));
                Some(ads)
            }
            _ => None,
        };
        if let Some(issuer) = identity.issuer {
            tasks.push(tokio::spawn(trust_bundle::source::run_rotation(
                identity.source.clone(),
                issuer,
                RenewalPolicy::default(),
                Arc::new(SystemClock),
                shutdown_rx,
            )));
        }
        status.set_ready();
        let tcp = tcp_addr.map_or_else(|| "-".to_owned(), |a| a.to_string());
        info!(
            "mesh-gateway ready listen={quic_addr} tcp_listen={tcp} admin={admin_addr} cluster={} id={}",
            config.cluster, identity.id
        );
        Ok(Gateway {
            ctx,
            endpoint: quic,
            live,
            quic_addr,
            tcp_addr,
            admin_addr,
            shutdown,
            tasks,
            ads,
        })
    }

    /// The bound QUIC (UDP) address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The bound TCP+TLS (`tcp_listen`) address, if configured.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The bound admin (TCP) address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The config new streams run on.
    pub fn config(&self) -> Arc<Config> {
        self.ctx.config.load()
    }

    /// Metric handles (e.g. for tests reading a counter).
    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }

    /// Streams in flight now.
    pub fn streams_in_flight(&self) -> usize {
        self.ctx.inflight.count()
    }

    /// Swaps in `config` atomically: new streams use it, streams in flight
    /// keep theirs. Peers (with their transport), exports, endpoints,
    /// timeouts, QUIC settings (for new connections) and bundles may
    /// change; `cluster`, `listen`, `tcp_listen`, `admin` and
    /// `identity.spiffe_id` need a restart.
    ///
    /// # Errors
    /// [`ReloadError`]; nothing changed.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        self.live.reload(config)
    }

    /// Graceful stop: `/readyz` turns 503, new connections are refused and
    /// new streams reset with `DRAINING`, streams in flight get up to
    /// `timeouts.drain_ms`; then the endpoint closes with `CLOSE_DRAINING`
    /// and TCP+TLS connections are dropped.
    pub async fn drain(self) -> DrainReport {
        self.ctx.status.set_draining();
        let limit = self.ctx.config.load().timeouts.drain;
        info!(
            streams = self.ctx.inflight.count(),
            drain_ms = limit.as_millis() as u64,
            "draining"
        );
        let _ = tokio::time::timeout(limit, self.ctx.inflight.idle()).await;
        let abandoned = self.ctx.inflight.count();
        self.ctx.pool.shutdown();
        if let Some(ads) = &self.ads {
            ads.stop();
        }
        self.endpoint
            .close(code::CLOSE_DRAINING.into(), b"draining");
        let _ = self.shutdown.send(true);
        // Let CONNECTION_CLOSE frames go out; bounded so a lost peer cannot
        // hold the exit.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        for t in &self.tasks {
            t.abort();
        }
        info!(abandoned, "drained");
        DrainReport { abandoned }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How long start-up keeps retrying the first `SignSvid`.
const BOOTSTRAP_PATIENCE: Duration = Duration::from_secs(60);

impl Live {
    /// A config from the file (SIGHUP): in control-plane mode the last
    /// peers and exports from xDS are kept.
    fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let old = self.ctx.config.load();
        for (key, changed) in [
            ("cluster", old.cluster != config.cluster),
            ("listen", old.listen != config.listen),
            ("tcp_listen", old.tcp_listen != config.tcp_listen),
            (
                "tcp_congestion",
                old.tcp_congestion != config.tcp_congestion,
            ),
            ("admin", old.admin != config.admin),
            (
                "identity.spiffe_id",
                old.identity.spiffe_id != config.identity.spiffe_id,
            ),
            ("control_plane", old.control_plane != config.control_plane),
        ] {
            if changed {
                return Err(ReloadError::RestartRequired { key });
            }
        }
        match &self.control {
            None => {
                let loaded = config
                    .identity
                    .load(&config.base_dir)
                    .map_err(ReloadError::Identity)?;
                self.swap(config, Some(&loaded))
            }
            Some(control) => {
                let mut state = control.lock().unwrap_or_else(|p| p.into_inner());
                let (peers, exports) = &state.dynamic;
                let merged = config
                    .with_dynamic(peers, exports, "control plane")
                    .map_err(ReloadError::Dynamic)?;
                self.swap_with_bundles(merged, &state.bundles)?;
                state.file = config;
                Ok(())
            }
        }
    }

    /// Peers and exports from xDS (control-plane mode).
    fn apply_xds(&self, peers: Vec<RawPeer>, exports: Vec<RawExport>) -> Result<(), ReloadError> {
        let Some(control) = &self.control else {
            return Ok(());
        };
        let mut state = control.lock().unwrap_or_else(|p| p.into_inner());
        let merged = state
            .file
            .with_dynamic(&peers, &exports, "control plane")
            .map_err(ReloadError::Dynamic)?;
        if *self.ctx.config.load() == merged {
            state.dynamic = (peers, exports);
            return Ok(());
        }
        self.swap_with_bundles(merged, &state.bundles)?;
        state.dynamic = (peers, exports);
        Ok(())
    }

    /// The controller's bundles changed: re-filter them into the store.
    fn refresh_bundles(&self) {
        if let Some(control) = &self.control {
            let state = control.lock().unwrap_or_else(|p| p.into_inner());
            let config = self.ctx.config.load();
            self.store
                .replace_all(&endpoint::trusted_map(&state.bundles, &config));
        }
    }

    fn swap_with_bundles(&self, config: Config, bundles: &BundleStore) -> Result<(), ReloadError> {
        let server = self.quic_server(&config)?;
        self.store
            .replace_all(&endpoint::trusted_map(bundles, &config));
        self.commit(config, server);
        Ok(())
    }

    fn swap(&self, config: Config, loaded: Option<&LoadedIdentity>) -> Result<(), ReloadError> {
        let server = self.quic_server(&config)?;
        // Everything is validated: apply.
        if let Some(loaded) = loaded {
            if config.identity.svid.is_some() {
                if let Err(e) = self.source.update(loaded.source.svid()) {
                    warn!(error = %e, "reloaded SVID is unusable; keeping the current one");
                }
            }
            self.store
                .replace_all(&endpoint::trusted_map(&loaded.store, &config));
        }
        self.commit(config, server);
        Ok(())
    }

    fn quic_server(&self, config: &Config) -> Result<Option<quinn::ServerConfig>, ReloadError> {
        let old = self.ctx.config.load();
        if old.quic == config.quic {
            return Ok(None);
        }
        endpoint::server_config(
            self.source.clone(),
            self.store.clone(),
            self.ctx.config.clone(),
            &config.quic,
        )
        .map(Some)
        .map_err(ReloadError::Endpoint)
    }

    fn commit(&self, config: Config, server: Option<quinn::ServerConfig>) {
        if let Some(server) = server {
            self.endpoint.set_server_config(Some(server));
        }
        let config = Arc::new(config);
        self.ctx.config.store(config.clone());
        self.ctx.pool.reconcile(&config);
        info!(
            peers = config.peers.len(),
            exports = config.exports.len(),
            "config reloaded"
        );
    }
}

fn node(config: &Config, id: &SpiffeId) -> Node {
    let mut metadata = Struct::default();
    metadata.fields.insert(
        mesh_api::xds::NODE_ROLE.to_owned(),
        Value {
            kind: Some(value::Kind::StringValue("gateway".to_owned())),
        },
    );
    Node {
        id: format!("gateway~{}~{id}", config.listen.ip()),
        cluster: config.cluster.clone(),
        metadata: Some(metadata),
        ..Default::default()
    }
}

/// Applies every accepted xDS generation; widens the EDS subscription to
/// the `peer|`/`export|` clusters CDS names.
async fn follow_xds(live: Arc<Live>, ads: Arc<AdsClient>, mut stop: watch::Receiver<bool>) {
    let mut rx = ads.watch();
    let mut subscribed: Subscriptions = control::subscriptions(&AdsSnapshot::default());
    let mut applied = 0u64;
    loop {
        let snap = rx.borrow_and_update().clone();
        if snap.generation != applied {
            applied = snap.generation;
            let wanted = control::subscriptions(&snap);
            if subscribed != wanted {
                ads.set_subscriptions(wanted.clone());
                subscribed = wanted;
            }
            match control::from_xds(&snap) {
                Ok((peers, exports)) => {
                    if let Err(e) = live.apply_xds(peers, exports) {
                        warn!(error = %mesh_api::error_chain(&e), "xDS config refused; keeping the last good one");
                    }
                }
                Err(e) => warn!(error = %e, "xDS resources unusable; keeping the last good config"),
            }
        }
        tokio::select! {
            c = rx.changed() => if c.is_err() { return },
            r = stop.wait_for(|s| *s) => { let _ = r; return; }
        }
    }
}

/// Re-filters the controller's bundles into the store on every update.
async fn follow_bundles(
    live: Arc<Live>,
    mut versions: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            c = versions.changed() => {
                if c.is_err() { return; }
                live.refresh_bundles();
            }
            r = stop.wait_for(|s| *s) => { let _ = r; return; }
        }
    }
}
