//! The data plane's client of `isthmus.identity.v1.Identity`.
//!
//! - [`IdentityClient::sign_with_token`]: the first SVID. A fresh ECDSA P-256
//!   key and a PKCS#10 CSR whose only SAN is our SPIFFE ID (URI), sent with
//!   the join token over TLS that verifies the controller but presents no
//!   client certificate.
//! - renewals: [`IdentityClient`] implements
//!   [`trust_bundle::source::SvidIssuer`], so
//!   [`trust_bundle::source::run_rotation`] drives them; each renewal
//!   authenticates with the current SVID (mTLS) and falls back to the join
//!   token when the controller refuses the SVID (e.g. it expired while the
//!   controller was unreachable) and a token is held.
//! - [`IdentityClient::watch_bundles`]: `WatchBundles` into a
//!   [`BundleStore`], reconnecting with backoff.
//! - [`IdentityClient::register`] / [`IdentityClient::deregister`]: leased
//!   workload registration.
//!
//! Every call also installs the bundle map the controller returns, so the
//! store given at construction follows the controller (bootstrap trust is
//! only needed for the first handshake).

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use trust_bundle::source::{BoxFuture, RenewError, SvidIssuer};
use trust_bundle::{BundleMap, BundleStore, SpiffeId, SvidSource, X509Svid};

use crate::ads_client::{unit_random, Backoff};
use crate::identity::identity_client::IdentityClient as RawClient;
use crate::identity::{
    DeregisterRequest, RegisterRequest, RegisterResponse, SignSvidRequest, WatchBundlesRequest,
};
use crate::transport::{Target, TransportError};

