//! Wiring: config → store → CA → own SVID → listeners → leader loops.
//!
//! [`Controller::start`] brings one controller up and returns once every
//! listener is bound (so tests can use port 0 and read the addresses);
//! [`Controller::stop`] stops it gracefully. `run_cli` adds the signal
//! handling around them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::Router;
use trust_bundle::source::{BoxFuture, RenewError, SvidIssuer, SystemClock};
use trust_bundle::{Bundle, BundleStore, SvidRequest, SvidSource, X509Svid};

use crate::admin::{AdminState, NotWired, PeeringApi};
use crate::catalog::{self, unix_ms, CaMaterial, Catalog, Command};
use crate::config::Config;
use crate::identity::IdentityService;
use crate::store::{Store, StoreConfig, StoreError};
use crate::xds::Model;

/// How often the leader checks for expired leases and CA rotation steps.
pub const LEADER_TICK: Duration = Duration::from_millis(500);
/// How long [`Controller::stop`] lets open connections finish.
pub const DRAIN: Duration = Duration::from_secs(5);
/// Raft snapshot interval, entries.
pub const SNAPSHOT_EVERY: u64 = 1000;

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not open.
    #[error("cannot open the store")]
    Store(#[source] StoreError),
    /// A listener could not bind.
    #[error("cannot bind {listener} on {addr}")]
    Bind {
        /// Which listener (`grpc_listen`, ...).
        listener: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The admin token file could not be read.
    #[error("cannot read admin_token_file {path}")]
    AdminToken {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA could not be made or used.
    #[error("ca")]
    Ca(#[source] trust_bundle::CaError),
    /// The controller SVID was unusable.
    #[error("controller svid")]
    Svid(#[source] trust_bundle::SvidError),
    /// A TLS config could not be built.
    #[error("tls config")]
    Tls(#[source] rustls::Error),
    /// A bundle endpoint failure.
    #[error("bundle endpoint")]
    Endpoint(#[source] trust_bundle::endpoint::EndpointError),
    /// Stopped before the controller was up.
    #[error("stopped before startup finished")]
    Stopped,
}

/// What plug-ins (peering, xDS) get from the running controller.
#[derive(Clone)]
pub struct Runtime {
    /// The catalog store.
    pub store: Arc<Store<Catalog>>,
    /// The controller's config.
    pub config: Arc<Config>,
    /// The controller's SVID (renewed in place): for TLS clients and servers.
    pub svid: Arc<SvidSource>,
    /// The bundles held (own and linked), kept in step with the catalog.
    pub bundles: BundleStore,
    /// Our own bundle as published on the bundle endpoint (every root of a
    /// rotation, `spiffe_sequence`).
    pub own_bundle: watch::Receiver<Bundle>,
    /// The xDS model, replaced on every catalog change.
    pub model: watch::Receiver<Arc<Model>>,
    /// Turns true when the controller stops: background loops end then.
    pub shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cluster", &self.config.cluster)
            .finish_non_exhaustive()
    }
}

/// Builds the admin API's peering entry points (and may spawn the peering
/// loops, ending them on `Runtime::shutdown`).
pub type PeeringFactory = Arc<dyn Fn(&Runtime) -> Arc<dyn PeeringApi> + Send + Sync>;
/// Adds services (ADS, Peering) to the TLS gRPC router, which already
/// serves Identity.
pub type GrpcServices = Arc<dyn Fn(&Runtime, Router) -> Router + Send + Sync>;
/// Builds the router of the plaintext xDS listener (ADS only).
pub type XdsPlaintext = Arc<dyn Fn(&Runtime) -> Router + Send + Sync>;

/// Plug-in points the lead wires after merging (peering, xDS). The default
/// has none: peering endpoints answer 501 and only Identity is served.
#[derive(Clone, Default)]
pub struct Hooks {
    /// The peering module's admin entry points and loops.
    pub peering: Option<PeeringFactory>,
    /// Extra services on the TLS gRPC listener.
    pub grpc_services: Option<GrpcServices>,
    /// The plaintext ADS router for `xds_plaintext_listen`.
    pub xds_plaintext: Option<XdsPlaintext>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("peering", &self.peering.is_some())
            .field("grpc_services", &self.grpc_services.is_some())
            .field("xds_plaintext", &self.xds_plaintext.is_some())
            .finish()
    }
}

/// A running controller.
pub struct Controller {
    store: Arc<Store<Catalog>>,
    svid: Arc<SvidSource>,
    bundles: BundleStore,
    model: watch::Receiver<Arc<Model>>,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    bundle_addr: SocketAddr,
    xds_plaintext_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .field("bundle_addr", &self.bundle_addr)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Starts a controller: opens the store, waits for the CA (proposing
    /// one when this node leads and none exists), issues its own SVID,
    /// binds every listener and starts the background loops. `shutdown`
    /// aborts a start still waiting for the CA.
    ///
    /// # Errors
    /// [`RunError`].
    pub async fn start(
        config: Config,
        hooks: Hooks,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Self, RunError> {
        let config = Arc::new(config);
        tracing::info!(
            cluster = %config.cluster,
            trust_domain = %config.trust_domain,
            node_id = config.node_id,
            grpc = %config.grpc_listen,
            admin = %config.admin_listen,
            bundle = %config.bundle_listen,
            "starting controller"
        );
        let admin_token = match &config.admin_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| RunError::AdminToken {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let store = Store::<Catalog>::open(StoreConfig {
            node_id: config.node_id,
            data_dir: config.data_dir.clone(),
            raft_listen: config.raft_listen,
            advertise: config.raft_advertise.clone(),
            join: config.join.clone(),
            snapshot_every: SNAPSHOT_EVERY,
        })
        .await
        .map_err(RunError::Store)?;

        ensure_ca(&store, &config, &mut shutdown).await?;
        let catalog = store.watch().borrow().clone();
        let svid = issue_own_svid(&catalog, &config)?;
        let svid =
            SvidSource::new(svid, trust_bundle::crypto_provider()).map_err(RunError::Svid)?;
        let bundles = BundleStore::from_map(&catalog.bundle_map(&config.trust_domain));
        let own_bundle = catalog
            .own_bundle(&config.trust_domain)
            .unwrap_or_else(|| Bundle::new(config.trust_domain.clone()));
        let (bundle_tx, bundle_rx) = watch::channel(own_bundle);
        let (model_tx, model_rx) = watch::channel(Arc::new(catalog::xds_model(&catalog, &config)));
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        // Catalog followers: bundles (TLS and endpoint), xDS model, own SVID.
        tasks.push(tokio::spawn(follow_catalog(
            store.watch(),
            config.clone(),
            bundles.clone(),
            bundle_tx,
            model_tx,
            svid.clone(),
            stop_rx.clone(),
        )));
        let issuer = Arc::new(CatalogIssuer {
            catalog: store.watch(),
            config: config.clone(),
        });
        tasks.push(tokio::spawn(trust_bundle::source::run_rotation(
            svid.clone(),
            issuer,
            trust_bundle::rotation::RenewalPolicy::default(),
            Arc::new(SystemClock),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(leader_loop(store.clone(), stop_rx.clone())));
        let runtime = Runtime {
            store: store.clone(),
            config: config.clone(),
            svid: svid.clone(),
            bundles: bundles.clone(),
            own_bundle: bundle_rx.clone(),
            model: model_rx.clone(),
            shutdown: stop_rx.clone(),
        };

        // gRPC (TLS): Identity, plus ADS and Peering from the hooks.
        let grpc_listener = bind("grpc_listen", config.grpc_listen).await?;
        let grpc_addr = local_addr("grpc_listen", &grpc_listener, config.grpc_listen)?;
        let tls =
            crate::grpc::server_config(svid.clone(), bundles.clone()).map_err(RunError::Tls)?;
        let router = grpc_router(&runtime, hooks.grpc_services.as_ref());
        let grpc_stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) =
                crate::grpc::serve(grpc_listener, Arc::new(tls), router, grpc_stop).await
            {
                tracing::error!(error = %e, "grpc server failed");
            }
        }));
        let mut xds_plaintext_addr = None;
        if let Some(addr) = config.xds_plaintext_listen {
            match &hooks.xds_plaintext {
                Some(build) => {
                    let listener = bind("xds_plaintext_listen", addr).await?;
                    xds_plaintext_addr = Some(local_addr("xds_plaintext_listen", &listener, addr)?);
                    let router = build(&runtime);
                    let stop = stop_rx.clone();
                    tasks.push(tokio::spawn(async move {
                        if let Err(e) = crate::grpc::serve_plaintext(listener, router, stop).await {
                            tracing::error!(error = %e, "plaintext xds server failed");
                        }
                    }));
                }
                None => {
                    tracing::warn!(%addr, "xds_plaintext_listen is set but no ADS server is wired")
                }
            }
        }

        // Admin API.
        let admin_listener = bind("admin_listen", config.admin_listen).await?;
        let admin_addr = local_addr("admin_listen", &admin_listener, config.admin_listen)?;
        let state = Arc::new(AdminState {
            store: store.clone(),
            config: config.clone(),
            token: admin_token,
            peering: match &hooks.peering {
                Some(build) => build(&runtime),
                None => Arc::new(NotWired),
            },
        });
        tasks.push(tokio::spawn(crate::admin::serve(
            admin_listener,
            state,
            stop_rx.clone(),
        )));

        // SPIFFE bundle endpoint (https_spiffe).
        let endpoint = trust_bundle::endpoint::BundleEndpointServer::bind(
            config.bundle_listen,
            svid.clone(),
            bundle_rx,
            &url_path(&config.bundle_endpoint_url),
        )
        .await
        .map_err(RunError::Endpoint)?;
        let bundle_addr = endpoint.local_addr().map_err(|source| RunError::Bind {
            listener: "bundle_listen",
            addr: config.bundle_listen,
            source,
        })?;
        tasks.push(tokio::spawn(endpoint.serve(stop_rx.clone())));

        tracing::info!(%grpc_addr, %admin_addr, %bundle_addr, "controller up");
        Ok(Controller {
            store,
            svid,
            bundles,
            model: model_rx,
            grpc_addr,
            admin_addr,
            bundle_addr,
            xds_plaintext_addr,
            stop,
            tasks,
        })
    }

    /// The catalog store.
    pub fn store(&self) -> &Arc<Store<Catalog>> {
        &self.store
    }

    /// The controller's own SVID (renewed in place).
    pub fn svid(&self) -> &Arc<SvidSource> {
        &self.svid
    }

    /// The bundles held (own and linked trust domains), kept fresh.
    pub fn bundles(&self) -> &BundleStore {
        &self.bundles
    }

    /// The xDS model, updated on every catalog change.
    pub fn model(&self) -> watch::Receiver<Arc<Model>> {
        self.model.clone()
    }

    /// The gRPC (TLS) listener's address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bundle endpoint's address.
    pub fn bundle_addr(&self) -> SocketAddr {
        self.bundle_addr
    }

    /// The plaintext xDS listener's address, when configured and wired.
    pub fn xds_plaintext_addr(&self) -> Option<SocketAddr> {
        self.xds_plaintext_addr
    }

    /// Stops every listener and loop, lets open connections finish for at
    /// most [`DRAIN`] (bundle watch streams end at once), and shuts the
    /// store down.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + DRAIN;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!("a listener did not drain in time; aborting it");
                task.abort();
            }
        }
        self.store.shutdown().await;
        tracing::info!("controller stopped");
    }
}

/// The TLS gRPC router: Identity, then whatever the hooks add (ADS,
/// Peering).
fn grpc_router(runtime: &Runtime, extra: Option<&GrpcServices>) -> Router {
    let identity = mesh_api::identity::identity_server::IdentityServer::new(
        IdentityService::new(runtime.store.clone(), runtime.config.clone())
            .with_shutdown(runtime.shutdown.clone()),
    );
    let router = tonic::transport::Server::builder().add_service(identity);
    match extra {
        Some(add) => add(runtime, router),
        None => router,
    }
}

/// Waits until the catalog holds a CA; proposes one when this node leads.
async fn ensure_ca(
    store: &Arc<Store<Catalog>>,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut watch = store.watch();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        if watch.borrow_and_update().ca.is_some() {
            return Ok(());
        }
        if store.is_leader() {
            let material = CaMaterial::generate(&config.trust_domain, SystemTime::now())
                .map_err(RunError::Ca)?;
            match store.write(Command::InitCa(material)).await {
                Ok(catalog::Response::Sequence(_)) => {
                    tracing::info!(trust_domain = %config.trust_domain, "generated the cluster's root CA");
                    continue;
                }
                // Another node's CA won; it is in the catalog now.
                Ok(_) => continue,
                // Not committed (leadership moved?): wait for the next tick.
                Err(e) => tracing::warn!(error = %e, "cannot store the CA yet"),
            }
        }
        tokio::select! {
            _ = watch.changed() => {}
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return Err(RunError::Stopped),
        }
    }
}

fn issue_own_svid(catalog: &Catalog, config: &Config) -> Result<X509Svid, RunError> {
    let ca = catalog
        .signing_ca(&config.trust_domain)
        .map_err(RunError::Ca)?;
    let request = SvidRequest {
        id: config.controller_id(),
        dns_names: Vec::new(),
        ttl: config.svid_ttl,
    };
    ca.issue(&request, SystemTime::now()).map_err(RunError::Ca)
}

/// Renews the controller's SVID from the catalog's CA.
struct CatalogIssuer {
    catalog: watch::Receiver<Arc<Catalog>>,
    config: Arc<Config>,
}

impl SvidIssuer for CatalogIssuer {
    fn renew<'a>(&'a self, _current: &'a X509Svid) -> BoxFuture<'a, Result<X509Svid, RenewError>> {
        let catalog = self.catalog.borrow().clone();
        let result = issue_own_svid(&catalog, &self.config);
        Box::pin(async move { result.map_err(|e| RenewError::Issue(Box::new(e))) })
    }
}

/// Keeps the TLS bundle store, the published bundle, the xDS model and (on
/// a CA switch) the controller's SVID in step with the catalog.
async fn follow_catalog(
    mut catalog: watch::Receiver<Arc<Catalog>>,
    config: Arc<Config>,
    bundles: BundleStore,
    bundle_tx: watch::Sender<Bundle>,
    model_tx: watch::Sender<Arc<Model>>,
    svid: Arc<SvidSource>,
    mut stop: watch::Receiver<bool>,
) {
    let mut active_ca = catalog
        .borrow()
        .ca
        .as_ref()
        .map(|c| c.active.chain_pem.clone());
    loop {
        tokio::select! {
            changed = catalog.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let current = catalog.borrow_and_update().clone();
        let map = current.bundle_map(&config.trust_domain);
        if bundles.to_map() != map {
            bundles.replace_all(&map);
        }
        if let Some(own) = current.own_bundle(&config.trust_domain) {
            bundle_tx.send_if_modified(|b| {
                let changed = *b != own;
                if changed {
                    *b = own;
                }
                changed
            });
        }
        let model = catalog::xds_model(&current, &config);
        model_tx.send_if_modified(|m| {
            let mut comparable = model.clone();
            comparable.version = m.version;
            let changed = **m != comparable;
            if changed {
                *m = Arc::new(model);
            }
            changed
        });
        let now_active = current.ca.as_ref().map(|c| c.active.chain_pem.clone());
        if now_active != active_ca {
            active_ca = now_active;
            match issue_own_svid(&current, &config) {
                Ok(next) => {
                    if let Err(e) = svid.update(next) {
                        tracing::warn!(error = %e, "cannot install the re-issued controller SVID");
                    } else {
                        tracing::info!("controller SVID re-issued by the new CA");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot re-issue the controller SVID"),
            }
        }
    }
}

/// On the leader: expire leases and join tokens, move CA rotations along.
///
/// Leases get a grace period after a node becomes leader (etcd refreshes
/// every lease on a leader change for the same reason): while no controller
/// led, no workload could renew, so a lease is expired only once it has
/// also outlived one full lease period of this leadership. Without it a
/// controller outage longer than the lease would drop every endpoint at the
/// restart until the sidecars re-register.
async fn leader_loop(store: Arc<Store<Catalog>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LEADER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leader_since_ms: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !store.is_leader() {
            leader_since_ms = None;
            continue;
        }
        let now_ms = unix_ms(SystemTime::now());
        let since = *leader_since_ms.get_or_insert(now_ms);
        let catalog = store.watch().borrow().clone();
        // Expire up to just before the earliest lease still in its grace.
        let cutoff_ms = catalog
            .leased
            .values()
            .filter(|w| since.saturating_add(w.lease_ms) > now_ms)
            .map(|w| w.expires_ms.saturating_sub(1))
            .min()
            .map_or(now_ms, |t| t.min(now_ms));
        let lease_due = catalog.leased.values().any(|w| w.expires_ms <= cutoff_ms)
            || catalog
                .join_tokens
                .values()
                .any(|t| catalog::tokens::droppable(t, cutoff_ms));
        if lease_due {
            let now_ms = cutoff_ms;
            if let Err(e) = store.write(Command::ExpireLeases { now_ms }).await {
                tracing::debug!(error = %e, "cannot expire leases now");
            }
        }
        if catalog.ca_rotation_due(now_ms) {
            if let Err(e) = store.write(Command::AdvanceCaRotation { now_ms }).await {
                tracing::debug!(error = %e, "cannot advance the CA rotation now");
            }
        }
    }
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind {
            listener,
            addr,
            source,
        })
}

fn local_addr(
    listener: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, RunError> {
    l.local_addr().map_err(|source| RunError::Bind {
        listener,
        addr,
        source,
    })
}

/// The path of an `https://host:port/path` URL (`/` when none).
fn url_path(url: &str) -> String {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest[i..].to_owned(),
        None => "/".to_owned(),
    }
}
