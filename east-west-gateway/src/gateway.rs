//! The gateway as a running component: [`Gateway::start`] loads the
//! identity, binds the QUIC, TCP+TLS (if `tcp_listen`) and admin listeners
//! and starts the peer pool;
//! [`Gateway::reload`] swaps config atomically; [`Gateway::drain`] stops
//! gracefully.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use trust_bundle::config::IdentityConfigError;
use trust_bundle::rotation::RenewalPolicy;
use trust_bundle::source::SystemClock;
use trust_bundle::{BundleStore, SvidSource};
use tunnel_proto::code;

use crate::admin::{self, AdminState};
use crate::config::Config;
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
        matches!(self, StartError::Identity(_))
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
    source: Arc<SvidSource>,
    store: BundleStore,
    quic_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Loads the identity, binds `listen` (UDP), `tcp_listen` (TCP, if set)
    /// and `admin` (TCP), starts the peer pool, SVID rotation and admin
    /// server, and registers the metric families into `registry`.
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn start(config: Config, mut registry: Registry) -> Result<Gateway, StartError> {
        let identity = config
            .identity
            .load(&config.base_dir)
            .map_err(StartError::Identity)?;
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
                let bind = |source| StartError::TcpListen(ListenError::Bind { addr, source });
                let l = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
                let bound = l.local_addr().map_err(bind)?;
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
        let mut tasks = vec![
            tokio::spawn(server::accept_loop(quic.clone(), ctx.clone())),
            tokio::spawn(admin::serve(
                admin_listener,
                AdminState {
                    status: status.clone(),
                    registry: Arc::new(registry),
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
            source: identity.source,
            store,
            quic_addr,
            tcp_addr,
            admin_addr,
            shutdown,
            tasks,
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
        let old = self.ctx.config.load();
        for (key, changed) in [
            ("cluster", old.cluster != config.cluster),
            ("listen", old.listen != config.listen),
            ("tcp_listen", old.tcp_listen != config.tcp_listen),
            ("admin", old.admin != config.admin),
            (
                "identity.spiffe_id",
                old.identity.spiffe_id != config.identity.spiffe_id,
            ),
        ] {
            if changed {
                return Err(ReloadError::RestartRequired { key });
            }
        }
        let loaded = config
            .identity
            .load(&config.base_dir)
            .map_err(ReloadError::Identity)?;
        let server = if old.quic != config.quic {
            Some(
                endpoint::server_config(
                    self.source.clone(),
                    self.store.clone(),
                    self.ctx.config.clone(),
                    &config.quic,
                )
                .map_err(ReloadError::Endpoint)?,
            )
        } else {
            None
        };
        // Everything is validated: apply.
        if config.identity.svid.is_some() {
            if let Err(e) = self.source.update(loaded.source.svid()) {
                warn!(error = %e, "reloaded SVID is unusable; keeping the current one");
            }
        }
        self.store
            .replace_all(&endpoint::trusted_map(&loaded.store, &config));
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
        Ok(())
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