/// Why an Identity call failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No channel to the controller.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The controller refused or failed the call.
    #[error("identity {call}")]
    Call {
        /// The RPC, e.g. `SignSvid`.
        call: &'static str,
        /// The gRPC status.
        #[source]
        status: tonic::Status,
    },
    /// Key or CSR generation failed (a broken RNG).
    #[error("generating the CSR")]
    Csr(#[source] rcgen::Error),
    /// The returned chain is not a valid X509-SVID for our key.
    #[error("the signed SVID is unusable")]
    Svid(#[source] trust_bundle::SvidError),
    /// The returned SVID names another SPIFFE ID.
    #[error("the controller signed {actual}, not {expected}")]
    WrongId {
        /// The ID we asked for.
        expected: SpiffeId,
        /// The ID in the SVID.
        actual: SpiffeId,
    },
    /// The returned bundle map is malformed.
    #[error("the bundle map from the controller")]
    Bundles(#[source] trust_bundle::BundleError),
    /// The returned bundle map lacks our own trust domain (installing it
    /// would make every peer of ours untrusted).
    #[error("the bundle map from the controller has no bundle for our trust domain {0}")]
    OwnBundleMissing(trust_bundle::TrustDomain),
    /// A call needing the join token was made without one.
    #[error("no join token (control_plane.join_token_file) to authenticate SignSvid")]
    NoJoinToken,
}

/// A client of the controller's Identity service.
#[derive(Debug, Clone)]
pub struct IdentityClient {
    target: Target,
    id: SpiffeId,
    join_token: Option<String>,
    store: BundleStore,
}

impl IdentityClient {
    /// A client acting as `id`. `target` must verify the controller (its
    /// security's client certificate is ignored: each call picks its own).
    /// `store` is updated with every bundle map the controller sends.
    pub fn new(
        target: Target,
        id: SpiffeId,
        join_token: Option<String>,
        store: BundleStore,
    ) -> IdentityClient {
        IdentityClient {
            target,
            id,
            join_token,
            store,
        }
    }

    /// Our SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The first SVID: a new key and CSR, authenticated by the join token.
    ///
    /// # Errors
    /// See [`IdentityError`].
    pub async fn sign_with_token(&self) -> Result<X509Svid, IdentityError> {
        let token = self.join_token.clone().ok_or(IdentityError::NoJoinToken)?;
        self.sign(None, token).await
    }

    /// A renewal authenticated by `current` (mTLS).
    ///
    /// # Errors
    /// See [`IdentityError`].
    pub async fn renew_with_svid(&self, current: &X509Svid) -> Result<X509Svid, IdentityError> {
        let source = SvidSource::new(current.clone(), trust_bundle::crypto_provider())
            .map_err(IdentityError::Svid)?;
        self.sign(Some(source), String::new()).await
    }

    async fn sign(
        &self,
        client: Option<Arc<SvidSource>>,
        join_token: String,
    ) -> Result<X509Svid, IdentityError> {
        let (key, csr) = trust_bundle::svid::new_csr(&self.id).map_err(IdentityError::Csr)?;
        let mut raw = self.raw(client).await?;
        let response = raw
            .sign_svid(SignSvidRequest {
                csr_der: csr.as_ref().to_vec(),
                join_token,
            })
            .await
            .map_err(|status| IdentityError::Call {
                call: "SignSvid",
                status,
            })?
            .into_inner();
        let chain = response
            .chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let svid = X509Svid::from_der(chain, key).map_err(IdentityError::Svid)?;
        if svid.id() != &self.id {
            return Err(IdentityError::WrongId {
                expected: self.id.clone(),
                actual: svid.id().clone(),
            });
        }
        self.install_bundles(&response.bundles_json)?;
        Ok(svid)
    }

    /// Registers (or renews the lease of) a workload, authenticated by
    /// `source`. Returns the granted lease.
    ///
    /// # Errors
    /// See [`IdentityError`].
    pub async fn register(
        &self,
        source: &Arc<SvidSource>,
        request: RegisterRequest,
    ) -> Result<RegisterResponse, IdentityError> {
        let mut raw = self.raw(Some(source.clone())).await?;
        raw.register(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| IdentityError::Call {
                call: "Register",
                status,
            })
    }

    /// Deregisters workload `name` (in our SVID's namespace).
    ///
    /// # Errors
    /// See [`IdentityError`].
    pub async fn deregister(
        &self,
        source: &Arc<SvidSource>,
        name: &str,
    ) -> Result<(), IdentityError> {
        let mut raw = self.raw(Some(source.clone())).await?;
        raw.deregister(DeregisterRequest {
            name: name.to_owned(),
        })
        .await
        .map(|_| ())
        .map_err(|status| IdentityError::Call {
            call: "Deregister",
            status,
        })
    }

    /// Keeps the store current from `WatchBundles` (authenticated by
    /// `source`) until `stop` flips to true; reconnects with `backoff`.
    /// Returns a receiver of the last applied bundle-map version.
    pub fn watch_bundles(
        &self,
        source: Arc<SvidSource>,
        mut backoff: Backoff,
        mut stop: watch::Receiver<bool>,
    ) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0u64);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let worked = tokio::select! {
                    w = this.watch_once(&source, &tx) => w,
                    r = stop.wait_for(|s| *s) => { let _ = r; return; }
                };
                if worked {
                    backoff.reset();
                }
                let delay = backoff.next_delay(unit_random());
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    r = stop.wait_for(|s| *s) => { let _ = r; return; }
                }
            }
        });
        rx
    }

    /// One `WatchBundles` stream until it fails; whether any update came.
    async fn watch_once(&self, source: &Arc<SvidSource>, applied: &watch::Sender<u64>) -> bool {
        let mut worked = false;
        let result: Result<(), IdentityError> = async {
            let mut raw = self.raw(Some(source.clone())).await?;
            let mut stream = raw
                .watch_bundles(WatchBundlesRequest {})
                .await
                .map_err(|status| IdentityError::Call {
                    call: "WatchBundles",
                    status,
                })?
                .into_inner();
            loop {
                let update = stream
                    .message()
                    .await
                    .map_err(|status| IdentityError::Call {
                        call: "WatchBundles",
                        status,
                    })?;
                let Some(update) = update else {
                    return Ok(());
                };
                worked = true;
                match self.install_bundles(&update.bundles_json) {
                    Ok(()) => {
                        tracing::info!(version = update.version, "bundle map updated");
                        applied.send_replace(update.version);
                    }
                    Err(e) => tracing::warn!(
                        version = update.version,
                        error = %crate::error_chain(&e),
                        "ignoring a bundle map update"
                    ),
                }
            }
        }
        .await;
        match result {
            Ok(()) => tracing::warn!("WatchBundles stream closed by the controller"),
            Err(e) => tracing::warn!(error = %crate::error_chain(&e), "WatchBundles failed"),
        }
        worked
    }

    /// Installs a bundle map from the controller; an empty string (a fake or
    /// a controller that sends none) changes nothing. A map lacking our own
    /// trust domain is refused: it would lock us out.
    fn install_bundles(&self, json: &str) -> Result<(), IdentityError> {
        if json.trim().is_empty() {
            return Ok(());
        }
        let map = BundleMap::from_json(json.as_bytes()).map_err(IdentityError::Bundles)?;
        let own = self.id.trust_domain();
        if !map.trust_domains.contains_key(&own) {
            return Err(IdentityError::OwnBundleMissing(own));
        }
        self.store.replace_all(&map);
        Ok(())
    }

    async fn raw(
        &self,
        client: Option<Arc<SvidSource>>,
    ) -> Result<RawClient<tonic::transport::Channel>, IdentityError> {
        let target = match client {
            Some(c) => self.target.with_client(c),
            None => {
                let mut t = self.target.clone();
                if let crate::transport::Security::Spiffe { client, .. } = &mut t.security {
                    *client = None;
                }
                t
            }
        };
        Ok(RawClient::new(target.connect().await?))
    }
}

impl SvidIssuer for IdentityClient {
    fn renew<'a>(&'a self, current: &'a X509Svid) -> BoxFuture<'a, Result<X509Svid, RenewError>> {
        Box::pin(async move {
            match self.renew_with_svid(current).await {
                Ok(svid) => Ok(svid),
                Err(IdentityError::Call { status, .. })
                    if self.join_token.is_some()
                        && matches!(
                            status.code(),
                            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                        ) =>
                {
                    tracing::warn!(
                        message = status.message(),
                        "SVID renewal refused; signing again with the join token"
                    );
                    self.sign_with_token()
                        .await
                        .map_err(|e| RenewError::Issue(Box::new(e)))
                }
                Err(e) => Err(RenewError::Issue(Box::new(e))),
            }
        })
    }
}

/// How long to wait before re-registering a workload whose lease is
/// `lease`: a third of it (at least 1 s), so two renewals may fail before
/// it expires.
pub fn register_interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_secs(1))
}

/// Where a proxy's control-plane identity comes from (its `control_plane`
/// and `identity` config sections, paths already resolved).
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// Our SPIFFE ID.
    pub id: SpiffeId,
    /// `host:port` of the controller.
    pub address: String,
    /// The controller's SPIFFE ID.
    pub server_id: SpiffeId,
    /// Plaintext to the controller (tests).
    pub danger_plaintext: bool,
    /// Bootstrap trust: a SPIFFE bundle map file with our trust domain.
    pub bundles_file: std::path::PathBuf,
    /// The join token file.
    pub join_token_file: std::path::PathBuf,
    /// TCP connect + TLS handshake bound.
    pub connect_timeout: Duration,
    /// Retry backoff of the first `SignSvid`.
    pub initial_backoff: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
    /// How long to keep retrying the first `SignSvid`.
    pub patience: Duration,
}

/// Identity material obtained from the controller.
#[derive(Clone)]
pub struct Bootstrapped {
    /// Our SVID, for rustls; renew it with `run_rotation(.., client, ..)`.
    pub source: Arc<SvidSource>,
    /// The bundles the controller sent (bootstrap trust until then); kept
    /// current by [`IdentityClient::watch_bundles`].
    pub store: BundleStore,
    /// The Identity client (the rotation's issuer).
    pub client: Arc<IdentityClient>,
    /// The controller target (no client certificate; add one with
    /// [`Target::with_client`]).
    pub target: Target,
}

impl std::fmt::Debug for Bootstrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrapped")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Why a proxy could not get its first SVID.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A file could not be read.
    #[error("{key}: cannot read {}", path.display())]
    Read {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bootstrap bundle map is malformed.
    #[error("identity.bundles: {}", path.display())]
    Bundles {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        #[source]
        source: trust_bundle::BundleError,
    },
    /// The bootstrap bundle map lacks our trust domain.
    #[error("identity.bundles: {} has no bundle for our own trust domain {td}", path.display())]
    OwnBundleMissing {
        /// The file.
        path: std::path::PathBuf,
        /// Our trust domain.
        td: trust_bundle::TrustDomain,
    },
    /// The join token file is empty.
    #[error("control_plane.join_token_file: {} is empty", .0.display())]
    EmptyToken(std::path::PathBuf),
    /// `SignSvid` kept failing for the whole patience.
    #[error("no SVID from the controller at {address}")]
    Sign {
        /// The controller.
        address: String,
        /// The last failure.
        #[source]
        source: IdentityError,
    },
    /// The signed SVID is unusable by rustls.
    #[error("the SVID from the controller")]
    Svid(#[source] trust_bundle::SvidError),
}

/// Reads bootstrap trust and the join token and gets the first SVID,
/// retrying with backoff for up to `patience`.
///
/// # Errors
/// See [`BootstrapError`].
pub async fn bootstrap(config: &BootstrapConfig) -> Result<Bootstrapped, BootstrapError> {
    let read = |key, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| BootstrapError::Read {
            key,
            path: path.to_path_buf(),
            source,
        })
    };
    let text = read("identity.bundles", &config.bundles_file)?;
    let map = BundleMap::from_json(&text).map_err(|source| BootstrapError::Bundles {
        path: config.bundles_file.clone(),
        source,
    })?;
    let td = config.id.trust_domain();
    if !map.trust_domains.contains_key(&td) {
        return Err(BootstrapError::OwnBundleMissing {
            path: config.bundles_file.clone(),
            td,
        });
    }
    let store = BundleStore::from_map(&map);
    let token = read("control_plane.join_token_file", &config.join_token_file)?;
    let token = String::from_utf8_lossy(&token).trim().to_owned();
    if token.is_empty() {
        return Err(BootstrapError::EmptyToken(config.join_token_file.clone()));
    }
    let security = if config.danger_plaintext {
        crate::transport::Security::DangerPlaintext
    } else {
        crate::transport::Security::Spiffe {
            client: None,
            store: store.clone(),
            server_id: config.server_id.clone(),
        }
    };
    let mut target = Target::new(config.address.clone(), security);
    target.connect_timeout = config.connect_timeout;
    let client = Arc::new(IdentityClient::new(
        target.clone(),
        config.id.clone(),
        Some(token),
        store.clone(),
    ));
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    let deadline = tokio::time::Instant::now() + config.patience;
    let svid = loop {
        match client.sign_with_token().await {
            Ok(svid) => break svid,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let delay = backoff.next_delay(unit_random());
                tracing::warn!(
                    address = %config.address,
                    error = %crate::error_chain(&e),
                    retry_in_ms = delay.as_millis() as u64,
                    "first SVID: controller unavailable"
                );
                tokio::time::sleep(delay).await;
            }
            Err(source) => {
                return Err(BootstrapError::Sign {
                    address: config.address.clone(),
                    source,
                })
            }
        }
    };
    tracing::info!(id = %svid.id(), not_after = ?svid.not_after(), "SVID from the controller");
    let source =
        SvidSource::new(svid, trust_bundle::crypto_provider()).map_err(BootstrapError::Svid)?;
    Ok(Bootstrapped {
        source,
        store,
        client,
        target,
    })
}
